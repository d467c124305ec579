"""A playable world: prompt with one image, press latent actions, get frames (Genie inference).

A world folder holds the three trained parts and how to play them::

    world/
      world.json            format, frame size, |A|, action labels, MaskGIT steps/temperature
      tokenizer/            VideoTokenizer (config.json + model.safetensors)
      lam/                  LatentActionModel (only its codebook size is needed at play time;
                            it also infers the actions between the frames of a multi-frame prompt)
      dynamics/             DynamicsModel
      prompts/*.png         sample prompt frames

Play loop (one ``step``): the dynamics model samples the next frame's tokens with MaskGIT
against the KV cache of the past frames (never recomputing them), then the tokenizer's
decoder turns those tokens into pixels, again with a cache of the past frames.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from einops import rearrange

from playworld.errors import PlayworldError
from playworld.nn.st_transformer import KVCache
from playworld.utils import atomic_dir
from playworld.world.dynamics import DynamicsModel, DynamicsState
from playworld.world.latent_actions import LatentActionModel
from playworld.world.prompt import load_prompt
from playworld.world.tokenizer import VideoTokenizer

WORLD_FILE = "world.json"
WORLD_FORMAT = "playworld-world"
WORLD_VERSION = 1
PARTS = ("tokenizer", "lam", "dynamics")


def bundled_world_path() -> Path:
    """The default world committed inside the package (trained on Atari platformer footage)."""
    return Path(__file__).resolve().parent.parent / "assets" / "world"


def frames_to_video(frames: np.ndarray | torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (..., T, H, W, 3) -> float video (..., T, 3, H, W) in [0, 1]."""
    x = torch.as_tensor(np.asarray(frames) if not torch.is_tensor(frames) else frames, device=device)
    return rearrange(x, "... t h w c -> ... t c h w").float() / 255.0


def video_to_frames(video: torch.Tensor) -> np.ndarray:
    """float video (..., 3, H, W) in [0, 1] -> uint8 (..., H, W, 3)."""
    x = (video.detach().float().clamp(0, 1) * 255.0 + 0.5).to(torch.uint8)
    return rearrange(x, "... c h w -> ... h w c").cpu().numpy()


def check_compatible(tokenizer: VideoTokenizer, lam: LatentActionModel, dynamics: DynamicsModel) -> None:
    """Raise a clear error if the three parts were not trained to work together."""
    t, a, d = tokenizer.config, lam.config, dynamics.config
    problems = []
    if t.num_codes != d.num_codes:
        problems.append(f"tokenizer codebook {t.num_codes} != dynamics vocabulary {d.num_codes}")
    if tuple(t.token_grid) != tuple(d.token_grid):
        problems.append(f"tokenizer token grid {t.token_grid} != dynamics token grid {tuple(d.token_grid)}")
    if tuple(a.image_size) != tuple(t.image_size):
        problems.append(f"latent action model frame size {tuple(a.image_size)} != tokenizer frame size {tuple(t.image_size)}")
    if a.num_actions != d.num_actions:
        problems.append(f"latent action model has {a.num_actions} actions, dynamics expects {d.num_actions}")
    if problems:
        raise PlayworldError(
            "the world's parts do not fit together: " + "; ".join(problems) + ". Retrain the dynamics model "
            "with this tokenizer and latent action model (playworld train dynamics --tokenizer ... --lam ...)."
        )


class World:
    """Genie at play time. Create with :meth:`from_pretrained`; ``reset`` then ``step``.

    Attributes:
        num_actions: |A|, the number of latent actions a player can press.
        frame_size: (H, W) of generated frames.
        action_labels: a short human label per latent action (what it does).
        maskgit_steps / temperature: MaskGIT decoding settings (fewer steps = faster play).
    """

    def __init__(
        self,
        tokenizer: VideoTokenizer,
        lam: LatentActionModel,
        dynamics: DynamicsModel,
        action_labels: list[str] | None = None,
        maskgit_steps: int | None = None,
        temperature: float | None = None,
        root: Path | None = None,
        extra: dict[str, Any] | None = None,
    ):
        check_compatible(tokenizer, lam, dynamics)
        self.tokenizer, self.lam, self.dynamics = tokenizer.eval(), lam.eval(), dynamics.eval()
        self.num_actions: int = dynamics.config.num_actions
        self.frame_size: tuple[int, int] = tuple(tokenizer.config.image_size)
        labels = list(action_labels or [])
        if len(labels) != self.num_actions:
            labels = [f"action {i}" for i in range(self.num_actions)]
        self.action_labels: list[str] = labels
        self.maskgit_steps: int = int(maskgit_steps or dynamics.config.maskgit_steps)
        self.temperature: float = float(dynamics.config.temperature if temperature is None else temperature)
        self.root = root
        self.extra = dict(extra or {})
        self.device = next(dynamics.parameters()).device
        self._state: DynamicsState | None = None
        self._decoder_cache: KVCache | None = None
        self._generator = torch.Generator(device=self.device)
        self._frame: np.ndarray | None = None

    # -- folders ---------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str = "cpu") -> World:
        """Load a world folder (see the module docstring); clear errors for anything missing."""
        root = Path(path)
        if not root.is_dir():
            raise PlayworldError(f"world folder {root} does not exist; train one with `playworld train world`.")
        meta_file = root / WORLD_FILE
        if not meta_file.exists():
            missing = [p for p in PARTS if not (root / p).is_dir()]
            hint = f" (also missing: {', '.join(missing)})" if missing else ""
            raise PlayworldError(f"{root} is not a world folder: {WORLD_FILE} is missing{hint}.")
        try:
            meta = json.loads(meta_file.read_text())
        except json.JSONDecodeError as e:
            raise PlayworldError(f"{meta_file} is not valid JSON ({e}).") from e
        if meta.get("format") != WORLD_FORMAT:
            raise PlayworldError(f"{meta_file} is not a playworld world description.")
        if meta.get("version", 0) > WORLD_VERSION:
            raise PlayworldError(
                f"{root} was written by a newer playworld (world format {meta['version']}); upgrade playworld."
            )
        for part in PARTS:
            if not (root / part).is_dir():
                raise PlayworldError(f"world folder {root} is missing its '{part}' part ({root / part}).")
        tok = VideoTokenizer.from_pretrained(root / "tokenizer", map_location=device)
        lam = LatentActionModel.from_pretrained(root / "lam", map_location=device)
        dyn = DynamicsModel.from_pretrained(root / "dynamics", map_location=device)
        return cls(
            tok, lam, dyn,
            action_labels=meta.get("action_labels"),
            maskgit_steps=meta.get("maskgit_steps"),
            temperature=meta.get("temperature"),
            root=root,
            extra={k: v for k, v in meta.items() if k not in ("format", "version", "action_labels", "maskgit_steps", "temperature")},
        )

    def save_pretrained(
        self, path: str | os.PathLike, dtype: torch.dtype | None = None, prompts: list[np.ndarray] | None = None
    ) -> Path:
        """Write the world folder atomically; ``dtype=torch.bfloat16`` halves its size on disk."""
        from playworld.viz import save_png

        with atomic_dir(path, overwrite=True) as tmp:
            self.tokenizer.save_pretrained(tmp / "tokenizer", dtype=dtype)
            self.lam.save_pretrained(tmp / "lam", dtype=dtype)
            self.dynamics.save_pretrained(tmp / "dynamics", dtype=dtype)
            meta = {
                "format": WORLD_FORMAT,
                "version": WORLD_VERSION,
                "frame_size": list(self.frame_size),
                "num_actions": self.num_actions,
                "action_labels": self.action_labels,
                "maskgit_steps": self.maskgit_steps,
                "temperature": self.temperature,
                **self.extra,
            }
            (tmp / WORLD_FILE).write_text(json.dumps(meta, indent=2) + "\n")
            if prompts is not None:
                for i, p in enumerate(prompts):
                    save_png(p, tmp / "prompts" / f"prompt-{i:02d}.png")
            elif self.root is not None and (self.root / "prompts").is_dir():
                shutil.copytree(self.root / "prompts", tmp / "prompts")
        return Path(path)

    def sample_prompts(self) -> list[Path]:
        """The sample prompt images shipped in the world folder."""
        if self.root is None or not (self.root / "prompts").is_dir():
            return []
        return sorted(p for p in (self.root / "prompts").iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))

    def fork(self) -> World:
        """A new, independent play state sharing these (read-only) model weights."""
        other = World.__new__(World)
        other.__dict__.update(self.__dict__)
        other._state, other._decoder_cache, other._frame = None, None, None
        other._generator = torch.Generator(device=self.device)
        other.extra = dict(self.extra)
        return other

    # -- play ------------------------------------------------------------------------------------

    def _check_action(self, action: int) -> int:
        try:
            a = int(action)
        except (TypeError, ValueError):
            a = -1
        if a != action or not 0 <= a < self.num_actions:
            raise PlayworldError(
                f"action {action!r} is not valid; valid latent actions are 0..{self.num_actions - 1} "
                f"({', '.join(f'{i}: {lbl}' for i, lbl in enumerate(self.action_labels))})."
            )
        return a

    @torch.no_grad()
    def reset(self, prompt, seed: int | None = None) -> np.ndarray:
        """Start from ``prompt`` (an image path, PIL image or array; any size/mode; or a few frames).

        Returns the first frame (the prompt as the world sees it) as uint8 (H, W, 3).
        """
        frames = load_prompt(prompt, self.frame_size)  # (T0, H, W, 3) uint8
        frames = frames[-(self.dynamics.config.max_frames - 1) :]
        if seed is not None:
            self._generator.manual_seed(int(seed))
        else:
            self._generator.seed()
        video = frames_to_video(frames, self.device)[None]  # (1, T0, 3, H, W)
        tokens = self.tokenizer.encode(video)  # (1, T0, h, w)
        actions = self.lam.infer_actions(video) if video.shape[1] > 1 else None  # (1, T0-1)
        self._state = self.dynamics.start(tokens, actions)
        self._decoder_cache = KVCache()
        recon = self.tokenizer.decode(tokens, cache=self._decoder_cache)  # (1, T0, 3, H, W)
        self._frame = video_to_frames(recon[0, -1])
        return self._frame

    @torch.no_grad()
    def step(self, action: int) -> np.ndarray:
        """Press latent ``action``; returns the next generated frame, uint8 (H, W, 3)."""
        if self._state is None:
            raise PlayworldError("call reset(prompt) before step(action).")
        a = self._check_action(action)
        tokens = self._state.step(a, steps=self.maskgit_steps, temperature=self.temperature, generator=self._generator)
        frame = self.tokenizer.decode(tokens[:, None], cache=self._decoder_cache)  # (1, 1, 3, H, W)
        self._frame = video_to_frames(frame[0, 0])
        return self._frame

    @property
    def frame(self) -> np.ndarray | None:
        """The latest frame (None before reset)."""
        return self._frame

    def rollout(self, prompt, actions, seed: int | None = None) -> np.ndarray:
        """``reset(prompt)`` then ``step`` each action: frames (1 + len(actions), H, W, 3) uint8."""
        frames = [self.reset(prompt, seed=seed)]
        for a in actions:
            frames.append(self.step(a))
        return np.stack(frames)

    @torch.no_grad()
    def generate(
        self,
        prompt_video: torch.Tensor,
        actions: torch.Tensor,
        steps: int | None = None,
        temperature: float | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Batched rollout for evaluation: ``prompt_video (B, T0, 3, H, W)`` in [0, 1] and
        ``actions (B, T0 - 1 + N)`` (those between prompt frames, then N to apply) ->
        generated video ``(B, N, 3, H, W)``."""
        B, T0 = prompt_video.shape[:2]
        tokens = self.tokenizer.encode(prompt_video)
        state = self.dynamics.start(tokens, actions[:, : T0 - 1] if T0 > 1 else None)
        cache = KVCache()
        self.tokenizer.decode(tokens, cache=cache)
        out = []
        for i in range(T0 - 1, actions.shape[1]):
            nxt = state.step(
                actions[:, i],
                steps=steps or self.maskgit_steps,
                temperature=self.temperature if temperature is None else temperature,
                generator=generator,
            )
            out.append(self.tokenizer.decode(nxt[:, None], cache=cache))
        return torch.cat(out, dim=1)
