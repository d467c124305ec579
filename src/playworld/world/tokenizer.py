"""The video tokenizer: an ST-ViViT VQ-VAE that turns frames into discrete tokens and back.

Genie (arXiv 2402.15391, Sec. 2.1): patchify (patch 4) -> ST-transformer encoder (temporally
causal: the tokens of frame t depend only on frames <= t) -> VQ (1024 codes of dim 32) ->
ST-transformer decoder (causal) -> pixels. ``spatial_only=True`` is the ViT ablation of Genie's
Table 3 (no temporal attention; ST-ViViT was best: FVD 81.4 vs 114.5).

Shapes: video ``(B, T, 3, H, W)`` float in [0, 1]; tokens ``(B, T, h, w)`` int64 with
``h = H / patch_size``, ``w = W / patch_size``.

Presets (parameters; 64x64 frames):
    tiny   2.2M   enc 4 x 128, dec 4 x 128   (CPU minutes)
    small  20M    enc 6 x 256, dec 8 x 320   (one GPU, hours)
    base   240M   enc 12 x 512, dec 20 x 768  (Genie's depths at about its 200M; its decoder is 1024 wide)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from playworld.errors import PlayworldError
from playworld.nn.pretrained import ModelConfig, PretrainedModel
from playworld.nn.st_transformer import KVCache, STTransformer, init_weights, patchify, unpatchify
from playworld.nn.vq import VectorQuantizer


@dataclass
class VideoTokenizerConfig(ModelConfig):
    """Configuration of :class:`VideoTokenizer`."""

    model_type: ClassVar[str] = "video_tokenizer"
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": dict(enc_dim=128, enc_depth=4, dec_dim=128, dec_depth=4, head_dim=32),
        "small": dict(enc_dim=256, enc_depth=6, dec_dim=320, dec_depth=8, head_dim=64),
        "base": dict(enc_dim=512, enc_depth=12, dec_dim=768, dec_depth=20, head_dim=64),
    }

    image_size: tuple[int, int] = (64, 64)
    """Frame (height, width) in pixels; both must be multiples of ``patch_size``."""
    channels: int = 3
    """Colour channels of the frames."""
    patch_size: int = 4
    """Side of the square pixel patch that becomes one token (Genie: 4)."""
    enc_dim: int = 128
    """Encoder width."""
    enc_depth: int = 4
    """Encoder ST blocks."""
    dec_dim: int = 128
    """Decoder width."""
    dec_depth: int = 4
    """Decoder ST blocks."""
    head_dim: int = 32
    """Channels per attention head; must divide ``enc_dim`` and ``dec_dim``."""
    mlp_ratio: float = 4.0
    """MLP hidden width / model width."""
    qk_norm: bool = True
    """RMS-normalise attention queries and keys (stable bf16 training)."""
    num_codes: int = 1024
    """Codebook size = token vocabulary (Genie: 1024)."""
    code_dim: int = 32
    """Code vector size (Genie: 32); codes are L2-normalised."""
    beta: float = 0.25
    """Commitment loss weight."""
    dead_code_steps: int = 100
    """Restart codes unused for this many training steps (0 disables)."""
    variance_weight: float = 0.0
    """Weight of the VQ variance penalty that keeps the encoder's latents spread (0 disables)."""
    max_frames: int = 16
    """Temporal window: a frame attends to itself and the ``max_frames - 1`` before it."""
    spatial_only: bool = False
    """No temporal attention (the ViT ablation); tokens of a frame then depend on that frame only."""
    l1_weight: float = 0.0
    """Weight of an extra L1 pixel loss (on top of MSE)."""

    def __post_init__(self) -> None:
        if (
            min(*self.image_size, self.patch_size, self.head_dim, self.enc_dim, self.dec_dim) < 1
            or self.mlp_ratio <= 0
        ):
            raise PlayworldError(
                "image_size, patch_size, head_dim, enc_dim and dec_dim must be >= 1 and mlp_ratio > 0, got "
                f"{self.image_size}, {self.patch_size}, {self.head_dim}, {self.enc_dim}, {self.dec_dim}, {self.mlp_ratio}."
            )
        H, W = self.image_size
        if H % self.patch_size or W % self.patch_size:
            raise PlayworldError(
                f"patch_size {self.patch_size} does not divide image_size {self.image_size}; "
                "pick a patch size that divides both height and width."
            )
        for name in ("enc_dim", "dec_dim"):
            if getattr(self, name) % self.head_dim:
                raise PlayworldError(
                    f"head_dim {self.head_dim} does not divide {name}={getattr(self, name)}; "
                    "heads must split the width evenly."
                )
        if self.head_dim % 2:
            raise PlayworldError(f"head_dim must be even (rotary positions), got {self.head_dim}.")
        for name in (
            "channels",
            "patch_size",
            "enc_depth",
            "dec_depth",
            "num_codes",
            "code_dim",
            "max_frames",
        ):
            if getattr(self, name) < 1:
                raise PlayworldError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if min(self.beta, self.l1_weight, self.dead_code_steps, self.variance_weight) < 0:
            raise PlayworldError("beta, l1_weight, dead_code_steps and variance_weight must be >= 0.")

    @property
    def token_grid(self) -> tuple[int, int]:
        """Tokens per frame as (h, w)."""
        return self.image_size[0] // self.patch_size, self.image_size[1] // self.patch_size


class VideoTokenizer(PretrainedModel):
    """ST-ViViT VQ-VAE: ``encode`` video -> tokens, ``decode`` tokens -> video (both causal in time)."""

    config_class = VideoTokenizerConfig

    def __init__(self, config: VideoTokenizerConfig):
        super().__init__(config)
        c = config
        self.grid = c.token_grid
        S, P = self.grid[0] * self.grid[1], c.patch_size * c.patch_size * c.channels
        stack = dict(
            head_dim=c.head_dim,
            mlp_ratio=c.mlp_ratio,
            qk_norm=c.qk_norm,
            spatial_only=c.spatial_only,
            window=c.max_frames,
        )
        self.patch_embed = nn.Linear(P, c.enc_dim)
        self.encoder = STTransformer(c.enc_depth, c.enc_dim, S, **stack)
        self.to_code = nn.Linear(c.enc_dim, c.code_dim)
        self.vq = VectorQuantizer(
            c.num_codes,
            c.code_dim,
            c.beta,
            l2_normalize=True,
            dead_code_steps=c.dead_code_steps,
            variance_weight=c.variance_weight,
        )
        self.from_code = nn.Linear(c.code_dim, c.dec_dim)
        self.decoder = STTransformer(c.dec_depth, c.dec_dim, S, **stack)
        self.to_pixels = nn.Linear(c.dec_dim, P)
        self.apply(init_weights)

    # -- encoder -> VQ -> decoder --------------------------------------------------------------

    def encode_latents(self, video: Tensor, cache: KVCache | None = None) -> Tensor:
        """Continuous pre-quantisation latents ``(B, T, S, code_dim)``."""
        self._check_video(video)
        x = self.patch_embed(patchify(video, self.config.patch_size))  # (B, T, S, enc_dim)
        return self.to_code(self.encoder(x, cache))  # (B, T, S, code_dim)

    def decode_codes(self, codes: Tensor, cache: KVCache | None = None) -> Tensor:
        """Code vectors ``(B, T, S, code_dim)`` -> pixels ``(B, T, C, H, W)`` (not clamped)."""
        x = self.decoder(self.from_code(codes), cache)  # (B, T, S, dec_dim)
        return unpatchify(self.to_pixels(x).float(), self.config.patch_size, self.grid)

    def forward(self, video: Tensor) -> tuple[Tensor, Tensor, Tensor, dict[str, float]]:
        """Reconstruct ``video``; returns ``(recon (B,T,C,H,W) unclamped, tokens (B,T,h,w), vq_loss, vq_stats)``."""
        z = self.encode_latents(video)
        q, indices, vq_loss, stats = self.vq(z)  # (B, T, S, code_dim), (B, T, S)
        recon = self.decode_codes(q)
        tokens = rearrange(indices, "b t (h w) -> b t h w", h=self.grid[0])
        return recon, tokens, vq_loss, stats

    @torch.no_grad()
    def encode(self, video: Tensor, cache: KVCache | None = None) -> Tensor:
        """Video ``(B, T, C, H, W)`` in [0, 1] -> tokens int64 ``(B, T, h, w)``.

        With ``cache`` (an encoder :class:`KVCache`), ``video`` holds the frames after the cached
        ones, and they are appended to it.
        """
        _, indices, _, _ = self.vq(self.encode_latents(video, cache))
        return rearrange(indices, "b t (h w) -> b t h w", h=self.grid[0])

    @torch.no_grad()
    def decode(self, tokens: Tensor, cache: KVCache | None = None) -> Tensor:
        """Tokens ``(B, T, h, w)`` -> video ``(B, T, C, H, W)`` in [0, 1].

        With ``cache`` (a decoder :class:`KVCache`, start with ``KVCache()``), ``tokens`` holds only
        the new frame(s) and the past frames are not recomputed: how a World decodes one frame
        per step.
        """
        if tokens.dim() != 4 or tuple(tokens.shape[2:]) != self.grid:
            raise PlayworldError(
                f"tokens must be (B, T, {self.grid[0]}, {self.grid[1]}), got {tuple(tokens.shape)}."
            )
        codes = self.vq.lookup(rearrange(tokens, "b t h w -> b t (h w)"))  # (B, T, S, code_dim)
        return self.decode_codes(codes, cache).clamp(0, 1)

    # -- training --------------------------------------------------------------------------------

    def training_step(self, video: Tensor, actions: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
        """Loss = MSE (+ ``l1_weight`` * L1) + VQ loss on a clip batch ``(B, T, C, H, W)`` in [0, 1]."""
        recon, _, vq_loss, stats = self(video)
        target = video.float()
        mse = F.mse_loss(recon, target)
        loss = mse + vq_loss
        if self.config.l1_weight:
            loss = loss + self.config.l1_weight * F.l1_loss(recon, target)
        with torch.no_grad():
            clamped_mse = F.mse_loss(recon.clamp(0, 1), target)
            psnr = -10 * torch.log10(clamped_mse.clamp_min(1e-10))
        return loss, {
            "recon_mse": float(mse.detach()),
            "psnr": float(psnr),
            "vq_loss": float(vq_loss.detach()),
            **stats,
        }

    @torch.no_grad()
    def sample_images(self, video: Tensor, n: int = 4) -> Tensor:
        """``(n, C, H, 2W)``: real frame | reconstruction, for the first ``n`` frames of clip 0."""
        recon = self(video[:1, :n])[0].clamp(0, 1)[0]  # (n, C, H, W)
        return torch.cat([video[0, :n].float(), recon], dim=-1)

    def _check_video(self, video: Tensor) -> None:
        c = self.config
        if video.dim() != 5 or tuple(video.shape[2:]) != (c.channels, *c.image_size):
            raise PlayworldError(
                f"video must be (B, T, {c.channels}, {c.image_size[0]}, {c.image_size[1]}) float in [0, 1], "
                f"got {tuple(video.shape)}; resize frames to the tokenizer's image_size."
            )
