"""Record scripted-expert tabletop episodes as a LeRobot v3.0 dataset (``playworld record tabletop``).

Episode ``k`` of a recording is the suite's episode for seed ``episode_seed(seed, k)``, run by
the scripted expert. Only successful episodes are written (the expert solves ~all of them; the
rest are reported), in attempt order, so the same command writes the same dataset whatever
``--workers`` is. Workers are separate processes started with the *spawn* method: PyBullet's
C++ state does not survive a fork.

Each episode's row in ``meta/episodes`` also records ``playworld/suite``, ``playworld/task``
(the task family), ``playworld/episode_seed`` and ``playworld/spec`` (the full episode spec as
JSON), so any episode can be rebuilt with ``Tabletop().reset(options={"episode": spec})``.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playworld.errors import PlayworldError
from playworld.utils import get_logger

log = get_logger("data.tabletop")

CAMERA = "front"
WRIST_CAMERA = "wrist"  # observation.images.wrist, with --wrist-size

# -- workers (one Tabletop env per process) ------------------------------------------------------

_env = None
_suite = None
_noise = (0.0, 1.0)  # (action_noise, noise_prob)


def _init_worker(env_kwargs: dict[str, Any], noise: tuple[float, float] = (0.0, 1.0)) -> None:
    global _env, _suite, _noise
    from playworld.envs.tabletop import Tabletop

    _env = Tabletop(**env_kwargs)
    _suite = _env.suite
    _noise = noise


def _run_attempt(job: tuple[int, int]) -> dict[str, Any]:
    """Run attempt ``k`` of the recording with seed ``seed``; returns the expert's episode."""
    from playworld.envs.tabletop import run_expert_episode
    from playworld.envs.tabletop.tasks import episode_seed

    seed, k = job
    spec = _suite.sample(episode_seed(seed, k))
    result = run_expert_episode(
        _env, episode=spec, action_noise=_noise[0], noise_prob=_noise[1], noise_seed=[seed, k, 7]
    )
    result["attempt"] = k
    return result


def _attempts(
    env_kwargs: dict[str, Any], seed: int, max_attempts: int, workers: int, noise: tuple[float, float] = (0.0, 1.0)
) -> Iterator[dict[str, Any]]:
    """Expert episodes for attempts 0, 1, 2, ... in order (lazily; stop iterating to stop)."""
    jobs = ((seed, k) for k in range(max_attempts))
    if workers <= 1:
        _init_worker(env_kwargs, noise)
        try:
            yield from map(_run_attempt, jobs)
        finally:
            _env.close()
        return
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers, initializer=_init_worker, initargs=(env_kwargs, noise)) as pool:
        # imap keeps attempt order; chunksize 1 so no worker sits on a queue of unneeded jobs
        yield from pool.imap(_run_attempt, jobs, chunksize=1)


# -- recording ----------------------------------------------------------------------------------


@dataclass
class RecordReport:
    """What a recording did."""

    path: Path
    episodes: int
    frames: int
    attempts: int
    seconds: float
    attempts_by_task: dict[str, int] = field(default_factory=dict)
    successes_by_task: dict[str, int] = field(default_factory=dict)

    @property
    def success_rate(self) -> float:
        return self.episodes / max(self.attempts, 1)

    def summary(self) -> str:
        per_task = ", ".join(
            f"{t} {self.successes_by_task.get(t, 0)}/{n}" for t, n in sorted(self.attempts_by_task.items())
        )
        return (
            f"recorded {self.episodes} episodes ({self.frames} frames) to {self.path} in {self.seconds:.0f}s "
            f"({60 * self.episodes / max(self.seconds, 1e-9):.0f} episodes/min); expert success "
            f"{self.episodes}/{self.attempts} = {100 * self.success_rate:.1f}% ({per_task})"
        )


def record_tabletop(
    out: str | Path,
    episodes: int,
    suite: str = "seen",
    tasks: tuple[str, ...] = (),
    workers: int = 2,
    size: int = 128,
    seed: int = 0,
    max_steps: int = 120,
    overwrite: bool = False,
    progress: bool = True,
    action_noise: float = 0.0,
    noise_prob: float = 0.3,
    wrist_size: int = 0,
) -> RecordReport:
    """Record ``episodes`` successful expert episodes into a LeRobot v3.0 folder at ``out``.

    ``action_noise > 0``: DART recovery data - the executed actions of a share ``noise_prob`` of
    the steps get Gaussian noise, the recorded actions are the expert's clean ones (see
    :func:`~playworld.envs.tabletop.run_expert_episode`).

    ``wrist_size > 0`` also records the palm camera (:class:`~playworld.envs.tabletop.scene.WristCamera`)
    as a second video stream, ``observation.images.wrist``; the fixed camera stays the first one."""
    from tqdm import tqdm

    from playworld.data.lerobot import LeRobotWriter
    from playworld.envs.tabletop import ACTION_NAMES, STATE_NAMES, TabletopConfig, get_suite

    config = TabletopConfig(
        suite=suite, tasks=tuple(tasks), image_size=size, max_steps=max_steps, terminate_on_success=False,
        wrist_size=wrist_size,
    )
    get_suite(suite, tasks or None)  # unknown suite / task -> PlayworldError before any work
    env_kwargs = {
        "suite": suite,
        "tasks": tuple(tasks),
        "image_size": size,
        "wrist_size": wrist_size,
        "max_steps": max_steps,
        "terminate_on_success": False,  # the expert finishes its motion and says terminate itself
    }
    # Failures are rare; the cap only stops a hopeless configuration from running forever.
    max_attempts = 2 * episodes + 20
    attempts_by_task: Counter[str] = Counter()
    successes_by_task: Counter[str] = Counter()
    attempts = frames = 0
    start = time.perf_counter()
    writer = LeRobotWriter(
        out,
        fps=config.control_hz,
        cameras={CAMERA: (size, size), **({WRIST_CAMERA: (wrist_size, wrist_size)} if wrist_size else {})},
        state_names=STATE_NAMES,
        action_names=ACTION_NAMES,
        robot_type="panda",
        episode_columns={
            "playworld/suite": "string",
            "playworld/task": "string",
            "playworld/episode_seed": "int64",
            "playworld/spec": "string",
        },
        overwrite=overwrite,
    )
    with (
        writer,
        tqdm(total=episodes, desc=f"record tabletop/{suite}", unit="ep", disable=not progress) as bar,
    ):
        stream = _attempts(env_kwargs, seed, max_attempts, workers, (action_noise, noise_prob if action_noise > 0 else 0.0))
        try:
            for result in stream:
                attempts += 1
                spec = result["episode"]
                attempts_by_task[spec["family"]] += 1
                if not result["success"]:
                    log.debug("expert failed attempt %d: %s", result["attempt"], result["instruction"])
                    continue
                successes_by_task[spec["family"]] += 1
                writer.add_episode(
                    {CAMERA: result["frames"], **({WRIST_CAMERA: result["wrist_frames"]} if wrist_size else {})},
                    result["states"],
                    result["actions"],
                    task=result["instruction"],
                    extra={
                        "playworld/suite": spec["suite"],
                        "playworld/task": spec["family"],
                        "playworld/episode_seed": int(spec["seed"]),
                        "playworld/spec": json.dumps(spec),
                    },
                )
                frames += len(result["actions"])
                bar.update(1)
                if writer.num_episodes == episodes:
                    break
        finally:
            stream.close()  # stops the worker pool
        if writer.num_episodes < episodes:
            raise PlayworldError(
                f"the expert solved only {writer.num_episodes} of {attempts} {suite} episodes "
                f"(needed {episodes}); nothing was written. Try another --seed or --suite."
            )
        report = RecordReport(
            Path(out),
            writer.num_episodes,
            frames,
            attempts,
            0.0,
            dict(attempts_by_task),
            dict(successes_by_task),
        )
        writer.extra_meta = {
            "recorder": "playworld record tabletop",
            "suite": suite,
            "tasks": list(tasks),
            "seed": seed,
            "size": size,
            "wrist_size": wrist_size,
            "max_steps": max_steps,
            "action_noise": action_noise,
            "noise_prob": noise_prob if action_noise > 0 else 0.0,
            "control_hz": config.control_hz,
            "attempts": attempts,
            "episodes": writer.num_episodes,
            "expert_success_rate": report.success_rate,
            "attempts_by_task": dict(attempts_by_task),
            "successes_by_task": dict(successes_by_task),
        }
    report.seconds = time.perf_counter() - start
    return report


@dataclass(kw_only=True)
class RecordTabletop:
    """Record scripted-expert robot tabletop episodes (PyBullet Panda) as a LeRobot v3.0 dataset."""

    out: Path
    """Dataset folder to create (must not exist unless --overwrite)."""
    episodes: int = 50
    """Number of successful episodes to write (failed expert attempts are skipped and counted)."""
    suite: str = "seen"
    """Episode distribution: seen (for training), unseen-objects, unseen-instructions, symbols, reasoning."""
    tasks: tuple[str, ...] = ()
    """Only these task families (pick push put_in_tray put_next_to stack put_on_symbol); default: all of the suite's."""
    workers: int = 2
    """Simulator processes (spawned); 1 runs in this process."""
    size: int = 128
    """Camera images are size x size RGB (even, 16..1024)."""
    seed: int = 0
    """Seed of the episode list; the same seed writes the same dataset."""
    max_steps: int = 120
    """Control steps (10 Hz) before an episode is cut off as a failure."""
    action_noise: float = 0.0
    """DART recovery data: std (m) of Gaussian noise on the executed dx, dy, dz (5x in rad on dyaw); the recorded action stays the expert's clean one, so demos show recoveries from drift (0 = clean; docs/vla.md)."""
    noise_prob: float = 0.3
    """With --action-noise: share of steps perturbed (the clean steps between let the expert reach its waypoints)."""
    wrist_size: int = 0
    """Also record the camera in the palm of the hand (looking between the fingers) at wrist_size x wrist_size px, as observation.images.wrist (0 = none, RT-2's one fixed camera)."""
    overwrite: bool = False
    """Replace an existing dataset at --out."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self):
        if self.episodes < 1:
            raise PlayworldError(f"--episodes must be >= 1, got {self.episodes}.")
        if self.workers < 1:
            raise PlayworldError(f"--workers must be >= 1, got {self.workers}.")
        if self.size % 2 or not 16 <= self.size <= 1024:
            raise PlayworldError(
                f"--size must be an even number in [16, 1024] (H.264 needs even sizes), got {self.size}."
            )
        if self.wrist_size and (self.wrist_size % 2 or not 16 <= self.wrist_size <= 1024):
            raise PlayworldError(f"--wrist-size must be 0 or an even number in [16, 1024], got {self.wrist_size}.")
        if not 0 <= self.action_noise <= 0.05:
            raise PlayworldError(f"--action-noise must be in [0, 0.05] metres, got {self.action_noise}.")
        if not 0 < self.noise_prob <= 1:
            raise PlayworldError(f"--noise-prob must be in (0, 1], got {self.noise_prob}.")
        if self.max_steps < 10:
            raise PlayworldError(
                f"--max-steps must be >= 10 (the expert needs ~30-40), got {self.max_steps}."
            )
        from playworld.envs.tabletop import get_suite

        get_suite(self.suite, self.tasks or None)

    def run(self) -> int:
        report = record_tabletop(
            self.out,
            self.episodes,
            suite=self.suite,
            tasks=self.tasks,
            workers=self.workers,
            size=self.size,
            seed=self.seed,
            max_steps=self.max_steps,
            overwrite=self.overwrite,
            progress=self.progress,
            action_noise=self.action_noise,
            noise_prob=self.noise_prob,
            wrist_size=self.wrist_size,
        )
        print(report.summary())
        print(
            f"read it: python -c \"from playworld.data.lerobot import load_lerobot; print(load_lerobot('{report.path}'))\""
        )
        return 0
