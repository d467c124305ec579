"""Scripted Atari experts that play from the emulator's RAM, and a recorder for their video.

Genie's agent study (arXiv 2402.15391, Sec. 3.3) labels *expert* video with the frozen latent
action model. Here the expert is a few lines reading the game state from the console's 128
bytes of RAM, so expert video costs nothing to make and the true actions are known (stored
for evaluation and for the small labelled subset only; the latent action model never sees
them).

Pong: RAM addresses from the AtariARI annotations
(Anand et al. 2019), checked against the rendered frames (``tests/test_latent_policy.py``):
ram[51] = player paddle y (screen rows ram[51]-14 .. ram[51]+1), ram[54] = ball y (screen rows
ram[54]-14 .. ram[54]-11, 0 while no ball is in play), ram[49] = ball x (screen column
ram[49]-48.5). The paddle has momentum: an action shows after 2 emulator frames, speeds up
over ~6 frames and coasts ~20 pixels after release, so the expert aims the *predicted* stop
of the paddle (position + ``velocity_gain`` x velocity) at the point where the ball will cross
the paddle's column (bounces off the walls included), with a dead zone against dithering.

Measured (``python -m playworld.policy.experts Pong 5 5000``, frame skip 4, no-op starts, on
this repo's CPU box): the expert scores +20.8 over 5 games (21-0 four times, 21-1 once; a game
takes ~2100 steps); the random policy -21.0. Without the aim jitter (``aim=0``) some no-op
starts lock the deterministic game into an endless rally. Perturbations hurt this expert a lot:
with ``explore=0.1`` (single random actions while the ball moves away) it scores only +0 to +12
in 2600 steps, so expert video is recorded without exploration by default.

Breakout (AtariARI addresses, checked against the screen in ``tests/test_latent_policy.py``):
ram[72] = paddle (left screen column ram[72]-47, 16 pixels wide), ram[99] = ball x (column
ram[99]-49), ram[101] = ball y (row ram[101]+9; 0 while no ball is in play: FIRE serves, in the
same step). Minimal action set NOOP, FIRE, RIGHT, LEFT; the paddle answers in the same step and
one press moves it ~22 pixels (~9 at 64x64). Measured (``python -m playworld.policy.experts
Breakout 5 3000 [EXPLORE]``, <= 3000 steps, i.e. up to 3.3 minutes of play, 5 lives, the env
serving each ball): the expert scores +361.8 (297-410), +286.6 (186-406) with ``explore=0.1``
(its recording default); random play +1.0 (0-2). Breakout ignores the no-op start (the serve
waits for FIRE), so a deterministic policy plays the same game from every start; the expert's
aim jitter and exploration vary its games. The ``follow`` style (:data:`EXPERT_STYLES`: follow the
ball's column, 4-pixel dead zone, no aim offset, no carry correction), the one a small policy
clones: +55.0 (55 in every game, deterministic), +65.4 (37-84) with ``explore=0.1``.

Frames: the emulator's RGB screen, max-pooled over the last two emulator frames of each step
(Atari sprites flicker), cropped to the playfield (the score bar is dropped: it is not
something an action changes) and box-resized to ``size x size``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from playworld.data.format import DatasetWriter, load_dataset
from playworld.errors import PlayworldError
from playworld.utils import get_logger

log = get_logger("policy.experts")

ATARI_FPS = 60


@dataclass(frozen=True)
class GameSpec:
    """How to crop a game's screen and which expert plays it."""

    rom: str
    crop: tuple[int, int, int, int]  # screen rows top:bottom, columns left:right (210 x 160 screen)
    expert: str
    explore: float = 0.0  # the expert's exploration when recording video (see its class)
    auto_serve: bool = False  # the env presses FIRE at the start and after each lost life (see AtariRamEnv)


GAMES: dict[str, GameSpec] = {
    "Pong": GameSpec("pong", (34, 194, 0, 160), "PongExpert"),
    # Breakout: below the score and the top wall, between the side walls, down to the paddle.
    "Breakout": GameSpec("breakout", (32, 196, 8, 152), "BreakoutExpert", explore=0.1, auto_serve=True),
}


def resolve_expert_game(name: str) -> str:
    """A user's game name -> the key of :data:`GAMES` (case and ``ALE/...-v5`` forms accepted)."""
    bare = name.strip().removeprefix("ALE/").split("-v")[0].split("NoFrameskip")[0].lower()
    for key in GAMES:
        if key.lower() == bare:
            return key
    raise PlayworldError(
        f"there is no scripted expert for '{name}'; games with an expert: {', '.join(GAMES)}. "
        "For other games record a random policy (`playworld record atari`) or bring your own video."
    )


# ---------------------------------------------------------------------------------------------
# The environment: one emulator with RAM access, frames as playworld stores them
# ---------------------------------------------------------------------------------------------


class AtariRamEnv:
    """One Atari emulator: ``reset(seed) -> frame``, ``step(a) -> (frame, reward, done)``, ``ram``.

    Deterministic given the seed: no sticky actions; the seed only draws the number of no-ops
    (0 .. ``noop_max``) at the start, which varies where the game begins (in Pong; Breakout
    waits for FIRE whatever the no-ops, so a deterministic policy plays the same game from every
    start). ``max_steps`` ends (truncates) an episode after that many agent steps.

    ``auto_serve`` (default: the game's :attr:`GameSpec.auto_serve`; Breakout: on) presses FIRE
    for ``frame_skip`` frames at the start and right after each lost life, inside ``reset`` /
    ``step``, as the usual Atari ``FireResetEnv`` wrapper does: in Breakout nothing happens
    until FIRE serves a ball, and whether a ball is in play shows only as a missing 1-pixel dot
    at 64x64, a rare decision (one step per life) that a cloned policy misses and then waits
    forever. With it, every policy (expert, random, learned) only steers the paddle.
    """

    def __init__(self, game: str, size: int = 64, frame_skip: int = 4, noop_max: int = 30, max_steps: int = 27_000,
                 auto_serve: bool | None = None):
        import ale_py
        from ale_py import roms

        if size < 8 or frame_skip < 1 or noop_max < 0 or max_steps < 1:
            raise PlayworldError(
                f"need size >= 8, frame_skip >= 1, noop_max >= 0, max_steps >= 1 (got {size}, {frame_skip}, "
                f"{noop_max}, {max_steps})."
            )
        self.game = resolve_expert_game(game)
        self.spec = GAMES[self.game]
        self.auto_serve = self.spec.auto_serve if auto_serve is None else auto_serve
        self.size, self.frame_skip, self.noop_max, self.max_steps = size, frame_skip, noop_max, max_steps
        ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
        self.ale = ale_py.ALEInterface()
        self.ale.setFloat("repeat_action_probability", 0.0)
        self.ale.setInt("random_seed", 0)
        self.ale.loadROM(str(roms.get_rom_path(self.spec.rom)))
        self._actions = self.ale.getMinimalActionSet()
        self._fire = next((a for a in self._actions if a.name == "FIRE"), None)
        if self.auto_serve and self._fire is None:
            raise PlayworldError(f"{self.game} has no FIRE action, so it cannot be served automatically.")
        self.action_names = [a.name for a in self._actions]
        self.steps = 0

    @property
    def num_actions(self) -> int:
        return len(self._actions)

    @property
    def ram(self) -> np.ndarray:
        """The console's 128 bytes of RAM, uint8 (128,)."""
        return self.ale.getRAM()

    def _frame(self, screens: list[np.ndarray]) -> np.ndarray:
        from PIL import Image

        top, bottom, left, right = self.spec.crop
        screen = np.maximum.reduce(screens)[top:bottom, left:right]  # (h, w, 3)
        img = Image.fromarray(screen).resize((self.size, self.size), Image.Resampling.BOX)
        return np.asarray(img, dtype=np.uint8)  # (size, size, 3)

    def reset(self, seed: int = 0) -> np.ndarray:
        self.ale.reset_game()
        noops = int(np.random.default_rng(seed).integers(0, self.noop_max + 1))
        for _ in range(noops * self.frame_skip):
            self.ale.act(self._actions[0])
        if self.auto_serve:
            for _ in range(self.frame_skip):
                self.ale.act(self._fire)
        self.steps = 0
        return self._frame([self.ale.getScreenRGB()])

    def step(self, action: int) -> tuple[np.ndarray, float, bool]:
        """Repeat ``action`` (an index into ``action_names``) for ``frame_skip`` frames."""
        reward, screens = 0.0, []
        a = self._actions[int(action)]
        lives = self.ale.lives()
        for k in range(self.frame_skip):
            reward += self.ale.act(a)
            if k >= self.frame_skip - 2:
                screens.append(self.ale.getScreenRGB())
            if self.ale.game_over():
                break
        if self.auto_serve and self.ale.lives() < lives and not self.ale.game_over():
            screens = []  # a life was lost: serve the next ball (the frame shows it served)
            for k in range(self.frame_skip):
                reward += self.ale.act(self._fire)
                if k >= self.frame_skip - 2:
                    screens.append(self.ale.getScreenRGB())
        self.steps += 1
        screens = screens or [self.ale.getScreenRGB()]
        done = self.ale.game_over() or self.steps >= self.max_steps
        return self._frame(screens), float(reward), done


# ---------------------------------------------------------------------------------------------
# Experts
# ---------------------------------------------------------------------------------------------



def _fold_into_court(pos: float, lo: float, hi: float) -> float:
    """A straight-line ball position ``pos`` folded back into [lo, hi] by bouncing off both walls."""
    span = hi - lo
    x = (pos - lo) % (2 * span)
    return lo + (x if x <= span else 2 * span - x)

class PongExpert:
    """Pong from RAM: move the paddle's predicted stop to where the ball will cross its column.

    Args:
        dead_zone: pixels of error tolerated before moving (smaller dithers, the paddle coasts).
        velocity_gain: steps of current paddle velocity added to its position (momentum).
        aim: once a rally is ``long_rally`` returns long, each time the ball comes the paddle aims
            a point drawn uniformly in [-aim, aim] pixels off its centre: an expert that always
            hits the same way can lock the deterministic game into an endless rally.
        long_rally: returns in one rally before the aim starts to vary.
        explore: probability per step, while the ball moves away or is out of play, of starting
            a random action held for a geometric number of steps (mean ``explore_hold``); 0 = pure
            expert. It varies the states the video visits.
        explore_hold: mean number of steps an exploring action is held.
        seed: seed of the aim and the exploration.
    """

    NOOP, UP, DOWN = 0, 2, 3  # minimal action set: NOOP FIRE RIGHT(up) LEFT(down) RIGHTFIRE LEFTFIRE
    TOP, BOTTOM, PADDLE_X = 48, 204, 188  # ball-y range between the walls; ball x at the paddle

    def __init__(self, dead_zone: float = 5.0, velocity_gain: float = 0.5, aim: float = 6.0, long_rally: int = 4,
                 explore: float = 0.0, explore_hold: float = 1.0, seed: int = 0):
        self.dead_zone, self.velocity_gain, self.explore = dead_zone, velocity_gain, explore
        self.explore_hold = explore_hold
        self.aim, self.long_rally = aim, long_rally
        self.rng = np.random.default_rng(seed)
        self.reset()

    def reset(self) -> None:
        self._prev: tuple[int, int, int] | None = None  # (paddle y, ball x, ball y) last step
        self._held, self._hold = 0, 0
        self._offset, self._was_coming, self._returns = 0.0, False, 0

    def _intercept(self, bx: int, by: int, vx: int, vy: int) -> float:
        # Where the ball reaches the paddle's column, folded back into the court at each wall.
        return _fold_into_court(by + vy * (self.PADDLE_X - bx) / vx, self.TOP, self.BOTTOM)

    def act(self, ram: np.ndarray) -> int:
        py, bx, by = int(ram[51]), int(ram[49]), int(ram[54])
        prev, self._prev = self._prev, (py, bx, by)
        v = py - prev[0] if prev else 0
        in_play = by > 0 and prev is not None and prev[2] > 0
        vx, vy = (bx - prev[1], by - prev[2]) if in_play else (0, 0)
        coming = in_play and vx > 0 and bx < self.PADDLE_X
        if by == 0:  # a point was scored: a new rally starts
            self._returns = 0
        if coming and not self._was_coming:
            long = self._returns >= self.long_rally
            self._offset = float(self.rng.uniform(-self.aim, self.aim)) if long else 0.0
        if self._was_coming and not coming and in_play:
            self._returns += 1
        self._was_coming = coming
        if not coming and self.explore > 0:
            if self._hold == 0 and self.rng.random() < self.explore:
                self._held, self._hold = int(self.rng.integers(6)), int(self.rng.geometric(1.0 / self.explore_hold))
            if self._hold > 0:
                self._hold -= 1
                return self._held
        if coming:
            target = self._intercept(bx, by, vx, vy) + self._offset
        elif by > 0:
            target = by
        else:
            target = 124  # the middle of the court, waiting for the serve
        # Ball centre = ram[54] - 12.5, paddle centre = ram[51] - 6.5 (screen rows): offset 6.
        error = target - 6 - (py + self.velocity_gain * v)
        if error > self.dead_zone:
            return self.DOWN
        if error < -self.dead_zone:
            return self.UP
        return self.NOOP


class BreakoutExpert:
    """Breakout from RAM: serve, then put the paddle where the ball will come down.

    The paddle (ALE emulates Breakout's paddle controller with the joystick) answers an action
    in the same step (~12 pixels) and carries on ~10 pixels in the next, so one press moves it
    ~22 pixels: the expert moves when the ball's landing point (its path folded at the side
    walls, from the last two positions) is more than ``dead_zone`` pixels from where the paddle
    would stop. While the ball goes up it follows the ball's column.

    Args:
        dead_zone: pixels of error tolerated before moving (the paddle's centre vs the target).
        carry: pixels the paddle still moves in the step after a press, in the pressed direction.
        aim: each time the ball comes down the paddle aims a point drawn uniformly in [-aim, aim]
            pixels off its centre, so games differ (Breakout ignores the no-op start: an expert
            that always hits the same way replays the same game).
        explore: probability per step, while the ball goes up, is in the upper half or is out
            of play, of starting a random action (any of the four) held for a geometric number
            of steps (mean ``explore_hold``); 0 = pure expert. The paddle is fast (the court in
            ~6 steps), so the expert recovers, and the video shows it recovering.
        explore_hold: mean number of steps an exploring action is held.
        seed: seed of the aim and the exploration.
        track: ``"landing"`` (default) aims at the ball's predicted landing point while it comes
            down; ``"ball"`` always follows the ball's current column (see :data:`EXPERT_STYLES`,
            ``"follow"``: a decision a policy can read off one frame).
    """

    NOOP, FIRE, RIGHT, LEFT = 0, 1, 2, 3  # the minimal action set
    LEFT_X, RIGHT_X, PADDLE_Y = 57, 199, 180  # ball-x range between the side walls; ball y at the paddle top
    PADDLE_CENTRE = 9  # ball x (ram[99]) right above the paddle's centre = ram[72] + 9 (16-pixel paddle)

    def __init__(self, dead_zone: float = 8.0, carry: float = 10.0, aim: float = 5.0, explore: float = 0.0,
                 explore_hold: float = 2.0, seed: int = 0, track: Literal["landing", "ball"] = "landing"):
        if track not in ("landing", "ball"):
            raise PlayworldError(f"track must be 'landing' or 'ball', got {track!r}.")
        self.dead_zone, self.carry, self.aim, self.track = dead_zone, carry, aim, track
        self.explore, self.explore_hold = explore, explore_hold
        self.rng = np.random.default_rng(seed)
        self.reset()

    def reset(self) -> None:
        self._prev: tuple[int, int] | None = None  # (ball x, ball y) last step
        self._last, self._held, self._hold = self.NOOP, 0, 0
        self._offset, self._was_coming = 0.0, False

    def _landing(self, bx: int, by: int, vx: int, vy: int) -> float:
        # Where the ball reaches the paddle's row, folded back into the court at each side wall.
        return _fold_into_court(bx + vx * (self.PADDLE_Y - by) / vy, self.LEFT_X, self.RIGHT_X)

    def act(self, ram: np.ndarray) -> int:
        a = self._choose(int(ram[72]), int(ram[99]), int(ram[101]))
        self._last = a
        return a

    def _choose(self, px: int, bx: int, by: int) -> int:
        prev, self._prev = self._prev, (bx, by)
        in_play = by > 0 and prev is not None and prev[1] > 0
        vx, vy = (bx - prev[0], by - prev[1]) if in_play else (0, 0)
        coming = in_play and vy > 0 and by <= self.PADDLE_Y
        if coming and not self._was_coming:
            self._offset = float(self.rng.uniform(-self.aim, self.aim))
        self._was_coming = coming
        if self.explore > 0 and (not coming or by < 120):
            if self._hold == 0 and self.rng.random() < self.explore:
                self._held, self._hold = int(self.rng.integers(4)), int(self.rng.geometric(1.0 / self.explore_hold))
            if self._hold > 0:
                self._hold -= 1
                return self._held
        else:
            self._hold = 0  # the ball comes close: back to the expert
        if by == 0:  # no ball in play (game start, lost ball): serve
            return self.FIRE
        target = self._landing(bx, by, vx, vy) + self._offset if coming and self.track == "landing" else bx
        carry = {self.RIGHT: self.carry, self.LEFT: -self.carry}.get(self._last, 0.0)
        error = target - (px + self.PADDLE_CENTRE + carry)
        if error > self.dead_zone:
            return self.RIGHT
        if error < -self.dead_zone:
            return self.LEFT
        return self.NOOP


class RandomAgent:
    """Uniformly random actions, each held for a geometric number of steps (mean ``mean_repeat``)."""

    def __init__(self, num_actions: int, mean_repeat: float = 4.0, seed: int = 0):
        self.num_actions, self.p = num_actions, 1.0 / mean_repeat
        self.rng = np.random.default_rng(seed)
        self.reset()

    def reset(self) -> None:
        self._a = int(self.rng.integers(self.num_actions))

    def act(self, ram: np.ndarray | None = None) -> int:
        if self.rng.random() < self.p:
            self._a = int(self.rng.integers(self.num_actions))
        return self._a


EXPERTS = {"PongExpert": PongExpert, "BreakoutExpert": BreakoutExpert}

EXPERT_STYLES: dict[str, dict[str, dict]] = {
    # "follow": the paddle follows the ball's column, 4-pixel dead zone, no aim offset, no
    # carry correction, so the expert's action is sign(ball x - paddle x) outside the dead zone,
    # a rule read off the current frame. The default expert's choice hangs on the landing point,
    # the carry of its last press and a random aim offset (invisible in one frame); a small
    # policy network does not clone it on a CPU budget (docs/bridge.md). Measured
    # (``python -m playworld.policy.experts Breakout 5 3000 0 follow``): see docs/bridge.md.
    "Breakout": {"follow": dict(track="ball", dead_zone=4.0, aim=0.0, carry=0.0)},
}


def expert_styles(game: str) -> list[str]:
    """Names of the expert styles of ``game`` (``"default"`` always exists)."""
    return ["default", *EXPERT_STYLES.get(resolve_expert_game(game), {})]


def make_expert(game: str, explore: float = 0.0, seed: int = 0, style: str | None = None) -> PongExpert | BreakoutExpert:
    """The scripted expert of ``game`` (see :data:`GAMES`); ``explore`` as its class says.

    ``style`` picks a variant from :data:`EXPERT_STYLES` (None or ``"default"``: the class defaults).
    """
    key = resolve_expert_game(game)
    spec = GAMES[key]
    kwargs: dict = {}
    if style not in (None, "default"):
        styles = EXPERT_STYLES.get(key, {})
        if style not in styles:
            raise PlayworldError(f"{key} has no expert style {style!r}; styles: {', '.join(expert_styles(key))}.")
        kwargs = styles[style]
    return EXPERTS[spec.expert](explore=explore, seed=seed, **kwargs)


# ---------------------------------------------------------------------------------------------
# Playing episodes (experts, baselines and learned policies share this)
# ---------------------------------------------------------------------------------------------

BatchPolicy = Callable[[np.ndarray, np.ndarray, list[np.ndarray]], np.ndarray]
"""``policy(frames uint8 (N, H, W, 3), new_episode bool (N,), rams) -> actions int (N,)``."""


def play_episodes(
    policy: BatchPolicy,
    game: str,
    episodes: int,
    seed: int = 0,
    size: int = 64,
    frame_skip: int = 4,
    max_steps: int = 27_000,
    parallel: int = 8,
    on_step: Callable[[int, np.ndarray, int, float], None] | None = None,
) -> list[dict[str, float]]:
    """Run ``episodes`` episodes, ``parallel`` emulators in lockstep (one batched policy call per step).

    Episode ``i`` starts from ``reset(seed + i)``. Returns per episode ``{"return", "steps"}``
    in episode order. ``on_step(episode, frame, action, reward)`` sees every step (recording).
    """
    if episodes < 1:
        raise PlayworldError(f"episodes must be >= 1, got {episodes}.")
    results: list[dict[str, float] | None] = [None] * episodes
    next_ep = 0
    slots: list[dict] = []
    for _ in range(min(parallel, episodes)):
        env = AtariRamEnv(game, size=size, frame_skip=frame_skip, max_steps=max_steps)
        slots.append({"env": env, "ep": None})

    def start(slot: dict) -> bool:
        nonlocal next_ep
        if next_ep >= episodes:
            slot["ep"] = None
            return False
        slot["ep"], next_ep = next_ep, next_ep + 1
        slot["frame"], slot["ret"], slot["new"] = slot["env"].reset(seed + slot["ep"]), 0.0, True
        return True

    for s in slots:
        start(s)
    while any(s["ep"] is not None for s in slots):
        # Every slot stays in the batch (a finished one repeats its last frame, its action is
        # ignored), so a policy that keeps per-row history sees a fixed batch layout.
        frames = np.stack([s["frame"] for s in slots])  # (N, H, W, 3)
        new = np.array([s["ep"] is not None and s["new"] for s in slots])
        actions = np.asarray(policy(frames, new, [s["env"].ram for s in slots])).reshape(-1)
        for s, a in zip(slots, actions, strict=True):
            if s["ep"] is None:
                continue
            frame, r, done = s["env"].step(int(a))
            if on_step is not None:
                on_step(s["ep"], s["frame"], int(a), r)
            s["frame"], s["ret"], s["new"] = frame, s["ret"] + r, False
            if done:
                results[s["ep"]] = {"return": s["ret"], "steps": s["env"].steps}
                if on_step is not None:
                    on_step(s["ep"], frame, -1, 0.0)  # the final frame (action -1: none taken)
                start(s)
    return results  # type: ignore[return-value]


def agent_policy(agents: list) -> BatchPolicy:
    """A batch policy from per-episode agents with ``reset()`` / ``act(ram)`` (experts, random)."""

    def policy(frames: np.ndarray, new: np.ndarray, rams: list[np.ndarray]) -> np.ndarray:
        out = []
        for i, ram in enumerate(rams):
            if i >= len(agents):
                out.append(0)
                continue
            if new[i]:
                agents[i].reset()
            out.append(agents[i].act(ram))
        return np.array(out)

    return policy


def score_agents(game: str, who: Literal["expert", "random"], episodes: int = 5, seed: int = 0,
                 max_steps: int = 27_000, explore: float = 0.0, style: str | None = None) -> list[float]:
    """Returns of the scripted expert (exploring with probability ``explore``; ``style`` as
    :func:`make_expert`) or the random policy."""
    n = min(episodes, 8)
    num_actions = AtariRamEnv(game).num_actions
    agents = [make_expert(game, explore=explore, seed=seed + i, style=style) if who == "expert"
              else RandomAgent(num_actions, seed=seed + i) for i in range(n)]
    return [r["return"] for r in play_episodes(agent_policy(agents), game, episodes, seed, max_steps=max_steps, parallel=n)]


# ---------------------------------------------------------------------------------------------
# Recording expert (and random) video into a playworld dataset
# ---------------------------------------------------------------------------------------------


def record_atari_expert(
    games: list[str] | str,
    frames: int,
    size: int = 64,
    seed: int = 0,
    out: str | Path = "data/expert",
    *,
    frame_skip: int = 4,
    random_fraction: float = 0.25,
    random_repeat: float = 4.0,
    explore: float | None = None,
    max_episode_frames: int = 1000,
    overwrite: bool = False,
    progress: bool = True,
    expert_style: str | None = None,
) -> Path:
    """Record ``frames`` frames of scripted-expert play (plus random play) into the dataset ``out``.

    A ``random_fraction`` of the frames comes from the sticky random policy, in episodes of
    their own (``info["policy"] == "random"``; each random action held for a geometric number
    of steps, mean ``random_repeat``): the latent action model learns from all the video, the
    policy imitates the ``"expert"`` episodes only. Expert episodes explore with
    probability ``explore`` while the ball is far (see :class:`PongExpert`, :class:`BreakoutExpert`;
    None = the game's default, :attr:`GameSpec.explore`: 0 for Pong, 0.1 for Breakout). True actions
    (ids into the game's minimal action set, named in ``meta.json``) are stored for evaluation
    and for the small labelled subset. Games are cut into episodes of <= ``max_episode_frames``.
    ``expert_style`` picks an expert variant (:data:`EXPERT_STYLES`; stored in ``meta.json`` as
    ``extra.expert_style``, so evaluation plays the same expert).
    """
    games = [games] if isinstance(games, str) else list(games)
    if not games:
        raise PlayworldError("no game given; pass at least one, e.g. --game Pong.")
    keys = [resolve_expert_game(g) for g in games]
    explores = {k: GAMES[k].explore if explore is None else explore for k in keys}
    if frames < 2 or not 0 <= random_fraction <= 1 or not all(0 <= e <= 1 for e in explores.values()) \
            or max_episode_frames < 2:
        raise PlayworldError(
            f"need frames >= 2, random_fraction and explore in [0, 1], max_episode_frames >= 2 (got {frames}, "
            f"{random_fraction}, {explore if explore is not None else explores}, {max_episode_frames})."
        )
    for k in keys:
        make_expert(k, style=expert_style)  # an unknown style fails before any work
    names = {tuple(AtariRamEnv(k).action_names) for k in keys}
    if len(names) > 1:
        raise PlayworldError(f"games {keys} have different action sets; record them into separate datasets.")
    action_names = list(names.pop())
    extra = {
        "recorder": "atari-expert", "games": keys, "policy": "expert", "random_fraction": random_fraction,
        "random_repeat": random_repeat,
        "explore": explores, "seed": seed, "frame_skip": frame_skip, "size": size, "crop": {k: GAMES[k].crop for k in keys},
        "max_episode_frames": max_episode_frames, "expert_style": expert_style or "default",
    }
    from tqdm import tqdm

    bar = tqdm(total=frames, desc="record expert", unit="frame", disable=not progress)
    with DatasetWriter(out, fps=ATARI_FPS / frame_skip, frame_size=(size, size), source="atari",
                       action_names=action_names, extra_meta=extra, overwrite=overwrite) as writer:
        for k, game in enumerate(keys):
            per_game = frames // len(keys) + (k < frames % len(keys))
            n_random = int(round(per_game * random_fraction))
            for who, quota in (("expert", per_game - n_random), ("random", n_random)):
                if quota > 0:
                    _record_policy(writer, game, who, quota, seed + 10_000 * k + (5000 if who == "random" else 0),
                                   size, frame_skip, explores[game], random_repeat, max_episode_frames, bar,
                                   expert_style)
    bar.close()
    return Path(out)


def _record_policy(writer: DatasetWriter, game: str, who: str, quota: int, seed: int, size: int,
                   frame_skip: int, explore: float, random_repeat: float, max_episode_frames: int, bar,
                   expert_style: str | None = None) -> None:
    env = AtariRamEnv(game, size=size, frame_skip=frame_skip)
    stored, run = 0, 0
    while stored < quota:
        agent = (make_expert(game, explore=explore, seed=seed + run, style=expert_style) if who == "expert"
                 else RandomAgent(env.num_actions, mean_repeat=random_repeat, seed=seed + run))
        frame, done = env.reset(seed + run), False
        buf: dict[str, list] = {"frames": [], "actions": [], "rewards": []}
        while not done and stored + len(buf["frames"]) < quota:
            a = agent.act(env.ram)
            buf["frames"].append(frame)
            buf["actions"].append(a)
            frame, r, done = env.step(a)
            buf["rewards"].append(r)
            bar.update(1)
        n = len(buf["frames"])
        chunks = math.ceil(n / max_episode_frames)
        bounds = np.linspace(0, n, chunks + 1).round().astype(int)  # even split, no tiny tail
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            if hi - lo < 2:
                continue
            writer.add_episode(
                np.stack(buf["frames"][lo:hi]), np.array(buf["actions"][lo:hi], np.int64),
                np.array(buf["rewards"][lo:hi], np.float32),
                info={"source": game, "game": game, "policy": who, "env_seed": seed + run, "run_start": int(lo),
                      "terminal": bool(done and hi == n)},
            )
        stored += n
        run += 1


def policy_episodes(data, policy: str | None = "expert") -> list[int]:
    """Episodes of ``data`` recorded by ``policy`` (all episodes when the recorder did not say)."""
    ds = load_dataset(data)
    tagged = [i for i, e in enumerate(ds.episodes) if "policy" in e.get("info", {})]
    if policy is None or not tagged:
        return list(range(ds.num_episodes))
    return [i for i, e in enumerate(ds.episodes) if e.get("info", {}).get("policy") == policy]


def main(argv: list[str] | None = None) -> None:
    """``python -m playworld.policy.experts [GAME] [EPISODES] [MAX_STEPS] [EXPLORE] [STYLE]``: expert and random scores."""
    given = list(sys.argv[1:] if argv is None else argv)
    args = given + ["Pong", "5", "5000", "0", "default"][len(given):]
    game, episodes, max_steps, explore, style = args[0], int(args[1]), int(args[2]), float(args[3]), args[4]
    for who in ("expert", "random"):
        rets = score_agents(game, who, episodes, max_steps=max_steps, explore=explore, style=style)  # type: ignore[arg-type]
        tag = f" (explore {explore})" if who == "expert" and explore else ""
        tag += f" (style {style})" if who == "expert" and style != "default" else ""
        print(f"{game} {who}{tag}: mean return {np.mean(rets):+.1f} over {episodes} episodes (<= {max_steps} steps) "
              f"{rets}")


if __name__ == "__main__":
    main()
