"""The ST transformer: temporal causality, KV-cached decoding == full forward, sliding window."""

from __future__ import annotations

import pytest
import torch

from playworld.nn.st_transformer import KVCache, STTransformer


def make(window: int = 16, spatial_only: bool = False, depth: int = 2) -> STTransformer:
    torch.manual_seed(0)
    return STTransformer(
        depth, 32, num_spatial=5, head_dim=8, window=window, spatial_only=spatial_only
    ).eval()


def clip(T: int = 6) -> torch.Tensor:
    return torch.randn(2, T, 5, 32, generator=torch.Generator().manual_seed(1))  # (B, T, S, D)


def test_shapes_and_temporal_causality():
    model, x = make(), clip()
    y = model(x)
    assert y.shape == x.shape
    x2 = x.clone()
    x2[:, 3] += torch.randn_like(x2[:, 3])  # perturb frame 3
    y2 = model(x2)
    torch.testing.assert_close(y2[:, :3], y[:, :3], rtol=0, atol=0)  # frames <= 2 unchanged
    assert (y2[:, 3:] - y[:, 3:]).abs().amax() > 1e-3  # later frames see the change


@pytest.mark.parametrize("window", [16, 3])
@pytest.mark.parametrize("chunk", [1, 2])
def test_kv_cached_forward_matches_full(window, chunk):
    model, x = make(window), clip(7)
    full = model(x)
    cache, outs = KVCache(), []
    for t in range(0, x.shape[1], chunk):
        outs.append(model(x[:, t : t + chunk], cache))
    assert cache.length == 7
    assert cache.k[0].shape[2] == min(window - 1, 7)  # the cache never exceeds the window
    torch.testing.assert_close(torch.cat(outs, dim=1), full, atol=1e-5, rtol=1e-4)


def test_uncommitted_frames_leave_cache_untouched():
    """MaskGIT re-predicts the same frame many times against one past: commit=False."""
    model, x = make(), clip(4)
    cache = KVCache()
    model(x[:, :3], cache)
    k0 = [k.clone() for k in cache.k]
    a = model(x[:, 3:], cache, commit=False)
    b = model(x[:, 3:], cache, commit=False)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert cache.length == 3 and all(torch.equal(k, k_) for k, k_ in zip(cache.k, k0, strict=True))
    torch.testing.assert_close(a, model(x)[:, 3:], atol=1e-5, rtol=1e-4)
    fork = cache.clone()
    model(x[:, 3:], cache)
    assert cache.length == 4 and fork.length == 3  # clone is independent


def test_window_limits_memory():
    """With window 2 and one layer, frame t only sees frames t-1 and t."""
    model, x = make(window=2, depth=1), clip(5)
    x2 = x.clone()
    x2[:, 0] += torch.randn_like(x2[:, 0])
    y, y2 = model(x), model(x2)
    assert (y2[:, 1] - y[:, 1]).abs().amax() > 1e-3
    torch.testing.assert_close(y2[:, 2:], y[:, 2:], rtol=0, atol=0)


def test_spatial_only_has_no_temporal_mixing():
    model, x = make(spatial_only=True), clip(3)
    x2 = x.clone()
    x2[:, 0] += torch.randn_like(x2[:, 0])
    torch.testing.assert_close(model(x2)[:, 1:], model(x)[:, 1:], rtol=0, atol=0)
    cache = KVCache()
    out = torch.cat([model(x[:, t : t + 1], cache) for t in range(3)], 1)
    torch.testing.assert_close(out, model(x), atol=1e-6, rtol=1e-5)


def test_bf16_autocast_runs_and_stays_close():
    model, x = make(), clip(4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(x)
        cache = KVCache()
        y_inc = torch.cat([model(x[:, t : t + 1], cache) for t in range(4)], 1)
    assert torch.isfinite(y).all() and torch.isfinite(y_inc).all()
    ref = model(x)
    assert (y.float() - ref).abs().mean() < 0.05
    assert (y_inc.float() - y.float()).abs().mean() < 0.05


def test_gradients_reach_every_parameter():
    model = make().train()
    model(clip(3)).pow(2).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing
