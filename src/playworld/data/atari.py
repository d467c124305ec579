"""Record Atari games into a playworld dataset (``playworld record atari``).

ale-py's ``AtariVectorEnv`` runs several emulators in C++ threads and resizes frames there,
so recording is fast. Each sub-environment ``i`` of a game is seeded with ``env_seed`` (stored
per episode) and the env has no sticky actions (``repeat_action_probability=0``), so the
stored actions replay bit-exactly from a fresh env: see :func:`replay_atari_episode`.

The random policy holds each random action for a geometric number of steps (mean
``mean_repeat``): uniformly random actions every step mostly jitter in place, held ones walk,
jump and climb, which is the motion a world model has to learn.
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
) -> Path:
    """Record ``frames`` frames (split evenly over ``games``) into the dataset folder ``out``.

    Returns ``out``. See :class:`RecordAtari` for what each argument means.
    """
    games = [games] if isinstance(games, str) else list(games)
    if not games:
        raise PlayworldError("no game given; pass at least one, e.g. --game Pitfall.")
    if policy == "expert":  # scripted RAM experts (+ some random play), recorded by their own recorder
        from playworld.policy.experts import record_atari_expert

        return record_atari_expert(games, frames, size, seed, out, frame_skip=frame_skip,
                                   max_episode_frames=max_episode_frames, overwrite=overwrite, progress=progress)
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
) -> list[str]:
    """Play ``rom`` with ``envs`` emulators until ``frames`` frames are stored; returns action names."""
    from tqdm import tqdm

    game = display_name(rom)
    n_envs = min(envs, frames)
    quota = np.array([frames // n_envs + (i < frames % n_envs) for i in range(n_envs)])
    env = make_atari_env(rom, n_envs, size, frame_skip, full_action_space)
    action_names = [a.name for a in env.ale.get_action_set()]
    n_actions = len(action_names)
    rng = np.random.default_rng(seed)

    obs, _ = env.reset(seed=seed)  # env i is seeded with seed + i
    obs = obs.copy()  # the env reuses its output buffer
    # Per env: the frames/actions/rewards of the run (one env episode) not yet written.
    buf = [{"frames": [], "actions": [], "rewards": []} for _ in range(n_envs)]
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
            obs, reward, terminated, truncated, _ = env.step(action)
            obs = obs.copy()  # the env reuses its output buffer
            for i in active:
                buf[i]["rewards"].append(float(reward[i]))
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
    """Who plays: `random` holds a uniformly random action for a random number of steps (mean --mean-repeat); `expert` is a scripted player reading the RAM (Pong only; 25% of the frames random play, frames cropped to the playfield; see playworld.policy.experts)."""
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
        )
        ds = load_dataset(path)
        print(f"wrote {ds.num_frames} frames in {ds.num_episodes} episodes to {path}")
        print(f"look at it: playworld data preview {path} --out {Path(path).name}-preview.png")
        return 0
