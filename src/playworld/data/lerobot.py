"""LeRobot datasets: a v3.0 writer, a v3.0 / v2.1 reader, and conversion to the playworld format.

A LeRobotDataset v3.0 folder (https://huggingface.co/blog/lerobot-datasets-v3) is::

    meta/info.json                      version, fps, features (dtype/shape/names), path templates
    meta/stats.json                     per feature: min, max, mean, std, count, q01..q99
    meta/tasks.parquet                  task string <-> task_index
    meta/episodes/chunk-000/file-000.parquet   one row per episode: length, tasks, where its
                                        rows (dataset_from/to_index) and video segment live
    data/chunk-000/file-000.parquet     one row per frame: observation.state, action, timestamp,
                                        frame_index, episode_index, index, task_index
    videos/<video_key>/chunk-000/file-000.mp4  the frames of many episodes back to back; an
                                        episode is [from_timestamp, to_timestamp) of its file

v2.1 kept one file per episode (``data/chunk-000/episode_000000.parquet``,
``videos/chunk-000/<key>/episode_000000.mp4``) and JSON-lines metadata
(``meta/episodes.jsonl``, ``meta/tasks.jsonl``).

:func:`load_lerobot` returns a :class:`LeRobotDataset`, which also offers the reading API of
``playworld.data.format.VideoDataset`` (``episode_frames``, ``episode_actions``,
``split_episodes``...), so ``ClipDataset`` and the trainers take a LeRobot folder as it is;
:func:`lerobot_to_playworld` converts one into the (faster to read) playworld format.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from playworld.errors import PlayworldError
from playworld.utils import atomic_dir, atomic_write_json, get_logger

log = get_logger("data.lerobot")

CODEBASE_VERSION = "v3.0"
SUPPORTED_VERSIONS = ("v2.1", "v3.0")
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}
INDEX_FEATURES = {
    "timestamp": ("float32", [1]),
    "frame_index": ("int64", [1]),
    "episode_index": ("int64", [1]),
    "index": ("int64", [1]),
    "task_index": ("int64", [1]),
}


def _require_pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ModuleNotFoundError:
        raise PlayworldError("LeRobot datasets need pyarrow: pip install pyarrow") from None
    return pa, pq


# -- statistics ----------------------------------------------------------------------------------


def feature_stats(x: np.ndarray) -> dict[str, list]:
    """LeRobot-style stats of samples ``x`` (N, ...) over axis 0: min, max, mean, std, count
    and the q01/q10/q50/q90/q99 quantiles, as nested lists."""
    x = np.asarray(x, dtype=np.float64)
    out = {
        "min": x.min(0),
        "max": x.max(0),
        "mean": x.mean(0),
        "std": x.std(0),
        "count": np.array([len(x)]),
    }
    qs = np.quantile(x, list(QUANTILES.values()), axis=0)
    out.update({k: q for k, q in zip(QUANTILES, qs, strict=True)})
    return {k: np.asarray(v).tolist() for k, v in out.items()}


def _image_samples(frames: np.ndarray, max_frames: int = 16, stride: int = 4) -> np.ndarray:
    """A few frames, every ``stride``-th pixel, as (N, 3) floats in [0, 1] for image stats."""
    idx = np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).round().astype(int)
    sub = frames[idx, ::stride, ::stride, :].reshape(-1, 3)
    return sub.astype(np.float32) / 255.0


def _image_stats(samples: np.ndarray, num_frames: int) -> dict[str, list]:
    """Per-channel image stats shaped (3, 1, 1) like LeRobot's, with count = frames seen."""
    s = feature_stats(samples)
    out = {k: np.asarray(v).reshape(3, 1, 1).tolist() for k, v in s.items() if k != "count"}
    out["count"] = [int(num_frames)]
    return out


# -- video ---------------------------------------------------------------------------------------


def _video_codec() -> str:
    import av

    for name in ("libx264", "h264", "mpeg4"):
        if name in av.codecs_available:
            try:
                av.codec.Codec(name, "w")
                return name
            except Exception:  # noqa: BLE001 - listed but not usable as an encoder here
                continue
    raise PlayworldError("PyAV has no usable H.264 or MPEG-4 encoder; reinstall av (pip install -U av).")


class _VideoFile:
    """One mp4 being written: frames appended with consecutive timestamps at ``fps``."""

    def __init__(self, path: Path, fps: float, height: int, width: int, codec: str):
        import av

        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.container = av.open(str(path), "w")
        rate = Fraction(fps).limit_denominator(1001)
        self.stream = self.container.add_stream(codec, rate=rate)
        self.stream.width, self.stream.height = width, height
        self.stream.pix_fmt = "yuv420p"
        if codec in ("libx264", "h264"):
            # near-lossless, and a keyframe every second so readers can seek to an episode
            self.stream.options = {"crf": "18", "g": str(max(1, round(fps)))}
        else:
            self.stream.bit_rate = 8 * width * height * max(1, round(fps))
            self.stream.options = {"g": str(max(1, round(fps)))}
        self.num_frames = 0
        self.bytes = 0

    def write(self, frames: np.ndarray) -> None:
        import av

        for img in frames:
            f = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            f.pts = self.num_frames
            self._mux(self.stream.encode(f))
            self.num_frames += 1

    def _mux(self, packets) -> None:
        for pkt in packets:
            self.bytes += pkt.size
            self.container.mux(pkt)

    def size_mb(self) -> float:
        """Encoded size so far (the encoder holds back its last ~40 frames until close)."""
        return self.bytes / 2**20

    def close(self) -> None:
        self._mux(self.stream.encode())
        self.container.close()


def decode_frames(path: str | os.PathLike, start_s: float, num_frames: int, fps: float) -> np.ndarray:
    """``num_frames`` RGB frames of ``path`` from time ``start_s`` on: uint8 (T, H, W, 3)."""
    import av

    path = Path(path)
    if not path.is_file():
        raise PlayworldError(
            f"video {path} is missing; the LeRobot dataset is incomplete: download or record it again."
        )
    first = int(round(start_s * fps))
    frames: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            if first > 0 and stream.time_base is not None:
                container.seek(int(start_s / stream.time_base), stream=stream, backward=True)
            for frame in container.decode(stream):
                idx = int(round(frame.time * fps)) if frame.time is not None else first + len(frames)
                if idx < first:
                    continue
                frames.append(frame.to_ndarray(format="rgb24"))
                if len(frames) == num_frames:
                    break
    except av.error.FFmpegError as e:
        raise PlayworldError(
            f"cannot decode {path} ({e}); the video is corrupt: download or record it again."
        ) from None
    if len(frames) != num_frames:
        raise PlayworldError(
            f"{path} has {len(frames)} frames from {start_s:.3f}s on, but the metadata promises {num_frames}; "
            "the dataset is corrupt or truncated."
        )
    return np.stack(frames)


# -- writer --------------------------------------------------------------------------------------


class LeRobotWriter:
    """Write a LeRobotDataset v3.0 folder episode by episode; atomic like ``DatasetWriter``.

    ::

        with LeRobotWriter("data/tabletop", fps=10, cameras={"front": (128, 128)},
                           state_names=[...], action_names=[...]) as w:
            w.add_episode({"front": frames}, states, actions, task="pick up the red cube")

    Video frames are encoded as episodes arrive; per-frame rows and stats samples are kept in
    memory until :meth:`close` (a few hundred bytes per frame).
    """

    def __init__(
        self,
        out: str | os.PathLike,
        *,
        fps: float,
        cameras: dict[str, tuple[int, int]],
        state_names: Sequence[str],
        action_names: Sequence[str],
        robot_type: str | None = None,
        chunks_size: int = 1000,
        data_files_size_in_mb: float = 100.0,
        video_files_size_in_mb: float = 200.0,
        episode_columns: dict[str, str] | None = None,
        overwrite: bool = False,
    ):
        """Args:
        out: the folder to create.
        fps: frames per second of every stream.
        cameras: camera name -> (height, width); stored as ``observation.images.<name>``.
        state_names, action_names: names of the ``observation.state`` / ``action`` dimensions.
        robot_type: stored in info.json (e.g. "panda").
        chunks_size: files per chunk folder.
        data_files_size_in_mb, video_files_size_in_mb: start a new file after this size.
        episode_columns: extra per-episode metadata columns, name -> "string" | "int64" |
            "float64" | "bool", filled from ``add_episode(extra=...)``.
        overwrite: replace an existing folder at ``out``.
        """
        self.pa, self.pq = _require_pyarrow()
        if fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        if not cameras:
            raise ValueError("at least one camera is needed")
        for name, (h, w) in cameras.items():
            if h % 2 or w % 2:
                raise PlayworldError(f"camera {name!r} is {h}x{w}; H.264 video needs even sizes.")
        self.out = Path(out)
        self.fps = float(fps)
        self.cameras = {f"observation.images.{k}": (int(h), int(w)) for k, (h, w) in cameras.items()}
        self.state_names = list(state_names)
        self.action_names = list(action_names)
        self.robot_type = robot_type
        self.chunks_size = int(chunks_size)
        self.data_mb = float(data_files_size_in_mb)
        self.video_mb = float(video_files_size_in_mb)
        self.episode_columns = dict(episode_columns or {})
        self.codec = _video_codec()
        #: JSON-able settings of whoever records, written to ``meta/playworld.json`` on close
        #: (LeRobot ignores the file); set it any time before :meth:`close`.
        self.extra_meta: dict[str, Any] | None = None

        self._atomic = atomic_dir(self.out, overwrite=overwrite)
        self._tmp = self._atomic.__enter__()
        self._closed = False
        self._tasks: dict[str, int] = {}
        self._episodes: list[dict[str, Any]] = []
        self._num_frames = 0
        # data file being filled
        self._data_loc = (0, 0)
        self._data_rows: list[dict[str, np.ndarray]] = []
        self._data_bytes = 0
        # video file being filled, per camera
        self._video_loc = {k: (0, 0) for k in self.cameras}
        self._videos: dict[str, _VideoFile | None] = {k: None for k in self.cameras}
        # for stats.json
        self._states: list[np.ndarray] = []
        self._actions: list[np.ndarray] = []
        self._image_samples: dict[str, list[np.ndarray]] = {k: [] for k in self.cameras}

    def __enter__(self) -> LeRobotWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.close()
        else:
            self.abort(exc)
        return False

    @property
    def num_episodes(self) -> int:
        return len(self._episodes)

    @staticmethod
    def _next(loc: tuple[int, int], chunks_size: int) -> tuple[int, int]:
        chunk, file = loc
        return (chunk + 1, 0) if file + 1 >= chunks_size else (chunk, file + 1)

    def add_episode(
        self,
        frames: dict[str, np.ndarray] | np.ndarray,
        states: np.ndarray,
        actions: np.ndarray,
        task: str,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """Append one episode: ``frames`` uint8 (T, H, W, 3) per camera (an array when there is
        one camera), ``states`` (T, S), ``actions`` (T, A), the task string, and values for the
        ``episode_columns``."""
        if self._closed:
            raise RuntimeError("add_episode() after close()")
        if isinstance(frames, np.ndarray):
            if len(self.cameras) != 1:
                raise ValueError("pass frames as {camera: array} when there are several cameras")
            frames = {next(iter(self.cameras)).removeprefix("observation.images."): frames}
        frames = {f"observation.images.{k}": np.asarray(v) for k, v in frames.items()}
        if set(frames) != set(self.cameras):
            raise ValueError(f"frames for {sorted(frames)} but the cameras are {sorted(self.cameras)}")
        states = np.asarray(states, dtype=np.float32)
        actions = np.asarray(actions, dtype=np.float32)
        t = len(actions)
        if t == 0:
            raise ValueError("an episode needs at least one frame")
        if states.shape != (t, len(self.state_names)) or actions.shape != (t, len(self.action_names)):
            raise ValueError(
                f"states {states.shape} / actions {actions.shape} must be ({t}, {len(self.state_names)}) / "
                f"({t}, {len(self.action_names)})"
            )
        for key, v in frames.items():
            h, w = self.cameras[key]
            if v.dtype != np.uint8 or v.shape != (t, h, w, 3):
                raise ValueError(f"{key} frames must be uint8 ({t}, {h}, {w}, 3), got {v.dtype} {v.shape}")
        extra = dict(extra or {})
        if set(extra) != set(self.episode_columns):
            raise ValueError(f"extra must have exactly the episode columns {sorted(self.episode_columns)}")

        ep_index = len(self._episodes)
        task_index = self._tasks.setdefault(task, len(self._tasks))
        start = self._num_frames
        record: dict[str, Any] = {"episode_index": ep_index, "tasks": [task], "length": t}

        # rows: start a new data file rather than split an episode across two
        if self._data_rows and self._data_bytes > self.data_mb * 2**20:
            self._flush_data()
            self._data_loc = self._next(self._data_loc, self.chunks_size)
        record["data/chunk_index"], record["data/file_index"] = self._data_loc
        record["dataset_from_index"], record["dataset_to_index"] = start, start + t
        frame_index = np.arange(t, dtype=np.int64)
        self._data_rows.append(
            {
                "observation.state": states,
                "action": actions,
                "timestamp": (frame_index / self.fps).astype(np.float32),
                "frame_index": frame_index,
                "episode_index": np.full(t, ep_index, np.int64),
                "index": np.arange(start, start + t, dtype=np.int64),
                "task_index": np.full(t, task_index, np.int64),
            }
        )
        self._data_bytes += t * 4 * (states.shape[1] + actions.shape[1] + 10)

        for key, v in frames.items():
            video = self._videos[key]
            if video is not None and video.size_mb() > self.video_mb:
                video.close()
                self._video_loc[key] = self._next(self._video_loc[key], self.chunks_size)
                video = None
            if video is None:
                chunk, file = self._video_loc[key]
                h, w = self.cameras[key]
                path = self._tmp / VIDEO_PATH.format(video_key=key, chunk_index=chunk, file_index=file)
                video = self._videos[key] = _VideoFile(path, self.fps, h, w, self.codec)
            from_ts = video.num_frames / self.fps
            video.write(v)
            record[f"videos/{key}/chunk_index"], record[f"videos/{key}/file_index"] = self._video_loc[key]
            record[f"videos/{key}/from_timestamp"] = from_ts
            record[f"videos/{key}/to_timestamp"] = from_ts + t / self.fps
            self._image_samples[key].append(_image_samples(v))

        # per-episode stats, flattened like LeRobot's ``stats/<feature>/<stat>`` columns
        for name, arr in (("observation.state", states), ("action", actions)):
            for stat, value in feature_stats(arr).items():
                record[f"stats/{name}/{stat}"] = value
        record.update(extra)
        self._episodes.append(record)
        self._states.append(states)
        self._actions.append(actions)
        self._num_frames += t

    def _flush_data(self) -> None:
        pa = self.pa
        rows = self._data_rows
        cols = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
        arrays, fields = [], []
        for name, v in cols.items():
            if v.ndim == 2:
                # fixed-size lists, as the HF datasets library stores Sequence(length=D)
                arr = pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1)), v.shape[1])
            else:
                arr = pa.array(v)
            arrays.append(arr)
            fields.append(pa.field(name, arr.type))
        chunk, file = self._data_loc
        path = self._tmp / DATA_PATH.format(chunk_index=chunk, file_index=file)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.pq.write_table(pa.Table.from_arrays(arrays, schema=pa.schema(fields)), path)
        self._data_rows, self._data_bytes = [], 0

    def _write_episodes(self) -> None:
        pa = self.pa
        for e in self._episodes:
            e["meta/episodes/chunk_index"], e["meta/episodes/file_index"] = 0, 0
        columns: dict[str, list] = {k: [e[k] for e in self._episodes] for k in self._episodes[0]}
        types = {"string": pa.string(), "int64": pa.int64(), "float64": pa.float64(), "bool": pa.bool_()}
        arrays = {}
        for k, v in columns.items():
            if k in self.episode_columns:
                arrays[k] = pa.array(v, type=types[self.episode_columns[k]])
            elif k == "tasks":
                arrays[k] = pa.array(v, type=pa.list_(pa.string()))
            else:
                arrays[k] = pa.array(v)
        path = self._tmp / EPISODES_PATH.format(chunk_index=0, file_index=0)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.pq.write_table(pa.table(arrays), path)

    def _write_tasks(self) -> None:
        pa = self.pa
        tasks = sorted(self._tasks, key=self._tasks.get)
        table = pa.table(
            {
                "task_index": pa.array([self._tasks[t] for t in tasks], pa.int64()),
                "task": pa.array(tasks, pa.string()),
            }
        )
        # LeRobot reads this file with pandas and expects the task strings as the index; the
        # pandas metadata below says so, without needing pandas to write it.
        pandas_meta = {
            "index_columns": ["task"],
            "column_indexes": [],
            "columns": [
                {
                    "name": "task_index",
                    "field_name": "task_index",
                    "pandas_type": "int64",
                    "numpy_type": "int64",
                    "metadata": None,
                },
                {
                    "name": "task",
                    "field_name": "task",
                    "pandas_type": "unicode",
                    "numpy_type": "object",
                    "metadata": None,
                },
            ],
            "creator": {"library": "pyarrow", "version": pa.__version__},
            "pandas_version": "2.2.0",
        }
        table = table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})
        self.pq.write_table(table, self._tmp / "meta" / "tasks.parquet")

    def _info(self) -> dict[str, Any]:
        features: dict[str, Any] = {}
        codec_name = "h264" if self.codec in ("libx264", "h264") else self.codec
        for key, (h, w) in self.cameras.items():
            features[key] = {
                "dtype": "video",
                "shape": [h, w, 3],
                "names": ["height", "width", "channels"],
                "info": {
                    "video.height": h,
                    "video.width": w,
                    "video.codec": codec_name,
                    "video.pix_fmt": "yuv420p",
                    "video.is_depth_map": False,
                    "video.fps": self.fps,
                    "video.channels": 3,
                    "has_audio": False,
                },
            }
        features["observation.state"] = {
            "dtype": "float32",
            "shape": [len(self.state_names)],
            "names": self.state_names,
        }
        features["action"] = {
            "dtype": "float32",
            "shape": [len(self.action_names)],
            "names": self.action_names,
        }
        for name, (dtype, shape) in INDEX_FEATURES.items():
            features[name] = {"dtype": dtype, "shape": shape, "names": None}
        n = len(self._episodes)
        return {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": self.robot_type,
            "total_episodes": n,
            "total_frames": self._num_frames,
            "total_tasks": len(self._tasks),
            "chunks_size": self.chunks_size,
            "data_files_size_in_mb": self.data_mb,
            "video_files_size_in_mb": self.video_mb,
            "fps": self.fps if not float(self.fps).is_integer() else int(self.fps),
            "splits": {"train": f"0:{n}"},
            "data_path": DATA_PATH,
            "video_path": VIDEO_PATH,
            "features": features,
        }

    def _stats(self) -> dict[str, Any]:
        stats = {
            "observation.state": feature_stats(np.concatenate(self._states)),
            "action": feature_stats(np.concatenate(self._actions)),
        }
        lengths = [e["length"] for e in self._episodes]
        frame_index = np.concatenate([np.arange(t) for t in lengths])
        index_columns = {
            "timestamp": frame_index / self.fps,
            "frame_index": frame_index,
            "episode_index": np.repeat(np.arange(len(lengths)), lengths),
            "index": np.arange(self._num_frames),
            "task_index": np.repeat([self._tasks[e["tasks"][0]] for e in self._episodes], lengths),
        }
        for name, col in index_columns.items():
            stats[name] = feature_stats(col.reshape(-1, 1))
        for key, samples in self._image_samples.items():
            stats[key] = _image_stats(np.concatenate(samples), self._num_frames)
        return stats

    def close(self) -> Path:
        """Finish the videos, write rows, metadata and stats, and move the folder into place."""
        if self._closed:
            return self.out
        try:
            if not self._episodes:
                raise PlayworldError(f"no episodes were recorded, so no dataset was created at {self.out}.")
            for v in self._videos.values():
                if v is not None:
                    v.close()
            self._flush_data()
            self._write_episodes()
            self._write_tasks()
            atomic_write_json(self._tmp / "meta" / "stats.json", self._stats())
            if self.extra_meta is not None:
                atomic_write_json(self._tmp / "meta" / "playworld.json", self.extra_meta)
            atomic_write_json(self._tmp / "meta" / "info.json", self._info())
        except BaseException as e:
            self.abort(e)
            raise
        self._atomic.__exit__(None, None, None)
        self._closed = True
        return self.out

    def abort(self, exc: BaseException | None = None) -> None:
        """Delete everything written so far."""
        if self._closed:
            return
        self._closed = True
        for v in self._videos.values():
            if v is not None:
                try:
                    v.container.close()
                except Exception:  # noqa: BLE001 - the folder is deleted anyway
                    pass
        exc = exc if exc is not None else RuntimeError("LeRobot writing aborted")
        try:
            self._atomic.__exit__(type(exc), exc, exc.__traceback__)
        except BaseException as raised:
            if raised is not exc:
                raise


# -- reader --------------------------------------------------------------------------------------


class LeRobotDataset:
    """A LeRobot v3.0 or v2.1 folder, read episode by episode.

    ``episode(i)`` -> ``{"frames": uint8 (T, H, W, 3), "actions": float32 (T, D),
    "state": float32 (T, S) or None, "task": str, "timestamps": float32 (T,),
    "rewards": float32 (T,), "info": {...}}``. It also has the reading API of
    ``playworld.data.format.VideoDataset`` (``num_frames``, ``episode_lengths``,
    ``episode_frames``, ``episode_actions``, ``split_episodes``...), so playworld's
    ``ClipDataset`` reads LeRobot folders directly. Decoded episodes are cached (a few).
    """

    def __init__(self, root: str | os.PathLike, camera: str | None = None, cache_episodes: int = 8):
        self.pa, self.pq = _require_pyarrow()
        self.root = Path(root).expanduser()
        info_path = self.root / "meta" / "info.json"
        if not info_path.is_file():
            raise PlayworldError(f"{self.root} is not a LeRobot dataset (no meta/info.json).")
        try:
            self.meta: dict[str, Any] = json.loads(info_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise PlayworldError(
                f"{info_path} is corrupt ({e}); download or record the dataset again."
            ) from None
        self.version = str(self.meta.get("codebase_version", "unknown"))
        if self.version not in SUPPORTED_VERSIONS:
            raise PlayworldError(
                f"{self.root} is a LeRobot {self.version} dataset; playworld reads versions "
                f"{', '.join(SUPPORTED_VERSIONS)}. Convert it with LeRobot's converter "
                "(python -m lerobot.datasets.v30.convert_dataset_v21_to_v30) first."
            )
        self.fps = float(self.meta["fps"])
        self.features: dict[str, dict] = self.meta["features"]
        self.camera_keys = [k for k, f in self.features.items() if f.get("dtype") in ("video", "image")]
        if not self.camera_keys:
            raise PlayworldError(
                f"{self.root} has no camera (video or image) feature, so it has no frames to read."
            )
        if camera is not None:
            key = camera if camera in self.features else f"observation.images.{camera}"
            if key not in self.camera_keys:
                raise PlayworldError(
                    f"camera {camera!r} is not in {self.root}; cameras: {', '.join(self.camera_keys)}."
                )
            self.camera = key
        else:
            self.camera = self.camera_keys[0]
        shape = self.features[self.camera]["shape"]
        names = self.features[self.camera].get("names") or []
        # shape is (H, W, C) in LeRobot's own recordings, (C, H, W) in some conversions
        self.frame_size = (
            (int(shape[1]), int(shape[2]))
            if names and names[0] in ("c", "channel", "channels")
            else (int(shape[0]), int(shape[1]))
        )
        self.source = "lerobot"
        self.has_actions = "action" in self.features
        self.action_names = self._names("action")
        self.tasks = self._read_tasks()
        self.episodes = self._read_episodes()
        self.num_episodes = len(self.episodes)
        self.episode_lengths = np.array([int(e["length"]) for e in self.episodes], dtype=np.int64)
        self.episode_starts = np.concatenate([[0], np.cumsum(self.episode_lengths)[:-1]]).astype(np.int64)
        self.num_frames = int(self.episode_lengths.sum())
        stats_path = self.root / "meta" / "stats.json"
        self.stats = json.loads(stats_path.read_text()) if stats_path.is_file() else None
        self._cache_size = cache_episodes
        self._cache: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self._table_cache: tuple[Path, Any] | None = None

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers decode for themselves; do not ship caches or pyarrow modules
        state = {**self.__dict__, "_cache": OrderedDict(), "_table_cache": None}
        state.pop("pa"), state.pop("pq")
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.pa, self.pq = _require_pyarrow()

    def __len__(self) -> int:
        return self.num_episodes

    def __repr__(self) -> str:
        return (
            f"LeRobotDataset({str(self.root)!r}, {self.version}, episodes={self.num_episodes}, "
            f"frames={self.num_frames}, fps={self.fps:g}, camera={self.camera!r})"
        )

    def _names(self, key: str) -> list[str] | None:
        names = self.features.get(key, {}).get("names")
        if isinstance(names, dict):  # {"motors": [...]} in some datasets
            names = next(iter(names.values()), None)
        return list(names) if names else None

    # -- metadata ---------------------------------------------------------------------------

    def _read_tasks(self) -> dict[int, str]:
        meta = self.root / "meta"
        if self.version == "v3.0":
            path = meta / "tasks.parquet"
            if not path.is_file():
                raise PlayworldError(f"{path} is missing; the dataset is incomplete.")
            t = self.pq.read_table(path).to_pydict()
            text = t.get("task") or t.get("__index_level_0__")
            if text is None:
                raise PlayworldError(f"{path} has no task column; the dataset is corrupt.")
            return {int(i): str(s) for i, s in zip(t["task_index"], text, strict=True)}
        return {int(r["task_index"]): str(r["task"]) for r in _read_jsonl(meta / "tasks.jsonl")}

    def _read_episodes(self) -> list[dict[str, Any]]:
        meta = self.root / "meta"
        if self.version == "v3.0":
            files = sorted((meta / "episodes").glob("chunk-*/file-*.parquet"))
            if not files:
                raise PlayworldError(f"{meta / 'episodes'} has no parquet files; the dataset is incomplete.")
            rows: list[dict[str, Any]] = []
            for f in files:
                # skip the per-episode stats columns: many, and not needed to read frames
                schema = self.pq.read_schema(f)
                cols = [c for c in schema.names if not c.startswith("stats/")]
                rows += self.pq.read_table(f, columns=cols).to_pylist()
        else:
            rows = _read_jsonl(meta / "episodes.jsonl")
        rows.sort(key=lambda r: int(r["episode_index"]))
        if [int(r["episode_index"]) for r in rows] != list(range(len(rows))):
            raise PlayworldError(f"{self.root}'s episode indices are not 0..N-1; the metadata is corrupt.")
        return rows

    # -- frames and rows --------------------------------------------------------------------

    def _episode_table(self, i: int) -> dict[str, list]:
        e = self.episodes[i]
        if self.version == "v3.0":
            tmpl = self.meta.get("data_path", DATA_PATH)
            path = self.root / tmpl.format(
                chunk_index=int(e["data/chunk_index"]), file_index=int(e["data/file_index"])
            )
        else:
            chunk = i // int(self.meta.get("chunks_size", 1000))
            tmpl = self.meta.get(
                "data_path", "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
            )
            path = self.root / tmpl.format(episode_chunk=chunk, episode_index=i)
        if not path.is_file():
            raise PlayworldError(f"{path} is missing; the LeRobot dataset is incomplete.")
        if self._table_cache is None or self._table_cache[0] != path:
            self._table_cache = (path, self.pq.read_table(path))
        table = self._table_cache[1]
        if self.version == "v3.0":
            import pyarrow.compute as pc

            table = table.filter(pc.equal(table["episode_index"], i))
        cols = {}
        for name in table.column_names:
            col = table[name]
            if self.features.get(name, {}).get("dtype") == "image":
                cols[name] = col.to_pylist()
            else:
                cols[name] = col.to_pylist() if _is_nested(col.type) else col.to_numpy()
        return cols

    def _frames(self, i: int, rows: dict[str, Any]) -> np.ndarray:
        e = self.episodes[i]
        t = int(e["length"])
        key = self.camera
        if self.features[key]["dtype"] == "image":
            from io import BytesIO

            from PIL import Image

            out = []
            for cell in rows[key]:
                data = cell["bytes"] if isinstance(cell, dict) else cell
                if data is None and isinstance(cell, dict) and cell.get("path"):
                    data = (self.root / cell["path"]).read_bytes()
                out.append(np.asarray(Image.open(BytesIO(data)).convert("RGB")))
            return np.stack(out)
        if self.version == "v3.0":
            chunk, file = int(e[f"videos/{key}/chunk_index"]), int(e[f"videos/{key}/file_index"])
            tmpl = self.meta.get("video_path", VIDEO_PATH)
            path = self.root / tmpl.format(video_key=key, chunk_index=chunk, file_index=file)
            start = float(e[f"videos/{key}/from_timestamp"])
        else:
            chunk = i // int(self.meta.get("chunks_size", 1000))
            tmpl = (
                self.meta.get("video_path")
                or "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
            )
            path = self.root / tmpl.format(episode_chunk=chunk, video_key=key, episode_index=i)
            start = 0.0
        return decode_frames(path, start, t, self.fps)

    def episode(self, i: int) -> dict[str, Any]:
        """Episode ``i``: frames, actions, state, task, timestamps, rewards, info."""
        if not -self.num_episodes <= i < self.num_episodes:
            raise IndexError(f"episode {i} out of range: the dataset has {self.num_episodes} episodes")
        i %= self.num_episodes
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        rows = self._episode_table(i)
        t = int(self.episodes[i]["length"])
        if len(rows.get("frame_index", [])) != t:
            raise PlayworldError(
                f"episode {i} of {self.root} has {len(rows.get('frame_index', []))} rows but length {t}; the dataset is corrupt."
            )
        actions = np.asarray(rows["action"], dtype=np.float32).reshape(t, -1) if "action" in rows else None
        state = (
            np.asarray(rows["observation.state"], dtype=np.float32).reshape(t, -1)
            if "observation.state" in rows
            else None
        )
        if "task_index" in rows:
            task = self.tasks.get(int(rows["task_index"][0]), "")
        else:
            task = (self.episodes[i].get("tasks") or [""])[0]
        rewards = (
            np.asarray(rows["next.reward"], dtype=np.float32).reshape(t)
            if "next.reward" in rows
            else np.zeros(t, np.float32)
        )
        frames = self._frames(i, rows)
        if frames.shape[1:3] != self.frame_size:
            raise PlayworldError(
                f"{self.camera} frames are {frames.shape[1:3]}, info.json says {self.frame_size}."
            )
        ep = {
            "frames": frames,
            "actions": actions,
            "state": state,
            "task": task,
            "timestamps": np.asarray(rows.get("timestamp", np.arange(t) / self.fps), dtype=np.float32),
            "rewards": rewards,
            "info": {"source": "lerobot", "task": task, "episode_index": i},
        }
        self._cache[i] = ep
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return ep

    # -- the VideoDataset reading API, for ClipDataset ----------------------------------------

    def episode_frames(self, i: int) -> np.ndarray:
        return self.episode(i)["frames"]

    def episode_actions(self, i: int) -> np.ndarray | None:
        return self.episode(i)["actions"]

    def split_episodes(
        self, split: str, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
    ) -> list[int]:
        from playworld.data.format import split_episode_indices

        return split_episode_indices(self.num_episodes, split, fractions, seed)

    def close(self) -> None:
        self._cache.clear()
        self._table_cache = None


def _is_nested(t) -> bool:
    import pyarrow as pa

    return (
        pa.types.is_list(t)
        or pa.types.is_fixed_size_list(t)
        or pa.types.is_large_list(t)
        or pa.types.is_struct(t)
    )


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise PlayworldError(f"{path} is missing; the LeRobot dataset is incomplete.")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise PlayworldError(f"{path} line {n} is not JSON ({e}); the metadata is corrupt.") from None
    return rows


def load_lerobot(root: str | os.PathLike, camera: str | None = None) -> LeRobotDataset:
    """Open a LeRobot v3.0 or v2.1 dataset folder (``camera``: which camera's frames to read,
    default the first one in info.json)."""
    root = Path(root).expanduser()
    if not root.exists():
        raise PlayworldError(f"{root} does not exist; pass a LeRobot dataset folder (with meta/info.json).")
    return LeRobotDataset(root, camera=camera)


def lerobot_to_playworld(
    root: str | os.PathLike,
    out: str | os.PathLike,
    camera: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Convert a LeRobot folder into a playworld dataset at ``out`` (frames of one camera,
    float32 actions, each episode's task in its info); returns ``out``."""
    from playworld.data.format import DatasetWriter

    ds = load_lerobot(root, camera=camera)
    extra = {"lerobot": {"root": str(ds.root), "codebase_version": ds.version, "camera": ds.camera}}
    with DatasetWriter(
        out,
        fps=ds.fps,
        frame_size=ds.frame_size,
        source="lerobot",
        action_names=ds.action_names,
        extra_meta=extra,
        overwrite=overwrite,
    ) as writer:
        for i in range(ds.num_episodes):
            ep = ds.episode(i)
            writer.add_episode(
                ep["frames"], ep["actions"], ep["rewards"], info={"task": ep["task"], "episode_index": i}
            )
            ds.close()  # one episode in memory at a time
    return Path(out)
