"""Record Atari games into a playworld dataset (``playworld record atari``).

ale-py's ``AtariVectorEnv`` runs several emulators in C++ threads and resizes frames there,
so recording is fast. Each sub-environment ``i`` of a game is seeded with ``env_seed`` (stored
per episode) and the env has no sticky actions (``repeat_action_probability=0``), so the
stored actions replay bit-exactly from a fresh env: see :func:`replay_atari_episode`.

The random policy holds each random action for a geometric number of steps (mean
``mean_repeat``): uniformly random actions every step mostly jitter in place, held ones walk,
jump and climb, which is the motion a world model has to learn.

With ``action_effects=True`` (``--action-effects``) every emulator is a single
``ALEInterface`` stepped exactly like the vector env's sub-envs (:class:`EffectsEnv`; same
frame skip, max-pool and area resize, bit-for-bit), and before each real step it tries every
action of the action set from the same emulator state (``cloneState``/``restoreState``). Two
extra per-frame arrays are stored: ``equivalent_actions`` (a bitmask of the actions whose next
stored frame equals the taken action's) and ``action_effect`` (the taken action's next frame
differs from NOOP's). See ``docs/data.md``.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from playworld.data.format import DatasetWriter, VideoDataset, load_dataset
from playworld.errors import PlayworldError
from playworld.utils import get_logger

log = get_logger("data.atari")

ATARI_FPS = 60  # the console's frame rate; stored fps = ATARI_FPS / frame_skip


def _rom_ids() -> list[str]:
    from ale_py import roms

    return sorted(roms.get_all_rom_ids())


def display_name(rom_id: str) -> str:
    """``montezuma_revenge`` -> ``MontezumaRevenge`` (the names gymnasium's ``ALE/...`` ids use)."""
    return "".join(p.capitalize() for p in rom_id.split("_"))


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def resolve_game(name: str) -> str:
    """A user's game name (``Pitfall``, ``montezuma_revenge``, ``ALE/Pong-v5``) -> ALE ROM id.

    Raises a PlayworldError listing the closest valid names first, then all of them.
    """
    bare = re.sub(r"^ALE/|(NoFrameskip)?-v\d+$", "", name.strip())
    ids = _rom_ids()
    by_key = {_key(r): r for r in ids}
    if _key(bare) in by_key:
        return by_key[_key(bare)]
    close = difflib.get_close_matches(_key(bare), list(by_key), n=5, cutoff=0.5)
    close_names = [display_name(by_key[k]) for k in close]
    suggestion = f" Did you mean {', '.join(close_names)}?" if close_names else ""
    raise PlayworldError(
        f"unknown Atari game '{name}'.{suggestion} Valid games: {', '.join(display_name(r) for r in ids)}."
    )


def make_atari_env(rom: str, num_envs: int, size: int, frame_skip: int, full_action_space: bool):
    """The vector env the recorder uses: RGB ``size x size`` frames, deterministic, raw rewards.

    Frames are max-pooled over the last two emulator frames (removes Atari sprite flicker) and
    resized in C++. ``noop_max`` random no-ops at reset (from the env's seed) vary the start.
    """
    from ale_py.vector_env import AtariVectorEnv

    return AtariVectorEnv(
        rom,
        num_envs,
        num_threads=min(num_envs, 2),  # the machines we target have 2 cores
        img_height=size,
        img_width=size,
        grayscale=False,
        stack_num=1,
        frameskip=frame_skip,
        maxpool=True,
        noop_max=30,
        repeat_action_probability=0.0,
        full_action_space=full_action_space,
        reward_clipping=False,
        episodic_life=False,
        use_fire_reset=False,
    )


def _area_table(src: int, dst: int) -> tuple[np.ndarray, np.ndarray]:
    """Source indices and weights, each (dst, K), of OpenCV's INTER_AREA resize along one axis.

    Follows OpenCV's ``computeResizeAreaTab`` (weights in float32, a zero weight pads short rows),
    which is what ale-py's vector env uses, so :class:`_AreaResize` gives its frames bit-for-bit.
    """
    scale = src / dst
    rows = []
    for d in range(dst):
        f1 = d * scale
        f2 = f1 + scale
        cell = min(scale, src - f1)
        s1, s2 = min(math.ceil(f1), src), min(math.floor(f2), src)
        row = []
        if s1 - f1 > 1e-3:
            row.append((s1 - 1, (s1 - f1) / cell))
        row += [(k, 1.0 / cell) for k in range(s1, s2)]
        if f2 - s2 > 1e-3 and s2 < src:
            row.append((s2, min(min(f2 - s2, 1.0), cell) / cell))
        rows.append(row)
    k = max(len(r) for r in rows)
    idx, w = np.zeros((dst, k), np.int64), np.zeros((dst, k), np.float32)
    for d, row in enumerate(rows):
        for j, (i, a) in enumerate(row):
            idx[d, j], w[d, j] = i, a
    return idx, w


class _AreaResize:
    """RGB (H, W, 3) uint8 -> (size, size, 3) uint8 like ``cv::resize(..., INTER_AREA)``: float32
    sums in OpenCV's order (horizontal pass, then vertical), rounded half to even."""

    def __init__(self, src_hw: tuple[int, int], size: int):
        self.yi, self.yw = _area_table(src_hw[0], size)
        self.xi, self.xw = _area_table(src_hw[1], size)

    def __call__(self, img: np.ndarray) -> np.ndarray:
        x = img.astype(np.float32)
        rows = x[:, self.xi[:, 0]] * self.xw[None, :, 0, None]  # (H, size, 3)
        for j in range(1, self.xi.shape[1]):
            rows += x[:, self.xi[:, j]] * self.xw[None, :, j, None]
        out = rows[self.yi[:, 0]] * self.yw[:, 0, None, None]  # (size, size, 3)
        for j in range(1, self.yi.shape[1]):
            out += rows[self.yi[:, j]] * self.yw[:, j, None, None]
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)


class EffectsEnv:
    """One Atari emulator stepped like a sub-env of :func:`make_atari_env`, that can also try
    every action from its current state (``ALEInterface.cloneState``/``restoreState``).

    Stepping matches ale-py's C++ ``PreprocessedEnv`` (frame skip, RGB max-pool over the last
    two emulator frames, INTER_AREA resize, no sticky actions, truncation after
    ``max_frames`` emulator frames), so a frame here equals the vector env's frame from the same
    emulator state bit-for-bit. Only the reset no-op count (0..noop_max-1) is drawn differently
    (numpy, seeded with ``seed``), so the starts differ from the vector env's with the same seed.
    """

    def __init__(self, rom: str, size: int, frame_skip: int, full_action_space: bool, seed: int,
                 noop_max: int = 30, max_frames: int = 108_000):
        import ale_py
        from ale_py import roms

        ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
        self.ale = ale = ale_py.ALEInterface()
        ale.setFloat("repeat_action_probability", 0.0)
        ale.setInt("random_seed", int(seed))
        ale.loadROM(str(roms.get_rom_path(rom)))
        self.action_set = list(ale.getLegalActionSet() if full_action_space else ale.getMinimalActionSet())
        self.action_names = [a.name for a in self.action_set]
        self.noop = self.action_names.index("NOOP")
        self.frame_skip, self.noop_max, self.max_frames = frame_skip, noop_max, max_frames
        self.rng = np.random.default_rng(seed)
        h, w = ale.getScreenDims()
        self.resize = _AreaResize((h, w), size)
        self.raw = [np.zeros((h, w, 3), np.uint8), np.zeros((h, w, 3), np.uint8)]
        self.elapsed = 0

    def reset(self) -> np.ndarray:
        """Start a new game (0..noop_max-1 no-ops); returns the first frame (size, size, 3)."""
        ale = self.ale
        ale.reset_game()
        for _ in range(int(self.rng.integers(self.noop_max)) if self.noop_max > 0 else 0):
            ale.act(self.action_set[self.noop])
            if ale.game_over():
                ale.reset_game()
        self.raw[0] = ale.getScreenRGB()
        self.raw[1][:] = 0
        self.elapsed = 0
        return self._pooled_frame()[1]

    def _pooled_frame(self) -> tuple[np.ndarray, np.ndarray]:
        np.maximum(self.raw[0], self.raw[1], out=self.raw[0])  # in place, as the C++ env does
        return self.raw[0], self.resize(self.raw[0])

    def _act(self, a: int) -> tuple[np.ndarray, float, bool, bool]:
        """``frame_skip`` emulator frames of action id ``a``: (pooled raw screen, reward, terminated,
        truncated). The raw screen is compared before resizing (equal raw -> equal frame)."""
        ale, action, reward, over = self.ale, self.action_set[a], 0.0, False
        for skip in range(self.frame_skip, 0, -1):
            reward += ale.act(action)
            over = ale.game_over()
            self.elapsed += 1
            if over or self.elapsed >= self.max_frames:
                break
            if skip <= 2:
                self.raw[skip - 1] = ale.getScreenRGB()
        np.maximum(self.raw[0], self.raw[1], out=self.raw[0])
        return self.raw[0].copy(), reward, over, self.elapsed >= self.max_frames and not over

    def step(self, a: int) -> tuple[np.ndarray, float, bool, bool]:
        """Take action id ``a``: (next frame, reward, terminated, truncated)."""
        raw, reward, term, trunc = self._act(a)
        return self.resize(raw), reward, term, trunc

    def step_with_effects(self, a: int) -> tuple[np.ndarray, float, bool, bool, int, bool]:
        """Try every action from the current state, then take ``a`` for real.

        Returns (next frame, reward, terminated, truncated, equivalent, effect): ``equivalent``
        has bit ``b`` set when action ``b``'s next frame equals ``a``'s (bit ``a`` always is);
        ``effect`` is whether ``a``'s next frame differs from NOOP's. Raises PlayworldError when
        the real step does not reproduce the trial of ``a`` (a non-deterministic emulator).
        """
        ale = self.ale
        state = ale.cloneState(include_rng=True)
        saved = (self.raw[0].copy(), self.raw[1].copy(), self.elapsed)
        outcomes: list[tuple[np.ndarray, list[int]]] = []  # distinct pooled raw screens, with their actions
        trial_a = None
        for b in range(len(self.action_set)):
            ale.restoreState(state)
            self.raw[0][:], self.raw[1][:], self.elapsed = saved
            raw = self._act(b)[0]
            for seen, bs in outcomes:
                if np.array_equal(seen, raw):
                    bs.append(b)
                    break
            else:
                outcomes.append((raw, [b]))
            if b == a:
                trial_a = raw
        ale.restoreState(state)
        self.raw[0][:], self.raw[1][:], self.elapsed = saved
        raw, reward, term, trunc = self._act(a)
        if not np.array_equal(raw, trial_a):
            raise PlayworldError(
                "the emulator is not deterministic: re-stepping the taken action after restoreState "
                "gave another frame than its trial; action effects cannot be recorded for this game."
            )
        # Different raw screens can still resize to the same stored frame: compare resized ones.
        frame = self.resize(raw)
        same = [b for seen, bs in outcomes
                if np.array_equal(seen, raw) or np.array_equal(self.resize(seen), frame) for b in bs]
        equivalent = sum(1 << b for b in same)
        return frame, reward, term, trunc, equivalent, self.noop not in same


class _EffectsVectorEnv:
    """``num_envs`` :class:`EffectsEnv` run one after another behind the vector env's interface
    (``reset(seed=)``, ``step(actions)`` with next-step autoreset), whose ``step`` also returns
    ``info["equivalent_actions"]`` and ``info["action_effect"]`` per env."""

    def __init__(self, rom: str, num_envs: int, size: int, frame_skip: int, full_action_space: bool):
        self.args = (rom, size, frame_skip, full_action_space)
        self.num_envs, self.size = num_envs, size
        self.envs: list[EffectsEnv] = []
        self.needs_reset = np.zeros(num_envs, dtype=bool)
        self.action_names = EffectsEnv(rom, size, frame_skip, full_action_space, 0, noop_max=0).action_names

    def reset(self, seed: int):
        rom, size, frame_skip, full = self.args
        self.envs = [EffectsEnv(rom, size, frame_skip, full, seed + i) for i in range(self.num_envs)]
        self.needs_reset[:] = False
        return np.stack([e.reset() for e in self.envs])[:, None], {}

    def step(self, actions: np.ndarray):
        n = self.num_envs
        obs = np.zeros((n, 1, self.size, self.size, 3), np.uint8)
        reward, term, trunc = np.zeros(n, np.float32), np.zeros(n, bool), np.zeros(n, bool)
        equivalent, effect = np.zeros(n, np.int64), np.zeros(n, bool)
        for i, env in enumerate(self.envs):
            if self.needs_reset[i]:  # the action is ignored, as in the vector env: every action is equivalent
                obs[i, 0] = env.reset()
                equivalent[i] = (1 << len(env.action_set)) - 1
            else:
                obs[i, 0], reward[i], term[i], trunc[i], equivalent[i], effect[i] = env.step_with_effects(
                    int(actions[i])
                )
        self.needs_reset = term | trunc
        return obs, reward, term, trunc, {"equivalent_actions": equivalent, "action_effect": effect}

    def close(self) -> None:
        self.envs = []


def make_effects_env(rom: str, num_envs: int, size: int, frame_skip: int, full_action_space: bool):
    """The recorder's env with ``action_effects=True`` (see :class:`EffectsEnv`)."""
    return _EffectsVectorEnv(rom, num_envs, size, frame_skip, full_action_space)


def _minimal_action_set(rom: str) -> list[str]:
    import ale_py
    from ale_py import roms

    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)  # no banner per ROM
    ale = ale_py.ALEInterface()
    ale.loadROM(str(roms.get_rom_path(rom)))
    return [a.name for a in ale.getMinimalActionSet()]


def record_atari(
    games: list[str] | str,
    frames: int,
    size: int = 64,
    policy: str = "random",
    seed: int = 0,
    out: str | Path = "data/atari",
    *,
    frame_skip: int = 4,
    envs: int = 8,
    mean_repeat: float = 4.0,
    max_episode_frames: int = 1000,
    overwrite: bool = False,
    progress: bool = True,
    action_effects: bool = False,
    expert_style: str | None = None,
    random_fraction: float = 0.25,
    explore: float | None = None,
) -> Path:
    """Record ``frames`` frames (split evenly over ``games``) into the dataset folder ``out``.

    Returns ``out``. See :class:`RecordAtari` for what each argument means.
    """
    games = [games] if isinstance(games, str) else list(games)
    if not games:
        raise PlayworldError("no game given; pass at least one, e.g. --game Pitfall.")
    if policy == "expert":  # scripted RAM experts (+ some random play), recorded by their own recorder
        if action_effects:
            raise PlayworldError("--action-effects is supported with --policy random only.")
        from playworld.policy.experts import record_atari_expert

        return record_atari_expert(games, frames, size, seed, out, frame_skip=frame_skip,
                                   max_episode_frames=max_episode_frames, overwrite=overwrite, progress=progress,
                                   expert_style=expert_style, random_fraction=random_fraction,
                                   random_repeat=mean_repeat, explore=explore)
    if expert_style not in (None, "default") or explore is not None:
        raise PlayworldError("--expert-style and --explore apply to --policy expert only.")
    if policy != "random":
        raise PlayworldError(f"unknown policy '{policy}'; the Atari recorder supports: random, expert.")
    if frames < 1 or size < 8 or frame_skip < 1 or envs < 1 or mean_repeat < 1 or max_episode_frames < 2:
        raise PlayworldError(
            "need frames >= 1, size >= 8, frame_skip >= 1, envs >= 1, mean_repeat >= 1 and "
            f"max_episode_frames >= 2 (got {frames}, {size}, {frame_skip}, {envs}, {mean_repeat}, {max_episode_frames})."
        )
    roms = [resolve_game(g) for g in games]  # all names checked before any work
    # One action numbering for the whole dataset: the games' own (minimal) action set when
    # they share it, else ALE's full 18-action set, whose ids mean the same in every game.
    full_action_space = len({tuple(_minimal_action_set(r)) for r in roms}) > 1

    per_game = [frames // len(roms) + (k < frames % len(roms)) for k in range(len(roms))]
    extra = {
        "recorder": "atari",
        "games": [display_name(r) for r in roms],
        "policy": policy,
        "mean_repeat": mean_repeat,
        "seed": seed,
        "frame_skip": frame_skip,
        "size": size,
        "full_action_space": full_action_space,
        "noop_max": 30,
        "max_episode_frames": max_episode_frames,
    }
    if action_effects:  # only then, so recordings without the flag keep their meta.json as before
        extra["action_effects"] = True
    with DatasetWriter(
        out,
        fps=ATARI_FPS / frame_skip,
        frame_size=(size, size),
        source="atari",
        extra_meta=extra,
        overwrite=overwrite,
    ) as writer:
        for k, (rom, n) in enumerate(zip(roms, per_game, strict=True)):
            if n == 0:
                continue
            names = _record_game(
                writer,
                rom,
                n,
                size=size,
                seed=seed + 10_000 * k,
                frame_skip=frame_skip,
                envs=envs,
                mean_repeat=mean_repeat,
                max_episode_frames=max_episode_frames,
                full_action_space=full_action_space,
                progress=progress,
                action_effects=action_effects,
            )
            writer.action_names = names  # the same for every game (see full_action_space)
    return Path(out)


def _record_game(
    writer: DatasetWriter,
    rom: str,
    frames: int,
    *,
    size: int,
    seed: int,
    frame_skip: int,
    envs: int,
    mean_repeat: float,
    max_episode_frames: int,
    full_action_space: bool,
    progress: bool,
    action_effects: bool = False,
) -> list[str]:
    """Play ``rom`` with ``envs`` emulators until ``frames`` frames are stored; returns action names."""
    from tqdm import tqdm

    game = display_name(rom)
    n_envs = min(envs, frames)
    quota = np.array([frames // n_envs + (i < frames % n_envs) for i in range(n_envs)])
    if action_effects:
        env = make_effects_env(rom, n_envs, size, frame_skip, full_action_space)
        action_names = list(env.action_names)
    else:
        env = make_atari_env(rom, n_envs, size, frame_skip, full_action_space)
        action_names = [a.name for a in env.ale.get_action_set()]
    n_actions = len(action_names)
    rng = np.random.default_rng(seed)

    obs, _ = env.reset(seed=seed)  # env i is seeded with seed + i
    obs = obs.copy()  # the env reuses its output buffer
    # Per env: the frames/actions/rewards of the run (one env episode) not yet written.
    keys = ["frames", "actions", "rewards"] + (["equivalent_actions", "action_effect"] if action_effects else [])
    buf = [{k: [] for k in keys} for _ in range(n_envs)]
    run = np.zeros(n_envs, dtype=np.int64)  # how many runs env i has finished
    run_start = np.zeros(n_envs, dtype=np.int64)  # run frame index of buf[i]'s first frame
    done = np.zeros(n_envs, dtype=bool)  # the frame in obs[i] is the last of its run
    stored = np.zeros(n_envs, dtype=np.int64)
    action = rng.integers(n_actions, size=n_envs)

    def flush(i: int, keep: int, terminal: bool) -> None:
        """Write buf[i] as episodes of <= max_episode_frames, leaving its last ``keep`` frames."""
        b = buf[i]
        n = len(b["frames"]) - keep
        chunks = math.ceil(n / max_episode_frames)
        bounds = np.linspace(0, n, chunks + 1).round().astype(int)  # even split, no tiny tail
        for c, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
            arrays = None
            if action_effects:
                arrays = {
                    "action_effect": np.array(b["action_effect"][lo:hi], dtype=bool),
                    "equivalent_actions": np.array(b["equivalent_actions"][lo:hi], dtype=np.int64),
                }
            writer.add_episode(
                np.stack(b["frames"][lo:hi]),  # (T, size, size, 3)
                np.array(b["actions"][lo:hi], dtype=np.int64),
                np.array(b["rewards"][lo:hi], dtype=np.float32),
                info=dict(
                    source=game,
                    game=game,
                    env_seed=int(seed + i),
                    run=int(run[i]),
                    run_start=int(run_start[i] + lo),
                    terminal=bool(terminal and c == chunks - 1),
                ),
                arrays=arrays,
            )
        for key in b:
            del b[key][:n]
        run_start[i] += n

    bar = tqdm(total=frames, desc=f"record {game}", unit="frame", disable=not progress, smoothing=0.1)
    try:
        while (stored < quota).any():
            # Sticky random policy: each env draws a new action with probability 1/mean_repeat.
            redraw = rng.random(n_envs) < 1.0 / mean_repeat
            action[redraw] = rng.integers(n_actions, size=int(redraw.sum()))
            active = np.flatnonzero(stored < quota)
            for i in active:
                buf[i]["frames"].append(obs[i, 0])  # obs: (envs, stack=1, size, size, 3)
                buf[i]["actions"].append(action[i])
            obs, reward, terminated, truncated, info = env.step(action)
            obs = obs.copy()  # the env reuses its output buffer
            for i in active:
                buf[i]["rewards"].append(float(reward[i]))
                if action_effects:
                    buf[i]["equivalent_actions"].append(int(info["equivalent_actions"][i]))
                    buf[i]["action_effect"].append(bool(info["action_effect"][i]))
                stored[i] += 1
                if done[i]:  # that frame ended the run; this step reset the env (action ignored)
                    flush(i, keep=0, terminal=True)
                    run[i] += 1
                    run_start[i] = 0
                elif stored[i] == quota[i]:
                    flush(i, keep=0, terminal=False)
                elif len(buf[i]["frames"]) >= 2 * max_episode_frames:
                    # Write a full chunk, but keep >= max_episode_frames so the run's last
                    # chunks can be split evenly (no 3-frame tail episodes).
                    flush(i, keep=len(buf[i]["frames"]) - max_episode_frames, terminal=False)
            done = terminated | truncated
            bar.update(len(active))
    finally:
        bar.close()
        env.close()
    return action_names


def replay_atari_episode(
    dataset: VideoDataset | str | Path, i: int, actions: np.ndarray | None = None
) -> np.ndarray:
    """Re-play episode ``i``'s stored actions (or ``actions``) in a fresh env with its seed.

    Returns the frames the env produces, uint8 (T, H, W, 3); for a faithful recording they
    equal the stored frames. Only the first episode of a run (``run == 0``, ``run_start == 0``)
    can be replayed from a fresh env; later ones continue an earlier emulator state.
    """
    ds = load_dataset(dataset)
    ep = ds.episode(i)
    info, extra = ep["info"], ds.meta.get("extra", {})
    if extra.get("recorder") != "atari":
        raise PlayworldError(
            f"{ds.root} was not recorded by `playworld record atari`; it cannot be replayed."
        )
    if info.get("run") != 0 or info.get("run_start") != 0:
        raise PlayworldError(
            f"episode {i} continues an earlier one (run {info.get('run')}); replay a run's first episode."
        )
    actions = np.asarray(ep["actions"] if actions is None else actions, dtype=np.int64)
    if extra.get("action_effects"):  # recorded with single emulators (EffectsEnv), not the vector env
        env = EffectsEnv(resolve_game(info["game"]), extra["size"], extra["frame_skip"],
                         extra["full_action_space"], int(info["env_seed"]), noop_max=extra.get("noop_max", 30))
        frames = [env.reset()]
        for a in actions[:-1]:
            frames.append(env.step(int(a))[0])
        return np.stack(frames)
    env = make_atari_env(
        resolve_game(info["game"]), 1, extra["size"], extra["frame_skip"], extra["full_action_space"]
    )
    try:
        obs, _ = env.reset(seed=int(info["env_seed"]))
        frames = [obs[0, 0].copy()]
        for a in actions[:-1]:  # the last frame's action leads past the episode
            obs, *_ = env.step(np.array([a], dtype=np.int64))
            frames.append(obs[0, 0].copy())
    finally:
        env.close()
    return np.stack(frames)


@dataclass(kw_only=True)
class RecordAtari:
    """Record Atari games played by a random agent into a playworld dataset."""

    out: Path
    """Dataset folder to create (must not exist unless --overwrite)."""
    game: list[str] = field(default_factory=lambda: ["Pitfall"])
    """One or more games, e.g. `Pitfall MontezumaRevenge` (ALE names; `montezuma_revenge` works too). Frames are split evenly."""
    frames: int = 20000
    """Total frames to record over all games."""
    size: int = 64
    """Frames are stored as RGB size x size (resized in C++ by ale-py)."""
    policy: Literal["random", "expert"] = "random"
    """Who plays: `random` holds a uniformly random action for a random number of steps (mean --mean-repeat); `expert` is a scripted player reading the RAM (Pong, Breakout; 25% of the frames random play, frames cropped to the playfield; the Breakout expert explores: 10% random actions while the ball is far; see playworld.policy.experts)."""
    seed: int = 0
    """Seed of the policy and the emulators; the same seed records the same dataset."""
    frame_skip: int = 4
    """Emulator frames per stored frame (action repeat); fps = 60 / frame_skip (4 -> 15 fps, the usual Atari setting)."""
    envs: int = 8
    """Emulators run in parallel per game (more = more diverse starts, same speed on 2 cores)."""
    mean_repeat: float = 4.0
    """Mean number of steps a random action is held (geometric), so motion is visible."""
    max_episode_frames: int = 1000
    """Long games are cut into episodes of at most this many frames (splits are by episode)."""
    overwrite: bool = False
    """Replace an existing dataset at --out."""
    action_effects: bool = False
    """Also store, per frame, which actions would have given the same next frame as the taken one (`equivalent_actions`, a bitmask) and whether it differs from NOOP's (`action_effect`): every action is tried from the same emulator state. About 20x slower (single emulators, one try per action); for evaluating latent actions."""
    expert_style: str = "default"
    """With --policy expert: the expert's variant (playworld.policy.experts.EXPERT_STYLES; Breakout `follow`: the paddle follows the ball's column, a rule a small policy clones; docs/bridge.md)."""
    random_fraction: float = 0.25
    """With --policy expert: the share of frames played by the random policy (episodes of their own, holding each action --mean-repeat steps on average), for the latent action model to see actions vary."""

    explore: float | None = None
    """With --policy expert: the expert's exploration (probability per step of starting a random action while the ball is far; default: the game's, Pong 0, Breakout 0.1). High exploration makes varied play for a latent action model: expert-like states, actions it cannot predict."""

    def run(self) -> int:
        path = record_atari(
            self.game,
            self.frames,
            self.size,
            self.policy,
            self.seed,
            self.out,
            frame_skip=self.frame_skip,
            envs=self.envs,
            mean_repeat=self.mean_repeat,
            max_episode_frames=self.max_episode_frames,
            overwrite=self.overwrite,
            action_effects=self.action_effects,
            expert_style=None if self.expert_style == "default" else self.expert_style,
            random_fraction=self.random_fraction,
            explore=self.explore,
        )
        ds = load_dataset(path)
        print(f"wrote {ds.num_frames} frames in {ds.num_episodes} episodes to {path}")
        print(f"look at it: playworld data preview {path} --out {Path(path).name}-preview.png")
        return 0
