"""The spatio-temporal (ST) transformer: the one backbone of all three Genie models.

Each :class:`STBlock` attends within a frame (spatial, over its S tokens), then causally across
frames at each spatial position (temporal), then applies an MLP (Genie, arXiv 2402.15391,
Sec. 2.1), so the cost is linear in the number of frames instead of quadratic in all tokens.

Positions. The stack adds a learned spatial embedding ``(S, D)`` to its input (the caller adds
nothing). Temporal positions are rotary (RoPE) inside temporal attention: attention then depends
only on the distance between frames, so a sliding window of past frames (``window``, Genie's
16-frame memory) plays for as long as the user likes, and the cached and full forwards agree.

Incremental decoding (interactive play). ``forward(x_new, cache=KVCache())`` takes only the new
frame(s) ``x_new (B, T_new, S, D)``; the cache holds each layer's past temporal keys/values
``(B*S, heads, T_past, dh)``. ``commit=True`` appends the new frames to the cache; ``commit=False``
leaves it untouched, so MaskGIT can re-predict the same frame many times against the same past.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


@dataclass
class KVCache:
    """Past temporal keys/values of every layer, for frame-by-frame decoding.

    ``k[i]``, ``v[i]``: ``(B*S, heads, T_past, dh)`` for layer ``i`` (at most ``window - 1``
    frames are kept). ``length``: frames seen so far, i.e. the absolute index of the next frame
    (its rotary position). Start from an empty ``KVCache()``; the stack fills it.
    """

    k: list[Tensor] = field(default_factory=list)
    v: list[Tensor] = field(default_factory=list)
    length: int = 0

    def clone(self) -> KVCache:
        """An independent copy (cheap: the stack never writes into cached tensors in place)."""
        return KVCache(list(self.k), list(self.v), self.length)


def init_weights(module: nn.Module) -> None:
    """GPT-2 style init shared by every playworld model: N(0, 0.02) weights, zero biases."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)


def patchify(video: Tensor, patch_size: int) -> Tensor:
    """Pixels -> the ST transformer's patch tokens: (B, T, C, H, W) in [0, 1] -> (B, T, S, p*p*C) in [-1, 1]."""
    p = patch_size
    return rearrange(video * 2 - 1, "b t c (h p1) (w p2) -> b t (h w) (p1 p2 c)", p1=p, p2=p)


def unpatchify(patches: Tensor, patch_size: int, grid: tuple[int, int]) -> Tensor:
    """The inverse of :func:`patchify` for a ``grid`` (H/p, W/p) of patches: (B, T, S, p*p*C) in [-1, 1]
    -> (B, T, C, H, W) in [0, 1] (not clamped)."""
    p, (h, w) = patch_size, grid
    x = rearrange(patches, "b t (h w) (p1 p2 c) -> b t c (h p1) (w p2)", h=h, w=w, p1=p, p2=p)
    return (x + 1) / 2


def rotary(x: Tensor, pos: Tensor) -> Tensor:
    """Rotate pairs of channels of ``x (N, H, T, dh)`` by angles ``pos * freq`` (RoPE)."""
    dh = x.shape[-1]
    freq = 10000.0 ** (-torch.arange(0, dh, 2, device=x.device, dtype=torch.float64) / dh)  # (dh/2,)
    angle = pos.to(torch.float64)[:, None] * freq  # (T, dh/2); float64 keeps long games exact
    cos, sin = angle.cos().float(), angle.sin().float()
    x1, x2 = x.float().chunk(2, dim=-1)
    out = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return out.to(x.dtype)


def temporal_mask(q_pos: Tensor, k_pos: Tensor, window: int) -> Tensor:
    """Bool (Tq, Tk), True = may attend: causal, and at most ``window`` frames back (itself included)."""
    d = q_pos[:, None] - k_pos[None, :]
    return (d >= 0) & (d < window)


class Attention(nn.Module):
    """Multi-head self-attention projections, with optional QK-norm (stabilises bf16 training)."""

    def __init__(self, dim: int, head_dim: int, qk_norm: bool = True):
        super().__init__()
        self.heads = dim // head_dim
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.q_norm = nn.RMSNorm(head_dim) if qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(head_dim) if qk_norm else nn.Identity()

    def qkv_heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        # x: (N, L, D) -> q, k, v: (N, heads, L, dh)
        q, k, v = rearrange(self.qkv(x), "n l (three h e) -> three n h l e", three=3, h=self.heads)
        # Norms may run in fp32 under autocast; SDPA wants one dtype.
        return self.q_norm(q.float()).to(v.dtype), self.k_norm(k.float()).to(v.dtype), v


class SpatialAttention(Attention):
    """Full attention among the S tokens of each frame."""

    def forward(self, x: Tensor) -> Tensor:
        B = x.shape[0]
        q, k, v = self.qkv_heads(rearrange(x, "b t s d -> (b t) s d"))  # (B*T, H, S, dh)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(rearrange(y, "(b t) h s e -> b t s (h e)", b=B))  # (B, T, S, D)


class TemporalAttention(Attention):
    """Causal attention across frames at each spatial position, with RoPE and a KV cache."""

    def __init__(self, dim: int, head_dim: int, qk_norm: bool = True, window: int = 16):
        super().__init__(dim, head_dim, qk_norm)
        self.window = window

    def forward(
        self, x: Tensor, past: tuple[Tensor, Tensor] | None = None, start: int = 0
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """``x (B, T, S, D)`` holds frames ``start..start+T-1``; ``past`` the K/V of earlier frames.

        Returns the output ``(B, T, S, D)`` and the K/V of past + new frames ``(B*S, H, T_all, dh)``.
        """
        B, T, S, _ = x.shape
        q, k, v = self.qkv_heads(rearrange(x, "b t s d -> (b s) t d"))  # (B*S, H, T, dh)
        pos = torch.arange(start, start + T, device=x.device)
        q, k = rotary(q, pos), rotary(k, pos)
        T_past = 0
        if past is not None:
            T_past = past[0].shape[2]
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)  # (B*S, H, T_past+T, dh)
        if T_past == 0 and T <= self.window:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1)
        elif T == 1 and T_past < self.window:
            y = F.scaled_dot_product_attention(q, k, v)  # one new frame sees every cached frame
        else:
            k_pos = torch.arange(start - T_past, start + T, device=x.device)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=temporal_mask(pos, k_pos, self.window))
        return self.proj(rearrange(y, "(b s) h t e -> b t s (h e)", b=B, s=S)), (k, v)


class MLP(nn.Module):
    def __init__(self, dim: int, mlp_ratio: float = 4.0):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.fc = nn.Linear(dim, hidden)
        self.proj = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(F.gelu(self.fc(x)))


class STBlock(nn.Module):
    """Pre-norm: x += spatial(x); x += temporal(x) (causal; skipped if spatial_only); x += mlp(x)."""

    def __init__(
        self,
        dim: int,
        head_dim: int,
        mlp_ratio: float = 4.0,
        qk_norm: bool = True,
        spatial_only: bool = False,
        window: int = 16,
    ):
        super().__init__()
        self.norm_s = nn.LayerNorm(dim)
        self.spatial = SpatialAttention(dim, head_dim, qk_norm)
        self.temporal = None
        if not spatial_only:
            self.norm_t = nn.LayerNorm(dim)
            self.temporal = TemporalAttention(dim, head_dim, qk_norm, window)
        self.norm_m = nn.LayerNorm(dim)
        self.mlp = MLP(dim, mlp_ratio)

    def forward(
        self, x: Tensor, past: tuple[Tensor, Tensor] | None = None, start: int = 0
    ) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
        # x: (B, T, S, D)
        x = x + self.spatial(self.norm_s(x))
        kv = None
        if self.temporal is not None:
            y, kv = self.temporal(self.norm_t(x), past, start)
            x = x + y
        x = x + self.mlp(self.norm_m(x))
        return x, kv


class STTransformer(nn.Module):
    """A stack of :class:`STBlock` over ``x (B, T, S, D)`` with a learned spatial embedding and final norm.

    Args:
        depth: number of blocks.
        dim: model width D.
        num_spatial: tokens per frame S (size of the learned spatial position embedding).
        head_dim: channels per attention head (heads = dim // head_dim).
        mlp_ratio: MLP hidden width / dim.
        qk_norm: RMS-normalise queries and keys per head.
        spatial_only: no temporal attention at all (the ViT ablation of Genie's Table 3).
        window: temporal memory in frames: a frame attends to itself and the ``window - 1`` before it.
    """

    def __init__(
        self,
        depth: int,
        dim: int,
        num_spatial: int,
        head_dim: int = 64,
        mlp_ratio: float = 4.0,
        qk_norm: bool = True,
        spatial_only: bool = False,
        window: int = 16,
    ):
        super().__init__()
        self.window, self.spatial_only = window, spatial_only
        self.pos_embed = nn.Parameter(torch.randn(num_spatial, dim) * 0.02)  # (S, D)
        self.blocks = nn.ModuleList(
            STBlock(dim, head_dim, mlp_ratio, qk_norm, spatial_only, window) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, cache: KVCache | None = None, commit: bool = True) -> Tensor:
        """``x (B, T, S, D)`` -> ``(B, T, S, D)``.

        Without a cache, ``x`` is a whole clip (frames 0..T-1). With a cache, ``x`` holds the frames
        that follow the cached ones; ``commit`` appends them to the cache (kept to ``window - 1``).
        """
        x = x + self.pos_embed  # (B, T, S, D)
        start = cache.length if cache is not None else 0
        new_kv = []
        for i, block in enumerate(self.blocks):
            past = (cache.k[i], cache.v[i]) if cache is not None and cache.k else None
            x, kv = block(x, past, start)
            new_kv.append(kv)
        if cache is not None and commit:
            if not self.spatial_only:
                keep = self.window - 1
                cache.k = [k[:, :, k.shape[2] - min(keep, k.shape[2]) :] for k, _ in new_kv]
                cache.v = [v[:, :, v.shape[2] - min(keep, v.shape[2]) :] for _, v in new_kv]
            cache.length += x.shape[1]
        return self.norm(x)
