"""Vector quantisation: the discrete bottleneck of the video tokenizer and of the latent actions.

One :class:`VectorQuantizer`, shared by both models:

- Codes may be L2-normalised (``l2_normalize=True``, the default): inputs and codes live on the
  unit sphere and nearest-neighbour search is cosine similarity. With a low ``code_dim`` this
  keeps codes in use (ViT-VQGAN, Yu et al. 2022) and is what playworld's presets use.
- Codes are learned by gradient (codebook loss ``||sg(z) - q||^2``) and the encoder is held to
  them by the commitment loss ``beta * ||z - sg(q)||^2`` (VQ-VAE, van den Oord et al. 2017);
  the decoder's gradient reaches the encoder through the straight-through estimator.
- Dead-code restarts: a code unused for ``dead_code_steps`` training steps (train mode with
  gradients on; a frozen quantiser never changes) is re-initialised from
  a random encoder output of the current batch. Every code starts "dead", so the first training
  batch seeds the whole codebook from data. This is the remedy for the latent action model's
  codebook collapse (a known pitfall of open Genie reimplementations).

Distances, losses and the restart bookkeeping always run in fp32, also under bf16 autocast.
Restarts are per process (not synchronised across DDP ranks).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


class VectorQuantizer(nn.Module):
    """Nearest-code quantiser with straight-through gradients and dead-code restarts.

    Args:
        num_codes: codebook size K.
        code_dim: code vector size.
        beta: commitment loss weight.
        l2_normalize: quantise directions on the unit sphere (cosine) instead of raw vectors.
        dead_code_steps: restart codes unused for this many training steps (0 disables restarts
            and the data-dependent initialisation).
        entropy_weight: weight of the entropy regulariser (0 = off): with soft assignments
            ``p(k | z) = softmax(-dist / entropy_temperature)``, it adds
            ``weight * (mean_i H(p(. | z_i)) - H(mean_i p(. | z_i)))``: each input confidently on one
            code, the batch spread over all codes (MAGVIT-v2's entropy loss). Restarts alone put
            codes back, but cannot make the encoder *use* them; this does.
        entropy_temperature: softness of those assignments.
        variance_weight: weight of a variance penalty (0 = off, see :meth:`spread_penalty`)
            that keeps the batch of (normalised) inputs spread. It acts on the encoder, so it
            prevents collapse where restarts and the entropy term cannot: when every input is
            almost the same vector.
    """

    def __init__(
        self,
        num_codes: int,
        code_dim: int,
        beta: float = 0.25,
        l2_normalize: bool = True,
        dead_code_steps: int = 100,
        entropy_weight: float = 0.0,
        entropy_temperature: float = 0.2,
        variance_weight: float = 0.0,
    ):
        super().__init__()
        self.num_codes, self.code_dim, self.beta = num_codes, code_dim, beta
        self.l2_normalize, self.dead_code_steps = l2_normalize, dead_code_steps
        self.entropy_weight, self.entropy_temperature = entropy_weight, entropy_temperature
        self.variance_weight = variance_weight
        self.codebook = nn.Parameter(torch.randn(num_codes, code_dim))  # (K, d)
        # Training steps since each code was last chosen; starting "dead" = init from data.
        self.register_buffer("unused_steps", torch.full((num_codes,), dead_code_steps, dtype=torch.long))

    def codes(self) -> Tensor:
        """The codebook as used for quantisation: (K, d), unit-norm rows if ``l2_normalize``."""
        c = self.codebook.float()
        return F.normalize(c, dim=-1) if self.l2_normalize else c

    def lookup(self, indices: Tensor) -> Tensor:
        """Code vectors for integer ``indices`` (any shape) -> ``(*indices.shape, d)``."""
        return self.codes()[indices]

    @torch.no_grad()
    def restart_dead_codes(self, z: Tensor) -> int:
        """Re-initialise codes unused for ``dead_code_steps`` steps from rows of ``z (N, d)``."""
        dead = self.unused_steps >= self.dead_code_steps
        n = int(dead.sum())
        if n:
            pick = torch.randint(0, z.shape[0], (n,), device=z.device)
            self.codebook.data[dead] = z[pick].to(self.codebook.dtype)
            self.unused_steps[dead] = 0
        return n

    def spread_penalty(self, flat: Tensor) -> Tensor:
        """Per-dimension std of the batch below that of an even spread, penalised (VICReg's
        variance term; unit vectors spread evenly over the sphere have std 1/sqrt(d))."""
        target = flat.shape[1] ** -0.5 if self.l2_normalize else 1.0
        return F.relu(target - flat.std(dim=0)).mean()

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor, dict[str, float]]:
        """Quantise ``z (..., d)``.

        Returns ``(quantised (..., d) fp32 with straight-through gradient, indices (...) int64,
        loss (scalar: codebook + beta * commitment), stats)``; stats hold ``codebook_usage``
        (distinct codes used in this batch), ``perplexity`` (exp of the usage entropy) and
        ``codes_restarted``.
        """
        with torch.autocast(z.device.type, enabled=False):
            flat = rearrange(z.float(), "... d -> (...) d")  # (N, d)
            if self.l2_normalize:
                flat = F.normalize(flat, dim=-1)
            # Bookkeeping only while learning: a frozen model (eval or no_grad) never changes.
            learning = self.training and torch.is_grad_enabled()
            restarted = 0
            if learning and self.dead_code_steps > 0:
                restarted = self.restart_dead_codes(flat.detach())
            codes = self.codes()  # (K, d)
            dist = (
                flat.pow(2).sum(1, keepdim=True) - 2 * flat @ codes.t() + codes.pow(2).sum(1)[None]
            )  # (N, K)
            indices = dist.argmin(dim=1)  # (N,)
            q = codes[indices]  # (N, d): gradients reach the codebook through this gather
            loss = F.mse_loss(q, flat.detach()) + self.beta * F.mse_loss(flat, q.detach())
            if self.entropy_weight > 0:
                p = torch.softmax(-dist / self.entropy_temperature, dim=-1)  # (N, K) soft assignments
                per_input = -(p * torch.log(p.clamp_min(1e-10))).sum(-1).mean()
                p_batch = p.mean(0)
                batch = -(p_batch * torch.log(p_batch.clamp_min(1e-10))).sum()
                loss = loss + self.entropy_weight * (per_input - batch)
            if self.variance_weight > 0 and flat.shape[0] > 1:
                loss = loss + self.variance_weight * self.spread_penalty(flat)
            q = flat + (q - flat).detach()  # straight-through: forward q, backward identity to z

            counts = torch.bincount(indices, minlength=self.num_codes)
            if learning:
                self.unused_steps += 1
                self.unused_steps[counts > 0] = 0
            p = counts.float() / max(1, indices.numel())
            perplexity = torch.exp(-(p * torch.log(p.clamp_min(1e-10))).sum())
            stats = {
                "codebook_usage": float((counts > 0).sum()),
                "perplexity": float(perplexity),
                "codes_restarted": float(restarted),
            }
        return q.view(*z.shape), indices.view(z.shape[:-1]), loss, stats
