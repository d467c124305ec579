"""LAPA-style adaptation of a latent-action policy: a fresh real-action head on its trunk, fine-tuned on K labels
(docs/bridge.md, Breakout, fourth attempt), and the sticky-action evaluation."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from playworld.data.format import DatasetWriter
from playworld.errors import PlayworldError
from playworld.policy.latent_policy import LatentActionPolicy, LatentPolicyConfig, LatentPolicyNet
from playworld.policy.train_latent import (
    TrainLatentPolicy,
    action_accuracy,
    finetune_policy,
    finetune_train_config,
    imitation_split,
    select_labelled,
    train_policy,
)
from playworld.train.loop import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

TRAIN = TrainConfig(steps=200, batch_size=32, lr=3e-3, warmup_steps=20, weight_decay=1e-4, precision="fp32",
                    eval_every=0, sample_every=0, ckpt_every=1000, num_workers=0, progress=False, device="cpu")


def squares(out: Path, episodes: int, length: int, seed: int) -> Path:
    """A 4x4 white square at a random place in each 32x32 frame; the expert's action is the third of the
    frame it is in (0 left, 1 middle, 2 right): a known function of the observation."""
    rng = np.random.default_rng(seed)
    with DatasetWriter(out, fps=10, frame_size=(32, 32), source="synthetic", action_names=["L", "M", "R"]) as w:
        for _ in range(episodes):
            xy = rng.integers(0, 28, (length, 2))
            frames = np.zeros((length, 32, 32, 3), np.uint8)
            for t, (x, y) in enumerate(xy):
                frames[t, y : y + 4, x : x + 4] = 255
            actions = np.minimum((xy[:, 0] + 2) * 3 // 32, 2).astype(np.int64)
            w.add_episode(frames, actions, np.zeros(length, np.float32), info={"policy": "expert"})
    return out


def stand_in_latents(tr) -> np.ndarray:
    """A LAM-like code: 6 codes = the action and an unrelated bit (is the square in the lower half)."""
    lower = [int(np.argwhere(tr.dataset.episode_frames(e)[t][..., 0] > 0)[0][0] >= 14) for e, t in zip(tr.episode, tr.t,
                                                                                                          strict=True)]
    return 2 * tr.real + np.array(lower)


def test_load_trunk_copies_all_but_the_output_layer_and_refuses_another_net():
    torch.manual_seed(0)
    latent = LatentPolicyNet(LatentPolicyConfig.preset("tiny", image_size=(32, 32), num_latent=8, num_actions=3))
    real_cfg = dataclasses.replace(latent.config, target="real", action_map=None)
    torch.manual_seed(1)
    real = LatentPolicyNet(real_cfg)
    fresh_head = real.head[2].weight.detach().clone()
    real.load_trunk(latent)
    src, dst = latent.state_dict(), real.state_dict()
    for name, v in dst.items():
        if name.startswith("head.2."):
            assert v.shape[0] == 3  # the real-action head, untouched
        else:
            torch.testing.assert_close(v, src[name])
    torch.testing.assert_close(real.head[2].weight, fresh_head)
    other = LatentPolicyNet(dataclasses.replace(real_cfg, num_frames=3, channels=(8, 8)))
    with pytest.raises(PlayworldError, match="trunk does not fit.*num_frames: 2 vs 3.*channels"):
        other.load_trunk(latent)


def test_finetune_recovers_a_known_mapping_from_few_labels(tmp_path):
    """Pretrain on stand-in latent codes of every transition (no real action), fine-tune on 48 labelled ones
    (1 in 6): the fine-tuned policy reads the real action off held-out frames (>= 0.85), better than the same
    net trained from scratch on the same 48 labels with the same budget. The saved policy loads and acts."""
    train, _ = imitation_split(squares(tmp_path / "a", 6, 50, seed=0), "all")
    test, _ = imitation_split(squares(tmp_path / "b", 3, 50, seed=1), "all")
    cfg = LatentPolicyConfig.preset("tiny", image_size=(32, 32), num_frames=1, target="latent", num_latent=6,
                                    num_actions=3, action_names=["L", "M", "R"])
    pre = train_policy(cfg, train, stand_in_latents(train), tmp_path / "pre", TRAIN)
    lab = train.subset(select_labelled(len(train), 48, seed=0))
    budget = finetune_train_config(TRAIN, 200, 1e-3)
    ft = finetune_policy(pre, lab, tmp_path / "ft", budget)
    scratch = train_policy(dataclasses.replace(cfg, target="real"), lab, lab.real, tmp_path / "scratch", budget)
    acc_ft, acc_scratch = action_accuracy(ft, test), action_accuracy(scratch, test)
    assert acc_ft >= 0.85 and acc_ft > acc_scratch, (acc_ft, acc_scratch)
    # The fine-tuned policy is an ordinary real-action policy: from_pretrained, then act in closed loop.
    saved = json.loads((tmp_path / "ft" / "config.json").read_text())
    assert saved["target"] == "real" and saved["action_map"] is None and saved["num_actions"] == 3
    assert json.loads((tmp_path / "ft" / "train_summary.json").read_text())["step"] == 200
    policy = LatentActionPolicy.from_pretrained(tmp_path / "ft")
    frames = np.stack([test.dataset.episode_frames(0)[t] for t in range(5)])
    policy.reset()
    acts = policy.select_action(frames)
    with torch.no_grad():
        want = ft(torch.from_numpy(frames)[:, None]).argmax(-1).numpy()
    assert acts.tolist() == want.tolist()


def test_finetune_budget_defaults_to_the_base_and_refuses_bad_values(tmp_path):
    same = finetune_train_config(TRAIN)  # by default the same budget as the oracle
    assert dataclasses.replace(same, ckpt_every=TRAIN.ckpt_every) == TRAIN and same.ckpt_every == TRAIN.steps
    c = finetune_train_config(TRAIN, 50, 1e-4)
    assert (c.steps, c.lr, c.warmup_steps, c.ckpt_every, c.batch_size) == (50, 1e-4, 5, 50, 32)
    for steps, lr, msg in ((0, None, "--finetune-steps"), (2.5, None, "--finetune-steps"), (None, 0.0, "--finetune-lr"),
                           (None, -1.0, "--finetune-lr"), (True, None, "--finetune-steps")):
        with pytest.raises(PlayworldError, match=msg):
            finetune_train_config(TRAIN, steps, lr)
    pre = LatentPolicyNet(LatentPolicyConfig.preset("tiny", image_size=(32, 32), num_latent=6, num_actions=3))
    from playworld.data.format import load_dataset
    from playworld.policy.train_latent import transitions_of

    train = transitions_of(load_dataset(squares(tmp_path / "a", 1, 10, seed=0)), [0])
    unlabelled = dataclasses.replace(train.subset(np.arange(4)), real=None)
    with pytest.raises(PlayworldError, match="fine-tuning needs labelled transitions"):
        finetune_policy(pre, unlabelled, tmp_path / "ft", TRAIN)


def test_command_adapt_finetune_writes_a_real_action_policy(sprites, lam_dir, tmp_path):
    from playworld.cli import main

    out = tmp_path / "policy"
    assert main(["train", "latent-policy", "--data", str(sprites), "--lam", str(lam_dir), "--labels", "30", "--imitate",
                 "all", "--lam-clip-len", "4", "--adapt", "finetune", "--finetune-steps", "3", "--finetune-lr", "1e-3",
                 "--steps", "2", "--batch-size", "8", "--no-progress", "--out", str(out)]) == 0
    summary = json.loads((out / "latent_policy.json").read_text())
    assert summary["adapt"] == "finetune" and summary["finetune_steps"] == 3 and summary["finetune_lr"] == 1e-3
    assert summary["labels"] == 30 and 0 <= summary.get("finetune_accuracy_val", 0) <= 1
    pre = LatentPolicyNet.from_pretrained(out / "latent-pretrain")
    assert pre.config.target == "latent" and len(pre.config.action_map) == 4  # the map is still fitted (diagnostics)
    policy = LatentActionPolicy.from_pretrained(out)
    assert policy.config.target == "real" and policy.config.num_actions == pre.config.num_actions
    assert json.loads((out / "train_summary.json").read_text())["step"] == 3
    policy.reset()
    a = policy.select_action(np.zeros((2, 32, 32, 3), np.uint8))
    assert a.shape == (2,) and ((0 <= a) & (a < policy.config.num_actions)).all()
    # --resume after both parts finished: the pretrained policy is reused, the fine-tuning is complete
    assert main(["train", "latent-policy", "--data", str(sprites), "--lam", str(lam_dir), "--labels", "30", "--imitate",
                 "all", "--lam-clip-len", "4", "--adapt", "finetune", "--finetune-steps", "3", "--steps", "2",
                 "--batch-size", "8", "--no-progress", "--out", str(out), "--resume"]) == 0


def test_command_adapt_finetune_refuses_bad_input(sprites, lam_dir, tmp_path):
    n = len(imitation_split(sprites, "all")[0])
    with pytest.raises(PlayworldError, match=f"--labels 100000 asks for more .* \\({n}\\)"):
        TrainLatentPolicy(sprites, tmp_path / "a", lam=lam_dir, labels=100000, imitate="all", adapt="finetune").run()
    with pytest.raises(PlayworldError, match="--finetune-steps must be an integer >= 1"):
        TrainLatentPolicy(sprites, tmp_path / "b", lam=lam_dir, imitate="all", adapt="finetune", finetune_steps=0).run()
    with pytest.raises(PlayworldError, match="the oracle .* has nothing to adapt"):
        TrainLatentPolicy(sprites, tmp_path / "c", lam=lam_dir, imitate="all", adapt="finetune", target="real").run()
    assert not any((tmp_path / d).exists() for d in "abc")  # refused before anything was written


def test_sticky_actions_repeat_only_the_previous_action_and_never_at_a_start():
    from playworld.eval.latent_policy_eval import sticky_actions

    calls = iter(range(100))

    def policy(frames, new, rams):
        i = next(calls)
        return np.array([i, i + 50])

    assert sticky_actions(policy, 0.0) is policy
    sticky = sticky_actions(policy, 0.5, seed=0)
    frames = np.zeros((2, 8, 8, 3), np.uint8)
    prev = sticky(frames, np.array([True, True]), None)
    assert prev.tolist() == [0, 50]
    repeats = 0
    for step in range(1, 40):
        new = np.array([step % 10 == 0, False])
        out = sticky(frames, new, None)
        chosen = np.array([step, step + 50])
        assert all(o == c or (o == p and not n) for o, c, p, n in zip(out, chosen, prev, new, strict=True))
        assert out[0] == chosen[0] or not new[0]
        repeats += int((out != chosen).sum())
        prev = out
    assert 15 < repeats < 60  # about half of 78 decisions
    for bad in (-0.1, 1.0):
        with pytest.raises(PlayworldError, match="sticky-action probability"):
            sticky_actions(policy, bad)


def test_benchmark_adapt_finetune(tmp_path):
    """benchmarks/latent_bc.py --adapt finetune: one fine-tuned policy per K on the oracle's labels, scored under
    its own keys with held-out accuracies; the table says so; --map-prev-action is refused with it."""
    from playworld.policy.experts import record_atari_expert

    spec = importlib.util.spec_from_file_location("latent_bc", ROOT / "benchmarks" / "latent_bc.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    data = record_atari_expert("Breakout", 300, out=tmp_path / "bk", progress=False, expert_style="follow")
    out = tmp_path / "bc"
    common = ["--game", "Breakout", "--data", str(data), "--out", str(out), "--policy-steps", "3", "--batch-size", "8",
              "--episodes", "2", "--max-steps", "20", "--ks", "10", "all", "--seeds", "0", "--lam-clip-len", "4",
              "--lam-codes", "4", "--lam-steps", "4", "--latent-delay", "0", "--adapt", "finetune"]
    with pytest.raises(PlayworldError, match="--map-prev-action"):
        bench.main([*common, "--map-prev-action"])
    with pytest.raises(PlayworldError, match="--finetune-lr"):
        bench.main([*common, "--finetune-lr", "0"])
    res = bench.main([*common, "--finetune-steps", "2", "--sticky", "0.25"])
    assert res["adapt"] == "finetune" and res["finetune_steps"] == 2 and res["finetune_lr"] == 3e-3
    assert res["sticky"] == 0.25
    scores = json.loads((out / "scores.json").read_text())
    assert {f"finetune/K={k}/seed=0" for k in (10, "all")} <= set(scores) and not any(k.startswith("latent/") for k in scores)
    for k in ("10", "all"):
        assert LatentPolicyNet.from_pretrained(out / "seed0" / f"latent-finetune-K{k}").config.target == "real"
    table = (out / "latent_bc.md").read_text()
    assert "fine-tuned latent policy" in table and "sticky actions 0.25" in table
    if res["val_transitions"]:
        assert all(0 <= a <= 1 for r in res["rows"] for m in ("latent", "oracle") for a in r[m]["val_accuracy"])
