"""The dynamics model: a decoder-only MaskGIT ST transformer that predicts the next frame's tokens.

Genie (arXiv 2402.15391, Sec. 2.1): given the tokens of past frames and latent actions, predict
the tokens of the next frame. Training masks a per-sample fraction U[0.5, 1] of the tokens of
frames 1..T-1 (frame 0 stays clean context) and takes cross-entropy on the masked tokens only.
Inference is MaskGIT iterative decoding (Genie: 25 steps, temperature 2, random sampling) with a
16-frame memory; the ST transformer's KV cache means past frames are computed once, not once per
MaskGIT step. As in Genie, training masks the context frames too (only frame 0 is clean), while
play conditions on clean past frames; and play keeps a sliding window whose oldest frame carries
its real action, where training's frame 0 carries "no action".

Conventions: tokens ``(B, T, h, w)`` int64 from the :class:`VideoTokenizer`; actions
``(B, T-1)`` int64 from the :class:`LatentActionModel`, where ``a_t`` leads from frame t to
t+1. The input of frame t+1 carries ``a_t``; frame 0 carries a learned "no action" embedding.
``action_conditioning``: "additive" adds the action embedding to every token of the frame (as in
Genie); "token" prepends it as one extra token per frame (an open reimplementation found that
better).

Interactive play::

    state = dynamics.start(prompt_tokens)   # (B, 1, h, w)
    next_tokens = state.step(action)        # (B, h, w); repeat with new actions

Speed (tiny, CPU, one core, per generated frame incl. the tokenizer's cached decode; a step
is ``steps`` MaskGIT forwards of the new frame + one to append it to the cache):
    16x16 tokens (tokenizer patch 4):  4 steps ~90 ms (11 frames/s), 25 steps ~370 ms
    8x8 tokens (tokenizer patch 8):    4 steps ~28 ms (35 frames/s), 25 steps ~130 ms
The cost is linear in tokens per frame x steps x depth x width^2: 20+ frames/s on a CPU needs
the 8x8 grid or few steps; a GPU needs neither.

Presets (parameters; 16x16 tokens, 1024 codes):
    tiny   1.35M  4 x 128 (CPU play, see Speed)
    small  35M    8 x 512
    base   156M   12 x 896 (Genie's dynamics: 48 x 5120, 10.1B)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from playworld.errors import PlayworldError
from playworld.nn.maskgit import SCHEDULES, maskgit_sample, sample_mask
from playworld.nn.pretrained import ModelConfig, PretrainedModel
from playworld.nn.st_transformer import KVCache, STTransformer, init_weights


@dataclass
class DynamicsConfig(ModelConfig):
    """Configuration of :class:`DynamicsModel`."""

    model_type: ClassVar[str] = "dynamics_model"
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": dict(dim=128, depth=4, head_dim=32),
        "small": dict(dim=512, depth=8, head_dim=64),
        "base": dict(dim=896, depth=12, head_dim=64),
    }

    num_codes: int = 1024
    """Token vocabulary = the tokenizer's ``num_codes``."""
    token_grid: tuple[int, int] = (16, 16)
    """Tokens per frame (h, w) = the tokenizer's ``token_grid``."""
    num_actions: int = 8
    """Number of latent actions = the latent action model's ``num_actions``."""
    dim: int = 128
    """Model width."""
    depth: int = 4
    """ST blocks."""
    head_dim: int = 32
    """Channels per attention head; must divide ``dim``."""
    mlp_ratio: float = 4.0
    """MLP hidden width / model width."""
    qk_norm: bool = True
    """RMS-normalise attention queries and keys."""
    max_frames: int = 16
    """Memory: a frame attends to itself and the ``max_frames - 1`` before it (Genie: 16)."""
    action_conditioning: Literal["additive", "token"] = "additive"
    """"additive": action embedding added to every token (Genie); "token": one action token prepended per frame."""
    mask_ratio_low: float = 0.5
    """Training masks a per-sample fraction U[mask_ratio_low, mask_ratio_high] of tokens (Genie: 0.5)."""
    mask_ratio_high: float = 1.0
    """Upper end of the training mask ratio (Genie: 1.0)."""
    maskgit_steps: int = 25
    """Default MaskGIT decoding steps at inference (Genie: 25)."""
    temperature: float = 2.0
    """Default sampling temperature at inference (Genie: 2; 0 = greedy)."""
    schedule: str = "cosine"
    """MaskGIT schedule: "cosine", "linear" or "square"."""

    def __post_init__(self) -> None:
        if min(self.head_dim, self.dim) < 1 or self.mlp_ratio <= 0:
            raise PlayworldError(
                f"head_dim and dim must be >= 1 and mlp_ratio > 0, got {self.head_dim}, {self.dim}, {self.mlp_ratio}."
            )
        if self.dim % self.head_dim or self.head_dim % 2:
            raise PlayworldError(
                f"head_dim {self.head_dim} must be even and divide dim={self.dim}; heads must split the width evenly."
            )
        if self.action_conditioning not in ("additive", "token"):
            raise PlayworldError(
                f"action_conditioning must be 'additive' or 'token', got '{self.action_conditioning}'."
            )
        if not 0 < self.mask_ratio_low <= self.mask_ratio_high <= 1:
            raise PlayworldError(
                f"mask ratios must satisfy 0 < low <= high <= 1, got {self.mask_ratio_low}, {self.mask_ratio_high}."
            )
        if self.schedule not in SCHEDULES:
            raise PlayworldError(f"unknown schedule '{self.schedule}'; choose one of {sorted(SCHEDULES)}.")
        for name in ("num_codes", "num_actions", "dim", "depth", "maskgit_steps"):
            if getattr(self, name) < 1:
                raise PlayworldError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if min(self.token_grid) < 1 or self.max_frames < 2:
            raise PlayworldError("token_grid must be positive and max_frames >= 2.")
        if self.temperature < 0:
            raise PlayworldError(f"temperature must be >= 0, got {self.temperature}.")


class DynamicsModel(PretrainedModel):
    """MaskGIT ST transformer: tokens of frames <= t + actions -> logits of the tokens of every frame."""

    config_class = DynamicsConfig

    def __init__(self, config: DynamicsConfig):
        super().__init__(config)
        c = config
        self.num_tokens = c.token_grid[0] * c.token_grid[1]
        self.mask_id = c.num_codes  # one extra embedding row: the [MASK] token
        self.null_action = c.num_actions  # one extra action row: "no action" (frame 0)
        self.token_embed = nn.Embedding(c.num_codes + 1, c.dim)
        self.action_embed = nn.Embedding(c.num_actions + 1, c.dim)
        S = self.num_tokens + (c.action_conditioning == "token")
        self.transformer = STTransformer(
            c.depth,
            c.dim,
            S,
            head_dim=c.head_dim,
            mlp_ratio=c.mlp_ratio,
            qk_norm=c.qk_norm,
            window=c.max_frames,
        )
        self.head = nn.Linear(c.dim, c.num_codes)
        self.apply(init_weights)

    def frame_features(
        self, ids: Tensor, frame_actions: Tensor, cache: KVCache | None = None, commit: bool = True
    ) -> Tensor:
        """``ids (B, T, N)`` (``mask_id`` = masked), ``frame_actions (B, T)`` (the action that led *into*
        each frame; ``null_action`` for the first) -> features ``(B, T, N, D)``."""
        x = self.token_embed(ids)  # (B, T, N, D)
        a = self.action_embed(frame_actions)[:, :, None]  # (B, T, 1, D)
        if self.config.action_conditioning == "additive":
            x = x + a
        else:
            x = torch.cat([a, x], dim=2)  # (B, T, 1+N, D)
        x = self.transformer(x, cache, commit)
        return x[:, :, 1:] if self.config.action_conditioning == "token" else x

    def frame_logits(
        self, ids: Tensor, frame_actions: Tensor, cache: KVCache | None = None, commit: bool = True
    ) -> Tensor:
        """Like :meth:`frame_features`, projected to logits ``(B, T, N, num_codes)``."""
        return self.head(self.frame_features(ids, frame_actions, cache, commit))

    def forward(self, tokens: Tensor, actions: Tensor, mask: Tensor | None = None) -> Tensor:
        """Logits ``(B, T, h, w, num_codes)`` for ``tokens (B, T, h, w)``, ``actions (B, T-1)``.

        ``mask (B, T, h, w)`` bool (True = replaced by the [MASK] token). Causal in time: the
        logits of frame t depend on frames <= t and actions < t only.
        """
        self._check(tokens, actions)
        B, T, h, w = tokens.shape
        if mask is not None:
            tokens = tokens.masked_fill(mask, self.mask_id)
        ids = rearrange(tokens, "b t h w -> b t (h w)")
        logits = self.frame_logits(ids, self._frame_actions(actions, B))
        return rearrange(logits, "b t (h w) v -> b t h w v", h=h)

    def training_step(self, tokens: Tensor, actions: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
        """Masked-token cross-entropy on ``tokens (B, T, h, w)`` (frozen tokenizer) and ``actions (B, T-1)``
        (frozen latent action model). Frame 0 is clean context; frames 1..T-1 are masked."""
        if actions is None:
            raise PlayworldError(
                "the dynamics model trains on (tokens, actions); label the clips with the latent action model."
            )
        B, T, h, w = tokens.shape
        if T < 2:
            raise PlayworldError(f"dynamics training needs clips of >= 2 frames, got {T}.")
        r_lo, r_hi = self.config.mask_ratio_low, self.config.mask_ratio_high
        mask = sample_mask(B, (T - 1) * h * w, r_lo, r_hi, device=tokens.device)
        mask = rearrange(mask, "b (t h w) -> b t h w", t=T - 1, h=h)
        mask = torch.cat([torch.zeros_like(mask[:, :1]), mask], dim=1)  # (B, T, h, w); frame 0 clean
        self._check(tokens, actions)
        ids = rearrange(tokens.masked_fill(mask, self.mask_id), "b t h w -> b t (h w)")
        x = self.frame_features(ids, self._frame_actions(actions, B))  # (B, T, N, D)
        flat_mask = rearrange(mask, "b t h w -> b t (h w)")
        logits = self.head(x[flat_mask]).float()  # (M, V): the head only where there is a target
        target = rearrange(tokens, "b t h w -> b t (h w)")[flat_mask]  # (M,)
        loss = F.cross_entropy(logits, target)
        with torch.no_grad():
            acc = (logits.argmax(-1) == target).float().mean()
        return loss, {
            "ce": float(loss.detach()),
            "accuracy": float(acc),
            "mask_ratio": float(mask[:, 1:].float().mean()),
        }

    # -- inference -----------------------------------------------------------------------------

    def start(self, prompt_tokens: Tensor, prompt_actions: Tensor | None = None) -> DynamicsState:
        """Begin a rollout from ``prompt_tokens (B, T0, h, w)`` (actions ``(B, T0-1)`` needed if T0 > 1)."""
        return DynamicsState(self, prompt_tokens, prompt_actions)

    @torch.no_grad()
    def generate_next(
        self,
        context_tokens: Tensor,
        actions: Tensor,
        steps: int | None = None,
        temperature: float | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Tokens ``(B, h, w)`` of the frame after ``context_tokens (B, T, h, w)``.

        ``actions (B, T)``: ``actions[:, t]`` leads from frame t to t+1, so the last one leads to the
        new frame. Only the last ``max_frames - 1`` context frames are seen. For step-by-step play
        keep a :class:`DynamicsState` (``start``) instead: it never recomputes past frames.
        """
        if actions.shape[:2] != context_tokens.shape[:2]:
            raise PlayworldError(
                f"generate_next needs one action per context frame: tokens {tuple(context_tokens.shape)}, "
                f"actions {tuple(actions.shape)}."
            )
        keep = self.config.max_frames - 1
        state = self.start(context_tokens[:, -keep:], actions[:, -keep:-1])
        return state.step(actions[:, -1], steps, temperature, generator)

    def _frame_actions(self, actions: Tensor, B: int) -> Tensor:
        # (B, T-1) transition actions -> (B, T) actions into each frame, "no action" for frame 0
        null = torch.full((B, 1), self.null_action, dtype=torch.long, device=actions.device)
        return torch.cat([null, actions.long()], dim=1)

    def _check(self, tokens: Tensor, actions: Tensor) -> None:
        c = self.config
        if tokens.dim() != 4 or tuple(tokens.shape[2:]) != tuple(c.token_grid):
            raise PlayworldError(
                f"tokens must be (B, T, {c.token_grid[0]}, {c.token_grid[1]}), got {tuple(tokens.shape)}."
            )
        if tuple(actions.shape) != (tokens.shape[0], tokens.shape[1] - 1):
            raise PlayworldError(
                f"actions must be (B, T-1) = {(tokens.shape[0], tokens.shape[1] - 1)} for tokens "
                f"{tuple(tokens.shape)} (a_t leads from frame t to t+1), got {tuple(actions.shape)}."
            )
        if actions.numel() and (actions.min() < 0 or actions.max() >= c.num_actions):
            raise PlayworldError(
                f"actions must be in [0, {c.num_actions}), got values {actions.min()}..{actions.max()}."
            )


class DynamicsState:
    """A rollout in progress: the KV cache of the frames so far, kept by a World between steps.

    ``step(action)`` samples the next frame with MaskGIT (re-running only the new frame against
    the cached past, ``steps`` times) and then appends it to the cache (one more forward on the
    final tokens, so the cache matches what training saw: clean past frames).
    """

    def __init__(self, model: DynamicsModel, prompt_tokens: Tensor, prompt_actions: Tensor | None = None):
        B, T0 = prompt_tokens.shape[:2]
        if T0 > 1 and prompt_actions is None:
            raise PlayworldError(
                "a prompt of several frames needs the actions between them: prompt_actions (B, T0-1)."
            )
        actions = prompt_actions if prompt_actions is not None else prompt_tokens.new_zeros(B, 0)
        model._check(prompt_tokens, actions)
        self.model, self.batch_size = model, B
        self.cache = KVCache()
        self.frames = 0  # frames in the rollout so far
        self.tokens = prompt_tokens[:, -1]  # (B, h, w): the latest frame
        with torch.no_grad():
            ids = rearrange(prompt_tokens, "b t h w -> b t (h w)")
            model.frame_features(ids, model._frame_actions(actions, B), self.cache, commit=True)
        self.frames = T0

    def clone(self) -> DynamicsState:
        """An independent copy: branch a rollout (e.g. try every action from the same state)."""
        other = object.__new__(DynamicsState)
        other.model, other.batch_size, other.frames, other.tokens = (
            self.model,
            self.batch_size,
            self.frames,
            self.tokens,
        )
        other.cache = self.cache.clone()
        return other

    @torch.no_grad()
    def step(
        self,
        action: Tensor | int,
        steps: int | None = None,
        temperature: float | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Apply ``action`` (int or ``(B,)`` int64) and return the next frame's tokens ``(B, h, w)``."""
        m, c = self.model, self.model.config
        device = self.cache.k[0].device if self.cache.k else m.head.weight.device
        action = torch.as_tensor(action, dtype=torch.long, device=device).expand(self.batch_size)  # (B,)
        if action.min() < 0 or action.max() >= c.num_actions:
            raise PlayworldError(f"action must be in [0, {c.num_actions}), got {action.tolist()}.")
        frame_action = action[:, None]  # (B, 1)

        def logits_fn(tokens: Tensor, mask: Tensor) -> Tensor:
            ids = tokens.masked_fill(mask, m.mask_id)[:, None]  # (B, 1, N)
            return m.frame_logits(ids, frame_action, self.cache, commit=False)[:, 0]  # (B, N, V)

        tokens = maskgit_sample(
            logits_fn,
            m.num_tokens,
            steps=steps if steps is not None else c.maskgit_steps,
            temperature=temperature if temperature is not None else c.temperature,
            schedule=c.schedule,
            generator=generator,
            batch_size=self.batch_size,
            device=device,
        )  # (B, N)
        m.frame_features(tokens[:, None], frame_action, self.cache, commit=True)
        self.frames += 1
        self.tokens = rearrange(tokens, "b (h w) -> b h w", h=c.token_grid[0])
        return self.tokens
