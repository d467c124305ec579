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

``--backbone tiny`` runs the ablation at CPU size, where the pretrained part is the vision
encoder only: ``scratch`` is the tiny model with its conv encoder trained from scratch, the
other two arms use the frozen ImageNet EfficientNet-lite0 (``--tiny-vision efficientnet``), and
``--vqa-lexicon`` / ``--vqa-scenes N`` give the co-fine-tune arm's VQA the synonyms and the
objects the robot data lacks (the breadth of web data; docs/vla.md). The model options (``--image-size``, ``--wrist-size``,
``--plan-locate``, ``--cell-pointer``) apply to every arm; an arm whose folder already holds a
model is evaluated, not retrained, and a suite already evaluated with the same settings
(``<arm>/eval-ablation/<suite>/``) is read, not rerun: run one invocation per arm (``--arms
scratch`` ...) in parallel, then one with every arm for the table.

    python benchmarks/vla_ablation.py --backbone tiny --data data/tabletop-pick-dart1500-128w \
        --out runs/vla-ablation-tiny --image-size 128 --wrist-size 64 --plan-locate image --cell-pointer \
        --vqa-lexicon --vqa-scenes 3000 --robot-fraction 0.7 --steps 5000 --batch-size 32 --lr 1e-3 --tasks pick \
        --suites seen unseen-objects unseen-instructions --eval-episodes 50 --max-steps 100 --threads 1

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
    ap.add_argument("--image-size", type=int, default=0, help="every arm (0: the backbone's default)")
    ap.add_argument("--wrist-size", type=int, default=0, help="every arm: also read the wrist camera (0: no)")
    ap.add_argument("--plan-locate", default="", choices=["", "table", "image"], help="every arm: located plans")
    ap.add_argument("--cell-pointer", action="store_true", help="every arm (with --plan-locate image)")
    ap.add_argument("--vqa-lexicon", action="store_true", help="the co-fine-tune arm's VQA also uses synonyms")
    ap.add_argument("--vqa-scenes", type=int, default=0, help="the co-fine-tune arm's VQA-only scenes (web stand-in)")
    ap.add_argument("--tasks", nargs="+", default=[], help="evaluate only these task families (e.g. pick)")
    ap.add_argument("--vqa-per-episode", type=int, default=4, help="VQA questions per evaluation episode")
    args = ap.parse_args()

    import torch

    from playworld.eval.vla_eval import EvalVLA
    from playworld.policy.train_vla import TrainVLA
    from playworld.train.loop import TrainConfig
    from playworld.utils import machine_info

    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "machine": machine_info(), "arms": {}}
    tiny = args.backbone == "tiny"
    for arm in args.arms:
        backbone, fraction, scratch, lexicon, scenes = args.backbone, 1.0, False, False, 0
        vision = "efficientnet" if tiny else ""  # tiny: the pretrained part is the vision encoder
        if arm == "scratch":
            scratch = not tiny
            if tiny:
                vision = "conv"
            elif args.scratch_backbone == "tiny":
                backbone, scratch = "tiny", False
        elif arm == "co-fine-tune":
            fraction, lexicon, scenes = args.robot_fraction, args.vqa_lexicon, args.vqa_scenes
        out = args.out / arm
        start = time.perf_counter()
        if not (out / "model.safetensors").exists():
            TrainVLA(
                data=args.data, out=out, backbone=backbone, robot_fraction=fraction, from_scratch=scratch,
                episodes=args.episodes, tiny_vision=vision if backbone == "tiny" else "", image_size=args.image_size,
                wrist_size=args.wrist_size, plan_locate=args.plan_locate, cell_pointer=args.cell_pointer,
                vqa_lexicon=lexicon, vqa_scenes=scenes, threads=args.threads, resume=True,  # a cut arm continues
                train=TrainConfig(
                    steps=args.steps, batch_size=args.batch_size, lr=args.lr if backbone != "tiny" else 1e-3,
                    warmup_steps=min(50, args.steps // 10), num_workers=0, eval_every=max(1, args.steps // 4),
                    sample_every=0, ckpt_every=max(1, args.steps // 2),
                ),
            ).run()
        train_s = time.perf_counter() - start
        summary = json.loads((out / "train_summary.json").read_text())
        config = json.loads((out / "config.json").read_text())
        arm_result = {"backbone": backbone, "from_scratch": scratch, "robot_fraction": fraction,
                      "tiny_vision": config.get("tiny_vision"), "vqa_lexicon": config.get("vqa_lexicon", False),
                      "vqa_scenes": config.get("vqa_scenes", 0),
                      "train_seconds": train_s, "final_train_logs": summary, "suites": {}}
        for suite in args.suites:
            # one folder per suite; a finished evaluation with the same settings is read, not rerun
            # (so arms can be evaluated by parallel invocations with --arms, then tabled together)
            where = out / "eval-ablation" / suite
            settings = {"episodes": args.eval_episodes, "max_steps": args.max_steps, "tasks": list(args.tasks),
                        "vqa_per_episode": args.vqa_per_episode}
            done = where / "settings.json"
            if done.exists() and json.loads(done.read_text()) == settings:
                rep = json.loads((where / "vla_eval.json").read_text())
            else:
                rep = EvalVLA(policy=out, suite=suite, episodes=args.eval_episodes, max_steps=args.max_steps,
                              gif_episodes=1, out=where, tasks=tuple(args.tasks), threads=args.threads,
                              vqa_per_episode=args.vqa_per_episode).run()
                done.write_text(json.dumps(settings))
            if suite in rep["suites"]:  # a suite without the --tasks families is skipped
                arm_result["suites"][suite] = rep["suites"][suite]
        results["arms"][arm] = arm_result
        (args.out / "ablation.json").write_text(json.dumps(results, indent=2))

    suites = [s for s in args.suites if all(s in r["suites"] for r in results["arms"].values())]
    unseen = [s for s in suites if s != "seen"]
    print("\n| arm | " + " | ".join(suites) + " | unseen average | VQA (first suite) | ctrl Hz |")
    print("|---|" + "---|" * (len(suites) + 3))
    for arm, r in results["arms"].items():
        cells = []
        for suite in suites:
            s = r["suites"][suite]
            lo, hi = s["ci95"]
            cells.append(f"{s['successes']}/{s['episodes']} = {100 * s['success_rate']:.0f}% [{100 * lo:.0f}-{100 * hi:.0f}]")
        avg = sum(r["suites"][s]["success_rate"] for s in unseen) / len(unseen) if unseen else float("nan")
        first = r["suites"][suites[0]]
        vqa = first["vqa_accuracy"]
        print(f"| {arm} | " + " | ".join(cells) + f" | {100 * avg:.0f}% | {'-' if vqa is None else f'{100 * vqa:.0f}%'}"
              f" | {first['control_hz']:.1f} |")
    print(f"\nwrote {args.out / 'ablation.json'}")


if __name__ == "__main__":
    main()
