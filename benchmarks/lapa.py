"""LAPA vs labelled-only: does latent action pretraining on action-free video help the VLA?

    python benchmarks/lapa.py --data data/tabletop-clean150 --out runs/lapa --labelled 10 --seeds 0 1 2
    python benchmarks/lapa.py --data DIR --out /tmp/lapa-quick --quick       # a smoke run: checks the pipeline

Issue #7, item 4 (LAPA, arXiv 2410.11758), on one tabletop dataset, with the public commands:

1. a latent action model trained on every episode, actions unused (``playworld train lam``
   machinery; or ``--lam DIR``), shared by all seeds;
2. **LAPA**: ``playworld train vla --latent-lam LAM`` on all episodes (the VLA learns to write
   the LAM's latent actions; no action is read), then ``--init`` that model and fine-tune on the
   first ``--labelled M`` episodes with their real actions;
3. **labelled-only**: the same VLA trained from scratch on the same M episodes with the same
   fine-tuning steps, batch and learning rate;
   with ``--shuffled-control``, a third arm **shuffled-lapa**: LAPA's two stages with the latent
   codes permuted across all transitions (``--latent-shuffle``): the same pretraining (answer
   lengths, plans, steps) with latent tokens that say nothing about the video, so LAPA - shuffled
   is the part of the gain that comes from the latent actions themselves;
4. all evaluated with ``playworld eval vla`` on ``seen`` and the unseen suites.

Prints and writes (``OUT/lapa.md``, ``OUT/lapa.json``) success with its 95% Wilson interval per
suite and arm (episodes pooled over seeds, and per seed), the unseen average (episodes pooled
over the unseen suites), and the LAPA - labelled-only difference on it with a 95% interval
(Newcombe's hybrid score interval). The target is LAPA > labelled-only on the unseen average;
the table says "met" only when the interval of the difference is above 0, "not shown" when LAPA
is ahead but the interval includes 0, "missed" otherwise. Trained models are
reused when their folder holds a model, and an interrupted training continues from its latest
checkpoint, so a cut run picks up where it stopped.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

LAM_CPU = dict(patch_size=16, dim=64, head_dim=32, enc_depth=2, dec_depth=2)  # CPU minutes (benchmarks/latent_bc.py)
LAM_QUICK = dict(patch_size=16, dim=32, head_dim=16, enc_depth=1, dec_depth=1)
UNSEEN = ("unseen-objects", "unseen-instructions")  # RT-2's "unseen" = new objects / new words for them


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="LeRobot tabletop folder (`playworld record tabletop`)")
    ap.add_argument("--out", type=Path, default=Path("runs/lapa"))
    ap.add_argument("--lam", type=Path, default=None, help="a trained LAM for this frame size (default: train one into OUT/lam)")
    ap.add_argument("--lam-steps", type=int, default=600)
    ap.add_argument("--lam-clip-len", type=int, default=6)
    ap.add_argument("--lam-camera", default=None,
                    help="the camera the LAM reads (e.g. wrist: the arm's own motion); default the data's first")
    ap.add_argument("--lam-patch", type=int, default=16, help="patch size of the LAM trained here")
    ap.add_argument("--lam-encoder-input", default="frames", choices=["frames", "diff", "frames+diff"],
                    help="what the LAM trained here encodes (docs/bridge.md)")
    ap.add_argument("--lam-no-encoder-positions", action="store_true",
                    help="the LAM trained here has no spatial positions in its encoder")
    ap.add_argument("--labelled", type=int, default=10, help="M: the first M episodes keep their actions")
    ap.add_argument("--pretrain-steps", type=int, default=1000)
    ap.add_argument("--finetune-steps", type=int, default=500, help="of the LAPA fine-tuning and of the labelled-only arm")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--latent-horizon", type=int, default=4)
    ap.add_argument("--robot-fraction", type=float, default=1.0, help="of every training stage (1 = no VQA)")
    ap.add_argument("--image-size", type=int, default=0, help="0: the tiny backbone's 64")
    ap.add_argument("--tiny-vision", default="conv", choices=["conv", "efficientnet"], help="every arm's vision encoder")
    ap.add_argument("--wrist-size", type=int, default=0, help="every arm also reads the wrist camera (0: no)")
    ap.add_argument("--plan-locate", default="", choices=["", "table", "image"],
                    help="every stage writes a located plan before its tokens (LAPA pretraining: before the latent "
                         "tokens; the plan comes from the instruction and the layout, never from actions)")
    ap.add_argument("--cell-pointer", action="store_true", help="with --plan-locate image: the cell word points at an image token")
    ap.add_argument("--shuffled-control", action="store_true",
                    help="add the shuffled-lapa arm: LAPA with its latent codes permuted across transitions")
    ap.add_argument("--tasks", nargs="+", default=[], help="evaluate only these task families (e.g. pick)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--suites", nargs="+", default=["seen", *UNSEEN])
    ap.add_argument("--eval-episodes", type=int, default=10)
    ap.add_argument("--max-steps", type=int, default=60)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="tiny everything: checks the pipeline, not the result")
    args = ap.parse_args(argv)
    if args.quick:
        args.lam_steps, args.lam_clip_len, args.labelled = 10, 4, 2
        args.pretrain_steps, args.finetune_steps, args.batch_size = 3, 3, 4
        args.eval_episodes, args.max_steps, args.image_size = 1, 3, 32
        args.suites = ["seen", UNSEEN[0]]
    if not set(args.suites) & set(UNSEEN):
        ap.error(f"--suites needs at least one unseen suite ({', '.join(UNSEEN)}) for the unseen average.")
    return args


def run(args: argparse.Namespace) -> dict:
    import torch

    from playworld.eval.metrics import confidence_interval_95
    from playworld.eval.vla_eval import EvalVLA
    from playworld.policy.train_latent import train_lam
    from playworld.policy.train_vla import TrainVLA
    from playworld.train.loop import TrainConfig
    from playworld.utils import machine_info

    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    result: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "machine": machine_info(), "seeds": {}}
    timings: dict[str, float] = {}

    lam = args.lam
    if lam is None:
        lam = args.out / "lam"
        if not (lam / "model.safetensors").exists():
            t0 = time.perf_counter()
            size = LAM_QUICK if args.quick else {**LAM_CPU, "patch_size": args.lam_patch}
            train_lam(args.data, lam, "tiny", steps=args.lam_steps, clip_len=args.lam_clip_len, num_actions=8,
                      batch_size=4 if args.quick else 8, progress=False, camera=args.lam_camera,
                      encoder_input=args.lam_encoder_input, encoder_positions=not args.lam_no_encoder_positions, **size)
            timings["lam"] = time.perf_counter() - t0

    def tcfg(steps: int, seed: int) -> TrainConfig:
        return TrainConfig(steps=steps, batch_size=args.batch_size, lr=args.lr, warmup_steps=max(1, min(100, steps // 10)),
                           num_workers=0, eval_every=0 if args.quick else max(1, steps // 2), sample_every=0,
                           ckpt_every=max(1, steps // 2), seed=seed, progress=False)

    def train(out: Path, key: str, **kwargs) -> Path:
        if not (out / "model.safetensors").exists():
            t0 = time.perf_counter()
            TrainVLA(data=args.data, out=out, robot_fraction=args.robot_fraction, image_size=args.image_size,
                     tiny_vision=args.tiny_vision, wrist_size=args.wrist_size, threads=args.threads,
                     plan_locate=args.plan_locate, cell_pointer=args.cell_pointer, resume=True, **kwargs).run()
            timings[key] = timings.get(key, 0.0) + time.perf_counter() - t0
        return out

    for seed in args.seeds:
        root = args.out / f"seed{seed}"
        def pretrain(out: Path, seed: int = seed, **extra) -> Path:  # LAPA's stage 2 (the control: shuffled codes)
            return train(out, "pretrain", latent_lam=lam, latent_horizon=args.latent_horizon,
                         latent_clip_len=args.lam_clip_len, latent_camera=args.lam_camera,
                         train=tcfg(args.pretrain_steps, seed), **extra)

        pre = pretrain(root / "lapa-pretrain")
        arms = {
            "lapa": train(root / "lapa-finetune", "finetune", init=pre, episodes=args.labelled,
                          train=tcfg(args.finetune_steps, seed)),
            "labelled-only": train(root / "labelled-only", "labelled-only", episodes=args.labelled,
                                   train=tcfg(args.finetune_steps, seed)),
        }
        if args.shuffled_control:
            shuffled = pretrain(root / "shuffled-pretrain", latent_shuffle=True)
            arms["shuffled-lapa"] = train(root / "shuffled-finetune", "finetune", init=shuffled,
                                          episodes=args.labelled, train=tcfg(args.finetune_steps, seed))
        seed_result = {"pretrain": {**_json(pre / "train_summary.json"), **_last_val(pre),
                                    "labels": _json(pre / "latent_labels.json")}, "arms": {}}
        for arm, folder in arms.items():
            suites = {}
            for suite in args.suites:
                m = _cached_eval(folder / f"eval-{suite}", suite, args)
                if m is None:
                    t0 = time.perf_counter()
                    rep = EvalVLA(policy=folder, suite=suite, episodes=args.eval_episodes, max_steps=args.max_steps,
                                  vqa_per_episode=0, gif_episodes=0, threads=args.threads, tasks=tuple(args.tasks),
                                  out=folder / f"eval-{suite}").run()
                    timings["eval"] = timings.get("eval", 0.0) + time.perf_counter() - t0
                    m = rep["suites"][suite]
                suites[suite] = {k: m[k] for k in ("successes", "episodes", "success_rate", "ci95", "mean_steps")}
            seed_result["arms"][arm] = {"train": {**_json(folder / "train_summary.json"), **_last_val(folder)},
                                        "suites": suites}
        result["seeds"][str(seed)] = seed_result
        (args.out / "lapa.json").write_text(json.dumps(result, indent=2))

    # pooled over seeds, then the unseen average pooled over the unseen suites
    pooled: dict = {}
    for arm in next(iter(result["seeds"].values()))["arms"]:
        rows = {}
        for suite in [*args.suites, "unseen-average"]:
            names = [s for s in args.suites if s in UNSEEN] if suite == "unseen-average" else [suite]
            s = sum(r["arms"][arm]["suites"][n]["successes"] for r in result["seeds"].values() for n in names)
            n = sum(r["arms"][arm]["suites"][n]["episodes"] for r in result["seeds"].values() for n in names)
            rows[suite] = {"successes": s, "episodes": n, "success_rate": s / n, "ci95": list(confidence_interval_95(s, n))}
        pooled[arm] = rows
    a, b = pooled["lapa"]["unseen-average"], pooled["labelled-only"]["unseen-average"]
    from playworld.eval.metrics import newcombe_interval

    lo, hi = newcombe_interval(a["successes"], a["episodes"], b["successes"], b["episodes"])
    result["pooled"] = pooled
    ahead = a["success_rate"] > b["success_rate"]
    result["unseen_difference"] = {
        "lapa_minus_labelled_only": a["success_rate"] - b["success_rate"], "ci95": [lo, hi], "lapa_ahead": ahead,
        "ci_excludes_zero": lo > 0, "verdict": "met" if lo > 0 else ("not shown" if ahead else "missed"),
    }
    if "shuffled-lapa" in pooled:
        c = pooled["shuffled-lapa"]["unseen-average"]
        lo, hi = newcombe_interval(a["successes"], a["episodes"], c["successes"], c["episodes"])
        result["unseen_difference_vs_shuffled"] = {"lapa_minus_shuffled": a["success_rate"] - c["success_rate"],
                                                   "ci95": [lo, hi]}
    result["seconds"] = timings
    (args.out / "lapa.json").write_text(json.dumps(result, indent=2))
    table = markdown_table(result, args)
    (args.out / "lapa.md").write_text(table + "\n")
    print(table)
    print(f"\nwrote {args.out / 'lapa.md'} and {args.out / 'lapa.json'}")
    return result


def _cached_eval(folder: Path, suite: str, args: argparse.Namespace) -> dict | None:
    """The metrics of an earlier evaluation of this model on the same episodes, if there is one."""
    rep = _json(folder / "vla_eval.json")
    m = rep.get("suites", {}).get(suite)
    if (m is None or m["episodes"] != args.eval_episodes or rep.get("max_steps", args.max_steps) != args.max_steps
            or list(rep.get("tasks", [])) != list(args.tasks)):
        return None
    return m


def _last_val(folder: Path) -> dict:
    """The last validation metrics (``val_*``) of a training run's metrics.jsonl."""
    path, last = folder / "metrics.jsonl", {}
    if path.exists():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if any(k.startswith("val_") for k in row):
                last = {k: v for k, v in row.items() if k.startswith("val_")}
    return last


def _json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _cell(r: dict) -> str:
    lo, hi = r["ci95"]
    return f"{r['successes']}/{r['episodes']} = {100 * r['success_rate']:.0f}% [{100 * lo:.0f}-{100 * hi:.0f}]"


def markdown_table(r: dict, args: argparse.Namespace) -> str:
    cols = [*args.suites, "unseen-average"]
    seeds = list(r["seeds"])
    lines = [
        f"LAPA vs labelled-only on {args.data}: LAM {args.lam or 'trained here'}"
        f"{f' on the {args.lam_camera} camera' if args.lam_camera else ''}, pretraining {args.pretrain_steps} steps "
        f"on all episodes without actions (latent horizon {args.latent_horizon}), fine-tuning / labelled-only "
        f"{args.finetune_steps} steps on the first {args.labelled} episodes; batch {args.batch_size}, lr {args.lr}; "
        f"{args.eval_episodes} episodes per suite and seed (max {args.max_steps} steps"
        f"{', tasks ' + ' '.join(args.tasks) if args.tasks else ''}), seeds {', '.join(seeds)}.",
        "",
    ]
    for seed, s in r["seeds"].items():
        lab, pre = s["pretrain"].get("labels", {}), s["pretrain"]
        lines.append(
            f"seed {seed}: latent codes used {lab.get('latent_codes_used')}/{lab.get('num_latent_actions')}, "
            f"NMI(latent, motion) {lab.get('nmi_latent_motion', '-')}, pretraining latent-token accuracy "
            f"train {pre.get('latent_token_acc', float('nan')):.3f} / held-out episodes {pre.get('val_latent_token_acc', float('nan')):.3f}; "
            "action-token accuracy (train / held-out) after fine-tuning: "
            + ", ".join(f"{arm} {a['train'].get('action_token_acc', float('nan')):.3f} / "
                        f"{a['train'].get('val_action_token_acc', float('nan')):.3f}" for arm, a in s["arms"].items())
        )
    lines += ["", "| arm | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for arm, rows in r["pooled"].items():
        lines.append(f"| {arm} (seeds pooled) | " + " | ".join(_cell(rows[c]) for c in cols) + " |")
    for seed, s in r["seeds"].items():
        for arm, a in s["arms"].items():
            cells = [_cell(a["suites"][c]) for c in args.suites]
            unseen = [a["suites"][c] for c in args.suites if c in UNSEEN]
            k, n = sum(x["successes"] for x in unseen), sum(x["episodes"] for x in unseen)
            lines.append(f"| {arm}, seed {seed} | " + " | ".join(cells) + f" | {k}/{n} = {100 * k / n:.0f}% |")
    d = r["unseen_difference"]
    lo, hi = d["ci95"]
    why = {"met": "the 95% interval of the difference is above 0",
           "not shown": "LAPA is ahead, but the 95% interval of the difference includes 0",
           "missed": "LAPA is not ahead"}[d["verdict"]]
    lines += [
        "",
        f"unseen average, LAPA - labelled-only: {100 * d['lapa_minus_labelled_only']:+.1f} points "
        f"[95% CI {100 * lo:+.1f} to {100 * hi:+.1f}]; target (LAPA beats labelled-only on the unseen average): "
        f"**{d['verdict']}** ({why}).",
    ]
    if "unseen_difference_vs_shuffled" in r:
        c = r["unseen_difference_vs_shuffled"]
        lines.append(f"unseen average, LAPA - shuffled-lapa (the part of the gain from the latent actions): "
                     f"{100 * c['lapa_minus_shuffled']:+.1f} points [95% CI {100 * c['ci95'][0]:+.1f} to "
                     f"{100 * c['ci95'][1]:+.1f}].")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    return run(parse_args(argv))


if __name__ == "__main__":
    main()
