"""Pictures people would rather look at than read: frame grids (PNG) and animations (GIF/MP4).

Frames are uint8 numpy arrays (..., H, W, 3) or float torch tensors (..., 3, H, W) in [0, 1];
:func:`to_uint8_hwc` accepts either.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from einops import rearrange


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


def save_gif(frames: np.ndarray, path: str | os.PathLike, fps: float = 10.0, scale: int = 1) -> Path:
    """(T, H, W, 3) frames -> looping GIF."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = upscale(to_uint8_hwc(frames), scale)
    imgs = [Image.fromarray(f) for f in frames]
    imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=max(20, int(1000 / fps)), loop=0)
    return path


def save_mp4(frames: np.ndarray, path: str | os.PathLike, fps: float = 10.0, scale: int = 1) -> Path:
    """(T, H, W, 3) frames -> H.264 MP4 (PyAV). Sizes are padded to even numbers for yuv420p."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = upscale(to_uint8_hwc(frames), scale)
    t, h, w, _ = frames.shape
    ph, pw = h + h % 2, w + w % 2
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=int(round(fps)))
        stream.width, stream.height, stream.pix_fmt = pw, ph, "yuv420p"
        for f in frames:
            if (ph, pw) != (h, w):
                f = np.pad(f, ((0, ph - h), (0, pw - w), (0, 0)))
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
