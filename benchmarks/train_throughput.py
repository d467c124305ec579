"""Training throughput of the three Genie models: samples/s, tokens/s and model FLOPs utilisation.

    .venv/bin/python benchmarks/train_throughput.py                       # every model x preset x precision
    .venv/bin/python benchmarks/train_throughput.py --models tokenizer --presets tiny --precisions bf16
    .venv/bin/python benchmarks/train_throughput.py --quick               # tiny presets only, 2 steps

One training step is exactly what ``playworld.train.loop.Trainer`` runs: autocast forward of
``training_step``, backward, gradient clipping, AdamW step; on synthetic inputs (64x64 frames),
so data loading is not measured (see ``benchmarks/data_throughput.py`` for that).

- samples/s: clips per second. tokens/s: clips/s x transformer tokens per clip (tokenizer and
  LAM: patches per frame x frames; dynamics: token grid x frames).
- FLOPs per step are counted with ``torch.utils.flop_counter.FlopCounterMode`` (matmuls and
  attention, forward and backward) on one step; ``6 * params * tokens`` is printed beside it as
  the usual analytic estimate (it ignores attention and counts embeddings, so it can be far off
  for small models with large vocabularies).
- MFU = counted FLOPs per second / the device's *measured* dense matmul rate in the step's
  precision (a large bf16 or fp32 matmul, timed here). On a GPU that is the usual MFU against
  the measured bf16 matmul peak; on a CPU it says how far the step is from the best the CPU
  does on one big matmul.

A preset whose step would take longer than ``--max-step-s`` (estimated from ``6 * params *
tokens`` at 25% of the measured matmul rate, then measured on the warm-up step) is skipped and
reported as such: the base presets are GPU-sized.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from playworld.world.dynamics import DynamicsConfig, DynamicsModel
from playworld.world.latent_actions import LatentActionConfig, LatentActionModel
from playworld.world.tokenizer import VideoTokenizer, VideoTokenizerConfig

FRAME = (64, 64)
CLIP_LEN = {"tokenizer": 4, "lam": 4, "dynamics": 8}  # frames per training clip
CPU_BATCH = {"tiny": 4, "small": 2, "base": 1}
GPU_BATCH = {"tiny": 64, "small": 32, "base": 16}


def build(model: str, preset: str) -> tuple[torch.nn.Module, int]:
    """(model, transformer tokens per clip)."""
    T = CLIP_LEN[model]
    if model == "tokenizer":
        m = VideoTokenizer(VideoTokenizerConfig.preset(preset, image_size=FRAME))
        h, w = m.config.token_grid
        return m, T * h * w
    if model == "lam":
        m = LatentActionModel(LatentActionConfig.preset(preset, image_size=FRAME))
        p = m.config.patch_size
        return m, T * ((FRAME[0] // p) * (FRAME[1] // p) + 1)
    m = DynamicsModel(DynamicsConfig.preset(preset, num_codes=1024, token_grid=(16, 16), num_actions=8, max_frames=16))
    return m, T * 16 * 16


def inputs(model: str, batch: int, device: torch.device) -> tuple:
    T = CLIP_LEN[model]
    g = torch.Generator(device="cpu").manual_seed(0)
    if model == "dynamics":
        tokens = torch.randint(0, 1024, (batch, T, 16, 16), generator=g)
        actions = torch.randint(0, 8, (batch, T - 1), generator=g)
        return tokens.to(device), actions.to(device)
    return (torch.rand(batch, T, 3, *FRAME, generator=g).to(device),)


def train_step(model, opt, args, precision: str, device: torch.device) -> None:
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        loss, _ = model.training_step(*args)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype, seconds: float = 2.0) -> float:
    """Measured dense matmul FLOP/s: the best of repeated n x n x n products."""
    n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b  # warm-up (kernel selection)
    sync(device)
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t = time.perf_counter()
        for _ in range(4):
            a @ b
        sync(device)
        best = max(best, 4 * 2 * n**3 / (time.perf_counter() - t))
    return best


def count_flops(model, opt, args, precision: str, device: torch.device) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        train_step(model, opt, args, precision, device)
    return float(counter.get_total_flops())


def bench(model_name: str, preset: str, precision: str, device: torch.device, batch: int, steps: int,
          max_step_s: float, peaks: dict[str, float]) -> dict | None:
    torch.manual_seed(0)
    model, tokens_per_clip = build(model_name, preset)
    model = model.to(device).train()
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    args = inputs(model_name, batch, device)
    row = {"model": model_name, "preset": preset, "precision": precision, "params_m": params / 1e6, "batch": batch}
    # Skip before spending minutes: 6 * params * tokens at an optimistic 25% of the matmul peak.
    estimate = 6 * params * batch * tokens_per_clip / (0.25 * peaks[precision])
    if estimate > max_step_s:
        return {**row, "skipped": f"~{estimate:.0f} s/step estimated > --max-step-s {max_step_s:.0f}"}
    t = time.perf_counter()
    train_step(model, opt, args, precision, device)  # warm-up: allocations, VQ data init, kernels
    sync(device)
    first = time.perf_counter() - t
    if first > max_step_s:
        return {**row, "skipped": f"warm-up step took {first:.0f} s > --max-step-s {max_step_s:.0f}"}
    flops = count_flops(model, opt, args, precision, device)
    n = max(1, min(steps, int(max_step_s * 2 / max(first, 1e-3))))
    times = []
    for _ in range(n):  # the fastest step: on a shared machine the others include waiting for a core
        sync(device)
        t = time.perf_counter()
        train_step(model, opt, args, precision, device)
        sync(device)
        times.append(time.perf_counter() - t)
    dt = min(times)
    return {
        **row,
        "step_s": dt,
        "samples_s": batch / dt,
        "tokens_s": batch * tokens_per_clip / dt,
        "gflop_step": flops / 1e9,
        "gflop_6nd": 6 * params * batch * tokens_per_clip / 1e9,
        "steps_timed": n,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["tokenizer", "lam", "dynamics"], choices=["tokenizer", "lam", "dynamics"])
    p.add_argument("--presets", nargs="+", default=["tiny", "small", "base"], choices=["tiny", "small", "base"])
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--batch", type=int, default=None, help="clips per step (default: per preset and device)")
    p.add_argument("--steps", type=int, default=5, help="timed steps (fewer when a step is slow)")
    p.add_argument("--max-step-s", type=float, default=120.0, help="skip a preset whose warm-up step is slower")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--quick", action="store_true", help="tiny presets, 2 timed steps")
    a = p.parse_args()
    if a.quick:
        a.presets, a.steps = ["tiny"], 2
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device("cuda" if a.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if a.device == "auto" else a.device))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    peaks = {prec: matmul_peak(device, torch.bfloat16 if prec == "bf16" else torch.float32) for prec in a.precisions}
    print(f"device: {name}; measured matmul peak: "
          + ", ".join(f"{k} {v / 1e12:.3f} TFLOP/s" for k, v in peaks.items()))
    print(f"frames {FRAME[0]}x{FRAME[1]}; clip length {CLIP_LEN}; one step = forward + backward + clip + AdamW; "
          "s/step = fastest timed step")
    head = (f"{'model':<10}{'preset':<7}{'prec':<6}{'params':>8}{'batch':>6}{'s/step':>9}{'samples/s':>11}"
            f"{'tokens/s':>11}{'GFLOP/step':>12}{'6ND GFLOP':>11}{'MFU':>8}")
    rows = []
    for model in a.models:
        for preset in a.presets:
            for prec in a.precisions:
                batch = a.batch or (GPU_BATCH if device.type == "cuda" else CPU_BATCH)[preset]
                r = bench(model, preset, prec, device, batch, a.steps, a.max_step_s, peaks)
                rows.append(r)
                print(f"  measured {model} {preset} {prec}: "
                      + (r["skipped"] if "skipped" in r else f"{r['step_s']:.3f} s/step"), flush=True)
                # The best matmul rate seen over the whole run is the peak (a shared machine's is noisy).
                peaks[prec] = max(peaks[prec], matmul_peak(device, torch.bfloat16 if prec == "bf16" else torch.float32, 1.0))
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    print("\nmatmul peak (best seen): " + ", ".join(f"{k} {v / 1e12:.3f} TFLOP/s" for k, v in peaks.items()) + "\n")
    print(head)
    print("-" * len(head))
    for r in rows:
        lead = f"{r['model']:<10}{r['preset']:<7}{r['precision']:<6}{r['params_m']:>7.1f}M{r['batch']:>6}"
        if "skipped" in r:
            print(f"{lead}  skipped: {r['skipped']}")
            continue
        mfu = r["gflop_step"] * 1e9 / r["step_s"] / peaks[r["precision"]]
        print(f"{lead}{r['step_s']:>9.3f}{r['samples_s']:>11.2f}{r['tokens_s']:>11,.0f}"
              f"{r['gflop_step']:>12.1f}{r['gflop_6nd']:>11.1f}{mfu:>7.1%}")
    assert math.isfinite(sum(peaks.values()))


if __name__ == "__main__":
    main()
