"""How fast the robot tabletop runs: env steps/s with rendering, and expert episodes recorded/min.

    .venv/bin/python benchmarks/tabletop.py              # ~1-2 minutes on 2 cores
    .venv/bin/python benchmarks/tabletop.py --quick      # a smoke test

Prints (1) control steps/s of one env in this process (10 Hz control, 24 physics substeps,
a 128x128 TinyRenderer image every step), with the scripted expert choosing the actions,
also without rendering to show where the time goes; (2) aggregate steps/s of N envs in
spawned worker processes (startup excluded); (3) expert episodes recorded per minute by
``playworld record tabletop`` end to end (workers, video encoding, parquet), and the expert's
success rate on each suite.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from playworld.data.tabletop import record_tabletop
from playworld.envs.tabletop import SUITES, ScriptedExpert, Tabletop, get_suite, run_expert_episode


def run_steps(env: Tabletop, steps: int, seed: int = 0) -> int:
    """Step ``env`` ``steps`` times with the expert (resetting as episodes end); returns steps."""
    expert = ScriptedExpert(env)
    env.reset(seed=seed)
    expert.reset()
    for _ in range(steps):
        *_, terminated, truncated, _ = env.step(expert.act())
        if terminated or truncated:
            env.reset()
            expert.reset()
    return steps


def steps_per_second(size: int, steps: int, render: bool = True) -> tuple[float, float]:
    """(steps per wall-clock second, steps per CPU second of this process)."""
    env = Tabletop(image_size=size, render_images=render, terminate_on_success=False)
    run_steps(env, 20)  # warm caches
    t, c = time.perf_counter(), time.process_time()
    run_steps(env, steps, seed=1)
    rates = steps / (time.perf_counter() - t), steps / (time.process_time() - c)
    env.close()
    return rates


_worker_env: Tabletop | None = None


def _init(size: int) -> None:
    global _worker_env
    _worker_env = Tabletop(image_size=size, terminate_on_success=False)
    run_steps(_worker_env, 5)


def _work(job: tuple[int, int]) -> tuple[int, float]:
    steps, seed = job
    c = time.process_time()
    return run_steps(_worker_env, steps, seed), time.process_time() - c


def parallel_steps_per_second(workers: int, size: int, steps: int) -> tuple[float, float]:
    """(aggregate steps per wall-clock second, the same if every worker had a core to itself)."""
    with mp.get_context("spawn").Pool(workers, initializer=_init, initargs=(size,)) as pool:
        pool.map(_work, [(1, i) for i in range(workers)])  # every worker started and warm
        t = time.perf_counter()
        results = pool.map(_work, [(steps, 10 + i) for i in range(workers)])
        wall = time.perf_counter() - t
    done = sum(n for n, _ in results)
    return done / wall, sum(n / cpu for n, cpu in results)


def _cpu_seconds() -> float:
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer steps and episodes")
    ap.add_argument("--size", type=int, default=128, help="camera image size")
    ap.add_argument("--workers", type=int, default=2, help="worker processes")
    ap.add_argument("--episodes", type=int, default=None, help="episodes to record (default 60, quick 10)")
    ap.add_argument(
        "--success-episodes", type=int, default=None, help="expert episodes per suite (default 50)"
    )
    args = ap.parse_args()
    steps = 100 if args.quick else 600
    episodes = args.episodes or (10 if args.quick else 60)
    per_suite = args.success_episodes or (10 if args.quick else 50)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"tabletop benchmark: {args.size}x{args.size} images, 10 Hz control, "
        f"{mp.cpu_count()} CPUs, load average {load:.1f}"
    )
    # CPU-second rates say what an otherwise idle machine would do when others share the CPUs.
    one, one_cpu = steps_per_second(args.size, steps)
    blind, blind_cpu = steps_per_second(args.size, steps, render=False)
    print(
        f"  1 process : {one:7.1f} steps/s with rendering ({one_cpu:.0f} per CPU-second); "
        f"physics + IK only {blind:.0f} steps/s ({blind_cpu:.0f} per CPU-second)"
    )
    many, many_idle = parallel_steps_per_second(args.workers, args.size, steps)
    print(
        f"  {args.workers} workers : {many:7.1f} steps/s with rendering, aggregate over spawned processes "
        f"({many_idle:.0f} if each had a free core)"
    )

    cpu0 = _cpu_seconds()
    with tempfile.TemporaryDirectory() as tmp:
        report = record_tabletop(
            Path(tmp) / "rec", episodes, workers=args.workers, size=args.size, seed=0, progress=False
        )
    cpu = _cpu_seconds() - cpu0  # this process + the (finished) workers
    print(
        f"  recording : {60 * report.episodes / report.seconds:7.1f} expert episodes/min "
        f"({report.episodes} episodes, {report.frames} frames, {args.workers} workers, LeRobot v3 output; "
        f"{cpu:.0f} CPU-seconds, so ~{60 * report.episodes * args.workers / cpu:.0f}/min on {args.workers} free cores)"
    )

    env = Tabletop(render_images=False, terminate_on_success=False)
    print(f"expert success over {per_suite} episodes per suite (seed 0):")
    for suite in SUITES:
        ok = [
            run_expert_episode(env, episode=ep, record=False)["success"]
            for ep in get_suite(suite).episodes(per_suite)
        ]
        print(f"  {suite:<20} {100 * np.mean(ok):5.1f}%  ({sum(ok)}/{len(ok)})")
    env.close()


if __name__ == "__main__":
    main()
