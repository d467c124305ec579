"""``playworld eval latent-policy``: a latent-action (or oracle BC) policy playing the real game.

Score = the return per episode in the real Atari environment (the one the expert video came
from), episodes truncated at ``--max-steps`` agent steps; reported as the mean with a 95%
Student-t interval over episodes. ``--baselines`` also plays the scripted expert and the random
policy on the same episode starts, and the normalised score
``(policy - random) / (expert - random)`` is printed (1 = expert, 0 = random).

Evaluation starts use ``--seed 1000`` and up by default (the recorder uses seeds from 0), so
the policy plays from no-op starts it never saw.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from playworld.errors import PlayworldError
from playworld.utils import atomic_write_json, get_logger

log = get_logger("eval.latent_policy")

_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}


def mean_ci95(values: list[float] | np.ndarray) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean and its 95% Student-t interval (one value: the interval is the value)."""
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise PlayworldError("no values to average; run at least one episode.")
    m = float(x.mean())
    if x.size == 1:
        return m, m, m
    dof = x.size - 1
    t = _T975.get(dof) or next((v for k, v in sorted(_T975.items()) if k >= dof), 1.96)
    half = t * float(x.std(ddof=1)) / math.sqrt(x.size)
    return m, m - half, m + half


def sticky_actions(policy, prob: float, seed: int = 0):
    """A batch policy whose env repeats its previous action with probability ``prob`` (0: ``policy`` itself).

    Machado et al. 2018's sticky actions (ALE v5 uses 0.25 per emulator frame; here per agent step),
    applied around the agent because the env is deterministic: Breakout ignores the no-op start, so
    without them every episode of a deterministic policy is the same game and more episodes add
    nothing. An episode's first step is never repeated. Seeded, so an evaluation is reproducible.
    """
    if not 0 <= prob < 1:
        raise PlayworldError(f"the sticky-action probability must be in [0, 1), got {prob!r}.")
    if prob == 0:
        return policy
    rng = np.random.default_rng(seed)
    prev: np.ndarray | None = None

    def sticky(frames: np.ndarray, new: np.ndarray, rams) -> np.ndarray:
        nonlocal prev
        actions = np.asarray(policy(frames, new, rams)).reshape(-1).copy()
        repeat = rng.random(len(actions)) < prob  # drawn every step, so the stream does not depend on `new`
        if prev is not None and len(prev) == len(actions):
            keep = repeat & ~np.asarray(new, bool).reshape(-1)
            actions[keep] = prev[keep]
        prev = actions.copy()
        return actions

    return sticky


def evaluate_policy(policy, game: str, episodes: int = 8, seed: int = 1000, max_steps: int = 2500,
                    parallel: int = 8, sticky: float = 0.0) -> dict:
    """Play ``policy`` (a :class:`~playworld.policy.latent_policy.LatentActionPolicy`) in ``game``
    (``sticky``: see :func:`sticky_actions`)."""
    from playworld.policy.experts import play_episodes

    t0 = time.perf_counter()
    size = policy.config.image_size[0]
    res = play_episodes(sticky_actions(policy.batch_policy(), sticky, seed), game, episodes, seed=seed, size=size,
                        max_steps=max_steps, parallel=min(parallel, episodes))
    return summarize([r["return"] for r in res], [r["steps"] for r in res], time.perf_counter() - t0)


def evaluate_agents(game: str, who: str, episodes: int = 8, seed: int = 1000, max_steps: int = 2500,
                    size: int = 64, parallel: int = 8, style: str | None = None, sticky: float = 0.0) -> dict:
    """The scripted expert (``who="expert"``, variant ``style``, see ``EXPERT_STYLES``) or the random
    policy, on the same starts (and the same sticky actions)."""
    from playworld.policy.experts import AtariRamEnv, RandomAgent, agent_policy, make_expert, play_episodes

    t0 = time.perf_counter()
    n = min(parallel, episodes)
    num_actions = AtariRamEnv(game).num_actions
    agents = [make_expert(game, seed=seed + i, style=style) if who == "expert" else RandomAgent(num_actions, seed=seed + i)
              for i in range(n)]
    res = play_episodes(sticky_actions(agent_policy(agents), sticky, seed), game, episodes, seed=seed, size=size,
                        max_steps=max_steps, parallel=n)
    return summarize([r["return"] for r in res], [r["steps"] for r in res], time.perf_counter() - t0)


def summarize(returns: list[float], steps: list[int], seconds: float) -> dict:
    m, lo, hi = mean_ci95(returns)
    return {"mean_return": round(m, 3), "ci95": [round(lo, 3), round(hi, 3)], "returns": returns,
            "steps": steps, "seconds": round(seconds, 1)}


def normalized(score: float, random: float, reference: float) -> float:
    """``(score - random) / (reference - random)``: 1 = the reference, 0 = random play."""
    if reference == random:
        return float("nan")
    return (score - random) / (reference - random)


@dataclass
class EvalLatentPolicy:
    """Play a trained latent-action (or oracle BC) policy in the real game: mean return with a 95% interval."""

    policy: Path
    """Policy folder from `playworld train latent-policy`."""
    game: str | None = None
    """Game to play (default: the one its training video came from)."""
    episodes: int = 8
    """Episodes to play (in parallel emulators)."""
    max_steps: int = 2500
    """Truncate each episode after this many agent steps (Pong: the expert wins 21-0 in ~2100)."""
    seed: int = 1000
    """Episode i starts from no-op seed SEED + i (recordings use seeds from 0)."""
    sticky: float = 0.0
    """Sticky actions: each step the env repeats its previous action with this probability (0.25 in ALE v5); Breakout is deterministic without them, so every episode is the same game."""
    baselines: bool = False
    """Also play the scripted expert and the random policy on the same starts."""
    expert_style: str = "default"
    """The scripted expert's variant for --baselines (e.g. Breakout `follow`, the one its video was recorded with)."""
    out: Path | None = None
    """Write the results as JSON here."""

    def run(self) -> int:
        from playworld.policy.latent_policy import LatentActionPolicy
        from playworld.utils import machine_info

        if self.episodes < 1 or self.max_steps < 1:
            raise PlayworldError(f"--episodes and --max-steps must be >= 1, got {self.episodes} and {self.max_steps}.")
        policy = LatentActionPolicy.from_pretrained(self.policy)
        game = self.game or policy.config.game
        if game is None:
            raise PlayworldError(f"{self.policy} does not say which game it was trained on; pass --game (e.g. Pong).")
        res = {"policy": str(self.policy), "target": policy.config.target, "game": game,
               "episodes": self.episodes, "max_steps": self.max_steps, "seed": self.seed, "sticky": self.sticky}
        res["policy_score"] = evaluate_policy(policy, game, self.episodes, self.seed, self.max_steps, sticky=self.sticky)
        line = f"{game}: policy {_fmt(res['policy_score'])}"
        if self.baselines:
            for who in ("expert", "random"):
                res[who] = evaluate_agents(game, who, self.episodes, self.seed, self.max_steps,
                                           size=policy.config.image_size[0], style=self.expert_style, sticky=self.sticky)
                line += f" | {who} {_fmt(res[who])}"
            res["normalized_score"] = round(normalized(res["policy_score"]["mean_return"],
                                                       res["random"]["mean_return"], res["expert"]["mean_return"]), 3)
            line += f" | normalised {res['normalized_score']:.2f} (1 = expert, 0 = random)"
        res["machine"] = machine_info()
        print(line)
        if self.out is not None:
            atomic_write_json(self.out, res)
        return 0


def _fmt(s: dict) -> str:
    return f"{s['mean_return']:+.1f} [{s['ci95'][0]:+.1f}, {s['ci95'][1]:+.1f}]"
