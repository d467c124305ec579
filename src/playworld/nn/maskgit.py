"""MaskGIT masking and iterative parallel decoding (Chang et al. 2022), as used by Genie's dynamics.

Training: :func:`sample_mask` masks a per-sample fraction ``r ~ U[ratio_low, ratio_high]`` of
the tokens (Genie: U[0.5, 1]); the model predicts the masked ones.

Inference: :func:`maskgit_sample` starts with every token masked. Each of ``steps`` steps
predicts all tokens, samples the masked ones (random sampling with ``temperature``; Genie uses
25 steps and temperature 2), keeps the most confident and re-masks the rest so that a fraction
``schedule((s + 1) / steps)`` stays masked (cosine by default). After the last step every token
is filled; ``steps=1`` fills them all at once. ``logits_fn`` is called exactly ``steps`` times.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from playworld.errors import PlayworldError

SCHEDULES: dict[str, Callable[[float], float]] = {
    "cosine": lambda r: math.cos(math.pi / 2 * r),  # MaskGIT's choice: few tokens first, many last
    "linear": lambda r: 1.0 - r,
    "square": lambda r: 1.0 - r * r,
}
"""Fraction of tokens still masked after progress ``r`` in [0, 1] (1 at r=0, 0 at r=1)."""


def get_schedule(schedule: str | Callable[[float], float]) -> Callable[[float], float]:
    if callable(schedule):
        return schedule
    if schedule not in SCHEDULES:
        raise PlayworldError(f"unknown MaskGIT schedule '{schedule}'; choose one of {sorted(SCHEDULES)}.")
    return SCHEDULES[schedule]


def sample_mask(
    batch_size: int,
    num_tokens: int,
    ratio_low: float = 0.5,
    ratio_high: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Bool ``(B, N)``, True = masked: each sample masks ``ceil(r * N)`` (at least 1) random tokens."""
    ratio = torch.rand(batch_size, generator=generator, device=device) * (ratio_high - ratio_low) + ratio_low
    n_masked = (ratio * num_tokens).ceil().clamp(1, num_tokens)  # (B,)
    rank = torch.rand(batch_size, num_tokens, generator=generator, device=device).argsort(1).argsort(1)
    return rank < n_masked[:, None]  # (B, N)


def sample_categorical(probs: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One draw per row of ``probs (..., V)`` by inverse CDF (18x faster than multinomial on CPU)."""
    cdf = probs.cumsum(-1)  # (..., V)
    u = torch.rand(*probs.shape[:-1], 1, generator=generator, device=probs.device) * cdf[..., -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp_max(probs.shape[-1] - 1)


@torch.no_grad()
def maskgit_sample(
    logits_fn: Callable[[Tensor, Tensor], Tensor],
    num_tokens: int,
    steps: int = 25,
    temperature: float = 2.0,
    schedule: str | Callable[[float], float] = "cosine",
    generator: torch.Generator | None = None,
    batch_size: int = 1,
    device: torch.device | str | None = None,
) -> Tensor:
    """Iterative parallel decoding of ``num_tokens`` tokens; returns int64 ``(B, N)``.

    Args:
        logits_fn: ``(tokens (B, N) int64, mask (B, N) bool, True = masked) -> logits (B, N, V)``;
            token values at masked positions are meaningless.
        steps: decoding steps (= calls of ``logits_fn``); Genie uses 25.
        temperature: softmax temperature of the random sampling (Genie: 2); 0 = greedy argmax.
        schedule: "cosine" | "linear" | "square" or a callable (see :data:`SCHEDULES`).
        generator: torch RNG for the sampling (reproducible play); None = global RNG.
    """
    if steps < 1:
        raise PlayworldError(f"MaskGIT needs at least 1 step, got {steps}.")
    still_masked = get_schedule(schedule)
    B, N = batch_size, num_tokens
    tokens = torch.zeros(B, N, dtype=torch.long, device=device)
    mask = torch.ones(B, N, dtype=torch.bool, device=device)
    n_masked = N
    for s in range(steps):
        logits = logits_fn(tokens, mask).float()  # (B, N, V)
        if temperature > 0:
            probs = torch.softmax(logits / temperature, dim=-1)
            sampled = sample_categorical(probs, generator)
        else:
            probs = torch.softmax(logits, dim=-1)
            sampled = probs.argmax(-1)
        confidence = probs.gather(-1, sampled[..., None]).squeeze(-1)  # (B, N)
        tokens = torch.where(mask, sampled, tokens)
        confidence = torch.where(mask, confidence, torch.full_like(confidence, math.inf))
        # How many stay masked after this step: the schedule, but always at least one fewer.
        keep = 0 if s == steps - 1 else math.floor(N * still_masked((s + 1) / steps))
        keep = max(0, min(keep, n_masked - 1))
        mask = torch.zeros_like(mask)
        if keep:
            least_confident = confidence.argsort(dim=1)[:, :keep]  # (B, keep)
            mask.scatter_(1, least_confident, True)
        n_masked = keep
    return tokens
