"""A tiny synthetic game with known actions, for tests, demos and sanity checks.

"Sprites": a bright square (the player) on a dark background with a few static coloured
blocks. Actions move the player (noop, left, right, up, down) by ``speed`` pixels, held for a
few steps like the Atari recorder's sticky random policy. Because the ground truth is known,
it checks what real data cannot: that latent actions recover the true ones.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from playworld.data.format import DatasetWriter

SPRITE_ACTIONS = ["NOOP", "LEFT", "RIGHT", "UP", "DOWN"]
_MOVES = {0: (0, 0), 1: (0, -1), 2: (0, 1), 3: (-1, 0), 4: (1, 0)}


def sprite_episode(length: int, size: int, rng: np.random.Generator, speed: int = 3, player: int = 8):
    """One episode: frames uint8 (T, size, size, 3) and actions int64 (T,) (action t: frame t -> t+1)."""
    bg = np.zeros((size, size, 3), np.uint8)
    bg[:] = rng.integers(10, 50, size=3, dtype=np.uint8)
    for _ in range(3):  # static blocks the player walks over
        y, x = rng.integers(0, size - 10, size=2)
        bg[y : y + 10, x : x + 10] = rng.integers(60, 200, size=3, dtype=np.uint8)
    colour = rng.integers(200, 256, size=3, dtype=np.uint8)
    pos = rng.integers(0, size - player, size=2)
    frames = np.empty((length, size, size, 3), np.uint8)
    actions = np.empty(length, np.int64)
    a, hold = 0, 0
    for t in range(length):
        f = bg.copy()
        f[pos[0] : pos[0] + player, pos[1] : pos[1] + player] = colour
        frames[t] = f
        if hold == 0:
            a, hold = int(rng.integers(0, len(SPRITE_ACTIONS))), int(rng.integers(1, 5))
        hold -= 1
        actions[t] = a
        dy, dx = _MOVES[a]
        pos = np.clip(pos + np.array([dy, dx]) * speed, 0, size - player)
    return frames, actions


def make_sprites_dataset(
    out: str | os.PathLike, episodes: int = 24, length: int = 40, size: int = 32, seed: int = 0, overwrite: bool = False
) -> Path:
    """Write a sprites dataset (with true actions and their names) to ``out``."""
    rng = np.random.default_rng(seed)
    with DatasetWriter(
        out, fps=10, frame_size=(size, size), source="synthetic", action_names=SPRITE_ACTIONS, overwrite=overwrite
    ) as w:
        for e in range(episodes):
            frames, actions = sprite_episode(length, size, rng)
            w.add_episode(frames, actions, np.zeros(length, np.float32), info={"game": "sprites", "episode": e})
    return Path(out)
