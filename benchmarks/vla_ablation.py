"""RT-2's ablation (Table 6) in miniature: from scratch vs fine-tune vs co-fine-tune.

    python benchmarks/vla_ablation.py --data data/tabletop --out runs/vla-ablation
    python benchmarks/vla_ablation.py --data data/tabletop --out runs/vla-ablation \\
        --steps 2000 --batch-size 8 --episodes 30 --suites seen unseen-objects unseen-instructions

Three arms, each trained with ``playworld train vla`` and evaluated with ``playworld eval vla``
(the same commands a user runs), on the same data, steps and batch size:

- ``scratch``      the backbone's architecture with random weights, robot data only
                   (``--from-scratch --robot-fraction 1``; ``--scratch-backbone tiny`` swaps in
                   the small from-scratch model, far cheaper on a CPU);
- ``fine-tune``    pretrained backbone (LoRA), robot data only (``--robot-fraction 1``);
- ``co-fine-tune`` pretrained backbone (LoRA), robot data + VQA about the same scenes
                   (``--robot-fraction 0.5``; RT-2 used ~50-66% robot data).

RT-2 reports unseen-average success of 9% / 42-52% / 44-63% for the three. Results go to
``<out>/ablation.json`` and a markdown table on stdout: success rate with its 95% interval
per suite, VQA accuracy, and the validation action-token accuracy at the end of training.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ARMS = ("scratch", "fine-tune", "co-fine-tune")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="LeRobot folder from `playworld record tabletop`")
    ap.add_argument("--out", type=Path, default=Path("runs/vla-ablation"))
    ap.add_argument("--backbone", default="pretrained", help="backbone of the fine-tune arms (pretrained or an HF folder)")
    ap.add_argument("--scratch-backbone", default="same", help="'same' (random weights) or 'tiny'")
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--episodes", type=int, default=0, help="training episodes (0 = all)")
    ap.add_argument("--robot-fraction", type=float, default=0.5, help="of the co-fine-tune arm")
    ap.add_argument("--suites", nargs="+", default=["seen", "unseen-objects", "unseen-instructions"])
    ap.add_argument("--eval-episodes", type=int, default=10)
    ap.add_argument("--max-steps", type=int, default=80)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()

    import torch

    from playworld.eval.vla_eval import EvalVLA, machine_info
    from playworld.policy.train_vla import TrainVLA
    from playworld.train.loop import TrainConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "machine": machine_info(), "arms": {}}
    for arm in args.arms:
        backbone, fraction, scratch = args.backbone, 1.0, False
        if arm == "scratch":
            scratch = True
            if args.scratch_backbone == "tiny":
                backbone, scratch = "tiny", False
        elif arm == "co-fine-tune":
            fraction = args.robot_fraction
        out = args.out / arm
        start = time.perf_counter()
        if not (out / "model.safetensors").exists():
            TrainVLA(
                data=args.data, out=out, backbone=backbone, robot_fraction=fraction, from_scratch=scratch,
                episodes=args.episodes,
                train=TrainConfig(
                    steps=args.steps, batch_size=args.batch_size, lr=args.lr if backbone != "tiny" else 1e-3,
                    warmup_steps=min(50, args.steps // 10), num_workers=0, eval_every=max(1, args.steps // 4),
                    sample_every=0, ckpt_every=max(1, args.steps // 2),
                ),
            ).run()
        train_s = time.perf_counter() - start
        summary = json.loads((out / "train_summary.json").read_text())
        arm_result = {"backbone": backbone, "from_scratch": scratch, "robot_fraction": fraction,
                      "train_seconds": train_s, "final_train_logs": summary, "suites": {}}
        for suite in args.suites:
            rep = EvalVLA(policy=out, suite=suite, episodes=args.eval_episodes, max_steps=args.max_steps,
                          gif_episodes=1, out=out / "eval").run()
            arm_result["suites"][suite] = rep["suites"][suite]
        results["arms"][arm] = arm_result
        (args.out / "ablation.json").write_text(json.dumps(results, indent=2))

    print("\n| arm | " + " | ".join(args.suites) + " | VQA (seen) | ctrl Hz |")
    print("|---|" + "---|" * (len(args.suites) + 2))
    for arm, r in results["arms"].items():
        cells = []
        for suite in args.suites:
            s = r["suites"][suite]
            lo, hi = s["ci95"]
            cells.append(f"{100 * s['success_rate']:.0f}% [{100 * lo:.0f}-{100 * hi:.0f}]")
        seen = r["suites"][args.suites[0]]
        vqa = seen["vqa_accuracy"]
        print(f"| {arm} | " + " | ".join(cells) + f" | {'-' if vqa is None else f'{100 * vqa:.0f}%'} | {seen['control_hz']:.1f} |")
    print(f"\nwrote {args.out / 'ablation.json'}")


if __name__ == "__main__":
    main()
