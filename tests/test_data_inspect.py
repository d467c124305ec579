"""`playworld data info` and `playworld data preview` on a small dataset."""

import numpy as np
import pytest
from PIL import Image

from playworld.cli import main
from playworld.data.format import DatasetWriter, load_dataset
from playworld.data.inspect import GUTTER, dataset_summary, grid_png, sample_clips

H, W = 8, 6


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("inspect") / "ds"
    rng = np.random.default_rng(0)
    with DatasetWriter(
        out, fps=15, frame_size=(H, W), source="atari", action_names=["NOOP", "FIRE", "LEFT"]
    ) as w:
        for e in range(5):
            t = 10 + e
            frames = rng.integers(0, 256, (t, H, W, 3), dtype=np.uint8)
            actions = np.full(t, 2) if e == 0 else np.zeros(t, np.int64)  # LEFT 10x, NOOP 50x
            w.add_episode(frames, actions, info={"source": "Pitfall" if e < 3 else "Pong"})
    return out


def test_summary_counts(small):
    s = dataset_summary(load_dataset(small))
    assert (s["num_frames"], s["num_episodes"]) == (60, 5)
    assert s["by_source"] == {"Pitfall": (3, 33), "Pong": (2, 27)}
    assert s["actions"] == {"kind": "discrete", "counts": [50, 0, 10]}
    assert s["episode_length"] == (10, 12.0, 14)


def test_data_info_cli(small, capsys):
    assert main(["data", "info", str(small)]) == 0
    out = capsys.readouterr().out
    for text in ("60", "Pitfall", "Pong", "NOOP", "LEFT", "83.3%", "16.7%", "8x6", "train 3, val 1, test 1"):
        assert text in out, text


def test_data_preview_png_is_a_grid_of_real_frames(small, tmp_path, capsys):
    png = tmp_path / "sub" / "p.png"
    args = f"data preview {small} --out {png} --clips 3 --clip-len 4 --scale 2".split()
    assert main(args) == 0
    img = np.asarray(Image.open(png).convert("RGB"))
    g = GUTTER
    assert img.shape == (2 * (3 * (H + g) + g), 2 * (4 * (W + g) + g), 3)  # rows = clips, columns = time
    # the cell of clip r at time t is that frame of the dataset, pixel-doubled
    clips, where = sample_clips(load_dataset(small), 3, 4, seed=0)
    assert [e for e, _ in where] == [0, 3, 2]  # Pitfall, Pong, Pitfall: sources take turns
    ds = load_dataset(small)
    e, s = where[1]
    top, left = g + 1 * (H + g), g + 2 * (W + g)  # clip 1, time 2
    cell = img[2 * top : 2 * (top + H) : 2, 2 * left : 2 * (left + W) : 2]
    np.testing.assert_array_equal(cell, ds.episode(e)["frames"][s + 2])
    assert "wrote" in capsys.readouterr().out


def test_data_preview_gif_is_animated(small, tmp_path):
    gif = tmp_path / "p.gif"
    assert main(["data", "preview", str(small), "--out", str(gif), "--clips", "4", "--clip-len", "6"]) == 0
    im = Image.open(gif)
    assert im.is_animated and im.n_frames == 6
    assert im.size == (2 * (2 * (W + GUTTER) + GUTTER), 2 * (2 * (H + GUTTER) + GUTTER))  # 2x2 grid of clips


def test_short_episodes_hold_their_last_frame(small):
    clips, where = sample_clips(load_dataset(small), 1, 20)  # episode 0 has 10 frames
    assert where == [(0, 0)]
    assert (clips[0, 9:] == clips[0, 9]).all()


def test_grid_png_layout():
    clips = np.zeros((2, 3, 2, 2, 3), np.uint8)
    clips[1, 2] = 255
    img = grid_png(clips, scale=1)
    assert img.shape == (7, 10, 3)
    assert (img[4:6, 7:9] == 255).all() and img[0, 0, 0] != 255


def test_bad_preview_requests_exit_1(small, tmp_path, capsys):
    assert main(["data", "preview", str(small), "--out", str(tmp_path / "p.jpg")]) == 1
    assert ".png or .gif" in capsys.readouterr().err
    assert main(["data", "info", str(tmp_path)]) == 1
    assert "not a playworld dataset" in capsys.readouterr().err
