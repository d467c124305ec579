"""MaskGIT: training masks and iterative parallel decoding."""

from __future__ import annotations

import math

import pytest
import torch

from playworld.errors import PlayworldError
from playworld.nn.maskgit import maskgit_sample, sample_mask


def test_sample_mask_ratios_per_sample():
    g = torch.Generator().manual_seed(0)
    m = sample_mask(512, 100, 0.5, 1.0, generator=g)
    assert m.shape == (512, 100) and m.dtype == torch.bool
    frac = m.float().mean(1)
    assert frac.min() >= 0.5 and frac.max() <= 1.0
    assert frac.std() > 0.1  # a ratio per sample, ~U[0.5, 1] (std 0.144)
    assert abs(frac.mean().item() - 0.75) < 0.03
    assert sample_mask(64, 3, 0.01, 0.02).sum(1).min() >= 1  # always something to predict


class Recorder:
    """A logits_fn that prefers token (position % V) and records each call's mask."""

    def __init__(self, V=7):
        self.V, self.masks = V, []

    def __call__(self, tokens, mask):
        self.masks.append(mask.clone())
        B, N = tokens.shape
        target = torch.arange(N) % self.V
        return torch.nn.functional.one_hot(target, self.V).float().expand(B, N, self.V) * 8.0


@pytest.mark.parametrize("steps", [1, 4, 25])
def test_fills_every_position_in_exactly_steps_calls(steps):
    fn = Recorder()
    out = maskgit_sample(
        fn,
        num_tokens=64,
        steps=steps,
        temperature=1.0,
        batch_size=3,
        generator=torch.Generator().manual_seed(0),
    )
    assert out.shape == (3, 64) and out.dtype == torch.long
    assert len(fn.masks) == steps
    assert fn.masks[0].all()  # starts fully masked
    assert out.min() >= 0 and out.max() < 7
    counts = [int(m[0].sum()) for m in fn.masks]
    assert all(a > b for a, b in zip(counts, counts[1:], strict=False))  # strictly fewer masked each step
    if steps == 4:  # cosine: masked after step s = floor(N cos(pi/2 * s/steps))
        assert counts == [64] + [math.floor(64 * math.cos(math.pi / 2 * s / 4)) for s in (1, 2, 3)]


def test_greedy_decoding_recovers_the_argmax():
    out = maskgit_sample(Recorder(), num_tokens=20, steps=5, temperature=0.0)
    assert torch.equal(out[0], torch.arange(20) % 7)


def test_kept_tokens_are_never_resampled_and_generator_reproduces():
    seen = []

    def fn(tokens, mask):
        seen.append((tokens.clone(), mask.clone()))
        return torch.zeros(2, 30, 5)  # uniform: every choice random

    a = maskgit_sample(fn, 30, steps=6, batch_size=2, generator=torch.Generator().manual_seed(3))
    for (t0, m0), (t1, _) in zip(seen[1:], seen[2:], strict=False):
        assert torch.equal(t0[~m0], t1[~m0])  # unmasked tokens stay fixed
    b = maskgit_sample(fn, 30, steps=6, batch_size=2, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_more_steps_than_tokens_still_calls_steps_times():
    fn = Recorder()
    out = maskgit_sample(fn, num_tokens=3, steps=5)
    assert len(fn.masks) == 5 and out.shape == (1, 3)


def test_bad_arguments_are_rejected():
    with pytest.raises(PlayworldError, match="schedule"):
        maskgit_sample(Recorder(), 4, steps=2, schedule="zigzag")
    with pytest.raises(PlayworldError, match="at least 1 step"):
        maskgit_sample(Recorder(), 4, steps=0)


def test_sample_categorical_matches_the_distribution():
    from playworld.nn.maskgit import sample_categorical

    probs = torch.tensor([[0.0, 0.5, 0.0, 0.3, 0.2]]).expand(20000, 5)
    draws = sample_categorical(probs, torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=5).float() / 20000
    assert freq[0] == 0 and freq[2] == 0  # zero-probability tokens are never drawn
    torch.testing.assert_close(freq, probs[0], atol=0.015, rtol=0)
