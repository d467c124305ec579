"""How fast the data foundation is: Atari recording, video ingest, and clip loading.

    .venv/bin/python benchmarks/data_throughput.py            # ~1 minute on 2 cores
    .venv/bin/python benchmarks/data_throughput.py --quick    # smaller, for a smoke test

Prints frames/s for (1) recording Atari at 64x64, (2) ingesting a synthetic 640x360 30 fps
H.264 video to 10 fps 64x64 (both the source frames decoded per second and the frames
written), and (3) loading 16-frame 64x64 clips through ClipDataset + DataLoader (2 workers,
batch 32, shuffled) from a warm page cache.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch
from torch.utils.data import DataLoader

from playworld.data.atari import record_atari
from playworld.data.clips import ClipDataset
from playworld.data.format import load_dataset
from playworld.data.ingest import ingest_videos


def bench_atari(tmp: Path, frames: int) -> float:
    t = time.perf_counter()
    record_atari(["Pitfall"], frames, size=64, out=tmp / "atari", progress=False)
    return frames / (time.perf_counter() - t)


def write_video(path: Path, n: int, fps: int = 30, w: int = 640, h: int = 360) -> None:
    # A blocky random scene scrolling 1 px per frame: every frame differs, and it compresses
    # like real footage rather than like noise (which would make decoding the bottleneck).
    rng = np.random.default_rng(0)
    base = np.kron(
        rng.integers(0, 256, (h // 16, (w + n) // 16 + 1, 3), dtype=np.uint8), np.ones((16, 16, 1), np.uint8)
    )
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"preset": "ultrafast"}
        for i in range(n):
            for p in s.encode(
                av.VideoFrame.from_ndarray(np.ascontiguousarray(base[:, i : i + w]), format="rgb24")
            ):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def bench_ingest(tmp: Path, seconds: int) -> tuple[float, float]:
    video = tmp / "video.mp4"
    write_video(video, 30 * seconds)
    t = time.perf_counter()
    ingest_videos([video], tmp / "ingested", fps=10, size=64, progress=False)
    dt = time.perf_counter() - t
    return 30 * seconds / dt, load_dataset(tmp / "ingested").num_frames / dt


def bench_clips(root: Path, batches: int, workers: int = 2, batch_size: int = 32) -> float:
    ds = ClipDataset(root, clip_len=16, split="all")
    for s in load_dataset(root).shards:  # warm the page cache
        np.asarray(s).sum()
    gen = torch.Generator().manual_seed(0)
    loader = DataLoader(
        ds, batch_size, shuffle=True, num_workers=workers, persistent_workers=True, generator=gen
    )
    it = iter(loader)
    for _ in range(5):  # start the workers
        next(it)
    n, t = 0, time.perf_counter()
    for _ in range(batches):
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            batch = next(it)
        n += batch["frames"].shape[0] * batch["frames"].shape[1]
    return n / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller runs")
    args = p.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        atari = bench_atari(tmp, 4000 if args.quick else 20000)
        print(f"atari record (Pitfall, 64x64, 8 envs):        {atari:9,.0f} frames/s")
        decoded, written = bench_ingest(tmp, 5 if args.quick else 20)
        print(f"ingest (640x360 30fps h264 -> 64x64 10fps):   {decoded:9,.0f} source frames/s decoded")
        print(f"                                              {written:9,.0f} frames/s written")
        clips = bench_clips(tmp / "atari", 50 if args.quick else 300)
        print(f"ClipDataset+DataLoader (16x64x64, 2 workers): {clips:9,.0f} frames/s")


if __name__ == "__main__":
    main()
