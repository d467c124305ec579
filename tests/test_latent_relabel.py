"""Map before cloning (``--adapt relabel``): K labels fit a map from a window of consecutive latent actions to the
real action, it relabels the video, and a real-action policy clones it (docs/bridge.md, Breakout, fifth attempt)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from playworld.errors import PlayworldError
from playworld.policy.latent_policy import LatentActionPolicy, LatentPolicyNet
from playworld.policy.train_latent import (
    IDMConfig,
    TrainLatentPolicy,
    Transitions,
    fit_inverse_dynamics,
    fit_window_map,
    idm_actions,
    idm_inputs,
    mirror_permutation,
    relabel_actions,
    relabel_with_idm,
    select_labelled,
    window_keys,
    window_offsets,
)

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def episodes(lengths: list[int], actions: np.ndarray) -> Transitions:
    ep = np.concatenate([np.full(n, e) for e, n in enumerate(lengths)])
    t = np.concatenate([np.arange(n) for n in lengths])
    return Transitions(None, ep, t, actions)


def test_window_offsets_and_keys_read_the_neighbours_of_the_same_episode():
    assert [window_offsets(w) for w in (1, 2, 3, 4, 5)] == [[0], [-1, 0], [-1, 0, 1], [-2, -1, 0, 1], [-2, -1, 0, 1, 2]]
    for bad in (0, 6, 2.0, True):
        with pytest.raises(PlayworldError, match="--map-window must be an integer from 1 to 5"):
            window_offsets(bad)
    tr = episodes([3, 2], np.zeros(5, np.int64))
    z = np.array([0, 1, 2, 1, 0])
    assert window_keys(tr, z, 3, 1).tolist() == z.tolist()
    # base 4, digit 0 = z_t-1 (3 = none), digit 1 = z_t, digit 2 = z_t+1
    k = window_keys(tr, z, 3, 3)
    digits = [[(int(v) // 4**j) % 4 for j in range(3)] for v in k]
    assert digits == [[3, 0, 1], [0, 1, 2], [1, 2, 3], [3, 1, 0], [1, 0, 3]]  # no neighbour across episodes
    # a transition whose neighbour is missing from the set (a subset) sees "none" there
    sub = tr.subset(np.array([0, 2]))
    assert [[(int(v) // 4**j) % 4 for j in range(3)] for v in window_keys(sub, z[[0, 2]], 3, 3)] == [[3, 0, 3], [3, 2, 3]]
    with pytest.raises(PlayworldError, match="one latent per transition"):
        window_keys(tr, z[:3], 3, 2)


def test_a_window_reads_an_action_that_shows_a_step_late():
    """The latent of transition t shows a_t+1 (a late code, e.g. a relative or delayed one): Genie's map of z_t is
    at chance, a window that holds z_t-1 reads a_t back exactly, from 300 of 3000 labels; unseen windows fall back
    to the map of z_t."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, 3, 3000)
    tr = episodes([1000, 1000, 1000], a)
    z = np.r_[a[1:], 0]  # z_t = a_t+1 (within each episode; the episode's last code is arbitrary)
    lab = select_labelled(len(tr), 300, 0)
    acc = {w: float((relabel_actions(tr, z, tr, z, lab, 3, 3, w)[0] == a).mean()) for w in (1, 2, 3)}
    assert acc[1] < 0.45 and acc[2] > 0.99 and acc[3] > 0.95
    pseudo, wmap = relabel_actions(tr, z, tr, z, lab, 3, 3, 2)
    assert wmap.shape == (16,) and pseudo.dtype == np.int64
    # fitted on one labelled transition only: every other window takes Genie's map of its middle code
    keys = window_keys(tr, z, 3, 2)
    one = fit_window_map(keys[:1], z[:1], a[:1], 3, 3, 2)
    assert (one == a[0]).all()  # the only evidence: every z_t maps to a_0 (unseen codes: the most common action)
    with pytest.raises(PlayworldError, match="of one length"):
        fit_window_map(keys[:3], z[:2], a[:3], 3, 3, 2)
    with pytest.raises(PlayworldError, match="labelled transitions with real actions"):
        relabel_actions(tr, z, episodes([3000], None), z, lab, 3, 3, 2)


class BlockVideo:
    """Episodes of 32 px frames with a 4-px block on the bottom rows that moves 2 px right (action 1) or left
    (action 2) per step, or stays (0), wrapping around: what an inverse-dynamics model should read."""

    def __init__(self, actions: list[np.ndarray], seed: int = 0):
        rng = np.random.default_rng(seed)
        self.frames = []
        for a in actions:
            x = int(rng.integers(0, 32))
            fr = np.zeros((len(a) + 1, 32, 32, 3), np.uint8)
            fr[:, 2, 5:9] = 80  # a still object (a brick row)
            for t in range(len(a) + 1):
                fr[t, 28:30, (x + np.arange(4)) % 32] = 200
                if t < len(a):
                    x += {0: 0, 1: 2, 2: -2}[int(a[t])]
            self.frames.append(fr)

    def episode_frames(self, e: int) -> np.ndarray:
        return self.frames[e]


def block_transitions(lengths: list[int], seed: int = 0) -> Transitions:
    rng = np.random.default_rng(seed)
    acts = [rng.integers(0, 3, n) for n in lengths]
    tr = episodes(lengths, np.concatenate(acts))
    tr.dataset = BlockVideo(acts, seed)
    return tr


def test_an_inverse_dynamics_model_reads_actions_a_relative_code_hides():
    """The code holds the action only relative to the previous one (z_t = a_t - a_t-1 mod 3, as Breakout's LAM
    codes): no window of codes reads a_t back (near chance), while the inverse-dynamics model on the frames learns
    it from 60 labels and relabels the video almost exactly; a mirror-trained one too."""
    tr = block_transitions([150, 150, 150])
    a = tr.real
    prev = np.r_[0, a[:-1]] * (tr.t > 0)
    z = (a - prev) % 3
    lab = select_labelled(len(tr), 60, 0)
    window = max(float((relabel_actions(tr, z, tr, z, lab, 3, 3, w)[0] == a).mean()) for w in (1, 2, 3, 5))
    assert window < 0.5
    x = idm_inputs(tr, np.array([0, 149, 150]))
    assert x.shape == (3, 12, 32, 32) and x.dtype == torch.float32
    assert float(x[:, 3:].abs().max()) > 0 and float(x[0, 6:9].abs().max()) == 0  # t = 0: no move before it
    cfg = IDMConfig(steps=150, batch_size=32)
    pseudo, model = relabel_with_idm(tr, tr, lab, 3, cfg)
    assert pseudo.shape == (len(tr),) and pseudo.dtype == np.int64
    assert float((pseudo == a).mean()) > 0.9
    again = idm_actions(fit_inverse_dynamics(tr, lab, 3, cfg), tr)
    assert (again == pseudo).all()  # seeded: the same labels give the same relabelling
    mirrored = idm_actions(fit_inverse_dynamics(tr, lab, 3, IDMConfig(steps=150, batch_size=32, mirror=True),
                                                ["NOOP", "RIGHT", "LEFT"]), tr)
    assert float((mirrored == a).mean()) > 0.9
    with pytest.raises(PlayworldError, match="labelled transitions with real actions"):
        fit_inverse_dynamics(tr, np.zeros(0, np.int64), 3, cfg)
    with pytest.raises(PlayworldError, match="--idm-steps must be an integer"):
        fit_inverse_dynamics(tr, lab, 3, IDMConfig(steps=0))


def test_mirror_permutation_swaps_left_and_right():
    assert mirror_permutation(["NOOP", "FIRE", "RIGHT", "LEFT"]).tolist() == [0, 1, 3, 2]
    assert mirror_permutation(["NOOP", "RIGHT", "LEFT", "RIGHTFIRE", "LEFTFIRE"]).tolist() == [0, 2, 1, 4, 3]
    for names in (["NOOP", "UP", "DOWN"], None):
        with pytest.raises(PlayworldError, match="no such pair"):
            mirror_permutation(names)


def test_command_adapt_relabel_writes_a_real_action_policy(sprites, lam_dir, tmp_path):
    from playworld.cli import main

    out = tmp_path / "policy"
    assert main(["train", "latent-policy", "--data", str(sprites), "--lam", str(lam_dir), "--labels", "30", "--imitate",
                 "all", "--lam-clip-len", "4", "--adapt", "relabel", "--map-window", "2", "--steps", "2",
                 "--batch-size", "8", "--no-progress", "--out", str(out)]) == 0
    summary = json.loads((out / "latent_policy.json").read_text())
    assert summary["adapt"] == "relabel" and summary["map_window"] == 2 and summary["labels"] == 30
    assert len(summary["window_map"]) == 5**2 and 1 <= summary["map_windows_labelled"] <= 25
    assert 0 <= summary["relabel_accuracy_train"] <= 1 and "nmi_latent_action_pair" in summary
    n_train = summary["train_transitions"]
    assert sum(summary["relabelled_histogram"]) == n_train
    assert not (out / "latent-pretrain").exists()  # no latent pretraining on this path
    policy = LatentActionPolicy.from_pretrained(out)
    assert policy.config.target == "real" and policy.config.action_map is None
    assert json.loads((out / "train_summary.json").read_text())["step"] == 2
    policy.reset()
    a = policy.select_action(np.zeros((2, 32, 32, 3), np.uint8))
    assert a.shape == (2,) and ((0 <= a) & (a < policy.config.num_actions)).all()


def test_command_relabeller_idm_needs_no_lam(sprites, tmp_path):
    from playworld.cli import main

    out = tmp_path / "idm"
    assert main(["train", "latent-policy", "--data", str(sprites), "--labels", "30", "--imitate", "all", "--adapt",
                 "relabel", "--relabeller", "idm", "--idm-steps", "3", "--steps", "2", "--batch-size", "8",
                 "--no-progress", "--out", str(out)]) == 0
    summary = json.loads((out / "latent_policy.json").read_text())
    assert summary["relabeller"] == "idm" and summary["idm"]["steps"] == 3 and "window_map" not in summary
    assert 0 <= summary["relabel_accuracy_train"] <= 1 and 0 <= summary["idm_accuracy_labelled"] <= 1
    assert sum(summary["relabelled_histogram"]) == summary["train_transitions"]
    assert (out / "idm.safetensors").exists() and not (out / "lam").exists()  # no LAM trained for it
    assert LatentActionPolicy.from_pretrained(out).config.target == "real"


def test_command_adapt_relabel_refuses_bad_input(sprites, lam_dir, tmp_path):
    with pytest.raises(PlayworldError, match="--map-window must be an integer from 1 to 5"):
        TrainLatentPolicy(sprites, tmp_path / "a", lam=lam_dir, imitate="all", adapt="relabel", map_window=0).run()
    with pytest.raises(PlayworldError, match="the oracle .* has nothing to adapt"):
        TrainLatentPolicy(sprites, tmp_path / "b", lam=lam_dir, imitate="all", adapt="relabel", target="real").run()
    with pytest.raises(PlayworldError, match="--adapt must be"):
        TrainLatentPolicy(sprites, tmp_path / "c", lam=lam_dir, imitate="all", adapt="pseudo").run()
    with pytest.raises(PlayworldError, match="--relabeller idm relabels the video; it needs --adapt relabel"):
        TrainLatentPolicy(sprites, tmp_path / "d", lam=lam_dir, imitate="all", relabeller="idm").run()
    with pytest.raises(PlayworldError, match="--idm-steps must be an integer"):
        TrainLatentPolicy(sprites, tmp_path / "e", imitate="all", adapt="relabel", relabeller="idm", idm_steps=0).run()
    with pytest.raises(PlayworldError, match="--relabeller must be one of window-map, idm"):
        TrainLatentPolicy(sprites, tmp_path / "f", imitate="all", adapt="relabel", relabeller="vpt").run()
    assert not any((tmp_path / d).exists() for d in "abcdef")  # refused before anything was written


def test_benchmark_adapt_relabel(tmp_path):
    """benchmarks/latent_bc.py --adapt relabel: one relabelled-video policy per K and seed (real actions, the oracle's
    net), scored under its own keys, with the relabel accuracy in the table; bad combinations are refused."""
    from playworld.policy.experts import record_atari_expert

    spec = importlib.util.spec_from_file_location("latent_bc", ROOT / "benchmarks" / "latent_bc.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    data = record_atari_expert("Breakout", 300, out=tmp_path / "bk", progress=False, expert_style="follow")
    out = tmp_path / "bc"
    common = ["--game", "Breakout", "--data", str(data), "--out", str(out), "--policy-steps", "3", "--batch-size", "8",
              "--episodes", "1", "--max-steps", "20", "--ks", "10", "all", "--seeds", "0", "--lam-clip-len", "4",
              "--lam-codes", "4", "--lam-steps", "4", "--adapt", "relabel"]
    with pytest.raises(PlayworldError, match="--map-prev-action"):
        bench.main([*common, "--map-prev-action"])
    with pytest.raises(PlayworldError, match="--map-window"):
        bench.main([*common, "--map-window", "9"])
    res = bench.main([*common, "--map-window", "3"])
    assert res["adapt"] == "relabel" and res["map_window"] == 3
    scores = json.loads((out / "scores.json").read_text())
    assert {f"relabel/K={k}/seed=0" for k in (10, "all")} <= set(scores) and not any(k.startswith("latent/") for k in scores)
    for k in ("10", "all"):
        net = LatentPolicyNet.from_pretrained(out / "seed0" / f"relabel-W3-K{k}")
        assert net.config.target == "real"
    assert not (out / "seed0" / "latent").exists()  # no latent pretraining
    row_all = next(r for r in res["rows"] if r["K"] == "all")
    assert 0 <= row_all["map_accuracy"] <= 1
    table = (out / "latent_bc.md").read_text()
    assert "Relabelled video" in table and "relabel acc." in table and "3 consecutive latent actions" in table
