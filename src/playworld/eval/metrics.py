"""Metrics for world models and latent actions.

Genie (arXiv 2402.15391) evaluates a world model with two numbers: video fidelity (FVD) and
controllability (dtPSNR). This module implements both, the image metrics they rest on, and
the diagnostics playworld uses for latent-action models:

- image quality: :func:`psnr`, :func:`ssim` (match ``skimage.metrics``);
- controllability: :func:`dt_psnr` (Genie, Sec. 3.1 "Metrics");
- fidelity: :func:`frechet_distance`, :func:`frechet_distance_from_features` and the
  accumulator :class:`FrechetFeatureDistance` (FID, Heusel et al. 2017; FVD, Unterthiner et al.
  2018) with a pluggable feature extractor (see :mod:`playworld.eval.features`);
- codebooks and latent actions: :func:`codebook_stats`, :func:`normalized_mutual_info`,
  :func:`fit_latent_action_map`, :func:`latent_map_accuracy`;
- success rates: :func:`confidence_interval_95` (Wilson score interval).

Images are float tensors ``(..., 3, H, W)`` with values in ``[0, data_range]`` (default [0, 1]).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from numpy.typing import ArrayLike
from torch import Tensor

from playworld.errors import PlayworldError
from playworld.eval.features import FeatureExtractor

Reduction = Literal["mean", "none"]

# --------------------------------------------------------------------------------------------
# Image quality
# --------------------------------------------------------------------------------------------


def _check_images(x: Tensor, y: Tensor, data_range: float, reduction: str) -> None:
    if x.shape != y.shape:
        raise PlayworldError(
            f"Images to compare must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}."
        )
    if x.ndim < 3:
        raise PlayworldError(f"Images must be shaped (..., C, H, W), got {tuple(x.shape)}.")
    if not data_range > 0:
        raise PlayworldError(f"data_range must be > 0 (1.0 for images in [0, 1]), got {data_range}.")
    if reduction not in ("mean", "none"):
        raise PlayworldError(f"reduction must be 'mean' or 'none', got {reduction!r}.")


def _compute_dtype(x: Tensor) -> torch.dtype:
    # half/bf16 lose the digits PSNR/SSIM need; float64 stays float64
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def psnr(x: Tensor, y: Tensor, data_range: float = 1.0, reduction: Reduction = "mean") -> Tensor:
    """Peak signal-to-noise ratio in dB, per image, then averaged.

    ``PSNR = 10 * log10(data_range**2 / MSE)`` with ``MSE`` the mean squared error over
    ``(C, H, W)`` of each image (as ``skimage.metrics.peak_signal_noise_ratio``). Identical images
    give ``inf``.

    Args:
        x, y: images ``(..., C, H, W)``.
        reduction: ``"mean"`` -> scalar (mean of the per-image PSNRs), ``"none"`` -> ``(...)``.
    """
    _check_images(x, y, data_range, reduction)
    dt = _compute_dtype(x)
    mse = (x.to(dt) - y.to(dt)).pow(2).mean(dim=(-3, -2, -1))  # (...)
    out = 10.0 * torch.log10(data_range**2 / mse)  # (...), inf where mse == 0
    return out.mean() if reduction == "mean" else out


def _gaussian_kernel_1d(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    coords = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    k = torch.exp(-0.5 * (coords / sigma) ** 2)
    return k / k.sum()  # (size,)


def ssim(
    x: Tensor,
    y: Tensor,
    data_range: float = 1.0,
    reduction: Reduction = "mean",
    win_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> Tensor:
    """Structural similarity (Wang et al. 2004, "Image quality assessment: from error visibility
    to structural similarity"), per channel, then averaged over channels.

    With local statistics under a Gaussian window (size 11, sigma 1.5; population covariance)::

        SSIM = ((2 mu_x mu_y + C1) (2 s_xy + C2)) / ((mu_x^2 + mu_y^2 + C1) (s_x^2 + s_y^2 + C2))
        C1 = (k1 * data_range)^2,  C2 = (k2 * data_range)^2

    averaged over the positions where the window fits inside the image (borders of
    ``(win_size - 1) // 2`` pixels cropped). This equals
    ``skimage.metrics.structural_similarity(a, b, channel_axis=-1, data_range=data_range,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``.

    Args:
        x, y: images ``(..., C, H, W)`` with ``H, W >= win_size``.
        reduction: ``"mean"`` -> scalar, ``"none"`` -> per image ``(...)``.
    """
    _check_images(x, y, data_range, reduction)
    h, w = x.shape[-2:]
    if h < win_size or w < win_size:
        raise PlayworldError(
            f"SSIM needs images of at least {win_size}x{win_size} pixels, got {h}x{w}; "
            "upsample them or pass a smaller win_size."
        )
    batch_shape, c = x.shape[:-3], x.shape[-3]
    dt = _compute_dtype(x)
    x = rearrange(x.to(dt), "... c h w -> (... c) 1 h w")  # (M, 1, H, W), M = images * channels
    y = rearrange(y.to(dt), "... c h w -> (... c) 1 h w")

    # One separable 'valid' Gaussian filter for all five local moments at once.
    k = _gaussian_kernel_1d(win_size, sigma, dt, x.device)
    moments = torch.cat([x, y, x * x, y * y, x * y])  # (5M, 1, H, W)
    moments = F.conv2d(moments, k.view(1, 1, -1, 1))  # filter along H
    moments = F.conv2d(moments, k.view(1, 1, 1, -1))  # filter along W -> (5M, 1, H', W')
    mu_x, mu_y, e_xx, e_yy, e_xy = moments.chunk(5)
    var_x = e_xx - mu_x * mu_x
    var_y = e_yy - mu_y * mu_y
    cov_xy = e_xy - mu_x * mu_y

    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    )  # (M, 1, H', W')
    per_channel = s_map.mean(dim=(-3, -2, -1))  # (M,)
    per_image = per_channel.view(*batch_shape, c).mean(dim=-1)  # (...)
    return per_image.mean() if reduction == "mean" else per_image


# --------------------------------------------------------------------------------------------
# Controllability (Genie)
# --------------------------------------------------------------------------------------------


def dt_psnr(real: Tensor, pred_inferred: Tensor, pred_random: Tensor, t: int = 4) -> float:
    """Genie's controllability metric, Delta_t PSNR (arXiv 2402.15391, Sec. 3.1; reported at t = 4).

    ``dtPSNR = PSNR(x_t, x^_t) - PSNR(x_t, x^'_t)`` where ``x^_t`` is generated with the latent
    actions *inferred from the real video* by the latent action model and ``x^'_t`` with latent
    actions *sampled at random*; each PSNR is averaged over the batch. Higher means the latent
    actions really steer the generation (0 = the model ignores them).

    Frame indexing: all three videos hold the same ``T`` frames, and frame 0 is the prompt frame
    (the real frame the model was conditioned on). Frame ``t`` is the ``t``-th *generated* frame,
    so the default ``t = 4`` is the 4th frame after the prompt, ``real[:, 4]``. Needs ``T > t``.

    Args:
        real: ground-truth video ``(B, T, 3, H, W)`` in [0, 1].
        pred_inferred: generation with inferred latent actions, ``(B, T, 3, H, W)``.
        pred_random: generation with random latent actions, ``(B, T, 3, H, W)``.
        t: frame index, counted from the prompt frame 0.
    """
    for name, v in (("real", real), ("pred_inferred", pred_inferred), ("pred_random", pred_random)):
        if v.ndim != 5:
            raise PlayworldError(f"dt_psnr takes videos shaped (B, T, 3, H, W); {name} is {tuple(v.shape)}.")
        if v.shape != real.shape:
            raise PlayworldError(
                f"dt_psnr needs videos of the same shape; real is {tuple(real.shape)}, {name} is {tuple(v.shape)}."
            )
    num_frames = real.shape[1]
    if not 1 <= t < num_frames:
        raise PlayworldError(
            f"dt_psnr frame t={t} is out of range for videos of {num_frames} frames (frame 0 is the prompt); "
            f"generate at least t+1 = {t + 1} frames or choose 1 <= t <= {num_frames - 1}."
        )
    x_t = real[:, t]  # (B, 3, H, W)
    return (psnr(x_t, pred_inferred[:, t]) - psnr(x_t, pred_random[:, t])).item()


# --------------------------------------------------------------------------------------------
# Codebooks and latent actions
# --------------------------------------------------------------------------------------------


def _as_int_array(v: ArrayLike | Tensor, name: str) -> np.ndarray:
    arr = v.detach().cpu().numpy() if isinstance(v, Tensor) else np.asarray(v)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise PlayworldError(f"{name} must hold integer ids, got dtype {arr.dtype}.")
    return arr.reshape(-1).astype(np.int64)


def _check_ids(arr: np.ndarray, num: int, name: str) -> None:
    if arr.size == 0:
        raise PlayworldError(f"{name} is empty; pass at least one id.")
    if arr.min() < 0 or arr.max() >= num:
        raise PlayworldError(
            f"{name} holds ids in [{arr.min()}, {arr.max()}] but the vocabulary has {num} ids (0..{num - 1}); "
            "check the codebook size you passed."
        )


def codebook_stats(indices: ArrayLike | Tensor, num_codes: int) -> dict[str, float | int]:
    """How much of a VQ codebook is used (the symptom of codebook / index collapse).

    With ``p_k`` the frequency of code ``k`` among ``indices`` (any shape)::

        usage      = #{k : p_k > 0}
        usage_frac = usage / num_codes
        perplexity = exp(-sum_k p_k ln p_k)   (1 = one code used, num_codes = uniform use)
    """
    ids = _as_int_array(indices, "indices")
    _check_ids(ids, num_codes, "indices")
    counts = np.bincount(ids, minlength=num_codes)  # (num_codes,)
    p = counts[counts > 0] / ids.size
    usage = int((counts > 0).sum())
    return {
        "usage": usage,
        "usage_frac": usage / num_codes,
        "perplexity": float(np.exp(-(p * np.log(p)).sum())),
    }


def _contingency(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Joint counts of two labelings: (num distinct a, num distinct b)."""
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    table = np.zeros((ai.max() + 1, bi.max() + 1), dtype=np.int64)
    np.add.at(table, (ai, bi), 1)
    return table


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def normalized_mutual_info(a: ArrayLike | Tensor, b: ArrayLike | Tensor) -> float:
    """Normalised mutual information between two labelings of the same items, in [0, 1].

    ``NMI = I(A; B) / ((H(A) + H(B)) / 2)`` (arithmetic-mean normalisation, Strehl & Ghosh 2002;
    the default of ``sklearn.metrics.normalized_mutual_info_score``), with entropies in nats
    from the empirical joint distribution. Invariant to relabeling; 1 when one labeling
    determines the other both ways, ~0 for independent ones. As sklearn: two labelings that
    each put everything in one class give 1.
    """
    a_ids, b_ids = _as_int_array(a, "a"), _as_int_array(b, "b")
    if a_ids.size != b_ids.size or a_ids.size == 0:
        raise PlayworldError(
            f"NMI needs two non-empty labelings of equal length, got {a_ids.size} and {b_ids.size}."
        )
    table = _contingency(a_ids, b_ids)  # (Ka, Kb)
    if table.shape == (1, 1):
        return 1.0
    p_ab = table / a_ids.size
    p_a, p_b = p_ab.sum(axis=1, keepdims=True), p_ab.sum(axis=0, keepdims=True)
    nz = p_ab > 0
    mi = float((p_ab[nz] * np.log(p_ab[nz] / (p_a @ p_b)[nz])).sum())
    if mi <= 0:
        return 0.0
    h_mean = (_entropy(table.sum(axis=1)) + _entropy(table.sum(axis=0))) / 2
    return float(min(mi / max(h_mean, np.finfo(np.float64).eps), 1.0))


def fit_latent_action_map(
    latent: ArrayLike | Tensor, true: ArrayLike | Tensor, num_latent: int, num_true: int
) -> np.ndarray:
    """Map each latent action code to the true action it most often co-occurs with.

    As in Genie's CoinRun study, a frozen latent action model labels steps with codes and a
    small labelled set fixes what each code means: ``mapping[z] = argmax_a count(z, a)``
    (majority vote; ties go to the lowest action id). Codes never seen in ``latent`` map to the
    most common true action overall.

    Returns:
        ``mapping``: int64 array ``(num_latent,)``; ``mapping[z]`` is a true action id.
    """
    z, a = _as_int_array(latent, "latent"), _as_int_array(true, "true")
    if z.size != a.size:
        raise PlayworldError(f"latent and true must label the same steps, got {z.size} and {a.size} ids.")
    _check_ids(z, num_latent, "latent")
    _check_ids(a, num_true, "true")
    counts = np.zeros((num_latent, num_true), dtype=np.int64)  # (num_latent, num_true)
    np.add.at(counts, (z, a), 1)
    mapping = counts.argmax(axis=1)  # np.argmax returns the first (lowest) id on ties
    unseen = counts.sum(axis=1) == 0
    mapping[unseen] = counts.sum(axis=0).argmax()
    return mapping.astype(np.int64)


def latent_map_accuracy(mapping: ArrayLike, latent: ArrayLike | Tensor, true: ArrayLike | Tensor) -> float:
    """Fraction of steps where ``mapping[latent]`` equals the true action."""
    m = _as_int_array(mapping, "mapping")
    z, a = _as_int_array(latent, "latent"), _as_int_array(true, "true")
    if z.size != a.size:
        raise PlayworldError(f"latent and true must label the same steps, got {z.size} and {a.size} ids.")
    _check_ids(z, m.size, "latent")
    return float((m[z] == a).mean())


# --------------------------------------------------------------------------------------------
# Fréchet distances (FID / FVD)
# --------------------------------------------------------------------------------------------


def _as_float64(v: ArrayLike | Tensor) -> np.ndarray:
    return v.detach().cpu().double().numpy() if isinstance(v, Tensor) else np.asarray(v, dtype=np.float64)


def frechet_distance(
    mu1: ArrayLike | Tensor,
    sigma1: ArrayLike | Tensor,
    mu2: ArrayLike | Tensor,
    sigma2: ArrayLike | Tensor,
    eps: float = 1e-6,
) -> float:
    """Fréchet (2-Wasserstein) distance between Gaussians N(mu1, sigma1) and N(mu2, sigma2).

    ``d^2 = ||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2))`` (Dowson & Landau
    1982), the formula behind FID (Heusel et al. 2017) and FVD (Unterthiner et al. 2018).
    The matrix square root uses ``scipy.linalg.sqrtm``; if it is not finite (near-singular
    covariances, e.g. fewer samples than feature dims), ``eps * I`` is added to both
    covariances, as in the reference FID code; a negligible imaginary part from rounding is
    dropped.
    """
    from scipy import linalg  # in the `eval` extra; imported here so the rest works without it

    m1, m2 = _as_float64(mu1).reshape(-1), _as_float64(mu2).reshape(-1)
    s1, s2 = np.atleast_2d(_as_float64(sigma1)), np.atleast_2d(_as_float64(sigma2))
    d = m1.size
    if m2.size != d or s1.shape != (d, d) or s2.shape != (d, d):
        raise PlayworldError(
            f"Fréchet distance needs means (D,) and covariances (D, D) of one D; got mu1 {m1.shape}, "
            f"sigma1 {s1.shape}, mu2 {m2.shape}, sigma2 {s2.shape}."
        )
    diff = m1 - m2
    covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        offset = np.eye(d) * eps
        covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise PlayworldError(
                f"The covariance product has a matrix square root with imaginary part up to "
                f"{np.abs(covmean.imag).max():.3g}: the covariances are degenerate. Use more samples "
                "than feature dimensions (or a lower-dimensional feature extractor)."
            )
        covmean = covmean.real
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


def gaussian_stats(features: ArrayLike | Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and unbiased covariance ``(D, D)`` of features ``(N, D)``, N >= 2."""
    f = _as_float64(features)
    if f.ndim != 2 or f.shape[0] < 2:
        raise PlayworldError(f"Features must be shaped (N, D) with N >= 2 samples, got {f.shape}.")
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def frechet_distance_from_features(f1: ArrayLike | Tensor, f2: ArrayLike | Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets ``(N1, D)`` and ``(N2, D)``.

    With at least as many samples as dimensions this is :func:`frechet_distance` of the two
    sample means and covariances. With fewer (common: a few hundred frames, D = 1280) the
    covariances are singular, ``sqrtm`` is slow and inaccurate, so the trace term is computed
    exactly in sample space instead: with centred features ``A1 (N1, D)``, ``A2 (N2, D)`` and
    ``sigma_i = A_i^T A_i / (N_i - 1)``, the non-zero eigenvalues of ``sigma1 sigma2`` are the
    squared singular values of ``A1 A2^T`` over ``(N1 - 1)(N2 - 1)``, so
    ``Tr((sigma1 sigma2)^(1/2)) = ||A1 A2^T||_* / sqrt((N1 - 1)(N2 - 1))`` (nuclear norm).
    """
    a, b = _as_float64(f1), _as_float64(f2)
    for f in (a, b):
        if f.ndim != 2 or f.shape[0] < 2:
            raise PlayworldError(f"Features must be shaped (N, D) with N >= 2 samples, got {f.shape}.")
    if a.shape[1] != b.shape[1]:
        raise PlayworldError(f"Feature sets must share one dimension D, got {a.shape} and {b.shape}.")
    (n1, d), n2 = a.shape, b.shape[0]
    if min(n1, n2) > d:
        return frechet_distance(*gaussian_stats(a), *gaussian_stats(b))
    mu1, mu2 = a.mean(axis=0), b.mean(axis=0)  # (D,)
    a_c, b_c = a - mu1, b - mu2  # (N1, D), (N2, D)
    tr1, tr2 = (a_c**2).sum() / (n1 - 1), (b_c**2).sum() / (n2 - 1)
    tr_covmean = np.linalg.svd(a_c @ b_c.T, compute_uv=False).sum() / math.sqrt((n1 - 1) * (n2 - 1))
    diff = mu1 - mu2
    return float(diff @ diff + tr1 + tr2 - 2.0 * tr_covmean)


class FrechetFeatureDistance:
    """Accumulates features of real and generated images (or clips) and returns their Fréchet distance.

    Frame level (default, FID-style): ``update_*`` takes images ``(..., 3, H, W)`` (e.g. videos
    ``(B, T, 3, H, W)``), flattens them to frames ``(N, 3, H, W)`` and feeds the extractor.
    With :class:`~playworld.eval.features.EfficientNetLite0Features` this is playworld's proxy
    for FVD (I3D weights cannot be fetched here; proxy values are not comparable with the
    paper's FVD). Clip level (``clip_level=True``): ``update_*`` takes clips ``(N, T, 3, H, W)``,
    passed whole to the extractor; give it an I3D wrapper to compute true FVD.

    Example::

        fd = FrechetFeatureDistance(EfficientNetLite0Features())
        fd.update_real(real_video)      # (B, T, 3, H, W) in [0, 1]
        fd.update_fake(generated_video)
        score = fd.compute()
    """

    def __init__(self, extractor: FeatureExtractor | Callable[[Tensor], Tensor], clip_level: bool = False):
        if not callable(extractor):
            raise PlayworldError(
                "extractor must be callable: images -> features (N, D); see FeatureExtractor."
            )
        self.extractor = extractor
        self.clip_level = clip_level
        self._real: list[np.ndarray] = []
        self._fake: list[np.ndarray] = []

    def _features(self, images: Tensor) -> np.ndarray:
        if self.clip_level:
            if images.ndim != 5:
                raise PlayworldError(
                    f"clip_level=True takes clips shaped (N, T, 3, H, W), got {tuple(images.shape)}."
                )
            x = images
        else:
            if images.ndim < 4:
                raise PlayworldError(
                    f"Pass a batch of images (N, 3, H, W) or videos (B, T, 3, H, W), got {tuple(images.shape)}."
                )
            x = images.reshape(-1, *images.shape[-3:])  # (N, 3, H, W)
        feats = _as_float64(self.extractor(x))
        if feats.ndim != 2 or feats.shape[0] != x.shape[0]:
            raise PlayworldError(
                f"The feature extractor must return (N, D) for N={x.shape[0]} inputs, got {feats.shape}."
            )
        return feats

    def update_real(self, images: Tensor) -> None:
        """Add real images ``(..., 3, H, W)`` (or clips ``(N, T, 3, H, W)`` when ``clip_level``)."""
        self._real.append(self._features(images))

    def update_fake(self, images: Tensor) -> None:
        """Add generated images ``(..., 3, H, W)`` (or clips ``(N, T, 3, H, W)`` when ``clip_level``)."""
        self._fake.append(self._features(images))

    @property
    def num_real(self) -> int:
        return sum(f.shape[0] for f in self._real)

    @property
    def num_fake(self) -> int:
        return sum(f.shape[0] for f in self._fake)

    @property
    def real_features(self) -> np.ndarray:
        """All real features so far, float64 ``(num_real, D)`` (e.g. to cache a dataset's statistics)."""
        return np.concatenate(self._real) if self._real else np.empty((0, 0))

    @property
    def fake_features(self) -> np.ndarray:
        """All generated features so far, float64 ``(num_fake, D)``."""
        return np.concatenate(self._fake) if self._fake else np.empty((0, 0))

    def reset(self) -> None:
        """Forget all accumulated features."""
        self._real.clear()
        self._fake.clear()

    def compute(self) -> float:
        """Fréchet distance between the real and generated feature distributions."""
        if self.num_real < 2 or self.num_fake < 2:
            raise PlayworldError(
                f"Need at least 2 real and 2 generated samples, have {self.num_real} and {self.num_fake}; "
                "call update_real / update_fake first (hundreds of samples give stable values)."
            )
        return frechet_distance_from_features(self.real_features, self.fake_features)


# --------------------------------------------------------------------------------------------
# Success rates
# --------------------------------------------------------------------------------------------


def confidence_interval_95(successes: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval for a success rate ``successes / n`` (Wilson 1927).

    With ``p = successes / n`` and ``z = 1.95996`` (the 97.5% normal quantile)::

        center = (p + z^2 / (2n)) / (1 + z^2 / n)
        half   = z * sqrt(p (1 - p) / n + z^2 / (4 n^2)) / (1 + z^2 / n)

    Unlike the normal approximation it stays inside [0, 1] and is sensible at 0 or n successes.
    """
    if n <= 0 or not 0 <= successes <= n:
        raise PlayworldError(f"Need n >= 1 trials and 0 <= successes <= n, got successes={successes}, n={n}.")
    z = 1.959963984540054
    p = successes / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, center - half), min(1.0, center + half)


def newcombe_interval(s1: int, n1: int, s2: int, n2: int) -> tuple[float, float]:
    """95% interval of the difference of two success rates ``s1/n1 - s2/n2``, from their Wilson
    intervals (Newcombe 1998, method 10)."""
    p1, p2 = s1 / n1, s2 / n2
    (l1, u1), (l2, u2) = confidence_interval_95(s1, n1), confidence_interval_95(s2, n2)
    d = p1 - p2
    return d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
