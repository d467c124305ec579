"""Turn your own videos into a playworld dataset (``playworld ingest``).

Inputs are video files (mp4, webm, mkv, avi, mov, gif, ...), folders searched recursively for
them, and folders of numbered images (``frame1.png, frame2.png, ..., frame10.png``, sorted
naturally: one folder = one video). Videos are decoded with PyAV and resampled to ``fps`` by
their timestamps (output frame ``j`` shows the source frame on screen at time ``j / fps``),
then centre-cropped (or padded) to a square and resized. Each input becomes one or more
episodes (long ones are cut evenly into episodes of at most ``max_episode_frames``).

An input that cannot be decoded (corrupt, truncated, empty, not a video) is skipped with a
warning naming it; if nothing usable is left, a PlayworldError says so and nothing is written.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import tyro

from playworld.data.format import DatasetWriter, load_dataset
from playworld.errors import PlayworldError
from playworld.utils import get_logger

log = get_logger("data.ingest")

VIDEO_EXTS = {
    ".mp4",
    ".m4v",
    ".webm",
    ".mkv",
    ".avi",
    ".mov",
    ".gif",
    ".mpg",
    ".mpeg",
    ".ogv",
    ".flv",
    ".wmv",
}
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
Fit = Literal["crop", "pad"]


def natural_key(name: str) -> list:
    """Sort key that orders ``img2`` before ``img10``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def find_inputs(paths: Iterable[str | os.PathLike]) -> list[tuple[str, Path]]:
    """``[("video", file) | ("images", folder)]`` for every input under ``paths``, in natural order."""
    paths = list(paths)
    if not paths:
        raise PlayworldError(
            "no inputs given; pass video files or folders, e.g. `playworld ingest clips/ --out data/mine`."
        )
    found: list[tuple[str, Path]] = []
    for p in map(Path, paths):
        p = p.expanduser()
        if not p.exists():
            raise PlayworldError(f"{p} does not exist; pass video files or folders of them.")
        if p.is_file():
            found.append(("video", p))  # an explicit file is tried whatever its extension
            continue
        for dirpath, dirnames, filenames in os.walk(p):
            dirnames[:] = sorted((d for d in dirnames if not d.startswith(".")), key=natural_key)
            files = sorted((f for f in filenames if not f.startswith(".")), key=natural_key)
            if any(Path(f).suffix.lower() in IMAGE_EXTS for f in files):
                found.append(("images", Path(dirpath)))
            found += [("video", Path(dirpath) / f) for f in files if Path(f).suffix.lower() in VIDEO_EXTS]
    unique = list(dict.fromkeys(found))
    if not unique:
        raise PlayworldError(
            f"no videos ({', '.join(sorted(VIDEO_EXTS))}) or image folders found in "
            f"{', '.join(map(str, paths))}; pass video files or folders that contain them."
        )
    return unique


def crop_or_pad(img: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop and/or zero-pad an (h, w, 3) image to (size, size, 3)."""
    h, w = img.shape[:2]
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    img = img[top : top + size, left : left + size]
    if img.shape[:2] == (size, size):
        return np.ascontiguousarray(img)
    out = np.zeros((size, size, 3), np.uint8)
    h, w = img.shape[:2]
    out[(size - h) // 2 : (size - h) // 2 + h, (size - w) // 2 : (size - w) // 2 + w] = img
    return out


def _scaled_size(w: int, h: int, size: int, fit: Fit) -> tuple[int, int]:
    """(width, height) to resize to, keeping the aspect ratio: the short side (crop) or the
    long side (pad) becomes ``size``."""
    scale = size / (min(w, h) if fit == "crop" else max(w, h))
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    if fit == "crop":
        nw, nh = max(nw, size), max(nh, size)
    return nw, nh


def resample(
    timed: Iterable[tuple[float, object]], fps: float, last_duration: float | None = None
) -> Iterator[object]:
    """Sample-and-hold resampling: for each output time ``t0 + j / fps`` yield the input item
    whose display interval ``[t_i, t_{i+1})`` contains it. The last item lasts ``last_duration``
    (default: the previous frame interval, or ``1 / fps``)."""
    eps = 1e-6  # timestamps are rounded to the stream's time base
    j, t0, prev, prev_t, dt = 0, None, None, 0.0, None
    for t, item in timed:
        if prev is None:
            t0, prev, prev_t = t, item, t
            continue
        while t0 + j / fps < t - eps:
            yield prev
            j += 1
        dt = t - prev_t if t > prev_t else dt
        prev, prev_t = item, max(t, prev_t)
    if prev is None:
        return
    end = prev_t + (last_duration or dt or 1.0 / fps)
    while t0 + j / fps < end - eps:
        yield prev
        j += 1


def decode_video(path: Path, fps: float, size: int, fit: Fit = "crop") -> np.ndarray:
    """Decode, resample to ``fps`` and fit one video file: uint8 (T, size, size, 3)."""
    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = float(stream.average_rate) if stream.average_rate else None

        def timed() -> Iterator[tuple[float, object]]:
            for n, frame in enumerate(container.decode(stream)):
                t = frame.time
                yield (t if t is not None else n / (rate or fps)), frame

        out, cache = [], (None, None)
        for frame in resample(timed(), fps, last_duration=1.0 / rate if rate else None):
            if cache[0] is not frame:  # convert each source frame once, even when repeated
                nw, nh = _scaled_size(frame.width, frame.height, size, fit)
                interp = "AREA" if nw <= frame.width else "BICUBIC"
                img = frame.reformat(width=nw, height=nh, format="rgb24", interpolation=interp).to_ndarray()
                cache = (frame, crop_or_pad(img, size))
            out.append(cache[1])
    if not out:
        raise ValueError("no frames")
    return np.stack(out)  # (T, size, size, 3)


def decode_images(
    folder: Path, fps: float, size: int, fit: Fit = "crop", image_fps: float | None = None
) -> np.ndarray:
    """Read a folder of numbered images as one video: uint8 (T, size, size, 3).

    With ``image_fps`` the images are resampled from that rate to ``fps``; without it every
    image is one output frame. Unreadable images are skipped with a warning.
    """
    from PIL import Image, UnidentifiedImageError

    files = [f for f in folder.iterdir() if f.suffix.lower() in IMAGE_EXTS and not f.name.startswith(".")]
    files.sort(key=lambda f: natural_key(f.name))
    timed = ((i / image_fps if image_fps else i / fps, f) for i, f in enumerate(files))
    out = []
    for f in resample(timed, fps):
        try:
            with Image.open(f) as im:
                im = im.convert("RGB")
                nw, nh = _scaled_size(im.width, im.height, size, fit)
                resample_filter = Image.Resampling.BOX if nw <= im.width else Image.Resampling.BICUBIC
                out.append(crop_or_pad(np.asarray(im.resize((nw, nh), resample_filter)), size))
        except (OSError, UnidentifiedImageError, ValueError) as e:
            log.warning(f"skipping image {f}: {e}")
    if not out:
        raise ValueError("no readable images")
    return np.stack(out)


def ingest_videos(
    paths: Iterable[str | os.PathLike],
    out: str | os.PathLike,
    *,
    fps: float = 10.0,
    size: int = 64,
    fit: Fit = "crop",
    max_episode_frames: int = 1000,
    min_episode_frames: int = 2,
    image_fps: float | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Ingest ``paths`` into the dataset folder ``out``; returns ``out``. See :class:`Ingest`."""
    from tqdm import tqdm

    if fps <= 0 or size < 8 or max_episode_frames < 1 or min_episode_frames < 1:
        raise PlayworldError(
            f"need fps > 0, size >= 8, max/min episode frames >= 1 (got {fps}, {size}, "
            f"{max_episode_frames}, {min_episode_frames})."
        )
    if fit not in ("crop", "pad"):
        raise PlayworldError(f"unknown --fit '{fit}'; use crop or pad.")
    inputs = find_inputs(paths)
    extra = dict(
        recorder="ingest",
        fps=fps,
        size=size,
        fit=fit,
        image_fps=image_fps,
        max_episode_frames=max_episode_frames,
    )
    skipped = 0
    with DatasetWriter(
        out, fps=fps, frame_size=(size, size), source="video", extra_meta=extra, overwrite=overwrite
    ) as w:
        bar = tqdm(inputs, desc="ingest", unit="file", disable=not progress)
        for kind, path in bar:
            try:
                if kind == "video":
                    frames = decode_video(path, fps, size, fit)
                else:
                    frames = decode_images(path, fps, size, fit, image_fps)
                if len(frames) < min_episode_frames:
                    raise ValueError(f"only {len(frames)} frame(s) at {fps:g} fps, need {min_episode_frames}")
            except Exception as e:  # noqa: BLE001 - any unreadable input is skipped, never fatal
                skipped += 1
                log.warning(f"skipping {path}: {e or type(e).__name__}")
                continue
            chunks = math.ceil(len(frames) / max_episode_frames)
            bounds = np.linspace(0, len(frames), chunks + 1).round().astype(int)  # even cut, no tiny tail
            for c, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
                info = dict(source=str(path), chunk=c, chunks=chunks, start_time=round(lo / fps, 6))
                w.add_episode(frames[lo:hi], info=info)
            bar.set_postfix(frames=w.num_frames, skipped=skipped)
        bar.close()
        if w.num_episodes == 0:
            raise PlayworldError(
                f"none of the {len(inputs)} input(s) could be used (all skipped, see the warnings above); "
                "check that they play in a video player, or pass other files."
            )
    if skipped:
        log.warning(f"skipped {skipped} of {len(inputs)} inputs (see the warnings above)")
    return Path(out)


@dataclass(kw_only=True)
class Ingest:
    """Turn your own videos (files, folders, numbered-image folders) into a playworld dataset."""

    paths: Annotated[list[Path], tyro.conf.Positional]
    """Video files (mp4/webm/mkv/avi/mov/gif...), folders searched recursively, or folders of numbered images."""
    out: Path
    """Dataset folder to create (must not exist unless --overwrite)."""
    fps: float = 10.0
    """Frame rate to resample to, by timestamps (Genie trained on 10 fps video)."""
    size: int = 64
    """Frames are stored as RGB size x size."""
    fit: Fit = "crop"
    """How to make frames square: `crop` the centre, or `pad` with black bars."""
    max_episode_frames: int = 1000
    """Long videos are cut evenly into episodes of at most this many frames (splits are by episode)."""
    min_episode_frames: int = 2
    """Inputs that give fewer frames than this are skipped."""
    image_fps: float | None = None
    """Frame rate of image-folder inputs; unset = every image is one output frame."""
    overwrite: bool = False
    """Replace an existing dataset at --out."""

    def run(self) -> int:
        path = ingest_videos(
            self.paths,
            self.out,
            fps=self.fps,
            size=self.size,
            fit=self.fit,
            max_episode_frames=self.max_episode_frames,
            min_episode_frames=self.min_episode_frames,
            image_fps=self.image_fps,
            overwrite=self.overwrite,
        )
        ds = load_dataset(path)
        print(f"wrote {ds.num_frames} frames in {ds.num_episodes} episodes to {path}")
        return 0
