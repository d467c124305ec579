"""Control rate of the VLA policy on this machine: actions per second in closed loop.

    python benchmarks/vla_control_rate.py                          # pretrained backbone, bf16 and fp32
    python benchmarks/vla_control_rate.py --policy runs/vla        # a trained policy
    python benchmarks/vla_control_rate.py --backbone tiny --threads 1 2
    python benchmarks/vla_control_rate.py --paths fast reference --dtypes bfloat16 --threads 1

Times ``VLAPolicy.select_action`` (image encoder + image/prompt prefix + 8 constrained action
tokens on the KV cache; plan models also write their plan first, every step or with
``--hold-plan`` at the first step only) on real tabletop frames rendered at the model's camera
sizes (and its wrist camera's, if it reads one), after a warm-up, for each dtype and thread
count. Without ``--policy`` the model is freshly built: its weights are untrained but the
computation per step is exactly a trained model's (LoRA adds its matrices either way). RT-2:
about 5 Hz for the 5B model, 1-3 Hz for 55B, both served from a cloud TPU.

``--paths``: ``fast`` is ``VLAPolicy``'s default (LoRA merged into the base weights, fused
projections, lean one-token decode step on ATen's matrix-vector kernel); ``int8`` is ``fast``
with ``int8_decode=True`` (the decode steps read int8 copies of the decoder's weights; SmolLM2,
bf16 only); ``reference`` is ``VLAPolicy(..., fast=False)`` (LoRA adapters applied on every call,
every step through the Hugging Face forward). All run on copies of the same model on the same
frames; the benchmark checks that ``fast`` and ``reference`` choose the same actions on the
first frames, and prints how many of ``int8``'s action tokens equal ``fast``'s.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", type=Path, default=None, help="a trained VLA folder (default: build one)")
    ap.add_argument("--backbone", default="pretrained", help="when building: tiny | pretrained | HF folder")
    ap.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"])
    ap.add_argument("--paths", nargs="+", default=["fast"], choices=["fast", "int8", "reference"])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--hold-plan", action="store_true",
                    help="plan models: write the plan at the first step only, as `playworld eval vla --hold-plan` "
                         "(default: a new plan before every action, RT-2)")
    ap.add_argument("--no-draft", action="store_true",
                    help="greedy steps do not read the previous action in as a draft (VLAPolicy(draft_actions=False))")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args()

    import copy

    import torch

    from playworld.envs.tabletop import Tabletop
    from playworld.envs.tabletop.env import STATE_HIGH, STATE_LOW
    from playworld.policy.action_tokenizer import ActionTokenizer
    from playworld.policy.backbones import WordTokenizer
    from playworld.policy.vla import VLA, VLAConfig
    from playworld.policy.vla_policy import VLAPolicy
    from playworld.policy.vqa import tabletop_corpus
    from playworld.utils import machine_info

    def build() -> VLA:
        if args.policy:
            return VLA.from_pretrained(args.policy)
        tok = ActionTokenizer([0, -0.04, -0.04, -0.04, -0.25, -0.25, -0.25, 0], [1, 0.04, 0.04, 0.04, 0.25, 0.25, 0.25, 1])
        if args.backbone == "tiny":
            cfg = VLAConfig.preset("tiny", vocab=tuple(WordTokenizer.build(tabletop_corpus(20)).vocab))
        else:
            cfg = VLAConfig.preset("pretrained", backbone=args.backbone)
        cfg.action_tokenizer = tok.to_dict()
        cfg.use_state = True  # as `playworld train vla` trains it
        cfg.state_q01, cfg.state_q99 = tuple(STATE_LOW.tolist()), tuple(STATE_HIGH.tolist())
        return VLA(cfg)

    results = {"machine": machine_info(), "hold_plan": args.hold_plan, "runs": []}
    model = build()
    # frames as the model was trained on them: its camera size, and the wrist camera if it reads one
    camera, wrist = model.config.render_sizes()
    env = Tabletop(image_size=camera, wrist_size=wrist)
    obs, info = env.reset(seed=0)
    frames = [obs]
    for _ in range(args.steps + args.warmup - 1):
        obs, *_ = env.step(env.action_space.sample() * np.array([0, 1, 1, 1, 0, 0, 0, 1], np.float32))
        frames.append(obs)
    env.close()
    for dtype in args.dtypes:
        first_actions, timed_actions = {}, {}
        for path in args.paths:
            policy = VLAPolicy(copy.deepcopy(model), dtype=dtype, fast=path != "reference", hold_plan=args.hold_plan,
                               int8_decode=path == "int8", draft_actions=not args.no_draft)
            for threads in args.threads:
                torch.set_num_threads(threads)
                policy.reset(seed=0)
                for f in frames[: args.warmup]:
                    policy.select_action(f, info["instruction"])
                    first_actions.setdefault((path, threads), []).append(policy.last_action_text)
                policy.step_seconds.clear()
                policy.draft_tokens = [0, 0]
                cpu = []
                t0 = time.perf_counter()
                texts = []
                for f in frames[args.warmup :]:
                    c0 = time.process_time()
                    policy.select_action(f, info["instruction"])
                    cpu.append(time.process_time() - c0)
                    texts.append(policy.last_action_text)
                timed_actions[(path, threads)] = texts
                wall = (time.perf_counter() - t0) / args.steps
                ms = 1000 * np.array(policy.step_seconds)
                run = {
                    "backbone": policy.model.config.backbone,
                    "path": path,
                    "dtype": dtype,
                    "threads": threads,
                    "control_hz": 1000 / float(ms.mean()),
                    "ms_mean": float(ms.mean()),
                    "ms_median": float(np.median(ms)),
                    "ms_p90": float(np.percentile(ms, 90)),
                    "wall_ms_per_action": 1000 * wall,
                    # CPU time the process spent per action (all its threads): on a machine shared
                    # with other jobs, wall time also counts the waiting; with 1 thread, 1000 / this
                    # is the rate on an idle core
                    "cpu_ms_per_action": 1000 * float(np.mean(cpu)),
                    "cpu_ms_median": 1000 * float(np.median(cpu)),
                    "control_hz_idle_core_estimate": 1.0 / float(np.mean(cpu)) if threads == 1 else None,
                    "load_average_1min": os.getloadavg()[0],
                    "draft_tokens_kept": policy.draft_tokens[0],
                    "draft_tokens_proposed": policy.draft_tokens[1],
                }
                results["runs"].append(run)
                print(f"{run['backbone']:<12} {path:<9} {dtype:<9} threads {threads}: {run['control_hz']:.1f} Hz "
                      f"(wall mean {run['ms_mean']:.0f} ms, median {run['ms_median']:.0f}, p90 {run['ms_p90']:.0f}; "
                      f"CPU time median {run['cpu_ms_median']:.0f}, mean {run['cpu_ms_per_action']:.0f} ms/action; "
                      f"load average {run['load_average_1min']:.1f}"
                      + (f"; draft tokens kept {policy.draft_tokens[0]}/{policy.draft_tokens[1]}" if policy.draft_tokens[1] else "")
                      + ")", flush=True)
        exact = {k: v for k, v in first_actions.items() if k[0] != "int8"}
        if len({tuple(v) for v in exact.values()}) > 1:
            print(f"  {dtype}: the paths chose different first actions (within {dtype} rounding): {exact}")
        for (path, threads), texts in timed_actions.items():
            ref = timed_actions.get(("fast", threads))
            if path == "int8" and ref is not None:  # the same frames: how often int8 writes fast's tokens
                pairs = [  # a "no-op" text (no action decoded) counts as differing tokens
                    (a, b) for x, y in zip(texts, ref, strict=True) for a, b in zip(x.split(), y.split(), strict=False)
                ]
                same = sum(a == b for a, b in pairs)
                off = [abs(int(a) - int(b)) for a, b in pairs if a != b and a.isdigit() and b.isdigit()]
                results.setdefault("int8_agreement", []).append(
                    {"threads": threads, "tokens": len(pairs), "same": same, "max_bin_offset": max(off, default=0)}
                )
                print(f"  int8 vs fast, threads {threads}: {same}/{len(pairs)} action tokens the same "
                      f"({100 * same / max(len(pairs), 1):.1f}%; differing tokens off by up to {max(off, default=0)} bins)")
    print(f"machine: {results['machine']}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
