"""Fixed-length clips from a playworld dataset, for training: a torch ``Dataset``.

A clip is ``clip_len`` frames taken every ``frame_skip``-th frame, always inside one episode
(it never runs across an episode boundary). With actions, ``actions[t]`` is the stored action
at clip frame ``t``: the *first* real action taken between clip frames ``t`` and ``t+1``
(with ``frame_skip > 1`` the in-between actions are dropped; with a sticky or slow policy they
are usually the same one). Summing would be wrong for discrete ids and for absolute
dimensions such as a gripper, so "first" is the one rule for both kinds.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from playworld.data.format import VideoDataset, load_dataset
from playworld.errors import PlayworldError


class ClipDataset(Dataset):
    """Clips of ``clip_len`` frames from the episodes of one split.

    Item ``i`` is ``{"frames": uint8 (T, H, W, 3), "actions": int64 (T,) or float32 (T, D)
    (only with ``with_actions``), "episode": int, "start": int}``, where ``start`` is the clip's
    first frame inside its episode. Picklable; each DataLoader worker maps the files itself.
    """

    def __init__(
        self,
        root: str | os.PathLike | VideoDataset,
        clip_len: int,
        frame_skip: int = 1,
        split: str = "train",
        with_actions: bool = False,
        fractions: Sequence[float] = (0.8, 0.1, 0.1),
        seed: int = 0,
        stride: int | None = None,
    ):
        """Args:
        root: a dataset folder or an open :class:`VideoDataset`.
        clip_len: frames per clip.
        frame_skip: take every ``frame_skip``-th frame (2 turns 15 fps data into 7.5 fps clips).
        split: "train", "val", "test" (by whole episodes, see ``split_episodes``) or "all".
        with_actions: also return the actions (the dataset must have them).
        fractions: (train, val, test) fractions of episodes.
        seed: seed of the episode split.
        stride: frames between consecutive clip starts in an episode; None = 1 (every start).
        """
        if clip_len < 1 or frame_skip < 1:
            raise PlayworldError(f"clip_len and frame_skip must be >= 1, got {clip_len} and {frame_skip}.")
        if stride is not None and stride < 1:
            raise PlayworldError(f"stride must be >= 1, got {stride}.")
        self.dataset = load_dataset(root)
        if with_actions and not self.dataset.has_actions:
            raise PlayworldError(
                f"{self.dataset.root} has no actions (source: {self.dataset.source}); "
                "use with_actions=False, or a dataset recorded with actions."
            )
        self.clip_len, self.frame_skip, self.with_actions = clip_len, frame_skip, with_actions
        self.split = split
        self.span = (clip_len - 1) * frame_skip + 1  # frames of the episode one clip covers
        self.episodes = self.dataset.split_episodes(split, fractions, seed)
        if not self.episodes:
            raise PlayworldError(
                f"split '{split}' of {self.dataset.root} has no episodes (the dataset has "
                f"{self.dataset.num_episodes}, split by fractions {tuple(fractions)}); use split='all' "
                "or a dataset with more episodes."
            )

        lengths = self.dataset.episode_lengths[self.episodes]
        starts_per_episode = [np.arange(0, n - self.span + 1, stride or 1) for n in lengths]
        counts = np.array([len(s) for s in starts_per_episode], dtype=np.int64)
        if counts.sum() == 0:
            longest = int(lengths.max()) if len(lengths) else 0
            raise PlayworldError(
                f"clips of {clip_len} frames with frame_skip {frame_skip} need episodes of at least "
                f"{self.span} frames, but the longest episode in split '{split}' of {self.dataset.root} has "
                f"{longest}; use a shorter clip length or a smaller frame skip."
            )
        # Flat index: clip i -> (episode, start). Two int64 arrays, so pickling stays cheap.
        self._clip_episode = np.repeat(np.asarray(self.episodes, dtype=np.int64), counts)
        self._clip_start = np.concatenate(starts_per_episode).astype(np.int64)

    def __len__(self) -> int:
        return len(self._clip_start)

    def __getitem__(self, i: int) -> dict[str, Any]:
        e, s = int(self._clip_episode[i]), int(self._clip_start[i])
        window = slice(s, s + self.span, self.frame_skip)
        # np.array copies out of the read-only memory map into a normal array torch can own.
        item = {
            "frames": torch.from_numpy(np.array(self.dataset.episode_frames(e)[window])),  # (T, H, W, 3)
            "episode": e,
            "start": s,
        }
        if self.with_actions:
            item["actions"] = torch.from_numpy(
                np.array(self.dataset.episode_actions(e)[window])
            )  # (T,) / (T, D)
        return item

    def __repr__(self) -> str:
        return (
            f"ClipDataset({len(self)} clips of {self.clip_len}x{self.frame_skip} frames from "
            f"{len(self.episodes)} '{self.split}' episodes of {self.dataset!r})"
        )
