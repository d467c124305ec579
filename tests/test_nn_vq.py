"""The vector quantiser: nearest codes, straight-through gradients, dead-code restarts, bf16."""

from __future__ import annotations

import torch

from playworld.nn.vq import VectorQuantizer


def test_returns_nearest_codebook_entries():
    torch.manual_seed(0)
    for l2 in (True, False):
        vq = VectorQuantizer(16, 4, l2_normalize=l2).eval()
        z = torch.randn(3, 5, 4)
        q, idx, loss, stats = vq(z)
        assert q.shape == z.shape and idx.shape == (3, 5) and idx.dtype == torch.long
        torch.testing.assert_close(q, vq.lookup(idx))  # outputs are codebook rows
        zz = torch.nn.functional.normalize(z, dim=-1) if l2 else z
        brute = torch.cdist(zz.reshape(-1, 4), vq.codes()).argmin(1).view(3, 5)
        assert torch.equal(idx, brute)
        assert loss.ndim == 0 and loss >= 0
        assert 1 <= stats["codebook_usage"] <= 15 and stats["perplexity"] >= 1


def test_straight_through_gradient_and_codebook_gradient():
    torch.manual_seed(0)
    vq = VectorQuantizer(8, 4, l2_normalize=False, dead_code_steps=0)
    z = torch.randn(10, 4, requires_grad=True)
    q, _, loss, _ = vq(z)
    q.sum().backward(retain_graph=True)
    torch.testing.assert_close(z.grad, torch.ones_like(z))  # identity through the quantiser
    assert vq.codebook.grad is None  # the forward value alone does not train the codes
    loss.backward()
    assert vq.codebook.grad is not None and vq.codebook.grad.abs().sum() > 0  # codebook loss does


def test_first_training_batch_seeds_codebook_from_data():
    torch.manual_seed(0)
    vq = VectorQuantizer(8, 4, l2_normalize=False, dead_code_steps=5).train()
    z = torch.randn(64, 4) * 10 + 50  # far away from the N(0, 1) initial codes
    _, _, _, stats = vq(z)
    assert stats["codes_restarted"] == 8
    dists = (vq.codebook.detach()[:, None] - z[None]).norm(dim=-1).min(1).values
    assert dists.max() < 1e-5  # every code is now one of the batch's vectors


def test_dead_codes_restart_from_recent_encoder_outputs():
    torch.manual_seed(0)
    vq = VectorQuantizer(8, 4, l2_normalize=False, dead_code_steps=3).train()
    vq(torch.randn(64, 4))  # data init
    centre = vq.codebook.detach()[0].clone()
    # Every input sits right on code 0: the other 7 codes go unused.
    restarted = []
    for _ in range(4):
        z = centre + 1e-3 * torch.randn(64, 4)
        restarted.append(vq(z)[3]["codes_restarted"])
    assert restarted[:3] == [0, 0, 0] and restarted[3] >= 6  # after 3 unused steps they come back
    # ... and they were re-initialised from those inputs (near the centre), so they are used again.
    assert (vq.codebook.detach() - centre).norm(dim=1).max() < 0.02
    usage = vq(centre + 1e-3 * torch.randn(256, 4))[3]["codebook_usage"]
    assert usage >= 4


def test_frozen_quantizer_never_changes():
    torch.manual_seed(0)
    vq = VectorQuantizer(8, 4, dead_code_steps=1)
    before = vq.codebook.detach().clone()
    vq.eval()
    vq(torch.randn(32, 4))
    vq.train()
    with torch.no_grad():
        vq(torch.randn(32, 4))
    assert torch.equal(vq.codebook.detach(), before)


def test_bf16_autocast_keeps_quantisation_in_fp32():
    torch.manual_seed(0)
    vq = VectorQuantizer(16, 8).eval()
    z = torch.randn(4, 6, 8)
    ref_idx = vq(z)[1]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lin = torch.nn.Linear(8, 8)
        torch.nn.init.eye_(lin.weight), torch.nn.init.zeros_(lin.bias)
        h = lin(z)  # bf16, as an encoder under autocast would give
        assert h.dtype == torch.bfloat16
        q, idx, loss, _ = vq(h)
    assert q.dtype == torch.float32 and loss.dtype == torch.float32
    assert (idx == ref_idx).float().mean() > 0.9  # bf16 input rounding may flip a near tie
