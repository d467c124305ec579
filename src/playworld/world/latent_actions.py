"""The latent action model (LAM): discovers a few discrete actions from action-free video.

Genie (arXiv 2402.15391, Sec. 2.1): an encoder sees frames x_1..x_t+1 and emits one continuous
latent per transition, quantised by a codebook of only |A| = 8 codes; a decoder must reconstruct
x_t+1 from x_1..x_t and the code, so the code is forced to carry what changed that the past
cannot predict, i.e. the action. Genie found pixel input better than token input (Table 2), so
this model reads pixels. Only the codebook indices are used after training: they label videos
for the dynamics model, and at play time the user picks one.

How it is built here:
- Encoder: patchify (Genie: patch 16) -> an ST transformer (temporally causal) over all T
  frames, each frame's patches preceded by a learned *action query* token. The query's output at
  frame t+1 (which sees frames <= t+1) is projected to ``code_dim``: the latent of t -> t+1.
- VQ with the anti-collapse measures of :mod:`playworld.nn.vq` (LAM codebook collapse is the
  known pitfall): L2-normalised low-dimensional codes, data init, dead-code restarts, the
  entropy regulariser and the variance penalty. The latents are batch-standardised before
  quantisation, and the loss is the next-frame MSE divided by the MSE of copying frame t, so
  that on mostly static game frames (copy PSNR ~32 dB) it is not drowned by the VQ terms.
- Decoder: an ST transformer over the patches of frames 0..T-2, with the embedded code of
  t -> t+1 added to every patch of frame t; it predicts frame t+1 as a residual on frame t, so
  its capacity goes to what changes. 8 codes = 3 bits per step: too few to smuggle the frame.

Measured on Atari (Pitfall + Montezuma, random policy, 64x64; 600 steps of 16 clips x 4
frames; patch 16, 2+2 layers): codes in use on 64 held-out clips (eval mode) / NMI with the
true actions, over the checkpoints from step 200 to 600:
  dead-code restarts + L2 codes only:                  1 of 8 / 0.00 (collapse)
  + batch-standardised latents, + normalised loss:     1 / 0.00
  + entropy term:                                       2-8, median 5 / 0.07-0.23
  + variance penalty (the defaults):                    1-8, median 6 / 0.00-0.22 (7-8 in training)
  the defaults without batch standardisation:           1-2 / 0.00
Held-out usage still jumps while the encoder moves fast (eval uses running statistics); a few
hundred CPU steps only show that the codes stay in use, their meaning grows with training.

Presets (parameters; 64x64 frames):
    tiny   2.2M   patch 8, enc 4 x 128, dec 4 x 128
    small  39M    patch 16, enc 8 x 384, dec 8 x 384
    base   304M   patch 16, enc 9 x 1024, dec 9 x 1024 (Genie's LAM: 300M, patch 16)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

from playworld.errors import PlayworldError
from playworld.nn.pretrained import ModelConfig, PretrainedModel
from playworld.nn.st_transformer import STTransformer, init_weights, patchify, unpatchify
from playworld.nn.vq import VectorQuantizer


@dataclass
class LatentActionConfig(ModelConfig):
    """Configuration of :class:`LatentActionModel`."""

    model_type: ClassVar[str] = "latent_action_model"
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": dict(patch_size=8, dim=128, enc_depth=4, dec_depth=4, head_dim=32),
        "small": dict(patch_size=16, dim=384, enc_depth=8, dec_depth=8, head_dim=64),
        "base": dict(patch_size=16, dim=1024, enc_depth=9, dec_depth=9, head_dim=64),
    }

    image_size: tuple[int, int] = (64, 64)
    """Frame (height, width) in pixels; both must be multiples of ``patch_size``."""
    channels: int = 3
    """Colour channels of the frames."""
    patch_size: int = 16
    """Side of the square pixel patch that becomes one token (Genie: 16)."""
    dim: int = 128
    """Width of encoder and decoder."""
    enc_depth: int = 4
    """Encoder ST blocks."""
    dec_depth: int = 4
    """Decoder ST blocks."""
    head_dim: int = 32
    """Channels per attention head; must divide ``dim``."""
    mlp_ratio: float = 4.0
    """MLP hidden width / model width."""
    qk_norm: bool = True
    """RMS-normalise attention queries and keys."""
    num_actions: int = 8
    """Codebook size |A| = number of latent actions (Genie: 8; 6 in its CoinRun study)."""
    code_dim: int = 16
    """Latent action vector size (small + L2-normalised keeps all codes in use)."""
    beta: float = 0.25
    """Commitment loss weight."""
    dead_code_steps: int = 50
    """Restart action codes unused for this many training steps (0 disables)."""
    entropy_weight: float = 0.1
    """Weight of the VQ entropy regulariser that keeps every action code in use (0 disables)."""
    entropy_temperature: float = 0.2
    """Softness of the soft code assignments of the entropy regulariser."""
    variance_weight: float = 1.0
    """Weight of the VQ variance penalty that keeps action latents spread (0 disables)."""
    latent_norm: bool = True
    """Batch-standardise latents before quantisation (running statistics at eval)."""
    max_frames: int = 16
    """Temporal window: a frame attends to itself and the ``max_frames - 1`` before it."""
    encoder_positions: bool = True
    """Give the encoder's patches a learned spatial position embedding (Genie). False: no spatial
    positions in the encoder (the decoder keeps its own), so a latent can say *what* changed but not
    *where*: on Breakout a LAM with positions spent its codes on the paddle's absolute position
    (NMI with its position bin 0.14-0.24, with its motion 0.05-0.08), which is no action."""
    encoder_input: Literal["frames", "diff", "frames+diff"] = "frames"
    """What the encoder reads at frame t. ``frames`` (Genie): the pixels x_t. ``diff``: the change
    x_t - x_{t-1} only (zero at the first frame), so a latent of t -> t+1 sees *how* things moved and,
    with ``encoder_positions=False``, little of *where* they are. ``frames+diff``: both, stacked as
    channels. The decoder always reads frames."""
    change_weight: float = 0.0
    """Extra reconstruction weight on the pixels that change between frames t and t+1: each pixel's
    squared error counts ``1 + change_weight`` times where max_c |x_{t+1} - x_t| > ``change_threshold``,
    once elsewhere (the copy-frame baseline that normalises the loss gets the same weights). A few
    moving pixels (Breakout's paddle: ~14 of 4,096) then weigh more against the static background.
    0 (the default) is the plain mean."""
    change_threshold: float = 0.02
    """Per-pixel change (in [0, 1] units) above which ``change_weight`` applies."""

    def __post_init__(self) -> None:
        if min(*self.image_size, self.patch_size, self.head_dim, self.dim) < 1 or self.mlp_ratio <= 0:
            raise PlayworldError(
                "image_size, patch_size, head_dim and dim must be >= 1 and mlp_ratio > 0, got "
                f"{self.image_size}, {self.patch_size}, {self.head_dim}, {self.dim}, {self.mlp_ratio}."
            )
        H, W = self.image_size
        if H % self.patch_size or W % self.patch_size:
            raise PlayworldError(
                f"patch_size {self.patch_size} does not divide image_size {self.image_size}; "
                "pick a patch size that divides both height and width."
            )
        if self.dim % self.head_dim or self.head_dim % 2:
            raise PlayworldError(
                f"head_dim {self.head_dim} must be even and divide dim={self.dim}; heads must split the width evenly."
            )
        if self.num_actions < 2:
            raise PlayworldError(
                f"num_actions must be >= 2 (a world needs a choice), got {self.num_actions}."
            )
        for name in ("channels", "patch_size", "enc_depth", "dec_depth", "code_dim", "max_frames"):
            if getattr(self, name) < 1:
                raise PlayworldError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.max_frames < 2:
            raise PlayworldError("max_frames must be >= 2: an action needs two frames.")
        if self.beta < 0 or self.dead_code_steps < 0 or self.entropy_weight < 0:
            raise PlayworldError("beta, dead_code_steps and entropy_weight must be >= 0.")
        if self.entropy_temperature <= 0:
            raise PlayworldError(f"entropy_temperature must be > 0, got {self.entropy_temperature}.")
        if self.change_weight < 0:
            raise PlayworldError(f"change_weight must be >= 0 (0 disables it), got {self.change_weight}.")
        if not 0 <= self.change_threshold < 1:
            raise PlayworldError(
                f"change_threshold must be in [0, 1) (a pixel change in [0, 1] units), got {self.change_threshold}."
            )


class LatentActionModel(PretrainedModel):
    """Infers one of ``num_actions`` discrete latent actions per frame transition of a video."""

    config_class = LatentActionConfig

    def __init__(self, config: LatentActionConfig):
        super().__init__(config)
        c = config
        self.grid = (c.image_size[0] // c.patch_size, c.image_size[1] // c.patch_size)
        S, P = self.grid[0] * self.grid[1], c.patch_size * c.patch_size * c.channels
        stack = dict(head_dim=c.head_dim, mlp_ratio=c.mlp_ratio, qk_norm=c.qk_norm, window=c.max_frames)
        self.patch_embed = nn.Linear(2 * P if c.encoder_input == "frames+diff" else P, c.dim)
        self.action_query = nn.Parameter(torch.randn(c.dim) * 0.02)  # (D,)
        self.encoder = STTransformer(c.enc_depth, c.dim, S + 1, **stack)
        self.to_code = nn.Linear(c.dim, c.code_dim)
        self.latent_norm = nn.BatchNorm1d(c.code_dim, affine=False)
        self.vq = VectorQuantizer(
            c.num_actions,
            c.code_dim,
            c.beta,
            l2_normalize=True,
            dead_code_steps=c.dead_code_steps,
            entropy_weight=c.entropy_weight,
            entropy_temperature=c.entropy_temperature,
            variance_weight=c.variance_weight,
        )
        self.dec_patch_embed = nn.Linear(P, c.dim)
        self.action_embed = nn.Linear(c.code_dim, c.dim)
        self.decoder = STTransformer(c.dec_depth, c.dim, S, **stack)
        self.to_pixels = nn.Linear(c.dim, P)
        self.apply(init_weights)
        if not c.encoder_positions:  # position-free encoder: a permutation of the patches changes no latent
            self.encoder.pos_embed.data.zero_()
            self.encoder.pos_embed.requires_grad_(False)

    @property
    def num_actions(self) -> int:
        return self.config.num_actions

    def encode_latents(self, video: Tensor) -> Tensor:
        """Continuous action latents ``(B, T-1, code_dim)``: entry t describes frame t -> t+1."""
        self._check_video(video)
        x = self.patch_embed(patchify(self.encoder_view(video), self.config.patch_size))  # (B, T, S, D)
        query = repeat(self.action_query, "d -> b t 1 d", b=x.shape[0], t=x.shape[1])
        x = self.encoder(torch.cat([query, x], dim=2))  # (B, T, 1+S, D)
        z = self.to_code(x[:, 1:, 0])  # (B, T-1, code_dim): query outputs of frames 1..T-1
        # Standardise latents over the batch (running stats at eval): at init every latent is
        # nearly the same vector, so all would share one code and the decoder would learn to
        # ignore it (measured: 1 of 8 codes used without this, 8 of 8 with it).
        if not self.config.latent_norm:
            return z
        # A frozen model (eval or no_grad) uses the running statistics, so it never changes.
        bn, learning = self.latent_norm, self.training and torch.is_grad_enabled()
        with torch.autocast(z.device.type, enabled=False):
            z = F.batch_norm(
                rearrange(z.float(), "b t d -> (b t) d"),
                bn.running_mean,
                bn.running_var,
                training=learning,
                momentum=bn.momentum,
                eps=bn.eps,
            )
        return rearrange(z, "(b t) d -> b t d", b=video.shape[0])

    def encoder_view(self, video: Tensor) -> Tensor:
        """What the encoder reads (``encoder_input``): ``(B, T, C', H, W)`` in [0, 1] for :func:`patchify`.

        ``diff`` maps x_t - x_{t-1} (in [-1, 1], 0 at t = 0) to (diff + 1) / 2, so no change is 0.5.
        """
        mode = self.config.encoder_input
        if mode == "frames":
            return video
        diff = torch.cat([torch.zeros_like(video[:, :1]), video[:, 1:] - video[:, :-1]], dim=1)
        diff = (diff + 1) / 2
        return diff if mode == "diff" else torch.cat([video, diff], dim=2)

    def decode(self, context: Tensor, codes: Tensor) -> Tensor:
        """Predict frames 1..T' from ``context (B, T', C, H, W)`` (frames 0..T'-1) and ``codes (B, T', code_dim)``.

        Returns ``(B, T', C, H, W)`` (not clamped); entry t predicts frame t+1.
        """
        patches = patchify(context, self.config.patch_size)  # (B, T', S, P)
        x = self.dec_patch_embed(patches) + self.action_embed(codes)[:, :, None]  # (B, T', S, D)
        delta = self.to_pixels(self.decoder(x)).float()  # (B, T', S, P)
        return unpatchify(patches + delta, self.config.patch_size, self.grid)  # residual on frame t

    def forward(self, video: Tensor) -> tuple[Tensor, Tensor, Tensor, dict[str, float]]:
        """Returns ``(prediction of frames 1..T-1 (B,T-1,C,H,W), actions (B,T-1) int64, vq_loss, vq_stats)``."""
        q, actions, vq_loss, stats = self.vq(self.encode_latents(video))  # (B, T-1, code_dim), (B, T-1)
        return self.decode(video[:, :-1], q), actions, vq_loss, stats

    @torch.no_grad()
    def infer_actions(self, video: Tensor) -> Tensor:
        """Video ``(B, T, C, H, W)`` in [0, 1] -> latent actions int64 ``(B, T-1)`` (a_t: frame t -> t+1)."""
        _, actions, _, _ = self.vq(self.encode_latents(video))
        return actions

    def training_step(self, video: Tensor, actions: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
        """Loss = next-frame MSE / copy-frame MSE + VQ loss on clips ``(B, T, C, H, W)`` in [0, 1].

        ``actions`` is unused (the model learns without them). Training needs B * (T-1) >= 2
        transitions (batch-standardised latents).
        """
        pred, _, vq_loss, stats = self(video)
        target = video[:, 1:].float()
        mse = F.mse_loss(pred, target)
        # Copying frame t is the baseline the code must beat: dividing by it puts the loss on
        # the scale of what changes, however static the game (see the module docstring).
        copy_mse = F.mse_loss(video[:, :-1].float(), target)
        if self.config.change_weight > 0:  # the same ratio, with the changing pixels weighted up
            w = self.change_weights(video)  # (B, T-1, 1, H, W)
            wsum = w.sum() * target.shape[2]
            loss = ((pred - target).pow(2) * w).sum() / wsum
            loss = loss / (((video[:, :-1].float() - target).pow(2) * w).sum() / wsum + 1e-4) + vq_loss
        else:
            loss = mse / (copy_mse + 1e-4) + vq_loss
        with torch.no_grad():
            psnr = -10 * torch.log10(F.mse_loss(pred.clamp(0, 1), target).clamp_min(1e-10))
            copy_psnr = -10 * torch.log10(copy_mse.clamp_min(1e-10))
        logs = {
            "recon_mse": float(mse.detach()),
            "psnr": float(psnr),
            "copy_psnr": float(copy_psnr),
            "vq_loss": float(vq_loss.detach()),
            **stats,
        }
        return loss, logs

    def change_weights(self, video: Tensor) -> Tensor:
        """Per-pixel loss weights ``(B, T-1, 1, H, W)`` of the transitions t -> t+1 (``change_weight``)."""
        change = (video[:, 1:] - video[:, :-1]).abs().amax(dim=2, keepdim=True)  # (B, T-1, 1, H, W)
        changed = change > self.config.change_threshold
        return 1.0 + self.config.change_weight * changed.float()

    @torch.no_grad()
    def sample_images(self, video: Tensor, n: int = 4) -> Tensor:
        """``(n, C, H, 2W)``: real frame t+1 | prediction from frames <= t and the inferred action (clip 0)."""
        pred = self(video[:1, : n + 1])[0].clamp(0, 1)[0]  # (n, C, H, W)
        return torch.cat([video[0, 1 : n + 1].float(), pred], dim=-1)

    def _check_video(self, video: Tensor) -> None:
        c = self.config
        if video.dim() != 5 or tuple(video.shape[2:]) != (c.channels, *c.image_size) or video.shape[1] < 2:
            raise PlayworldError(
                f"video must be (B, T>=2, {c.channels}, {c.image_size[0]}, {c.image_size[1]}) float in [0, 1], "
                f"got {tuple(video.shape)}."
            )
