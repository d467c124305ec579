"""The latent action model's encoder-input and loss-weighting options (docs/bridge.md, Breakout, third attempt)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from playworld.errors import PlayworldError
from playworld.world.latent_actions import LatentActionConfig, LatentActionModel

LAM = dict(image_size=(32, 32), patch_size=8, dim=32, enc_depth=1, dec_depth=1, head_dim=16, num_actions=4, code_dim=8)


def video(seed: int = 0, b: int = 2, t: int = 4) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.25 + 0.5 * torch.rand(b, t, 3, 32, 32, generator=g)  # in [0.25, 0.75]: room for offsets


@pytest.mark.parametrize("mode", ["frames", "diff", "frames+diff"])
def test_encoder_input_shapes_and_determinism(mode):
    torch.manual_seed(0)
    a = LatentActionModel(LatentActionConfig(**LAM, encoder_input=mode)).eval()
    torch.manual_seed(0)
    b = LatentActionModel(LatentActionConfig(**LAM, encoder_input=mode)).eval()
    v = video()
    view = a.encoder_view(v)
    assert view.shape == (2, 4, 6 if mode == "frames+diff" else 3, 32, 32)
    assert a.patch_embed.in_features == 8 * 8 * (6 if mode == "frames+diff" else 3)
    with torch.no_grad():
        pred, actions, _, _ = a(v)
        assert pred.shape == (2, 3, 3, 32, 32) and actions.shape == (2, 3) and actions.dtype == torch.int64
        assert a.encode_latents(v).shape == (2, 3, 8)
        torch.testing.assert_close(a.encode_latents(v), b.encode_latents(v))  # same seed, same model
        torch.testing.assert_close(a.encode_latents(v), a.encode_latents(v.clone()))
        assert torch.equal(a.infer_actions(v), b.infer_actions(v))
    a.train()
    loss, logs = a.training_step(v)
    loss.backward()
    assert torch.isfinite(loss) and a.patch_embed.weight.grad is not None


def test_diff_input_sees_changes_not_the_static_picture():
    """encoder_input='diff': adding the same static image to every frame of a clip (a different background)
    leaves the latents unchanged; on frames (the default) it changes them. The diff view of the first frame
    is 'no change' (0.5), and frame t's view is (x_t - x_{t-1} + 1) / 2."""
    v = video()
    background = 0.2 * (torch.rand(2, 1, 3, 32, 32, generator=torch.Generator().manual_seed(1)) - 0.5)
    moved = v + background  # same motion, other static picture
    torch.manual_seed(0)
    diff = LatentActionModel(LatentActionConfig(**LAM, encoder_input="diff")).eval()
    torch.manual_seed(0)
    frames = LatentActionModel(LatentActionConfig(**LAM)).eval()
    view = diff.encoder_view(v)
    torch.testing.assert_close(view[:, 0], torch.full_like(view[:, 0], 0.5))
    torch.testing.assert_close(view[:, 2], (v[:, 2] - v[:, 1] + 1) / 2)
    with torch.no_grad():
        torch.testing.assert_close(diff.encode_latents(v), diff.encode_latents(moved), atol=1e-5, rtol=1e-4)
        assert not torch.allclose(frames.encode_latents(v), frames.encode_latents(moved), atol=1e-3)
    both = LatentActionModel(LatentActionConfig(**LAM, encoder_input="frames+diff")).eval()
    torch.testing.assert_close(both.encoder_view(v), torch.cat([v, view], dim=2))


def test_change_weight_loss():
    """change_weight=0 is the plain normalised MSE; > 0 weighs the changed pixels 1 + w, in both the
    prediction error and the copy baseline. The mask marks exactly the pixels that change by more than the
    threshold (in any channel)."""
    v = video(t=3)
    v[:, 1:] = v[:, :1]  # static clip...
    v[0, 2, 1, 5, 7] += 0.1  # ...but one pixel of one channel changes at t = 1 -> 2
    v[1, 1, 0, 0, 0] += 0.01  # below the threshold
    torch.manual_seed(0)
    plain = LatentActionModel(LatentActionConfig(**LAM))
    torch.manual_seed(0)
    weighted = LatentActionModel(LatentActionConfig(**LAM, change_weight=9.0))
    w = weighted.change_weights(v)
    assert w.shape == (2, 2, 1, 32, 32) and w.sum() == 2 * 2 * 32 * 32 + 9 and w[0, 1, 0, 5, 7] == 10
    v = video(t=3)
    torch.manual_seed(5)
    loss_plain, _ = plain.training_step(v)
    torch.manual_seed(5)
    loss_weighted, _ = weighted.training_step(v)
    torch.manual_seed(5)
    pred, _, vq_loss, _ = plain(v)
    target = v[:, 1:]
    torch.testing.assert_close(loss_plain, F.mse_loss(pred, target) / (F.mse_loss(v[:, :-1], target) + 1e-4) + vq_loss)
    w = weighted.change_weights(v)
    num = ((pred - target) ** 2 * w).sum() / (w.sum() * 3)
    den = ((v[:, :-1] - target) ** 2 * w).sum() / (w.sum() * 3)
    torch.testing.assert_close(loss_weighted, num / (den + 1e-4) + vq_loss)


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(encoder_input="pixels"), "encoder_input"),
        (dict(change_weight=-1.0), "change_weight"),
        (dict(change_threshold=1.0), "change_threshold"),
        (dict(change_threshold=-0.1), "change_threshold"),
    ],
)
def test_invalid_options_are_playworld_errors(bad, message):
    with pytest.raises(PlayworldError, match=message):
        LatentActionConfig(**LAM, **bad)


def test_options_survive_save_load_and_old_configs_keep_the_defaults(tmp_path):
    torch.manual_seed(0)
    model = LatentActionModel(LatentActionConfig(**LAM, encoder_input="frames+diff", change_weight=3.0,
                                                 change_threshold=0.05, encoder_positions=False)).eval()
    model.save_pretrained(tmp_path / "lam")
    loaded = LatentActionModel.from_pretrained(tmp_path / "lam").eval()
    c = loaded.config
    assert (c.encoder_input, c.change_weight, c.change_threshold, c.encoder_positions) == ("frames+diff", 3.0, 0.05, False)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_latents(video()), loaded.encode_latents(video()))
    # A LAM saved before these options existed loads with the defaults (Genie's frame input, plain loss).
    old = tmp_path / "old"
    LatentActionModel(LatentActionConfig(**LAM)).save_pretrained(old)
    cfg = json.loads((old / "config.json").read_text())
    for key in ("encoder_input", "change_weight", "change_threshold"):
        cfg.pop(key)
    (old / "config.json").write_text(json.dumps(cfg))
    c = LatentActionModel.from_pretrained(old).config
    assert (c.encoder_input, c.change_weight) == ("frames", 0.0)


def test_train_lam_passes_the_options(tmp_path):
    from playworld.data.synthetic import make_sprites_dataset
    from playworld.policy.train_latent import train_lam

    data = make_sprites_dataset(tmp_path / "sprites", episodes=3, length=10, size=32)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = train_lam(data, tmp_path / "lam", "tiny", steps=2, clip_len=4, num_actions=4, batch_size=4, progress=False,
                        patch_size=16, dim=32, enc_depth=1, dec_depth=1, head_dim=16, encoder_input="diff",
                        encoder_positions=False, change_weight=5.0)
    finally:
        torch.set_num_threads(n)
    c = LatentActionModel.from_pretrained(out).config
    assert (c.encoder_input, c.encoder_positions, c.change_weight) == ("diff", False, 5.0)


# -- a latent -> real map that also reads the previous real action (momentum; --map-prev-action) -----------


def _transitions():
    from playworld.policy.train_latent import Transitions

    # two episodes of 4 and 3 transitions
    return Transitions(None, np.array([0, 0, 0, 0, 1, 1, 1]), np.array([0, 1, 2, 3, 0, 1, 2]),
                       np.array([2, 3, 3, 0, 1, 2, 2]))


def test_previous_actions_and_labelled_pairs():
    from playworld.policy.train_latent import previous_actions, select_labelled_pairs

    tr = _transitions()
    assert previous_actions(tr).tolist() == [0, 2, 3, 3, 0, 1, 2]  # 0 at each episode's start
    assert previous_actions(tr.subset(np.array([0, 2, 3]))).tolist() == [0, 0, 3]  # t=1 is missing: no predecessor
    targets, labelled = select_labelled_pairs(tr, 4, seed=0)
    assert len(targets) == 2 and set(targets) <= {1, 2, 3, 5, 6} and set(targets - 1) <= set(labelled)
    assert set(labelled) == set(targets) | set(targets - 1) and len(labelled) <= 4
    assert np.array_equal(targets, select_labelled_pairs(tr, 4, seed=0)[0])  # deterministic
    all_targets, all_labelled = select_labelled_pairs(tr, "all")
    assert all_targets.tolist() == [1, 2, 3, 5, 6] and len(all_labelled) == 7
    for bad in (1, 0, "some", 20):
        with pytest.raises(PlayworldError):
            select_labelled_pairs(tr, bad)


def test_prev_action_map_separates_momentum():
    """The latent shows the move m_t = a_t + a_(t-1) (momentum); a map of the latent alone cannot tell
    which action made it, one that also reads the previous action recovers a_t exactly. Unseen
    (latent, previous) pairs fall back to the latent-only map."""
    from playworld.policy.train_latent import fit_action_map, fit_prev_action_map, prev_map_accuracy

    rng = np.random.default_rng(0)
    a = rng.integers(0, 3, 2000)  # actions -1, 0, +1 as ids 0, 1, 2
    prev = np.r_[1, a[:-1]]
    latent = (a - 1) + (prev - 1) + 2  # the visible move, 0..4
    fb = fit_action_map(latent, a, 5, 3)
    amap = fit_prev_action_map(latent, prev, a, 5, 3, fb)
    assert amap.shape == (5, 3)
    assert prev_map_accuracy(amap, latent, prev, a) == 1.0
    assert (fb[latent] == a).mean() < 0.8
    sparse = fit_prev_action_map(latent[:1], prev[:1], a[:1], 5, 3, fb)
    assert (sparse == np.repeat(fb, 3).reshape(5, 3)).sum() >= 14  # only the one seen pair may differ


def test_action_pair_diagnostics_see_a_code_relative_to_the_last_action():
    """A code that says "same action as last step / another one" (what a LAM whose decoder sees the past can
    learn on Breakout) is independent of a_t and of a_(t-1) alone, but not of their pair; a code equal to a_t
    scores 1 on a_t. The NMIs must tell the two apart; bad input is refused."""
    from playworld.eval.metrics import normalized_mutual_info
    from playworld.policy.train_latent import Transitions, action_pair_diagnostics

    rng = np.random.default_rng(0)
    a = rng.integers(0, 3, 3000)
    tr = Transitions(None, np.zeros(3000, np.int64), np.arange(3000), a)
    prev = np.r_[0, a[:-1]]
    relative = (a == prev).astype(np.int64)
    rel = action_pair_diagnostics(relative, tr)
    assert rel["nmi_latent_prev_action"] < 0.01 and rel["nmi_prev_real"] < 0.01
    assert normalized_mutual_info(relative, a) < 0.01  # what nmi_latent_real reports: nothing
    assert rel["nmi_latent_action_pair"] > 0.3  # the pair holds it
    assert rel["nmi_latent_prev_real"] > 0.3  # with the previous action, the relative code says much of a_t
    exact = action_pair_diagnostics(a, tr)
    assert exact["nmi_latent_prev_real"] > 0.6 and exact["nmi_latent_prev_action"] < 0.01
    assert set(rel) == set(exact) == {"nmi_latent_prev_action", "nmi_latent_action_pair", "nmi_latent_prev_real",
                                      "nmi_prev_real"}
    with pytest.raises(PlayworldError, match="one latent per transition"):
        action_pair_diagnostics(a[:10], tr)
    with pytest.raises(PlayworldError, match="without real actions"):
        action_pair_diagnostics(a, Transitions(None, tr.episode, tr.t, None))


def test_policy_with_a_prev_action_map_feeds_back_its_own_action():
    from playworld.policy.latent_policy import LatentActionPolicy, LatentPolicyConfig, LatentPolicyNet

    net = LatentPolicyNet(LatentPolicyConfig.preset("tiny", image_size=(32, 32), num_latent=2, num_actions=3))
    # whatever the latent: action = (previous action + 1) mod 3, so the sequence shows the feedback
    amap = np.array([[1, 2, 0], [1, 2, 0]])
    policy = LatentActionPolicy(net, action_map=amap)
    frames = np.random.default_rng(0).integers(0, 255, (2, 32, 32, 3), dtype=np.uint8)
    policy.reset()
    assert [int(policy.select_action(frames)[0]) for _ in range(4)] == [1, 2, 0, 1]  # starts after action 0
    assert policy.select_action(frames, new_episode=np.array([True, False])).tolist() == [1, 2]  # env 0 restarts
    with pytest.raises(PlayworldError, match="previous real action"):
        LatentActionPolicy(net, action_map=np.zeros((2, 2), int))
    with pytest.raises(PlayworldError, match="prev_action"):
        net.act(torch.from_numpy(np.stack([frames, frames], 1)), torch.as_tensor(amap))


def test_benchmark_diff_lam_and_prev_action_map(tmp_path, one_thread):
    """benchmarks/latent_bc.py --lam-encoder-input diff --lam-change-weight --map-prev-action: the LAM is built with
    the options, the lam quality reports the previous-action map, and the table says how the map was fitted."""
    import importlib.util
    from pathlib import Path

    from playworld.policy.experts import record_atari_expert

    spec = importlib.util.spec_from_file_location(
        "latent_bc", Path(__file__).resolve().parents[1] / "benchmarks" / "latent_bc.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    data = record_atari_expert("Breakout", 300, out=tmp_path / "bk", progress=False, expert_style="follow")
    out = tmp_path / "bc"
    res = bench.main(["--game", "Breakout", "--data", str(data), "--out", str(out), "--policy-steps", "3",
                      "--batch-size", "8", "--episodes", "1", "--max-steps", "20", "--ks", "10", "all", "--seeds", "0",
                      "--lam-clip-len", "4", "--lam-codes", "4", "--lam-steps", "4", "--latent-delay", "0",
                      "--lam-encoder-input", "diff", "--lam-no-encoder-positions", "--lam-change-weight", "5",
                      "--map-prev-action"])
    c = LatentActionModel.from_pretrained(out / "lam").config
    assert (c.encoder_input, c.encoder_positions, c.change_weight) == ("diff", False, 5.0)
    q = res["lam_quality"]
    assert 0 <= q["prev_map_accuracy_all_labels"] <= 1 and "nmi_latent_prev_real" in q and res["map_prev_action"]
    assert all(0 <= r["map_accuracy"] <= 1 for r in res["rows"])
    assert "previous action" in (out / "latent_bc.md").read_text()
    assert 0 <= q["nmi_latent_action_pair"] <= 1 and 0 <= q["nmi_latent_prev_action"] <= 1
    assert f"with (a_t, a_t-1): {q['nmi_latent_action_pair']}" in (out / "latent_bc.md").read_text()


def test_train_lam_command_exposes_the_options(tmp_path, one_thread):
    from playworld.cli import main
    from playworld.data.synthetic import make_sprites_dataset

    data = make_sprites_dataset(tmp_path / "sprites", episodes=3, length=10, size=32)
    assert main(["train", "lam", "--data", str(data), "--out", str(tmp_path / "lam"), "--steps", "1", "--batch-size", "2",
                 "--clip-len", "3", "--num-actions", "4", "--encoder-input", "frames+diff", "--no-encoder-positions",
                 "--change-weight", "2"]) == 0
    c = LatentActionModel.from_pretrained(tmp_path / "lam").config
    assert (c.encoder_input, c.encoder_positions, c.change_weight, c.num_actions) == ("frames+diff", False, 2.0, 4)
