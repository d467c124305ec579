"""Encode a played rollout (a list of uint8 (H,W,3) frames) as GIF (pillow) or MP4 (PyAV, H.264)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from playworld.errors import PlayworldError
from playworld.utils import atomic_write_bytes

FORMATS = {"gif": "image/gif", "mp4": "video/mp4"}


def _upscale(frames: Sequence[np.ndarray], scale: int) -> np.ndarray:
    video = np.stack([np.asarray(f, dtype=np.uint8) for f in frames])  # (T, H, W, 3)
    if video.ndim != 4 or video.shape[-1] != 3:
        raise PlayworldError(f"frames must be (H, W, 3) uint8 images, got shape {video.shape[1:]}")
    if scale > 1:  # nearest neighbour keeps the world's pixels crisp
        video = video.repeat(scale, axis=1).repeat(scale, axis=2)
    return video


def encode_gif(frames: Sequence[np.ndarray], fps: float = 10.0, scale: int = 1) -> bytes:
    """A looping GIF of ``frames`` at ``fps`` (GIF stores delays in 10 ms units)."""
    if not frames:
        raise PlayworldError("nothing to encode: the recording has no frames")
    video = _upscale(frames, scale)
    images = [Image.fromarray(f) for f in video]
    buf = io.BytesIO()
    duration = max(20, round(1000 / fps / 10) * 10)
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=0)
    return buf.getvalue()


def encode_mp4(frames: Sequence[np.ndarray], fps: float = 10.0, scale: int = 1) -> bytes:
    """An H.264 MP4 (yuv420p, plays in browsers) of ``frames`` at ``fps``."""
    import av

    if not frames:
        raise PlayworldError("nothing to encode: the recording has no frames")
    video = _upscale(frames, scale)
    t, h, w, _ = video.shape
    # yuv420p needs even sides; pad by repeating the last row/column
    video = np.pad(video, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=max(1, round(fps)))
        stream.width, stream.height = video.shape[2], video.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast"}
        for frame in video:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def encode(frames: Sequence[np.ndarray], fmt: str, fps: float = 10.0, scale: int = 1) -> bytes:
    if fmt == "gif":
        return encode_gif(frames, fps, scale)
    if fmt == "mp4":
        return encode_mp4(frames, fps, scale)
    raise PlayworldError(f"unknown video format '{fmt}'; valid formats: {', '.join(FORMATS)}")


def write_video(path: str | Path, frames: Sequence[np.ndarray], fps: float = 10.0, scale: int = 1) -> Path:
    """Write ``frames`` to ``path``; the format follows the suffix (.gif or .mp4)."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise PlayworldError(f"--out must end in .gif or .mp4, got '{path.name}'")
    atomic_write_bytes(path, encode(frames, fmt, fps, scale))
    return path
