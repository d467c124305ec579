"""GIF/MP4 writing, the one place every command (play, training pictures, eval) encodes video."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from playworld.errors import PlayworldError
from playworld.viz import encode_video, save_gif, save_mp4, save_video


def frames(t: int = 4, h: int = 9, w: int = 7) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def test_gif_bytes_and_file_agree_for_arrays_lists_and_tensors(tmp_path):
    video = frames()
    data = encode_video(video, "gif", fps=15, scale=2)
    assert save_gif(list(video), tmp_path / "a" / "b.gif", fps=15, scale=2).read_bytes() == data
    as_tensor = torch.from_numpy(video).permute(0, 3, 1, 2).float() / 255  # (T, 3, H, W) in [0, 1]
    assert encode_video(as_tensor, "gif", fps=15, scale=2) == data
    with Image.open(io.BytesIO(data)) as gif:
        assert gif.n_frames == 4 and gif.size == (14, 18)
        assert gif.info["duration"] == 70  # 1000/15 ms, in GIF's 10 ms units


def test_mp4_pads_odd_sizes(tmp_path):
    import av

    path = save_mp4(frames(), tmp_path / "v.mp4", fps=10)
    assert save_video(frames(), tmp_path / "w.mp4", fps=10).read_bytes() == path.read_bytes()
    with av.open(str(path)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 4 and decoded[0].shape == (10, 8, 3)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda p: save_video(frames(), p / "run.avi"), r"\.gif or \.mp4"),
        (lambda p: encode_video(frames(), "webm"), "unknown video format"),
        (lambda p: encode_video([], "gif"), "no frames"),
        (lambda p: encode_video(frames()[..., :2], "gif"), r"\(H, W, 3\)"),
    ],
)
def test_bad_input_is_a_clear_error(tmp_path, call, match):
    with pytest.raises(PlayworldError, match=match):
        call(tmp_path)
