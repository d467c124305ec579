"""How fast a world plays: World.step in-process, end to end through the WebSocket, and MaskGIT steps.

    .venv/bin/python benchmarks/play_fps.py                      # the bundled world
    .venv/bin/python benchmarks/play_fps.py --world path/to/world --steps 200
    .venv/bin/python benchmarks/play_fps.py --data data/atari64   # real next-frame PSNR per MaskGIT setting
    .venv/bin/python benchmarks/play_fps.py --fake               # the tests' FakeWorld (server overhead only)

Prints, for the world:
1. in-process: frames/s and p50/p95 latency of ``World.step`` on one fork (after a warm-up);
2. end to end: the same through the play server (uvicorn on a free loopback port, started in
   this process, fps cap off): a WebSocket client sends ``step`` and waits for the binary frame,
   N times; so this adds JSON, the worker thread hop, the frame bytes and loopback TCP;
3. the speed/quality trade-off of MaskGIT decoding: if the World has a settable
   ``maskgit_steps``, frames/s for steps in (1, 2, 4, 8, 25) and next-frame PSNR. With
   ``--data DATASET`` (test episodes at the world's frame size) the PSNR is the eval code's
   ``evaluate_world(world, data, maskgit_steps=s)["next_frame_psnr"]`` (generated vs real next
   frame, latent actions inferred from the real clip); without it, a proxy printed as such:
   PSNR of each setting's frames against the 25-step frames for the same prompt, seed and actions.
and the process's peak RSS (one world + one player must stay under 1.5 GiB).
Target: >= 20 frames/s at 64x64 on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

from playworld.serve.app import FRAME_HEADER, create_app
from playworld.serve.server import BackgroundServer

MASKGIT_SWEEP = (1, 2, 4, 8, 25)
PROXY = "proxy: PSNR vs the 25-step frames (pass --data for real next-frame PSNR)"
ROOT = Path(__file__).resolve().parent.parent


def load(args):
    if args.fake:
        sys.path.insert(0, str(ROOT / "tests"))
        import tempfile

        from fake_world import FakeWorld, write_sample_prompts

        folder = Path(tempfile.mkdtemp()) / "prompts"
        write_sample_prompts(folder)
        return FakeWorld(prompts_dir=folder)
    from playworld.serve.commands import load_world

    return load_world(args.world)


def prompt_of(world):
    samples = world.sample_prompts()
    if samples:
        return samples[0]
    h, w = world.frame_size
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


def summary(latencies_s: list[float]) -> dict:
    ms = np.asarray(latencies_s) * 1000
    return {
        "fps": round(float(len(ms) / (ms.sum() / 1000)), 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
    }


def actions_for(world, n: int, seed: int = 0) -> list[int]:
    return np.random.default_rng(seed).integers(0, world.num_actions, size=n).tolist()


def bench_in_process(world, steps: int, warmup: int) -> dict:
    player = world.fork()
    player.reset(prompt_of(world), seed=0)
    for a in actions_for(world, warmup, 1):
        player.step(a)
    player.reset(prompt_of(world), seed=0)
    lat = []
    for a in actions_for(world, steps):
        t = time.perf_counter()
        player.step(a)
        lat.append(time.perf_counter() - t)
    return summary(lat)


def bench_websocket(world, steps: int, warmup: int) -> dict:
    from websockets.sync.client import connect

    app = create_app(world, max_sessions=1, fps_cap=0)
    with BackgroundServer(app) as server, connect(server.ws_url, max_size=None) as ws:

        def frame() -> bytes:
            while True:
                msg = ws.recv()
                if isinstance(msg, bytes):
                    return msg
                if json.loads(msg)["type"] == "error":
                    raise RuntimeError(msg)

        frame()  # hello, reset and the prompt frame
        for a in actions_for(world, warmup, 1):
            ws.send(json.dumps({"type": "step", "action": a}))
            frame()
        ws.send(json.dumps({"type": "reset", "seed": 0}))
        frame()
        lat, model_ms = [], []
        for a in actions_for(world, steps):
            t = time.perf_counter()
            ws.send(json.dumps({"type": "step", "action": a}))
            data = frame()
            lat.append(time.perf_counter() - t)
            model_ms.append(FRAME_HEADER.unpack(data[: FRAME_HEADER.size])[3])
    out = summary(lat)
    out["model_p50_ms"] = round(float(np.median(model_ms)), 2)
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def next_frame_psnr(world, data: Path, maskgit_steps: int, clips: int) -> float:
    """The eval code's next-frame PSNR (dB) of ``world`` on ``data`` at ``maskgit_steps``."""
    from playworld.eval.world_eval import evaluate_world

    res = evaluate_world(world, data, num_clips=clips, maskgit_steps=maskgit_steps, frechet=False)
    return res["next_frame_psnr"]


def bench_maskgit(
    world, steps: int, warmup: int, data: Path | None = None, clips: int = 16
) -> list[dict] | None:
    if not hasattr(world, "maskgit_steps"):
        return None
    default = world.maskgit_steps
    actions = actions_for(world, steps)
    reference = None
    rows = []
    try:
        for s in sorted(MASKGIT_SWEEP, reverse=True):  # 25 first: the proxy's reference
            world.maskgit_steps = s
            player = world.fork()
            player.maskgit_steps = s
            player.reset(prompt_of(world), seed=1)
            for a in actions_for(world, warmup, 1):
                player.step(a)
            player.reset(prompt_of(world), seed=0)
            lat, frames = [], []
            for a in actions:
                t = time.perf_counter()
                frames.append(player.step(a).copy())
                lat.append(time.perf_counter() - t)
            row = {"maskgit_steps": s, **summary(lat)}
            if data is not None:
                row["psnr_db"] = round(float(next_frame_psnr(world, data, s, clips)), 2)
            else:
                if reference is None:
                    reference = frames
                row["psnr_vs_25_steps_db"] = round(
                    float(np.mean([psnr(x, y) for x, y in zip(frames, reference, strict=True)])), 2
                )
            rows.append(row)
    finally:
        world.maskgit_steps = default
    return sorted(rows, key=lambda r: r["maskgit_steps"])


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--world", type=Path, default=None, help="world folder (default: the bundled world)")
    p.add_argument("--fake", action="store_true", help="use the tests' FakeWorld (measures the server alone)")
    p.add_argument("--steps", type=int, default=100, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads for this process")
    p.add_argument("--no-sweep", action="store_true", help="skip the MaskGIT steps sweep")
    p.add_argument("--data", type=Path, default=None, help="dataset for next-frame PSNR per MaskGIT setting")
    p.add_argument("--quality-clips", type=int, default=16, help="test clips per MaskGIT setting with --data")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = p.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    world = load(args)
    h, w = world.frame_size
    name = "FakeWorld" if args.fake else str(args.world or "bundled world")
    result = {"world": name, "frame_size": [h, w], "num_actions": world.num_actions}
    result["in_process"] = bench_in_process(world, args.steps, args.warmup)
    result["websocket"] = bench_websocket(world, args.steps, args.warmup)
    if not args.no_sweep:
        sweep_steps, sweep_warmup = max(10, args.steps // 4), min(args.warmup, 3)
        result["maskgit"] = bench_maskgit(world, sweep_steps, sweep_warmup, args.data, args.quality_clips)
        result["quality_source"] = f"next_frame_psnr on {args.data}" if args.data else PROXY
    result["peak_rss_mib"] = round(peak_rss_mib(), 1)
    if args.json:
        print(json.dumps(result))
        return
    print(f"{name}: {w}x{h}, {world.num_actions} latent actions, {args.steps} steps")
    for key, title in (("in_process", "World.step in-process"), ("websocket", "end to end (WebSocket)")):
        r = result[key]
        extra = f"  (model {r['model_p50_ms']} ms)" if "model_p50_ms" in r else ""
        print(
            f"  {title:<26} {r['fps']:>7.1f} frames/s   p50 {r['p50_ms']:>7.2f} ms   p95 {r['p95_ms']:>7.2f} ms{extra}"
        )
    if result.get("maskgit"):
        print(f"  MaskGIT steps sweep (quality: {result['quality_source']})")
        for r in result["maskgit"]:
            q = r.get("psnr_db", r.get("psnr_vs_25_steps_db"))
            print(
                f"    steps {r['maskgit_steps']:>2}: {r['fps']:>7.1f} frames/s   p50 {r['p50_ms']:>7.2f} ms   PSNR {q:>6} dB"
            )
    elif "maskgit" in result:
        print("  MaskGIT sweep: this world has no settable maskgit_steps")
    print(f"  peak RSS {result['peak_rss_mib']:.0f} MiB (budget 1536 MiB for one world + one player)")
    verdict = "meets" if result["websocket"]["fps"] >= 20 else "misses"
    print(f"  {verdict} the >= 20 frames/s target end to end")


if __name__ == "__main__":
    from playworld.errors import PlayworldError

    try:
        main()
    except PlayworldError as e:
        sys.exit(f"error: {e}")
