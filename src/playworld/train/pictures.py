"""Write a training run's sample pictures to ``out/samples`` and TensorBoard."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from playworld.viz import grid, save_gif, save_png, to_uint8_hwc


def save_pictures(pics: dict[str, torch.Tensor], folder: Path, prefix: str, writer=None, step: int = 0) -> None:
    """``pics``: name -> image (3,H,W), clip (T,3,H,W) or a batch of clips (N,T,3,H,W), in [0,1].

    Images become PNGs; clips become GIFs (clips side by side) plus a PNG filmstrip (rows = clips,
    columns = time), also shown in TensorBoard.
    """
    for name, x in pics.items():
        arr = to_uint8_hwc(x)  # (..., H, W, 3)
        if arr.ndim == 3:
            save_png(arr, folder / f"{prefix}-{name}.png", scale=2)
            still = arr
        else:
            clips = arr if arr.ndim == 5 else arr[None]  # (N, T, H, W, 3)
            # GIF: the N clips side by side, animated over T.
            frames = np.stack([grid(clips[:, t][None], pad=1) for t in range(clips.shape[1])])
            save_gif(frames, folder / f"{prefix}-{name}.gif", fps=5, scale=2)
            still = grid(clips, pad=1)  # filmstrip: rows = clips, columns = time
            save_png(still, folder / f"{prefix}-{name}.png", scale=2)
        if writer is not None:
            writer.add_image(name, still, step, dataformats="HWC")
