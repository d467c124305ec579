"""Learning to act from action-free video: latent-action BC vs oracle BC over K labels (Genie, Sec. 3.3).

    python benchmarks/latent_bc.py --out runs/latent-bc                     # record, train, sweep
    python benchmarks/latent_bc.py --data data/pong-expert --lam runs/lam   # reuse data and a LAM
    python benchmarks/latent_bc.py --quick --out /tmp/latent-bc-quick       # minutes: a smoke run
    python benchmarks/latent_bc.py --game Breakout --rgb --out runs/latent-bc-breakout   # docs/bridge.md

For each seed: one latent-action policy is trained on every expert transition, labelled by the
frozen LAM (no real action); then for each K the latent -> real map is fitted on K randomly
chosen labelled transitions and the policy plays the real game. The oracle is the same network
with the same budget trained by behaviour cloning on the same K transitions with their real
actions (K = all: every expert transition). Score = mean return in the real game over
``--episodes`` episodes (truncated at ``--max-steps``), averaged over seeds with a 95% t-interval;
the scripted expert and the random policy are played on the same starts. Genie's target: with
K = 200 the latent policy matches the oracle trained on all labels.

``--adapt finetune`` grounds the latent policy as LAPA does instead of with a map: for each K its
trunk gets a fresh real-action head and the whole net is fine-tuned on the same K labelled
transitions the oracle clones (``--finetune-steps`` at ``--finetune-lr``; default: the oracle's
own budget, ``--policy-steps`` at the policies' learning rate, so the two differ only in where
they start); the table then also gives the open-loop accuracy of both policies on the
held-out expert episodes (val split).
``--adapt relabel`` grounds the video instead (map before cloning): for each K the same K labels fit a
map from ``--map-window`` consecutive latent actions (default 3: z_t-1, z_t, z_t+1) to the real action,
it relabels every expert transition, and a policy with the oracle's network and budget clones the
relabelled video (no latent pretraining); the table adds how often the relabelled action is the true one.
``--relabeller idm`` relabels with VPT's inverse-dynamics model instead of the codes: a small CNN on the frames
t-1..t+2 trained on the same K labels only (``--idm-steps``, ``--idm-mirror``; the LAM is then not used to ground).
``--sticky P`` plays every policy and baseline with sticky actions (Breakout is otherwise
deterministic, so more ``--episodes`` would replay the same game).

Writes ``<out>/latent_bc.json``, ``<out>/latent_bc.md`` (the table) and ``<out>/latent_bc.png``
(score vs K). Everything is cached in ``<out>``, so an interrupted sweep continues.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

LAM_CPU = dict(patch_size=16, dim=64, head_dim=32, enc_depth=2, dec_depth=2)  # ~0.3M parameters: CPU minutes


def parse_ks(values: list[str]) -> list[int | str]:
    return [v if v == "all" else int(v) for v in values]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None, help="expert dataset (default: record <out>/data)")
    ap.add_argument("--game", default="Pong")
    ap.add_argument("--frames", type=int, default=32000, help="frames to record (25%% of them random play)")
    ap.add_argument("--lam", type=Path, default=None, help="trained LAM folder (default: train <out>/lam)")
    ap.add_argument("--lam-data", type=Path, default=None,
                    help="action-free video the LAM trains on (default: --data). A clonable expert's move is "
                    "predictable from the frame, so on its video the LAM's decoder needs no code for it; "
                    "random play with a fresh action every step makes the code carry the move (docs/bridge.md)")
    ap.add_argument("--lam-steps", type=int, default=1200)
    ap.add_argument("--lam-clip-len", type=int, default=5)
    ap.add_argument("--lam-codes", type=int, default=8,
                    help="LAM codebook size |A| (Genie: 8); a game with few visible actions (Breakout: stay, left, "
                    "right) splits 8 codes over other motion (the ball), fewer codes keep them on the paddle")
    ap.add_argument("--lam-patch", type=int, default=LAM_CPU["patch_size"], help="LAM patch size (pixels)")
    ap.add_argument("--lam-batch", type=int, default=16, help="LAM clips per step")
    ap.add_argument("--lam-no-encoder-positions", action="store_true",
                    help="LAM encoder without spatial positions: latents say what changed, not where "
                    "(Breakout: with positions the codes follow the paddle's position, not its move)")
    ap.add_argument("--lam-encoder-input", choices=["frames", "diff", "frames+diff"], default="frames",
                    help="what the LAM's encoder reads: the frames (Genie), their differences x_t - x_{t-1}, or both "
                    "(Breakout: on frames the codes follow where the paddle is, on differences how it moved)")
    ap.add_argument("--lam-change-weight", type=float, default=0.0,
                    help="LAM reconstruction weight 1 + W on the pixels that change between t and t+1 (0: plain mean)")
    ap.add_argument("--lam-lr", type=float, default=1e-3)
    ap.add_argument("--expert-style", default=None,
                    help="scripted expert variant for recording and the expert baseline (default: the data's "
                    "meta.json extra.expert_style, else 'default'; Breakout: 'follow')")
    ap.add_argument("--latent-delay", type=int, default=-1, help="read latent actions d steps later (-1: auto)")
    ap.add_argument("--map-prev-action", action="store_true",
                    help="the latent -> real map reads (latent, previous real action), LAPA-style: with momentum "
                    "(Breakout) a visible move mixes two actions and the previous one separates them. Its K labels "
                    "are K/2 labelled pairs (t-1, t), so it uses no more real actions than the oracle; at play the "
                    "policy uses its own previous action")
    ap.add_argument("--adapt", choices=["map", "finetune", "relabel"], default="map",
                    help="how the K labels ground the latent policy: map = Genie's latent -> real map (majority vote); "
                    "finetune = LAPA: a fresh real-action head on the latent policy's trunk, the whole net fine-tuned "
                    "on the K labelled transitions (the oracle's labelled set); relabel = map before cloning: the "
                    "oracle's K labels fit a map from --map-window consecutive latent actions to the real action, it "
                    "relabels every expert transition, and a policy with the oracle's net and budget clones them")
    ap.add_argument("--map-window", type=int, default=3,
                    help="--adapt relabel: latent actions the map reads around t (1: z_t; 2: z_t-1, z_t; 3: z_t-1..z_t+1)")
    ap.add_argument("--relabeller", choices=["window-map", "idm"], default="window-map",
                    help="--adapt relabel: what reads a_t off the video: the window map of the LAM's codes, or VPT's "
                    "inverse-dynamics model (a small CNN on the frames t-1..t+2, trained on the K labels only)")
    ap.add_argument("--idm-steps", type=int, default=400, help="--relabeller idm: training steps (batch 64)")
    ap.add_argument("--idm-mirror", action="store_true",
                    help="--relabeller idm: also train on mirrored frames with LEFT/RIGHT swapped (Breakout, not Pong)")
    ap.add_argument("--finetune-steps", type=int, default=None,
                    help="--adapt finetune: optimiser steps on the K labels (default: --policy-steps, the oracle's budget)")
    ap.add_argument("--finetune-lr", type=float, default=None,
                    help="--adapt finetune: peak learning rate (default: the policies' 3e-3; same batch and schedule)")
    ap.add_argument("--sticky", type=float, default=0.0,
                    help="sticky-action probability per step for every evaluation (0: deterministic games; "
                    "ALE v5 uses 0.25); makes each of --episodes a different game")
    ap.add_argument("--ks", nargs="+", default=["10", "50", "200", "1000", "all"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--policy-preset", default="tiny")
    ap.add_argument("--num-frames", type=int, default=2, help="frames the policy sees (the last N)")
    ap.add_argument("--rgb", action="store_true", help="policy reads RGB frames (default greyscale; "
                    "Breakout's red ball is dim in grey)")
    ap.add_argument("--policy-steps", type=int, default=1500)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--episodes", type=int, default=4, help="evaluation episodes per policy")
    ap.add_argument("--max-steps", type=int, default=2500, help="agent steps per evaluation episode")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared CPU)")
    ap.add_argument("--out", type=Path, default=Path("runs/latent-bc"))
    ap.add_argument("--quick", action="store_true", help="tiny everything: checks the pipeline, not the result")
    ap.add_argument("--latent-only", action="store_true",
                    help="train and score only the latent-action policies (cached; the oracles can train at the "
                    "same time in another process with --oracle-only); no table")
    ap.add_argument("--oracle-only", action="store_true",
                    help="train and score only the oracles and the baselines (no LAM needed; cached in --out, so a "
                    "later full run reuses them) and print their scores; no table")
    args = ap.parse_args(argv)
    if args.quick:
        args.frames, args.lam_steps, args.policy_steps, args.episodes, args.max_steps = 3000, 60, 60, 2, 300
        args.seeds, args.ks = args.seeds[:1], ["10", "50", "all"]
    torch.set_num_threads(args.threads)
    return run(args)


def run(args) -> dict:
    from playworld.data.format import load_dataset
    from playworld.errors import PlayworldError
    from playworld.eval.latent_policy_eval import evaluate_agents, evaluate_policy, mean_ci95, normalized
    from playworld.eval.metrics import latent_map_accuracy, normalized_mutual_info
    from playworld.policy.experts import record_atari_expert
    from playworld.policy.latent_policy import LatentActionPolicy, LatentPolicyConfig, LatentPolicyNet
    from playworld.policy.train_latent import (
        IDMConfig,
        action_accuracy,
        action_pair_diagnostics,
        choose_latent_delay,
        delayed_latents,
        finetune_policy,
        finetune_train_config,
        fit_action_map,
        fit_prev_action_map,
        imitation_split,
        label_transitions,
        load_lam,
        prev_map_accuracy,
        previous_actions,
        recalibrate_latent_norm,
        relabel_actions,
        relabel_with_idm,
        select_labelled,
        select_labelled_pairs,
        train_lam,
        train_policy,
        window_offsets,
    )
    from playworld.train.loop import TrainConfig
    from playworld.utils import atomic_write_json, machine_info

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    ks = parse_ks(args.ks)
    timings: dict[str, float] = {}
    t_start = time.perf_counter()

    def timed(name: str, t0: float) -> None:
        timings[name] = round(timings.get(name, 0.0) + time.perf_counter() - t0, 1)

    # 1. expert video (+ random play, for the LAM)
    data = args.data or out / "data"
    t0 = time.perf_counter()
    if not data.exists():
        record_atari_expert(args.game, args.frames, size=64, seed=0, out=data, progress=False,
                            expert_style=args.expert_style)
    timed("record_s", t0)
    style = args.expert_style or load_dataset(data).meta.get("extra", {}).get("expert_style", "default")

    # 2. the latent action model, trained on all the video without actions
    t0 = time.perf_counter()
    lam_dir = args.lam or out / "lam"
    if args.adapt != "map" and args.map_prev_action:
        raise PlayworldError(f"--map-prev-action fits Genie's map; --adapt {args.adapt} uses its own. Pass one of them.")
    if args.relabeller != "window-map" and args.adapt != "relabel":
        raise PlayworldError(f"--relabeller {args.relabeller} relabels the video; pass --adapt relabel with it.")
    if args.adapt == "relabel":
        window_offsets(args.map_window)  # fails early
        IDMConfig(steps=args.idm_steps, mirror=args.idm_mirror)  # bad settings fail here
    ft_budget = finetune_train_config(policy_train_config(args, 0), args.finetune_steps, args.finetune_lr)  # fails early
    if args.oracle_only:
        return run_oracles(args, data, style)
    if args.lam is None and not (lam_dir / "model.safetensors").exists():
        train_lam(args.lam_data or data, lam_dir, "tiny", steps=args.lam_steps, clip_len=args.lam_clip_len, num_actions=args.lam_codes,
                  batch_size=args.lam_batch, lr=args.lam_lr, progress=False, **{**LAM_CPU, "patch_size": args.lam_patch},
                  encoder_positions=not args.lam_no_encoder_positions, encoder_input=args.lam_encoder_input,
                  change_weight=args.lam_change_weight)
    timed("lam_train_s", t0)

    # 3. label every expert transition with the frozen LAM (cached)
    t0 = time.perf_counter()
    train, val = imitation_split(data)
    ds = train.dataset
    lam = load_lam(lam_dir, ds.frame_size)
    cache = out / "latent_labels.npz"
    if cache.exists():
        latent = np.load(cache)["latent"]
    else:
        recalibrate_latent_norm(lam, data, args.lam_clip_len)
        latent = label_transitions(lam, train, args.lam_clip_len)
        np.savez(cache, latent=latent, real=train.real)
    timed("label_s", t0)
    num_latent, num_actions = lam.num_actions, len(ds.action_names)
    full_map = fit_action_map(latent, train.real, num_latent, num_actions)
    lag_idx, lag_z = delayed_latents(train, latent, 1)
    lam_quality = {
        "nmi_latent_real": round(normalized_mutual_info(latent, train.real), 4),
        "nmi_next_latent_real": round(normalized_mutual_info(lag_z, train.real[lag_idx]), 4),
        "map_accuracy_all_labels": round(latent_map_accuracy(full_map, latent, train.real), 4),
        "majority_action_share": round(float(np.bincount(train.real).max() / len(train.real)), 4),
        "latent_histogram": np.bincount(latent, minlength=num_latent).tolist(),
        # a code near-independent of a_t may still hold (a_t, a_t-1): a move relative to the last one
        **action_pair_diagnostics(latent, train),
    }
    prev_all = previous_actions(train) if args.map_prev_action else None
    if args.map_prev_action:  # the previous real action alone, and with the latent (all labels)
        prev_map = fit_prev_action_map(latent, prev_all, train.real, num_latent, num_actions, full_map)
        lam_quality.update({
            "prev_map_accuracy_all_labels": round(prev_map_accuracy(prev_map, latent, prev_all, train.real), 4),
            "prev_action_only_accuracy": round(latent_map_accuracy(
                fit_action_map(prev_all, train.real, num_actions, num_actions), prev_all, train.real), 4),
        })
    print("latent labels:", lam_quality, flush=True)

    def tcfg(seed: int) -> TrainConfig:
        return policy_train_config(args, seed)

    base = dict(image_size=ds.frame_size, num_actions=num_actions, num_latent=num_latent,
                num_frames=args.num_frames, grayscale=not args.rgb,
                action_names=ds.action_names, game=args.game)

    def trained(folder: Path, cfg: LatentPolicyConfig, tr, targets, seed: int) -> LatentPolicyNet:
        if (folder / "model.safetensors").exists() and (folder / "train_summary.json").exists():
            return LatentPolicyNet.from_pretrained(folder)
        t0 = time.perf_counter()
        model = train_policy(cfg, tr, targets, folder, tcfg(seed), resume=(folder / "checkpoints").exists())
        timed("policy_train_s", t0)
        return model

    scores_path = out / "scores.json"
    scores: dict[str, dict] = json.loads(scores_path.read_text()) if scores_path.exists() else {}

    def score(key: str, make_policy) -> dict:
        if key not in scores:
            t0 = time.perf_counter()
            scores[key] = evaluate_policy(make_policy(), args.game, args.episodes, seed=1000,
                                          max_steps=args.max_steps, sticky=args.sticky)
            timed("eval_s", t0)
            atomic_write_json(scores_path, scores)
            print(key, scores[key]["mean_return"], flush=True)
        return scores[key]

    # 4. baselines on the same starts
    for who in ("expert", "random"):
        if who not in scores:
            t0 = time.perf_counter()
            scores[who] = evaluate_agents(args.game, who, args.episodes, seed=1000, max_steps=args.max_steps,
                                          style=style, sticky=args.sticky)
            timed("eval_s", t0)
            atomic_write_json(scores_path, scores)

    def accuracy(key: str, net: LatentPolicyNet) -> float:
        """Open-loop accuracy on the held-out expert episodes (cached with the scores)."""
        if key not in scores:
            scores[key] = round(action_accuracy(net, val), 4)
            atomic_write_json(scores_path, scores)
        return scores[key]

    # 5. the sweep
    rkey = "relabel" if args.relabeller == "window-map" else f"relabel-{args.relabeller}"
    lkey = {"map": "latent", "finetune": "finetune", "relabel": rkey}[args.adapt]  # score keys never mix
    val_acc: dict[str, dict[str, list[float]]] = {}
    map_acc: dict[str, list[float]] = {}
    delays: dict[str, list[int]] = {}
    for seed in args.seeds:
        latent_cfg = LatentPolicyConfig.preset(args.policy_preset, target="latent", **base)
        oracle_cfg = LatentPolicyConfig.preset(args.policy_preset, target="real", **base)
        for k in ks:
            labelled = select_labelled(len(train), k, seed, f"the expert transitions of {data}")
            sub = train.subset(labelled)
            if args.adapt == "relabel":  # map before cloning: the K labels' relabeller relabels the video, a policy clones it
                if args.relabeller == "idm":
                    folder = out / f"seed{seed}" / f"relabel-idm-K{k}"
                    cache_pl = out / f"seed{seed}" / f"relabel-idm-K{k}-pseudo.npz"  # the IDM takes ~1 min
                    if cache_pl.exists():
                        pseudo = np.load(cache_pl)["pseudo"]
                    else:
                        t0 = time.perf_counter()
                        pseudo, _ = relabel_with_idm(train, train, labelled, num_actions,
                                                     IDMConfig(steps=args.idm_steps, mirror=args.idm_mirror, seed=seed),
                                                     ds.action_names)
                        timed("idm_s", t0)
                        cache_pl.parent.mkdir(parents=True, exist_ok=True)
                        np.savez(cache_pl, pseudo=pseudo)
                else:
                    folder = out / f"seed{seed}" / f"relabel-W{args.map_window}-K{k}"
                    pseudo, _ = relabel_actions(train, latent, train, latent, labelled, num_latent, num_actions,
                                                args.map_window)
                map_acc.setdefault(str(k), []).append(float((pseudo == train.real).mean()))
                delays.setdefault(str(k), []).append(0)
                rl_net = trained(folder, oracle_cfg, train, pseudo, seed)
                score(f"{rkey}/K={k}/seed={seed}", lambda net=rl_net: LatentActionPolicy(net))
                if len(val):
                    val_acc.setdefault(str(k), {}).setdefault("latent", []).append(
                        accuracy(f"val_accuracy/{rkey}/K={k}/seed={seed}", rl_net))
            else:
                if args.map_prev_action:  # the map's K labels: K/2 pairs (t-1, t); the oracle keeps its K
                    pair_targets, map_labelled = select_labelled_pairs(train, k, seed, f"the expert transitions of {data}")
                else:
                    map_labelled = labelled
                # The labels also say which step's latent action shows the decision (Pong: one later).
                d = choose_latent_delay(train, latent, map_labelled, num_latent, num_actions) if args.latent_delay < 0 \
                    else args.latent_delay
                delays.setdefault(str(k), []).append(d)
                idx, z = delayed_latents(train, latent, d, map_labelled)
                amap = fit_action_map(z, train.real[idx], num_latent, num_actions)
                all_idx, all_z = delayed_latents(train, latent, d)
                if args.map_prev_action:
                    pidx, pz = delayed_latents(train, latent, d, pair_targets)
                    amap = fit_prev_action_map(pz, prev_all[pidx], train.real[pidx], num_latent, num_actions, amap)
                    acc = prev_map_accuracy(amap, all_z, prev_all[all_idx], train.real[all_idx])
                else:
                    acc = latent_map_accuracy(amap, all_z, train.real[all_idx])
                map_acc.setdefault(str(k), []).append(acc)
                name = "latent" if d == 0 else f"latent-delay{d}"
                latent_net = trained(out / f"seed{seed}" / name, latent_cfg, train.subset(all_idx), all_z, seed)
                if args.adapt == "finetune":  # LAPA: the latent policy's trunk, fine-tuned on the oracle's K labels
                    folder = out / f"seed{seed}" / f"{name}-finetune-K{k}"
                    if (folder / "model.safetensors").exists() and (folder / "train_summary.json").exists():
                        ft_net = LatentPolicyNet.from_pretrained(folder)
                    else:
                        t0 = time.perf_counter()
                        ft_cfg = finetune_train_config(tcfg(seed), args.finetune_steps, args.finetune_lr)
                        ft_net = finetune_policy(latent_net, sub, folder, ft_cfg, resume=(folder / "checkpoints").exists())
                        timed("finetune_s", t0)
                    score(f"finetune/K={k}/seed={seed}", lambda net=ft_net: LatentActionPolicy(net))
                    if len(val):
                        val_acc.setdefault(str(k), {}).setdefault("latent", []).append(
                            accuracy(f"val_accuracy/finetune/K={k}/seed={seed}", ft_net))
                else:
                    score(f"latent/K={k}/seed={seed}",
                          lambda amap=amap, net=latent_net: LatentActionPolicy(net, action_map=amap))
            if args.latent_only:
                continue
            oracle = trained(out / f"seed{seed}" / f"oracle-K{k}", oracle_cfg, sub, sub.real, seed)
            score(f"oracle/K={k}/seed={seed}", lambda oracle=oracle: LatentActionPolicy(oracle))
            if args.adapt != "map" and len(val):
                val_acc.setdefault(str(k), {}).setdefault("oracle", []).append(
                    accuracy(f"val_accuracy/oracle/K={k}/seed={seed}", oracle))
    if args.latent_only:
        return {"lam_quality": lam_quality, "scores": scores}

    # 6. the table
    rnd, exp = scores["random"]["mean_return"], scores["expert"]["mean_return"]
    rows = []
    for k in ks:
        row: dict = {"K": k}
        for method, key in (("latent", lkey), ("oracle", "oracle")):
            per_seed = [scores[f"{key}/K={k}/seed={s}"]["mean_return"] for s in args.seeds]
            m, lo, hi = mean_ci95(per_seed)
            row[method] = {"mean": round(m, 2), "ci95": [round(lo, 2), round(hi, 2)], "per_seed": per_seed}
            if str(k) in val_acc:
                row[method]["val_accuracy"] = val_acc[str(k)][method]
        row["map_accuracy"] = round(float(np.mean(map_acc[str(k)])), 4)
        row["latent_delay"] = delays[str(k)]
        rows.append(row)
    oracle_all = next(r["oracle"]["mean"] for r in rows if r["K"] == "all") if "all" in ks else exp
    for r in rows:
        for method in ("latent", "oracle"):
            # Against an oracle no better than random the ratio means nothing (nan, as the legend says).
            r[method]["normalized_vs_oracle_all"] = (round(normalized(r[method]["mean"], rnd, oracle_all), 3)
                                                     if oracle_all > rnd else float("nan"))
            r[method]["normalized_vs_expert"] = round(normalized(r[method]["mean"], rnd, exp), 3)
    result = {
        "game": args.game, "data": str(data), "expert_style": style,
        "lam_data": str(args.lam_data or data) if args.lam is None else None, "train_transitions": len(train), "lam": str(lam_dir),
        "lam_quality": lam_quality, "seeds": args.seeds, "episodes": args.episodes, "max_steps": args.max_steps,
        "policy_steps": args.policy_steps, "policy_preset": args.policy_preset, "num_frames": args.num_frames,
        "rgb": args.rgb, "map_prev_action": args.map_prev_action, "adapt": args.adapt, "sticky": args.sticky,
        "finetune_steps": ft_budget.steps if args.adapt == "finetune" else None,
        "finetune_lr": ft_budget.lr if args.adapt == "finetune" else None, "val_transitions": len(val),
        "map_window": args.map_window if args.adapt == "relabel" else None,
        "relabeller": args.relabeller if args.adapt == "relabel" else None,
        "idm_steps": args.idm_steps if args.relabeller == "idm" else None,
        "idm_mirror": args.idm_mirror if args.relabeller == "idm" else None,
        "expert": scores["expert"], "random": scores["random"], "oracle_all": oracle_all, "rows": rows,
        "timings": {**timings, "total_s": round(time.perf_counter() - t_start, 1)},
        "machine": machine_info(), "torch_threads": torch.get_num_threads(), "pid": os.getpid(),
    }
    atomic_write_json(out / "latent_bc.json", result)
    (out / "latent_bc.md").write_text(markdown_table(result))
    plot(result, out / "latent_bc.png")
    print(markdown_table(result))
    return result


def run_oracles(args, data: Path, style: str) -> dict:
    """``--oracle-only``: the baselines and the oracle of every K and seed, cached as the full run caches them."""
    from playworld.eval.latent_policy_eval import evaluate_agents, evaluate_policy, mean_ci95
    from playworld.policy.latent_policy import LatentActionPolicy, LatentPolicyConfig, LatentPolicyNet
    from playworld.policy.train_latent import imitation_split, select_labelled, train_policy
    from playworld.utils import atomic_write_json

    out: Path = args.out
    train, _ = imitation_split(data)
    ds = train.dataset
    scores_path = out / "scores.json"
    scores: dict[str, dict] = json.loads(scores_path.read_text()) if scores_path.exists() else {}
    for who in ("expert", "random"):
        if who not in scores:
            scores[who] = evaluate_agents(args.game, who, args.episodes, seed=1000, max_steps=args.max_steps, style=style,
                                          sticky=args.sticky)
            atomic_write_json(scores_path, scores)
    cfg = LatentPolicyConfig.preset(args.policy_preset, target="real", image_size=ds.frame_size,
                                    num_actions=len(ds.action_names), num_latent=args.lam_codes,
                                    num_frames=args.num_frames, grayscale=not args.rgb, action_names=ds.action_names,
                                    game=args.game)
    for seed in args.seeds:
        for k in parse_ks(args.ks):
            folder = out / f"seed{seed}" / f"oracle-K{k}"
            if (folder / "model.safetensors").exists() and (folder / "train_summary.json").exists():
                net = LatentPolicyNet.from_pretrained(folder)
            else:
                sub = train.subset(select_labelled(len(train), k, seed, f"the expert transitions of {data}"))
                net = train_policy(cfg, sub, sub.real, folder, policy_train_config(args, seed),
                                   resume=(folder / "checkpoints").exists())
            key = f"oracle/K={k}/seed={seed}"
            if key not in scores:
                scores[key] = evaluate_policy(LatentActionPolicy(net), args.game, args.episodes, seed=1000,
                                              max_steps=args.max_steps, sticky=args.sticky)
                atomic_write_json(scores_path, scores)
            print(key, scores[key]["mean_return"], flush=True)
    print("expert", scores["expert"]["mean_return"], "random", scores["random"]["mean_return"])
    for k in parse_ks(args.ks):
        per_seed = [scores[f"oracle/K={k}/seed={s}"]["mean_return"] for s in args.seeds]
        print(f"oracle K={k}: {mean_ci95(per_seed)} per seed {per_seed}")
    return scores


def policy_train_config(args, seed: int):
    from playworld.train.loop import TrainConfig

    return TrainConfig(steps=args.policy_steps, batch_size=args.batch_size, lr=3e-3, warmup_steps=100,
                       weight_decay=1e-4, precision="fp32", eval_every=0, sample_every=0,
                       ckpt_every=args.policy_steps, num_workers=0, progress=False, seed=seed)


def pair_nmi(r: dict) -> str:
    """The header's note on what the code holds of the previous action (absent in results written before it existed)."""
    q = r["lam_quality"]
    if "nmi_latent_action_pair" not in q:
        return ""
    return f" (with (a_t, a_t-1): {q['nmi_latent_action_pair']}; with a_t-1: {q['nmi_latent_prev_action']})"


def markdown_table(r: dict) -> str:
    if r.get("adapt") in ("finetune", "relabel"):
        return finetune_table(r)
    lines = [
        f"# Latent-action BC vs oracle BC on {r['game']} ({len(r['seeds'])} seeds x {r['episodes']} episodes, "
        f"<= {r['max_steps']} steps)",
        "",
        f"Expert {r['expert']['mean_return']:+.1f}, random {r['random']['mean_return']:+.1f}; "
        f"{r['train_transitions']} expert transitions; LAM: NMI(latent, real) {r['lam_quality']['nmi_latent_real']}"
        f"{pair_nmi(r)}, map accuracy with all labels {r['lam_quality']['map_accuracy_all_labels']} "
        f"(majority action {r['lam_quality']['majority_action_share']})."
        + (f" Map on (latent, previous action): NMI {r['lam_quality']['nmi_latent_prev_real']}, accuracy with all "
           f"labels {r['lam_quality']['prev_map_accuracy_all_labels']} (previous action alone "
           f"{r['lam_quality']['prev_action_only_accuracy']}; NMI {r['lam_quality']['nmi_prev_real']}); the map's K "
           "labels are K/2 labelled pairs (t-1, t)." if r.get("map_prev_action") else ""),
        "",
        "| K labels | latent policy: return [95% CI] | norm. (oracle-all / expert) | map accuracy | delay "
        "| oracle BC: return [95% CI] | norm. (oracle-all / expert) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        la, orc = row["latent"], row["oracle"]
        lines.append(
            f"| {row['K']} | {la['mean']:+.1f} [{la['ci95'][0]:+.1f}, {la['ci95'][1]:+.1f}] | "
            f"{la['normalized_vs_oracle_all']:.2f} / {la['normalized_vs_expert']:.2f} | {row['map_accuracy']:.3f} | "
            f"{','.join(str(d) for d in row.get('latent_delay', []))} | "
            f"{orc['mean']:+.1f} [{orc['ci95'][0]:+.1f}, {orc['ci95'][1]:+.1f}] | "
            f"{orc['normalized_vs_oracle_all']:.2f} / {orc['normalized_vs_expert']:.2f} |"
        )
    lines += ["", "normalised = (return - random) / (reference - random), reference = the oracle with all labels "
              "(Genie's comparison; nan when it is no better than random) or the expert; map accuracy = the fitted "
              "map's accuracy on every expert transition; delay = the step (per seed) the latent action is read at.", ""]
    return "\n".join(lines)


def finetune_table(r: dict) -> str:
    """The table of an ``--adapt finetune`` or ``relabel`` sweep: returns per seed, open-loop accuracy on held-out
    episodes (and, relabelling, how often the relabelled action is the true one)."""
    relabel = r.get("adapt") == "relabel"

    def cell(m: dict) -> str:
        per = ", ".join(f"{v:g}" for v in m["per_seed"])
        return f"{m['mean']:+.1f} [{m['ci95'][0]:+.1f}, {m['ci95'][1]:+.1f}] ({per})"

    def acc(m: dict) -> str:
        return f"{np.mean(m['val_accuracy']):.3f}" if m.get("val_accuracy") else "-"

    sticky = f", sticky actions {r['sticky']}" if r.get("sticky") else ""
    if relabel:
        title, name = "Relabelled video (map before cloning) vs oracle BC", "relabelled-video policy"
        if r.get("relabeller") == "idm":
            fit = (f"train an inverse-dynamics model (a small CNN on the frames t-1..t+2, {r['idm_steps']} steps"
                   + (", mirrored copies with LEFT/RIGHT swapped" if r.get("idm_mirror") else "") + ") that")
        else:
            fit = f"fit a map from {r['map_window']} consecutive latent actions to the real action that"
        how = (f"Relabelling: the oracle's K labels {fit} relabels every expert transition, and a policy clones them "
               f"({r['policy_steps']} steps, the oracle's net and budget); the oracle: the same from scratch on the K labels.")
    else:
        title, name = "LAPA-style fine-tuned latent policy vs oracle BC", "fine-tuned latent policy"
        how = (f"Fine-tuning: the latent policy's trunk + a fresh real-action head, the whole net trained "
               f"{r['finetune_steps']} steps at lr {r['finetune_lr']:g} on the oracle's K labels; the oracle: "
               f"{r['policy_steps']} steps from scratch on them.")
    lines = [
        f"# {title} on {r['game']} ({len(r['seeds'])} seeds x {r['episodes']} episodes, <= {r['max_steps']} steps{sticky})",
        "",
        f"Expert {r['expert']['mean_return']:+.1f}, random {r['random']['mean_return']:+.1f}; "
        f"{r['train_transitions']} expert transitions ({r['val_transitions']} held out); LAM: NMI(latent, real) "
        f"{r['lam_quality']['nmi_latent_real']}{pair_nmi(r)}. {how}",
        "",
        f"| K labels | {name}: return [95% CI] (per seed) | norm. (oracle-all / expert) | held-out acc. "
        + ("| relabel acc. " if relabel else "")
        + "| oracle BC: return [95% CI] (per seed) | norm. (oracle-all / expert) | held-out acc. |",
        "|---|---|---|---|" + ("---|" if relabel else "") + "---|---|---|",
    ]
    for row in r["rows"]:
        la, orc = row["latent"], row["oracle"]
        lines.append(
            f"| {row['K']} | {cell(la)} | {la['normalized_vs_oracle_all']:.2f} / {la['normalized_vs_expert']:.2f} | "
            f"{acc(la)} | " + (f"{row['map_accuracy']:.3f} | " if relabel else "")
            + f"{cell(orc)} | {orc['normalized_vs_oracle_all']:.2f} / {orc['normalized_vs_expert']:.2f} | {acc(orc)} |"
        )
    lines += ["", "normalised = (return - random) / (reference - random), reference = the oracle with all labels "
              "(nan when it is no better than random) or the expert; held-out acc. = open-loop accuracy of the greedy "
              "action on the expert episodes of the val split (mean over seeds)"
              + ("; relabel acc. = how often the relabelled action is the true one, over all expert transitions "
                 "(a diagnostic: the true actions are read only for it)." if relabel else "."), ""]
    return "\n".join(lines)


def plot(r: dict, path: Path, width: int = 640, height: int = 420) -> None:
    """Score vs K (log axis) for both methods, with CI bars, expert and random as lines (PIL only)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    left, right, top, bottom = 60, width - 20, 30, height - 50
    n_all = r["train_transitions"]
    xs = [n_all if row["K"] == "all" else int(row["K"]) for row in r["rows"]]
    lo_x, hi_x = np.log10(max(1, min(xs))), np.log10(max(xs) + 1)
    vals = [r["expert"]["mean_return"], r["random"]["mean_return"]]
    for row in r["rows"]:
        for m in ("latent", "oracle"):
            vals += row[m]["ci95"]
    lo_y, hi_y = min(vals) - 1, max(vals) + 1

    def px(k: float) -> float:
        return left + (np.log10(k) - lo_x) / max(hi_x - lo_x, 1e-9) * (right - left)

    def py(v: float) -> float:
        return bottom - (v - lo_y) / (hi_y - lo_y) * (bottom - top)

    d.rectangle([left, top, right, bottom], outline="black")
    for v in np.linspace(lo_y, hi_y, 6):
        d.line([left - 4, py(v), left, py(v)], fill="black")
        d.text((5, py(v) - 6), f"{v:+.0f}", fill="black")
    for row, k in zip(r["rows"], xs, strict=True):
        d.text((px(k) - 12, bottom + 6), str(row["K"]), fill="black")
    for name, colour in (("expert", (0, 140, 0)), ("random", (150, 150, 150))):
        y = py(r[name]["mean_return"])
        d.line([left, y, right, y], fill=colour, width=1)
        d.text((right - 60, y - 14), name, fill=colour)
    for m, colour in (("latent", (200, 40, 40)), ("oracle", (40, 80, 200))):
        pts = [(px(k), py(row[m]["mean"])) for row, k in zip(r["rows"], xs, strict=True)]
        d.line(pts, fill=colour, width=2)
        for (x, y), row in zip(pts, r["rows"], strict=True):
            lo, hi = row[m]["ci95"]
            d.line([x, py(lo), x, py(hi)], fill=colour, width=1)
            d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
    method = {"idm": "policy on video relabelled by an inverse-dynamics model",
              "window-map": "policy on video relabelled by the latent window map"}.get(r.get("relabeller") or "",
                                                                                       "latent-action policy")
    d.text((left + 8, top + 6), method, fill=(200, 40, 40))
    d.text((left + 8, top + 20), "oracle BC (real labels)", fill=(40, 80, 200))
    d.text((width // 2 - 90, height - 22), "K labelled transitions (log scale)", fill="black")
    d.text((left, 8), f"{r['game']}: mean return vs K", fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


if __name__ == "__main__":
    main()
