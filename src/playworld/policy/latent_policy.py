"""A policy that acts through latent actions: observation -> latent action -> real action.

Genie's agent study (arXiv 2402.15391, Sec. 3.3, CoinRun): a frozen latent action model (LAM)
labels expert video with its latent actions; a policy learns to predict the expert's latent
action from the observation (behaviour cloning without a single real action); then a tiny
labelled set fixes what each latent action means in the real environment (the latent -> real
map; 200 labelled samples matched an oracle BC policy trained on real actions).

One network serves both sides of that comparison, so they differ only in their labels:

- ``target="latent"``: logits over the LAM's ``num_latent`` codes, followed by ``action_map``
  (latent -> real id, majority vote on the labelled subset, as Genie);
- ``target="real"``: logits over the ``num_actions`` real actions (oracle behaviour cloning).

LAPA's alternative to the fixed map (arXiv 2410.11758): the trained latent policy's trunk gets a
fresh real-action output layer and the whole net is fine-tuned on the labelled transitions
(:meth:`LatentPolicyNet.load_trunk`); the result is an ordinary ``target="real"`` policy.

The network reads the last ``num_frames`` frames (greyscale by default) stacked as channels
(two frames show what moves and which way), two convolutions at half resolution, then a
*spatial softmax* (Levine et al. 2016, "End-to-End Training of Deep Visuomotor Policies"): each
of ``keypoints`` feature maps becomes the expected (x, y) of its activation, and an MLP maps
those coordinates to logits. Atari decisions hinge on where small objects are (ball above or
below the paddle); measured on Pong expert video (1500 steps, batch 32, the same budget), the
Atari-DQN stack (8x8/4, 4x4/2, 3x3/1 + MLP) stayed at the majority-class accuracy (41%) while
this network reached 88% held-out accuracy.

Usage::

    policy = LatentActionPolicy.from_pretrained("runs/latent-policy")
    policy.reset()
    action = policy.select_action(frame)          # uint8 (H, W, 3) -> real action id
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from playworld.errors import PlayworldError
from playworld.nn.pretrained import ModelConfig, PretrainedModel
from playworld.utils import get_logger

log = get_logger("policy.latent")

_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as PIL's "L" mode


@dataclass
class LatentPolicyConfig(ModelConfig):
    """Configuration of :class:`LatentPolicyNet`."""

    model_type: ClassVar[str] = "latent_action_policy"
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": dict(channels=(16, 32), keypoints=16, hidden=128),
        "small": dict(channels=(32, 64), keypoints=32, hidden=256),
    }

    image_size: tuple[int, int] = (64, 64)
    """Frame (height, width) the network reads; other sizes are resized by the runtime policy."""
    num_frames: int = 2
    """Observation = the last N frames, stacked as channels (the first frame is repeated at reset)."""
    grayscale: bool = True
    """Read frames as greyscale (one channel each) instead of RGB."""
    channels: tuple[int, int] = (32, 64)
    """Widths of the two convolutions (5x5 stride 2, then 3x3)."""
    keypoints: int = 32
    """Feature maps turned into (x, y) keypoints by the spatial softmax."""
    hidden: int = 256
    """Width of the MLP on the keypoints."""
    target: Literal["latent", "real"] = "latent"
    """What the logits are over: the LAM's latent actions (Genie) or the real actions (oracle BC)."""
    num_latent: int = 8
    """Codebook size |A| of the latent action model whose labels the policy learns (Genie: 8; CoinRun study: 6)."""
    num_actions: int = 6
    """Real actions of the environment (ids 0..num_actions-1)."""
    action_map: list[int] | None = None
    """Latent -> real action id (length ``num_latent``), fitted on the labelled subset; None = not fitted."""
    action_names: list[str] | None = None
    """Names of the real actions (index = id), for printing."""
    game: str | None = None
    """The game the training video came from (the default environment for evaluation)."""

    def __post_init__(self) -> None:
        self.image_size = tuple(int(x) for x in self.image_size)  # type: ignore[assignment]
        self.channels = tuple(int(x) for x in self.channels)  # type: ignore[assignment]
        if len(self.image_size) != 2 or min(self.image_size) < 8:
            raise PlayworldError(f"image_size must be (height, width) >= 8 pixels, got {self.image_size}.")
        if len(self.channels) != 2 or min(self.channels) < 1 or self.hidden < 1 or self.keypoints < 1:
            raise PlayworldError(
                f"channels must be two widths >= 1, keypoints and hidden >= 1; got {self.channels}, "
                f"{self.keypoints}, {self.hidden}."
            )
        if self.num_frames < 1:
            raise PlayworldError(f"num_frames must be >= 1, got {self.num_frames}.")
        if self.target not in ("latent", "real"):
            raise PlayworldError(f"target must be 'latent' or 'real', got {self.target!r}.")
        if self.num_latent < 2 or self.num_actions < 1:
            raise PlayworldError(
                f"num_latent must be >= 2 and num_actions >= 1, got {self.num_latent} and {self.num_actions}."
            )
        if self.action_map is not None:
            self.action_map = [int(a) for a in self.action_map]
            check_action_map(self.action_map, self.num_latent, self.num_actions)
        if self.action_names is not None and len(self.action_names) != self.num_actions:
            raise PlayworldError(
                f"action_names has {len(self.action_names)} names for num_actions={self.num_actions}; give one per action."
            )

    @property
    def num_outputs(self) -> int:
        return self.num_latent if self.target == "latent" else self.num_actions

    @property
    def in_channels(self) -> int:
        return self.num_frames * (1 if self.grayscale else 3)


def check_action_map(action_map: list[int] | np.ndarray, num_latent: int, num_actions: int) -> None:
    """A latent -> real map must have one entry per latent code, each a real action id."""
    m = np.asarray(action_map)
    shapes = ((num_latent,), (num_latent, num_actions))  # per latent, or per (latent, previous real action)
    if m.shape not in shapes or (m.size and (m.min() < 0 or m.max() >= num_actions)):
        raise PlayworldError(
            f"the latent -> real action map must hold {num_latent} ids in [0, {num_actions}) (one per latent "
            f"action of the LAM; or {num_latent} x {num_actions}, one per latent and previous real action), got "
            f"{m.tolist()}; fit it with the same LAM the policy was trained on."
        )


def check_codebook(lam_num_actions: int, num_latent: int, what: str = "the policy") -> None:
    """The LAM that labels video must have exactly as many codes as ``what`` predicts."""
    if lam_num_actions != num_latent:
        raise PlayworldError(
            f"the latent action model has a codebook of {lam_num_actions} latent actions but {what} predicts "
            f"{num_latent}; use the LAM the policy was trained with (or train the policy again with this LAM)."
        )


class LatentPolicyNet(PretrainedModel):
    """Frames ``(B, F, H, W, 3)`` uint8 (or ``(B, F, H, W)`` greyscale) -> logits ``(B, num_outputs)``."""

    config_class = LatentPolicyConfig

    def __init__(self, config: LatentPolicyConfig):
        super().__init__(config)
        c0, c1 = config.channels
        self.convs = nn.Sequential(
            nn.Conv2d(config.in_channels, c0, 5, stride=2, padding=2), nn.ReLU(),
            nn.Conv2d(c0, c1, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c1, config.keypoints, 1),
        )
        h, w = (config.image_size[0] + 1) // 2, (config.image_size[1] + 1) // 2
        self.register_buffer("grid_y", torch.linspace(-1, 1, h), persistent=False)
        self.register_buffer("grid_x", torch.linspace(-1, 1, w), persistent=False)
        self.head = nn.Sequential(nn.Linear(2 * config.keypoints, config.hidden), nn.ReLU(),
                                  nn.Linear(config.hidden, config.num_outputs))
        # The map lives in the config (JSON, readable); this buffer is its tensor for act().
        amap = config.action_map if config.action_map is not None else [0] * config.num_latent
        self.register_buffer("action_map", torch.tensor(amap, dtype=torch.long), persistent=False)

    OUTPUT_LAYER: ClassVar[str] = "head.2"
    """The last linear layer (logits): the only part that depends on ``target`` and is not transferred."""

    def load_trunk(self, other: LatentPolicyNet) -> None:
        """Copy every weight of ``other`` but its output layer into this network (LAPA's adaptation).

        A latent-action policy (``target="latent"``) learnt from unlabelled video gives its trunk
        (convolutions, keypoints, the MLP's hidden layer) to a real-action policy; the new output
        layer keeps its fresh initialisation and both are then fine-tuned on the labelled
        transitions (:func:`playworld.policy.train_latent.finetune_policy`).
        """
        a, b = self.config, other.config
        fields = ("image_size", "num_frames", "grayscale", "channels", "keypoints", "hidden")
        diff = [f for f in fields if getattr(a, f) != getattr(b, f)]
        if diff:
            raise PlayworldError(
                "the pretrained policy's trunk does not fit this network ("
                + ", ".join(f"{f}: {getattr(b, f)} vs {getattr(a, f)}" for f in diff)
                + "); fine-tune with the same preset, frame count, colour mode and frame size."
            )
        prefix = self.OUTPUT_LAYER + "."
        trunk = {k: v for k, v in other.state_dict().items() if not k.startswith(prefix)}
        missing, unexpected = self.load_state_dict(trunk, strict=False)
        assert not unexpected and all(k.startswith(prefix) for k in missing), (missing, unexpected)

    def preprocess(self, frames: Tensor) -> Tensor:
        """uint8 frames ``(B, F, H, W, 3)`` or ``(B, F, H, W)`` -> float ``(B, C, H, W)`` in [0, 1]."""
        c = self.config
        if frames.dim() == 4 and c.grayscale:
            x = frames.float()[..., None] / 255.0  # (B, F, H, W, 1)
        elif frames.dim() == 5 and frames.shape[-1] == 3:
            x = frames.float() / 255.0  # (B, F, H, W, 3)
            if c.grayscale:
                x = (x * x.new_tensor(_LUMA)).sum(-1, keepdim=True)  # (B, F, H, W, 1)
        else:
            x = None
        if x is None or tuple(x.shape[1:4]) != (c.num_frames, *c.image_size):
            raise PlayworldError(
                f"the policy reads frames (B, {c.num_frames}, {c.image_size[0]}, {c.image_size[1]}, 3) uint8, got "
                f"{tuple(frames.shape)}; use LatentActionPolicy.select_action, which stacks and resizes frames."
            )
        return rearrange(x, "b f h w c -> b (f c) h w")

    def keypoints(self, frames: Tensor) -> Tensor:
        """Spatial softmax: ``(B, K, 2)`` expected (y, x) in [-1, 1] of each feature map."""
        logits = self.convs(self.preprocess(frames)).float()  # (B, K, h, w)
        h, w = logits.shape[-2:]
        p = rearrange(logits, "b k h w -> b k (h w)").softmax(-1)
        p = rearrange(p, "b k (h w) -> b k h w", h=h, w=w)
        y = (p.sum(-1) * self.grid_y).sum(-1)  # (B, K)
        x = (p.sum(-2) * self.grid_x).sum(-1)  # (B, K)
        return torch.stack([y, x], dim=-1)

    def forward(self, frames: Tensor) -> Tensor:
        return self.head(rearrange(self.keypoints(frames), "b k c -> b (k c)"))  # (B, num_outputs)

    def training_step(self, frames: Tensor, target: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Cross-entropy of the expert's (latent or real) action given the last frames."""
        logits = self(frames).float()
        loss = F.cross_entropy(logits, target)
        acc = (logits.argmax(-1) == target).float().mean()
        return loss, {"accuracy": float(acc)}

    @torch.no_grad()
    def act(self, frames: Tensor, action_map: Tensor | None = None, prev_action: Tensor | None = None) -> Tensor:
        """Greedy real action ids ``(B,)``: argmax, then through the latent -> real map.

        A 2-D ``action_map`` ``(num_latent, num_actions)`` also reads ``prev_action`` ``(B,)``, the real
        action taken one step before (see :func:`playworld.policy.train_latent.fit_prev_action_map`).
        """
        choice = self(frames).argmax(-1)  # (B,)
        if self.config.target == "real":
            return choice
        amap = self.action_map if action_map is None else action_map
        if action_map is None and self.config.action_map is None:
            raise PlayworldError(
                "this latent policy has no latent -> real action map yet; fit one on a few labelled transitions "
                "(`playworld train latent-policy --labels K`) or pass action_map."
            )
        if amap.dim() == 2:
            if prev_action is None:
                raise PlayworldError("a latent -> real map over (latent, previous action) needs prev_action.")
            return amap[choice, prev_action]
        return amap[choice]


class LatentActionPolicy:
    """Closed-loop runtime around a :class:`LatentPolicyNet`: keeps the frame history of each env.

    Args:
        model: a trained network (its config holds the latent -> real map).
        action_map: a map to use instead of the one in the config (e.g. fitted on another K); a 2-D map
            ``(num_latent, num_actions)`` reads the latent and the policy's own previous action (0 at an
            episode's start), for games with momentum.
        device: "cpu" or "cuda".
    """

    def __init__(self, model: LatentPolicyNet, action_map: list[int] | np.ndarray | None = None, device: str = "cpu"):
        c = model.config
        self.model = model.eval().to(device)
        self.device = torch.device(device)
        self.action_map: Tensor | None = None
        if action_map is not None:
            if c.target != "latent":
                raise PlayworldError("an action map only applies to a latent-action policy (target='latent').")
            check_action_map(action_map, c.num_latent, c.num_actions)
            self.action_map = torch.as_tensor(np.asarray(action_map), dtype=torch.long, device=self.device)
        self._history: np.ndarray | None = None
        self._prev: np.ndarray | None = None  # each env's previous action (2-D action maps)
        self._warned_resize = False

    @classmethod
    def from_pretrained(cls, path: str | Path, action_map: list[int] | None = None, device: str = "cpu") -> LatentActionPolicy:
        """Load a folder written by ``playworld train latent-policy``."""
        return cls(LatentPolicyNet.from_pretrained(path, map_location=device), action_map=action_map, device=device)

    @property
    def config(self) -> LatentPolicyConfig:
        return self.model.config

    def reset(self) -> None:
        """Start new episodes in every env (to restart some of a batch, pass ``new_episode``)."""
        self._history = None
        self._prev = None

    def _prepare(self, frames: np.ndarray) -> np.ndarray:
        arr = np.asarray(frames)
        if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
            raise PlayworldError(f"frames must be uint8 (H, W, 3) or (N, H, W, 3), got {arr.dtype} {arr.shape}.")
        h, w = self.config.image_size
        if arr.shape[1:3] != (h, w):
            from PIL import Image

            if not self._warned_resize:
                log.info("frames are %dx%d; the policy resizes them to %dx%d", arr.shape[1], arr.shape[2], h, w)
                self._warned_resize = True
            arr = np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.Resampling.BOX)) for f in arr])
        return arr

    def _push(self, frames: np.ndarray, new: np.ndarray) -> np.ndarray:
        F_ = self.config.num_frames
        if self._history is None or len(self._history) != len(frames):
            self._history = np.repeat(frames[:, None], F_, axis=1)  # (N, F, H, W, 3)
            return self._history
        self._history = np.concatenate([self._history[:, 1:], frames[:, None]], axis=1)
        for i in np.flatnonzero(new):
            self._history[i] = frames[i]  # a new episode sees its first frame F times
        return self._history

    @torch.no_grad()
    def select_action(self, frames: np.ndarray, new_episode: np.ndarray | None = None) -> int | np.ndarray:
        """Real action id(s) for the current frame(s): ``(H, W, 3)`` -> int, ``(N, H, W, 3)`` -> ``(N,)``.

        ``new_episode`` (bool ``(N,)``) marks rows whose episode just started.
        """
        single = np.asarray(frames).ndim == 3
        arr = self._prepare(np.asarray(frames)[None] if single else frames)
        new = np.zeros(len(arr), bool) if new_episode is None else np.asarray(new_episode, bool).reshape(-1)
        stack = torch.from_numpy(self._push(arr, new)).to(self.device)
        prev = None
        if self.action_map is not None and self.action_map.dim() == 2:
            if self._prev is None or len(self._prev) != len(arr):
                self._prev = np.zeros(len(arr), np.int64)
            self._prev[new] = 0  # an episode starts after no action (as previous_actions in training)
            prev = torch.from_numpy(self._prev).to(self.device)
        actions = self.model.act(stack, self.action_map, prev).cpu().numpy()
        if prev is not None:
            self._prev = actions.astype(np.int64)
        return int(actions[0]) if single else actions

    def batch_policy(self):
        """A policy for :func:`playworld.policy.experts.play_episodes` (frames, new, rams) -> actions."""
        self.reset()

        def policy(frames: np.ndarray, new: np.ndarray, rams) -> np.ndarray:
            return self.select_action(frames, new)

        return policy
