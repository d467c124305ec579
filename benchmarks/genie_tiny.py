"""End-to-end Genie on this machine: record Atari -> train a world -> evaluate. Prints wall-clock and metrics.

    python benchmarks/genie_tiny.py --frames 20000 --out runs/bench-genie
    python benchmarks/genie_tiny.py --data data/platformers --out runs/bench-genie   # reuse a dataset

Everything goes through the public commands (the same ones the README shows), so the numbers
are what a user gets. Results are also written to <out>/benchmark.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None, help="existing dataset (default: record one)")
    ap.add_argument("--games", nargs="+", default=["Pitfall", "MontezumaRevenge"])
    ap.add_argument("--frames", type=int, default=20000)
    ap.add_argument("--out", type=Path, default=Path("runs/bench-genie"))
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--tokenizer-steps", type=int, default=None)
    ap.add_argument("--lam-steps", type=int, default=None)
    ap.add_argument("--dynamics-steps", type=int, default=None)
    ap.add_argument("--clips", type=int, default=64, help="test clips to evaluate")
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args()

    from playworld.data.atari import record_atari
    from playworld.eval.world_eval import evaluate_world, print_table
    from playworld.train.commands import TrainWorld
    from playworld.world.world import World

    timings = {}
    data = args.data
    if data is None:
        data = args.out / "data"
        t0 = time.perf_counter()
        if not data.exists():
            record_atari(games=args.games, frames=args.frames, size=64, policy="random", seed=0, out=data)
        timings["record_s"] = round(time.perf_counter() - t0, 1)
    cmd = TrainWorld(data=data, out=args.out / "world", preset=args.preset, resume=args.resume)
    for name in ("tokenizer_steps", "lam_steps", "dynamics_steps"):
        if getattr(args, name) is not None:
            setattr(cmd, name, getattr(args, name))
    t0 = time.perf_counter()
    cmd.run()
    timings["train_world_s"] = round(time.perf_counter() - t0, 1)
    parts = args.out / "world" / "train_world.json"  # per part, written by `train world`
    if parts.exists():
        timings.update(json.loads(parts.read_text()))
    t0 = time.perf_counter()
    res = evaluate_world(World.from_pretrained(args.out / "world"), data, num_clips=args.clips)
    timings["eval_s"] = round(time.perf_counter() - t0, 1)
    res.update(timings)
    res["machine"] = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    res["steps"] = {"tokenizer": cmd.tokenizer_steps, "lam": cmd.lam_steps, "dynamics": cmd.dynamics_steps}
    print_table(res)
    (args.out / "benchmark.json").write_text(json.dumps(res, indent=2))
    print(json.dumps(timings))


if __name__ == "__main__":
    main()
