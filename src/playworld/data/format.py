"""The playworld dataset format: memory-mapped frame shards + per-frame arrays + ``meta.json``.

A dataset is a folder (format_version 1; full description in ``docs/data.md``)::

    pitfall/
      meta.json            what is in the folder: fps, frame size, episodes, shards, actions
      frames-00000.npy     uint8 (N0, H, W, 3) RGB frames; whole episodes only
      frames-00001.npy     ...
      actions.npy          int64 (N,) discrete ids, or float32 (N, D) continuous (absent: no actions)
      rewards.npy          float32 (N,)
      episode_index.npy    int64 (N,) the episode each frame belongs to
      NAME.npy             optional extra per-frame arrays, (N, ...), listed in meta["frame_arrays"]

Frames are global: frame ``n`` of the dataset lives in exactly one shard, episodes are
contiguous runs of frames, and an episode never straddles two shards, so every episode's
frames are one zero-copy slice of a memory map (``np.load(mmap_mode="r")``).

``actions[n]`` is the action taken *after* observing frame ``n`` (it leads to frame ``n+1``);
``rewards[n]`` is the reward received for that action. The action stored at an episode's last
frame leads nowhere (recorders store whatever was sent; treat it as padding).

Writers never leave a folder that looks complete: :class:`DatasetWriter` writes into a hidden
temporary folder beside ``out`` and renames it only after ``meta.json`` is written.
"""

from __future__ import annotations

import json
import math
import os
import struct
from bisect import bisect_right
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from playworld.errors import PlayworldError
from playworld.utils import atomic_dir, atomic_write_json

FORMAT_NAME = "playworld-dataset"
FORMAT_VERSION = 1
META_FILE = "meta.json"
SHARD_PATTERN = "frames-{:05d}.npy"
SPLITS = ("train", "val", "test")
# Per-frame files every dataset has; extra per-frame arrays may not take these names.
_RESERVED_ARRAYS = ("actions", "rewards", "episode_index", "meta", "frames")

# Shard files are streamed to disk with a fixed-size .npy header that is rewritten with the
# final frame count when the shard is closed; 128 bytes keeps the data 64-byte aligned.
_NPY_HEADER_BYTES = 128


def _npy_header(shape: Sequence[int], dtype: np.dtype) -> bytes:
    """A version-1.0 ``.npy`` header for a C-ordered array, padded to ``_NPY_HEADER_BYTES``."""
    body = f"{{'descr': {np.dtype(dtype).str!r}, 'fortran_order': False, 'shape': {tuple(shape)!r}, }}"
    body = body.ljust(_NPY_HEADER_BYTES - 10 - 1) + "\n"  # 10 = magic(6) + version(2) + length(2)
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(body)) + body.encode("latin1")


def _is_dataset_dir(path: Path) -> bool:
    return (path / META_FILE).is_file()


class DatasetWriter:
    """Write a playworld dataset episode by episode; atomic (nothing appears at ``out`` on error).

    Use as a context manager::

        with DatasetWriter("data/pong", fps=15, frame_size=(64, 64), source="atari") as w:
            w.add_episode(frames, actions, rewards, info={"source": "Pong"})
        # closed on leaving the block; on an exception the temporary folder is deleted

    Frames are streamed straight into shard files (memory use is one episode), per-frame
    arrays (actions, rewards, episode index) are kept in memory until :meth:`close`.
    """

    def __init__(
        self,
        out: str | os.PathLike,
        *,
        fps: float,
        frame_size: tuple[int, int],
        source: str,
        action_names: list[str] | None = None,
        extra_meta: dict | None = None,
        shard_frames: int = 4096,
        overwrite: bool = False,
    ):
        """Args:
        out: the dataset folder to create.
        fps: frames per second of the stored frames.
        frame_size: (height, width) of every frame.
        source: what kind of data this is ("atari", "video", "tabletop", ...).
        action_names: names of discrete action ids (index = id), or of continuous dimensions.
        extra_meta: JSON-able recorder settings, stored under ``meta["extra"]``.
        shard_frames: target frames per shard file (an episode longer than this gets its own).
        overwrite: replace an existing dataset at ``out`` (never a folder that is not one).
        """
        if not fps or fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        if len(frame_size) != 2 or min(frame_size) < 1:
            raise ValueError(f"frame_size must be (height, width) with positive ints, got {frame_size}")
        if shard_frames < 1:
            raise ValueError(f"shard_frames must be >= 1, got {shard_frames}")
        out = Path(out).expanduser()
        if (
            overwrite
            and out.exists()
            and not (_is_dataset_dir(out) or (out.is_dir() and not any(out.iterdir())))
        ):
            raise PlayworldError(
                f"{out} exists and is not a playworld dataset; refusing to overwrite it. "
                "Choose another --out or delete it yourself."
            )
        self.out = out
        self.fps = float(fps)
        self.frame_size = (int(frame_size[0]), int(frame_size[1]))
        self.source = source
        self.action_names = list(action_names) if action_names is not None else None
        self.extra_meta = dict(extra_meta or {})
        json.dumps(self.extra_meta)  # fail now, not after an hour of recording
        self.shard_frames = int(shard_frames)

        self._atomic = atomic_dir(out, overwrite=overwrite)
        self._tmp: Path = self._atomic.__enter__()
        self._closed = False
        self._num_frames = 0
        self._episodes: list[dict[str, Any]] = []
        self._shards: list[dict[str, Any]] = []
        self._shard_file = None  # open file of the shard being written
        self._shard_len = 0
        self._actions: list[np.ndarray] = []
        self._rewards: list[np.ndarray] = []
        self._action_dtype: np.dtype | None = None  # decided by the first episode
        self._action_shape: tuple[int, ...] | None = None
        self._arrays: dict[str, list[np.ndarray]] = {}  # extra per-frame arrays, by name
        self._array_specs: dict[str, tuple[np.dtype, tuple[int, ...]]] | None = None  # first episode's

    # -- context manager ------------------------------------------------------------------
    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.close()
        else:
            self.abort(exc_type, exc, tb)
        return False

    @property
    def num_frames(self) -> int:
        return self._num_frames

    @property
    def num_episodes(self) -> int:
        return len(self._episodes)

    # -- writing --------------------------------------------------------------------------
    def add_episode(
        self,
        frames: np.ndarray,
        actions: np.ndarray | None = None,
        rewards: np.ndarray | None = None,
        info: dict | None = None,
        arrays: dict[str, np.ndarray] | None = None,
    ) -> None:
        """Append one episode: ``frames`` uint8 (T, H, W, 3); ``actions`` int (T,) or float (T, D);
        ``rewards`` (T,) (zeros if None); ``info`` a JSON-able dict (``info["source"]`` names
        where the episode came from: a game or a file; defaults to the dataset's source);
        ``arrays`` extra per-frame arrays ``{name: (T, ...)}`` (stored as ``NAME.npy``; the first
        episode decides their names, dtypes and shapes, and every episode then needs the same)."""
        if self._closed:
            raise RuntimeError("add_episode() after close()")
        frames = np.asarray(frames)
        h, w = self.frame_size
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1:] != (h, w, 3):
            raise ValueError(f"frames must be uint8 (T, {h}, {w}, 3), got {frames.dtype} {frames.shape}")
        t = len(frames)
        if t == 0:
            raise ValueError("an episode needs at least one frame")
        actions = self._check_actions(actions, t)
        arrays = self._check_arrays(arrays, t)
        if rewards is None:
            rewards = np.zeros(t, np.float32)
        rewards = np.asarray(rewards, dtype=np.float32)
        if rewards.shape != (t,):
            raise ValueError(f"rewards must have shape ({t},), got {rewards.shape}")
        info = dict(info or {})
        source = str(info.pop("source", self.source))
        try:
            json.dumps(info)
        except TypeError as e:
            raise ValueError(
                f"episode info must be JSON-serialisable (plain str/int/float/list/dict): {e}"
            ) from None

        # Start a new shard rather than split an episode, so every episode is one memmap slice.
        if self._shard_file is not None and self._shard_len + t > self.shard_frames:
            self._finish_shard()
        if self._shard_file is None:
            name = SHARD_PATTERN.format(len(self._shards))
            self._shard_file = open(self._tmp / name, "wb")  # noqa: SIM115 - closed in _finish_shard
            self._shard_file.write(_npy_header((0, h, w, 3), np.dtype(np.uint8)))
            self._shards.append({"file": name, "start": self._num_frames, "length": 0})
        self._shard_file.write(memoryview(np.ascontiguousarray(frames)).cast("B"))
        self._shard_len += t

        self._episodes.append({"start": self._num_frames, "length": t, "source": source, "info": info})
        if actions is not None:
            self._actions.append(actions)
        for name, arr in arrays.items():
            self._arrays.setdefault(name, []).append(arr)
        self._rewards.append(rewards)
        self._num_frames += t

    def _check_actions(self, actions: np.ndarray | None, t: int) -> np.ndarray | None:
        first = not self._episodes
        if actions is None:
            if not first and self._action_dtype is not None:
                raise ValueError(
                    "this dataset has actions (the first episode had them); pass actions for every episode"
                )
            return None
        if not first and self._action_dtype is None:
            raise ValueError("the first episode had no actions, so no episode may have them")
        actions = np.asarray(actions)
        if len(actions) != t:
            raise ValueError(f"got {len(actions)} actions for {t} frames; store one action per frame")
        if np.issubdtype(actions.dtype, np.integer):
            if actions.ndim != 1:
                raise ValueError(f"discrete actions must be (T,), got {actions.shape}")
            dtype = np.dtype(np.int64)
        elif np.issubdtype(actions.dtype, np.floating):
            if actions.ndim != 2:
                raise ValueError(f"continuous actions must be (T, D), got {actions.shape}")
            dtype = np.dtype(np.float32)
        else:
            raise ValueError(f"actions must be integer ids or floats, got {actions.dtype}")
        actions = actions.astype(dtype, copy=False)
        if first:
            self._action_dtype, self._action_shape = dtype, actions.shape[1:]
        elif (dtype, actions.shape[1:]) != (self._action_dtype, self._action_shape):
            raise ValueError(
                f"actions {dtype} {actions.shape[1:]} differ from earlier episodes' "
                f"{self._action_dtype} {self._action_shape}"
            )
        return actions

    def _check_arrays(self, arrays: dict[str, np.ndarray] | None, t: int) -> dict[str, np.ndarray]:
        arrays = {str(k): np.asarray(v) for k, v in (arrays or {}).items()}
        for name, arr in arrays.items():
            if not name.isidentifier() or name in _RESERVED_ARRAYS:
                raise ValueError(f"per-frame array name {name!r} must be an identifier other than {_RESERVED_ARRAYS}")
            if arr.ndim < 1 or len(arr) != t:
                raise ValueError(f"per-frame array {name!r} has shape {arr.shape}; it needs one row per frame ({t})")
            if arr.dtype.kind not in "biuf":
                raise ValueError(f"per-frame array {name!r} must be bool, int or float, got {arr.dtype}")
        specs = {k: (v.dtype, v.shape[1:]) for k, v in arrays.items()}
        if self._array_specs is None:
            self._array_specs = specs
        elif specs != self._array_specs:
            raise ValueError(
                f"per-frame arrays {specs} differ from the first episode's {self._array_specs}; "
                "every episode needs the same arrays"
            )
        return arrays

    def _finish_shard(self) -> None:
        h, w = self.frame_size
        f = self._shard_file
        f.seek(0)
        f.write(_npy_header((self._shard_len, h, w, 3), np.dtype(np.uint8)))
        f.close()
        self._shards[-1]["length"] = self._shard_len
        self._shard_file, self._shard_len = None, 0

    def close(self) -> Path:
        """Write the per-frame arrays and ``meta.json``, then rename the folder into place."""
        if self._closed:
            return self.out
        try:
            if not self._episodes:
                raise PlayworldError(f"no episodes were written, so no dataset was created at {self.out}.")
            if self._shard_file is not None:
                self._finish_shard()
            lengths = [e["length"] for e in self._episodes]
            np.save(
                self._tmp / "episode_index.npy", np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
            )
            np.save(self._tmp / "rewards.npy", np.concatenate(self._rewards))
            for name, parts in self._arrays.items():
                np.save(self._tmp / f"{name}.npy", np.concatenate(parts))
            actions = None
            if self._actions:
                actions = np.concatenate(self._actions)
                np.save(self._tmp / "actions.npy", actions)
            if actions is not None and actions.ndim == 1 and self.action_names is not None:
                if actions.min() < 0 or actions.max() >= len(self.action_names):
                    raise ValueError(
                        f"action ids span [{actions.min()}, {actions.max()}] but only "
                        f"{len(self.action_names)} action_names were given"
                    )
            atomic_write_json(self._tmp / META_FILE, self._meta(actions))
        except BaseException as e:
            self.abort(type(e), e, e.__traceback__)
            raise
        self._atomic.__exit__(None, None, None)
        self._closed = True
        return self.out

    def abort(self, exc_type=None, exc=None, tb=None) -> None:
        """Delete everything written so far (called automatically on an exception)."""
        if self._closed:
            return
        self._closed = True
        if self._shard_file is not None:
            self._shard_file.close()
            self._shard_file = None
        exc = exc if exc is not None else RuntimeError("dataset writing aborted")
        try:
            self._atomic.__exit__(type(exc), exc, tb)  # removes the temporary folder
        except BaseException as raised:
            if raised is not exc:
                raise

    def _meta(self, actions: np.ndarray | None) -> dict[str, Any]:
        from playworld import __version__

        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "created_by": f"playworld {__version__}",
            "source": self.source,
            "fps": self.fps,
            "frame_size": list(self.frame_size),
            "num_frames": self._num_frames,
            "num_episodes": len(self._episodes),
            "action_names": self.action_names,
            "action_dtype": None if actions is None else str(actions.dtype),
            "action_shape": None if actions is None else list(actions.shape[1:]),
            "shards": self._shards,
            "episodes": self._episodes,
            "extra": self.extra_meta,
            **(
                {"frame_arrays": {k: {"dtype": str(d), "shape": list(sh)} for k, (d, sh) in self._array_specs.items()}}
                if self._array_specs
                else {}
            ),
        }


class VideoDataset:
    """A playworld dataset on disk, read through memory maps (opened lazily, so it pickles
    cheaply into DataLoader workers, each of which maps the files itself)."""

    def __init__(self, root: str | os.PathLike, meta: dict[str, Any]):
        self.root = Path(root)
        self.meta = meta
        self.num_frames: int = int(meta["num_frames"])
        self.num_episodes: int = len(meta["episodes"])
        self.frame_size: tuple[int, int] = (int(meta["frame_size"][0]), int(meta["frame_size"][1]))
        self.fps: float = float(meta["fps"])
        self.source: str = meta.get("source", "unknown")
        self.action_names: list[str] | None = meta.get("action_names")
        self.has_actions: bool = meta.get("action_dtype") is not None
        frame_arrays = meta.get("frame_arrays") or {}
        if not isinstance(frame_arrays, dict) or any(
            not isinstance(k, str) or not k.isidentifier() or k in _RESERVED_ARRAYS for k in frame_arrays
        ):
            raise ValueError(f"frame_arrays must map plain names to specs, got {frame_arrays!r}")
        self.frame_array_names: list[str] = list(frame_arrays)
        """Names of the extra per-frame arrays (``NAME.npy``), e.g. ``action_effect``; often empty."""
        eps = meta["episodes"]
        self.episode_starts = np.array([e["start"] for e in eps], dtype=np.int64)
        self.episode_lengths = np.array([e["length"] for e in eps], dtype=np.int64)
        shard_starts = [s["start"] for s in meta["shards"]]
        # Where each episode lives: (shard number, offset of its first frame inside the shard).
        self._ep_shard = np.array(
            [bisect_right(shard_starts, s) - 1 for s in self.episode_starts], dtype=np.int64
        )
        self._ep_offset = self.episode_starts - np.array(shard_starts, dtype=np.int64)[self._ep_shard]
        shard_lengths = np.array([s["length"] for s in meta["shards"]], dtype=np.int64)
        if any(not isinstance(s["file"], str) or Path(s["file"]).name != s["file"] for s in meta["shards"]):
            raise ValueError("shard files must be plain file names inside the dataset folder")
        if (
            (self.episode_lengths < 1).any()
            or (self._ep_offset < 0).any()
            or (self._ep_offset + self.episode_lengths > shard_lengths[self._ep_shard]).any()
        ):  # checked here, before anything sized by these numbers is allocated
            raise ValueError("an episode's frames lie outside its shard")
        self._shards: list[np.ndarray] | None = None
        self._arrays: dict[str, np.ndarray | None] | None = None

    # Memory maps are per process: never pickle them, reopen on first use.
    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_shards": None, "_arrays": None}

    def __len__(self) -> int:
        return self.num_episodes

    @property
    def episodes(self) -> list[dict[str, Any]]:
        """``meta["episodes"]``: ``[{"start", "length", "source", "info"}, ...]``."""
        return self.meta["episodes"]

    def __repr__(self) -> str:
        return (
            f"VideoDataset({str(self.root)!r}, frames={self.num_frames}, episodes={self.num_episodes}, "
            f"size={self.frame_size}, fps={self.fps:g}, source={self.source!r})"
        )

    def _open(self) -> None:
        shards = []
        for s in self.meta["shards"]:
            arr = _open_npy(self.root / s["file"])
            if arr.dtype != np.uint8 or arr.shape != (s["length"], *self.frame_size, 3):
                raise PlayworldError(
                    f"{self.root / s['file']} holds {arr.dtype} {arr.shape}, but meta.json says "
                    f"uint8 ({s['length']}, {self.frame_size[0]}, {self.frame_size[1]}, 3); "
                    "the dataset is corrupt: record or ingest it again."
                )
            shards.append(arr)
        arrays: dict[str, np.ndarray | None] = {"rewards": _open_npy(self.root / "rewards.npy")}
        arrays["actions"] = _open_npy(self.root / "actions.npy") if self.has_actions else None
        for name in self.frame_array_names:
            arrays[name] = _open_npy(self.root / f"{name}.npy")
        for name, arr in arrays.items():
            if arr is not None and len(arr) != self.num_frames:
                raise PlayworldError(
                    f"{self.root / (name + '.npy')} has {len(arr)} rows for {self.num_frames} frames; "
                    "the dataset is corrupt: record or ingest it again."
                )
        self._shards, self._arrays = shards, arrays

    def close(self) -> None:
        """Drop this process's memory maps (they are reopened on the next access)."""
        self._shards = self._arrays = None

    @property
    def shards(self) -> list[np.ndarray]:
        """The frame shards as read-only memory maps, each uint8 (N_i, H, W, 3)."""
        if self._shards is None:
            self._open()
        return self._shards

    @property
    def actions(self) -> np.ndarray | None:
        """All actions, (N,) int64 or (N, D) float32, or None."""
        if self._arrays is None:
            self._open()
        return self._arrays["actions"]

    @property
    def rewards(self) -> np.ndarray:
        """All rewards, float32 (N,)."""
        if self._arrays is None:
            self._open()
        return self._arrays["rewards"]

    def frame_array(self, name: str) -> np.ndarray:
        """The extra per-frame array ``name`` (a memory map, (N, ...)), e.g. ``action_effect``.

        Raises a KeyError naming the arrays the dataset has when it has no ``name``.
        """
        if name not in self.frame_array_names:
            raise KeyError(f"{self.root} has no per-frame array {name!r} (it has: {self.frame_array_names or 'none'})")
        if self._arrays is None:
            self._open()
        return self._arrays[name]

    def episode_array(self, name: str, i: int) -> np.ndarray:
        """Episode ``i``'s rows of the per-frame array ``name`` (a zero-copy view)."""
        s = int(self.episode_starts[i])
        return self.frame_array(name)[s : s + int(self.episode_lengths[i])]

    @property
    def episode_index(self) -> np.ndarray:
        """The episode of every frame, int64 (N,)."""
        return _open_npy(self.root / "episode_index.npy")

    def episode_frames(self, i: int) -> np.ndarray:
        """Episode ``i``'s frames: a zero-copy uint8 (T, H, W, 3) memory-map view."""
        off, t = int(self._ep_offset[i]), int(self.episode_lengths[i])
        return self.shards[int(self._ep_shard[i])][off : off + t]

    def episode_actions(self, i: int) -> np.ndarray | None:
        """Episode ``i``'s actions ((T,) or (T, D) view) or None when the dataset has none."""
        if self.actions is None:
            return None
        s = int(self.episode_starts[i])
        return self.actions[s : s + int(self.episode_lengths[i])]

    def episode(self, i: int) -> dict[str, Any]:
        """``{"frames": (T,H,W,3) uint8 memmap view, "actions": (T,)/(T,D) or None,
        "rewards": (T,) float32, "info": {"source": ..., ...}}``."""
        if not -self.num_episodes <= i < self.num_episodes:
            raise IndexError(f"episode {i} out of range: the dataset has {self.num_episodes} episodes")
        i %= self.num_episodes
        s, t = int(self.episode_starts[i]), int(self.episode_lengths[i])
        entry = self.meta["episodes"][i]
        return {
            "frames": self.episode_frames(i),
            "actions": self.episode_actions(i),
            "rewards": self.rewards[s : s + t],
            "info": {"source": entry.get("source", self.source), **entry.get("info", {})},
        }

    def split_episodes(
        self, split: str, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
    ) -> list[int]:
        """Episode indices of ``split`` ("train", "val", "test", or "all"), sorted.

        Whole episodes are shuffled with ``seed`` and cut by ``fractions``, so splits are
        disjoint, cover every episode, and are the same on every call and machine.
        """
        return split_episode_indices(self.num_episodes, split, fractions, seed)


def split_episode_indices(
    num_episodes: int, split: str, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
) -> list[int]:
    """The episode-level split behind :meth:`VideoDataset.split_episodes`.

    Every split with a positive fraction gets at least one episode when there are enough
    episodes for that (>= 3 for the default three splits); the rest goes to the larger ones.
    """
    if split == "all":
        return list(range(num_episodes))
    if split not in SPLITS:
        raise PlayworldError(f"unknown split '{split}'; use one of {', '.join(SPLITS)} or 'all'.")
    if len(fractions) != 3 or any(f < 0 for f in fractions) or sum(fractions) <= 0:
        raise PlayworldError(
            f"fractions must be three non-negative numbers (train, val, test), got {fractions}."
        )
    fr = np.asarray(fractions, dtype=np.float64) / sum(fractions)
    counts = _split_counts(num_episodes, fr)
    order = np.random.default_rng(seed).permutation(num_episodes)
    k = SPLITS.index(split)
    lo = int(sum(counts[:k]))
    return sorted(int(i) for i in order[lo : lo + counts[k]])


def _split_counts(n: int, fr: np.ndarray) -> list[int]:
    counts = [int(math.floor(f * n)) for f in fr]
    # Hand out the rounding remainder by largest fractional part, then make sure every
    # wanted split is non-empty by taking from the largest one.
    rest = n - sum(counts)
    for k in np.argsort(-(fr * n - np.floor(fr * n)), kind="stable")[:rest]:
        counts[int(k)] += 1
    for k in range(3):
        if fr[k] > 0 and counts[k] == 0:
            donor = int(np.argmax(counts))
            if counts[donor] > 1:
                counts[donor] -= 1
                counts[k] += 1
    return counts


def _open_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r")
    except FileNotFoundError:
        raise PlayworldError(
            f"{path} is missing; the dataset in {path.parent} is incomplete: record or ingest it again."
        ) from None
    except (ValueError, OSError) as e:
        raise PlayworldError(
            f"{path} is corrupt ({e}); the dataset in {path.parent} is damaged: record or ingest it again."
        ) from None


def load_dataset(root: str | os.PathLike | VideoDataset, camera: str | None = None) -> VideoDataset:
    """Open a dataset folder (or pass a :class:`VideoDataset` through).

    ``camera``: which camera of a LeRobot folder with several to read (``wrist`` or
    ``observation.images.wrist``; None: its first). A playworld folder has one camera and takes None.

    Raises a :class:`PlayworldError` that says what to do when ``root`` is missing, is not a
    dataset, was written by a newer playworld, or has a corrupt ``meta.json``. A LeRobot
    folder (``meta/info.json``) is handed to ``playworld.data.lerobot.load_lerobot``, and an
    already open dataset object with the same reading API (``episode_frames``,
    ``split_episodes``, ...) is passed through.
    """
    if isinstance(root, VideoDataset) or hasattr(root, "episode_frames"):
        return root
    root = Path(root).expanduser()
    if camera is not None and root.is_dir() and not (root / META_FILE).is_file() and (root / "meta" / "info.json").is_file():
        return _load_lerobot(root, camera)
    if not root.exists():
        raise PlayworldError(
            f"{root} does not exist; pass a dataset folder made by `playworld record` or `playworld ingest`."
        )
    if not root.is_dir():
        raise PlayworldError(f"{root} is a file, not a dataset folder; pass the folder that holds meta.json.")
    meta_path = root / META_FILE
    if not meta_path.is_file():
        if (root / "meta" / "info.json").is_file():
            return _load_lerobot(root)
        hint = ""
        if ".tmp-" in root.name:
            hint = (
                " It looks like the temporary folder of an interrupted recording; delete it and record again."
            )
        raise PlayworldError(
            f"{root} is not a playworld dataset (no {META_FILE}).{hint} Make one with "
            "`playworld record atari --out DIR` or `playworld ingest VIDEO... --out DIR`."
        )
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PlayworldError(f"{meta_path} is corrupt ({e}); record or ingest the dataset again.") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise PlayworldError(
            f'{meta_path} is not a playworld dataset description (no "format": "{FORMAT_NAME}"); '
            "pass a folder made by `playworld record` or `playworld ingest`."
        )
    version = meta.get("format_version")
    if not isinstance(version, int):
        raise PlayworldError(
            f"{meta_path} is corrupt (format_version={version!r}); record or ingest the dataset again."
        )
    if version > FORMAT_VERSION:
        raise PlayworldError(
            f"{root} uses dataset format_version {version}, but this playworld reads versions up to "
            f"{FORMAT_VERSION}; upgrade playworld (pip install -U playworld)."
        )
    if camera is not None:
        raise PlayworldError(f"{root} is a one-camera playworld dataset; drop --camera {camera} (it is for LeRobot folders with several cameras).")
    missing = [k for k in ("fps", "frame_size", "num_frames", "episodes", "shards") if k not in meta]
    if missing:
        raise PlayworldError(
            f"{meta_path} is corrupt (missing {', '.join(missing)}); record or ingest the dataset again."
        )
    try:
        ds = VideoDataset(root, meta)
        ds._open()  # check every file now (cheap: headers only), so damage shows up here, not mid-training
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise PlayworldError(
            f"{meta_path} is corrupt ({type(e).__name__}: {e}); record or ingest the dataset again."
        ) from None
    ds.close()  # ...but map them lazily, in whichever process (DataLoader worker) reads them
    return ds


def _load_lerobot(root: Path, camera: str | None = None) -> VideoDataset:
    """LeRobot folders are read by ``playworld.data.lerobot`` when that module is installed."""
    try:
        from playworld.data import lerobot
    except ModuleNotFoundError as e:
        if e.name != "playworld.data.lerobot":
            raise
        raise PlayworldError(
            f"{root} looks like a LeRobot dataset (meta/info.json), which this playworld cannot read; "
            "upgrade playworld, or convert it with `playworld ingest` from its videos."
        ) from None
    return lerobot.load_lerobot(root, camera)
