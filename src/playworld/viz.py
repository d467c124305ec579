"""Pictures people would rather look at than read: frame grids (PNG) and animations (GIF/MP4),
as files or as bytes (a download).

Frames are uint8 numpy arrays (..., H, W, 3) or float torch tensors (..., 3, H, W) in [0, 1];
:func:`to_uint8_hwc` accepts either.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from einops import rearrange

from playworld.errors import PlayworldError
from playworld.utils import atomic_write_bytes


def to_uint8_hwc(x) -> np.ndarray:
    """(..., 3, H, W) float in [0,1] tensor/array, or (..., H, W, 3) uint8 -> (..., H, W, 3) uint8."""
    try:
        import torch

        if torch.is_tensor(x):
            x = x.detach().float().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    x = np.asarray(x)
    if x.dtype != np.uint8:
        x = rearrange(x, "... c h w -> ... h w c")
        x = (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return x


def upscale(frames: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscaling of (..., H, W, 3) frames."""
    if scale <= 1:
        return frames
    return frames.repeat(scale, axis=-3).repeat(scale, axis=-2)


def grid(frames: np.ndarray, pad: int = 1, pad_value: int = 255) -> np.ndarray:
    """(R, C, H, W, 3) uint8 -> one (R*(H+pad)-pad, C*(W+pad)-pad, 3) image, rows x columns."""
    r, c, h, w, _ = frames.shape
    out = np.full((r * (h + pad) - pad, c * (w + pad) - pad, 3), pad_value, dtype=np.uint8)
    for i in range(r):
        for j in range(c):
            out[i * (h + pad) : i * (h + pad) + h, j * (w + pad) : j * (w + pad) + w] = frames[i, j]
    return out


def save_png(image: np.ndarray, path: str | os.PathLike, scale: int = 1) -> Path:
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(upscale(to_uint8_hwc(image), scale)).save(path)
    return path


def _video(frames, scale: int) -> np.ndarray:
    """Frames (a (T, ...) array/tensor or a list of frames) -> upscaled (T, H, W, 3) uint8, with clear errors."""
    if len(frames) == 0:
        raise PlayworldError("nothing to encode: the recording has no frames")
    video = to_uint8_hwc(frames if hasattr(frames, "shape") else np.stack(list(frames)))
    if video.ndim != 4 or video.shape[-1] != 3:
        raise PlayworldError(f"frames must be (H, W, 3) uint8 images, got shape {video.shape[1:]}")
    return upscale(video, scale)  # nearest neighbour keeps the world's pixels crisp


def encode_gif(frames, fps: float = 10.0, scale: int = 1) -> bytes:
    """(T, H, W, 3) frames -> the bytes of a looping GIF at ``fps``."""
    from PIL import Image

    images = [Image.fromarray(f) for f in _video(frames, scale)]
    buf = io.BytesIO()
    duration = max(20, round(1000 / fps / 10) * 10)  # GIF stores delays in 10 ms units
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=0)
    return buf.getvalue()


def encode_mp4(frames, fps: float = 10.0, scale: int = 1) -> bytes:
    """(T, H, W, 3) frames -> the bytes of an H.264 MP4 (yuv420p, plays in browsers) at ``fps``."""
    import av

    video = _video(frames, scale)
    _, h, w, _ = video.shape
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


#: The video formats playworld writes: file suffix -> media type.
VIDEO_FORMATS = {"gif": "image/gif", "mp4": "video/mp4"}
_ENCODERS = {"gif": encode_gif, "mp4": encode_mp4}


def encode_video(frames, fmt: str, fps: float = 10.0, scale: int = 1) -> bytes:
    """(T, H, W, 3) frames -> the bytes of a ``fmt`` ("gif" or "mp4") video, e.g. for a download."""
    if fmt not in _ENCODERS:
        raise PlayworldError(f"unknown video format '{fmt}'; valid formats: {', '.join(VIDEO_FORMATS)}")
    return _ENCODERS[fmt](frames, fps, scale)


def save_video(frames, path: str | os.PathLike, fps: float = 10.0, scale: int = 1) -> Path:
    """(T, H, W, 3) frames -> ``path``; the format follows the suffix (.gif or .mp4)."""
    fmt = Path(path).suffix.lower().lstrip(".")
    if fmt not in VIDEO_FORMATS:
        raise PlayworldError(f"a video file must end in .gif or .mp4, got '{Path(path).name}'")
    return _write(path, encode_video(frames, fmt, fps, scale))


def save_gif(frames, path: str | os.PathLike, fps: float = 10.0, scale: int = 1) -> Path:
    """(T, H, W, 3) frames -> looping GIF at ``path``."""
    return _write(path, encode_gif(frames, fps, scale))


def save_mp4(frames, path: str | os.PathLike, fps: float = 10.0, scale: int = 1) -> Path:
    """(T, H, W, 3) frames -> H.264 MP4 at ``path``."""
    return _write(path, encode_mp4(frames, fps, scale))


def _write(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    atomic_write_bytes(path, data)  # a reader never sees half a video
    return path
