"""Turn any prompt a person gives (a path, a PIL image of any mode, an array) into frames.

A prompt is one image (a game frame, a photo, a sketch) or a few frames. Whatever its size or
mode (RGBA, greyscale, palette, 16-bit, huge), it becomes uint8 RGB frames (T, H, W, 3) at the
world's frame size; nothing here crashes on a valid image.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from playworld.errors import PlayworldError

MAX_PROMPT_PIXELS = 64_000_000  # larger images are refused (decompression-bomb guard)


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "La":  # premultiplied alpha: PIL converts it to nothing but "LA"
        img = img.convert("LA")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (0, 0, 0, 255))  # games are dark; black matte
        return Image.alpha_composite(background, img).convert("RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo + 1e-12) * 255.0
        return Image.fromarray(arr.astype(np.uint8)).convert("RGB")
    if img.mode == "F":
        arr = np.nan_to_num(np.asarray(img, dtype=np.float64))
        lo, hi = float(arr.min()), float(arr.max())
        return Image.fromarray(((arr - lo) / (hi - lo + 1e-12) * 255).astype(np.uint8)).convert("RGB")
    return img.convert("RGB")


def _open(path: str | os.PathLike) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise PlayworldError(f"prompt image {path} does not exist.")
    try:
        img = Image.open(path)
        if img.width * img.height > MAX_PROMPT_PIXELS:
            raise PlayworldError(
                f"prompt image {path} is {img.width}x{img.height}, larger than the {MAX_PROMPT_PIXELS} "
                "pixels allowed; shrink it first."
            )
        img.draft("RGB", (1024, 1024))  # JPEG: decode at reduced size when huge
        img.load()
        return img
    except PlayworldError:
        raise
    except Exception as e:
        raise PlayworldError(f"{path} is not a readable image ({e}); give a PNG, JPEG, GIF or WebP.") from e


def image_to_frame(img: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """One PIL image of any mode/size -> uint8 (H, W, 3) at ``size`` = (H, W).

    The whole image is resized (no crop), as the Atari recorder does with game screens, so a
    game screenshot prompts the world exactly like a recorded frame.
    """
    h, w = size
    if img.width * img.height > MAX_PROMPT_PIXELS:
        raise PlayworldError(f"prompt image is {img.width}x{img.height}; shrink it below {MAX_PROMPT_PIXELS} pixels.")
    img = _to_rgb(img)
    if img.size != (w, h):
        img = img.resize((w, h), Image.Resampling.BILINEAR if max(img.size) <= 4 * max(h, w) else Image.Resampling.BOX)
    return np.asarray(img, dtype=np.uint8).copy()


def load_prompt(prompt, size: tuple[int, int]) -> np.ndarray:
    """Path | PIL.Image | array (H,W), (H,W,C) or (T,H,W,C) -> uint8 frames (T, H, W, 3)."""
    if isinstance(prompt, (str, os.PathLike)):
        return image_to_frame(_open(prompt), size)[None]
    if isinstance(prompt, Image.Image):
        return image_to_frame(prompt, size)[None]
    arr = np.asarray(prompt)
    if arr.ndim == 2:
        arr = arr[None, ..., None]
    elif arr.ndim == 3 and arr.shape[-1] in (1, 3, 4):
        arr = arr[None]
    elif arr.ndim == 3:  # (T, H, W) greyscale frames
        arr = arr[..., None]
    if arr.ndim != 4 or arr.shape[-1] not in (1, 3, 4) or min(arr.shape[:3]) < 1:
        raise PlayworldError(f"a prompt array must be (H,W), (H,W,C) or (T,H,W,C) with C in 1,3,4; got {arr.shape}.")
    if arr.dtype != np.uint8:
        arr = np.asarray(arr, dtype=np.float64)
        arr = np.nan_to_num(arr)
        if arr.max() <= 1.0:  # float images in [0, 1]
            arr = arr * 255.0
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    out = []
    for f in arr:
        mode = "RGBA" if f.shape[-1] == 4 else "RGB"
        out.append(image_to_frame(Image.fromarray(np.ascontiguousarray(f), mode=mode), size))
    return np.stack(out)
