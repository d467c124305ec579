"""A tiny stand-in for :class:`playworld.world.world.World` that implements its public contract.

The server, the gymnasium env and the benchmark are written against the World *contract* only
(``num_actions``, ``frame_size``, ``action_labels``, ``from_pretrained``, ``fork``, ``reset``,
``step``, ``rollout``, ``sample_prompts``), so they can be tested fast without a trained model.
The "model" is a coloured square on the prompt image that moves one cell per action; a little
seeded noise makes sampling (and hence ``reset(seed=...)``) matter, as in the real world model.
"""

from __future__ import annotations

import time
import weakref
from pathlib import Path

import numpy as np
from PIL import Image

from playworld.errors import PlayworldError

# (dy, dx) per action id; the labels say what the action does, like the real World's labels.
MOVES = [(0, -1), (0, 1), (-1, 0), (1, 0), (0, 0), (-1, -1), (-1, 1), (1, 1)]
LABELS = [
    "moves left",
    "moves right",
    "jumps up",
    "moves down",
    "stays still",
    "up-left",
    "up-right",
    "down-right",
]


def write_sample_prompts(folder: Path, size: tuple[int, int] = (64, 64), n: int = 3) -> list[Path]:
    """Write ``n`` small PNG prompt images (gradients of different hues) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    paths = []
    for i in range(n):
        img = np.stack(
            [(xx * 255 // w + 80 * i) % 256, (yy * 255 // h) % 256, np.full_like(xx, 60 + 60 * i) % 256], -1
        ).astype(np.uint8)
        p = folder / f"sample_{i}.png"
        Image.fromarray(img).save(p)
        paths.append(p)
    return paths


class FakeWorld:
    """Implements the World contract; ``step`` sleeps ``step_s`` seconds to mimic model cost."""

    def __init__(
        self,
        frame_size: tuple[int, int] = (64, 64),
        num_actions: int = 8,
        prompts_dir: Path | None = None,
        step_s: float = 0.003,
    ):
        if not 1 <= num_actions <= len(MOVES):
            raise ValueError(f"num_actions must be in 1..{len(MOVES)}")
        self.frame_size = tuple(frame_size)
        self.num_actions = num_actions
        self.action_labels = LABELS[:num_actions]
        self.prompts_dir = prompts_dir
        self.step_s = step_s
        self.maskgit_steps = 25  # the benchmark's hook: settable like the real World's
        self.forks: weakref.WeakSet[FakeWorld] = weakref.WeakSet()  # for tests: forks still alive
        self._frame: np.ndarray | None = None
        self._background: np.ndarray | None = None
        self._pos = (0, 0)
        self._rng = np.random.default_rng()

    @classmethod
    def from_pretrained(cls, path) -> FakeWorld:
        path = Path(path)
        if not path.is_dir():
            raise PlayworldError(
                f"{path} is not a world folder; pass a folder written by `playworld train world`."
            )
        return cls(prompts_dir=path / "prompts")

    def fork(self) -> FakeWorld:
        child = FakeWorld(self.frame_size, self.num_actions, self.prompts_dir, self.step_s)
        child.maskgit_steps = self.maskgit_steps
        self.forks.add(child)
        return child

    def sample_prompts(self) -> list[Path]:
        if self.prompts_dir is None or not self.prompts_dir.is_dir():
            return []
        return sorted(self.prompts_dir.glob("*.png"))

    def _to_frame(self, prompt) -> np.ndarray:
        h, w = self.frame_size
        if isinstance(prompt, (str, Path)):
            if not Path(prompt).is_file():
                raise PlayworldError(f"prompt image {prompt} does not exist")
            prompt = Image.open(prompt)
        if isinstance(prompt, Image.Image):
            return np.asarray(prompt.convert("RGB").resize((w, h), Image.BILINEAR), dtype=np.uint8)
        arr = np.asarray(prompt)
        if arr.dtype != np.uint8 or arr.ndim not in (3, 4) or arr.shape[-1] != 3:
            raise PlayworldError("a prompt array must be uint8 (H,W,3) or (T,H,W,3)")
        if arr.ndim == 4:
            arr = arr[-1]
        return np.asarray(Image.fromarray(arr).resize((w, h), Image.BILINEAR), dtype=np.uint8)

    def reset(self, prompt, seed: int | None = None) -> np.ndarray:
        self._rng = np.random.default_rng(seed)
        self._background = self._to_frame(prompt)
        h, w = self.frame_size
        self._pos = (h // 2, w // 2)
        self._frame = self._render()
        return self._frame.copy()

    def _render(self) -> np.ndarray:
        frame = self._background.copy()
        h, w = self.frame_size
        s = max(2, h // 8)
        y, x = self._pos
        frame[max(0, y - s // 2) : min(h, y + s // 2), max(0, x - s // 2) : min(w, x + s // 2)] = (
            255,
            220,
            40,
        )
        noise = self._rng.integers(0, 2, size=frame.shape[:2], dtype=np.uint8)  # "sampling"
        frame[..., 2] = np.clip(frame[..., 2].astype(np.int16) + noise * 8, 0, 255).astype(np.uint8)
        return frame

    def step(self, action: int) -> np.ndarray:
        if self._frame is None:
            raise PlayworldError("call reset(prompt) before step(action)")
        if (
            isinstance(action, bool)
            or not isinstance(action, (int, np.integer))
            or not 0 <= action < self.num_actions
        ):
            raise PlayworldError(
                f"action {action!r} is out of range; valid latent actions: 0..{self.num_actions - 1}"
            )
        if self.step_s:
            time.sleep(self.step_s)
        dy, dx = MOVES[int(action)]
        h, w = self.frame_size
        step = max(1, h // 16)
        self._pos = ((self._pos[0] + dy * step) % h, (self._pos[1] + dx * step) % w)
        self._frame = self._render()
        return self._frame.copy()

    def rollout(self, prompt, actions, seed: int | None = None) -> np.ndarray:
        frames = [self.reset(prompt, seed=seed)]
        frames += [self.step(a) for a in actions]
        return np.stack(frames)
