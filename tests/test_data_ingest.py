"""Video ingest: fps resampling by timestamps, crop/pad, image folders, bad files skipped."""

import logging

import av
import numpy as np
import pytest
from PIL import Image

from playworld.cli import main
from playworld.data.format import load_dataset
from playworld.data.ingest import find_inputs, ingest_videos, resample
from playworld.errors import PlayworldError

SRC_FPS, SRC_FRAMES, SRC_W, SRC_H = 30, 60, 96, 64  # a 2-second 3:2 clip


def write_mp4(path, n=SRC_FRAMES, fps=SRC_FPS, w=SRC_W, h=SRC_H):
    """Frame i has red = 4 * i everywhere and a green bar over the left quarter."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for i in range(n):
            img = np.zeros((h, w, 3), np.uint8)
            img[..., 0] = 4 * i
            img[:, : w // 4, 1] = 255
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


@pytest.fixture(scope="module")
def mp4(tmp_path_factory):
    return write_mp4(tmp_path_factory.mktemp("videos") / "clip.mp4")


def test_resample_holds_the_frame_on_screen_at_each_output_time():
    timed = [(0.0, "a"), (0.5, "b"), (1.0, "c")]
    assert list(resample(timed, fps=4)) == ["a", "a", "b", "b", "c", "c"]
    assert list(resample(timed, fps=1)) == ["a", "c"]
    assert list(resample([(3.0, "a"), (3.1, "b")], fps=10, last_duration=0.1)) == ["a", "b"]


def test_ingest_resamples_by_timestamps_and_resizes(mp4, tmp_path):
    ingest_videos([mp4], tmp_path / "ds", fps=10, size=32, progress=False)
    ds = load_dataset(tmp_path / "ds")
    frames = ds.episode(0)["frames"]
    assert (ds.num_episodes, ds.fps, ds.frame_size, ds.has_actions) == (1, 10.0, (32, 32), False)
    assert frames.shape == (20, 32, 32, 3)  # 2 s at 10 fps
    # output frame j shows source frame 3j (red = 12j), up to codec/colour-conversion error
    red = frames[:, 16, 16, 0].astype(int)
    assert np.abs(red - 12 * np.arange(20)).max() <= 8
    assert ds.episode(0)["info"]["source"] == str(mp4)
    # crop: 96x64 -> 48x32 -> centre 32x32 cuts 8 px per side, leaving 4 px of the 12-px green bar
    green = frames[0, 16, :, 1] > 128
    assert green[:3].all() and not green[6:].any()


def test_pad_keeps_the_whole_frame_with_black_bars(mp4, tmp_path):
    ingest_videos([mp4], tmp_path / "ds", fps=10, size=32, fit="pad", progress=False)
    f = load_dataset(tmp_path / "ds").episode(0)["frames"][10]
    # 96x64 -> 32x21 plus 5 black rows above and 6 below
    assert f[:5].max() == 0 and f[-6:].max() == 0 and f[8:24, 16, 0].min() > 100
    assert (f[16, :8, 1] > 128).all()  # the whole green bar (a quarter of the width) is kept


def test_long_videos_become_several_even_episodes(mp4, tmp_path):
    ingest_videos([mp4], tmp_path / "ds", fps=10, size=16, max_episode_frames=7, progress=False)
    ds = load_dataset(tmp_path / "ds")
    assert sorted(ds.episode_lengths.tolist()) == [6, 7, 7]
    red = np.concatenate([ds.episode(i)["frames"][:, 8, 8, 0] for i in range(3)]).astype(int)
    assert np.all(np.diff(red) > 0)  # episodes are in order and together cover the video


def test_truncated_and_empty_files_are_skipped_with_a_warning(mp4, tmp_path, caplog):
    data = mp4.read_bytes()
    bad = tmp_path / "truncated.mp4"
    bad.write_bytes(data[: len(data) // 2])
    empty = tmp_path / "empty.webm"
    empty.write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="playworld"):
        ingest_videos([mp4, bad, empty], tmp_path / "ds", fps=10, size=16, progress=False)
    ds = load_dataset(tmp_path / "ds")
    assert ds.num_episodes == 1 and ds.num_frames == 20
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "truncated.mp4" in warned and "empty.webm" in warned and "skipped 2 of 3" in warned


def test_nothing_usable_exits_1_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.mp4").write_bytes(b"not a video at all")
    (tmp_path / "in" / "b.gif").write_bytes(b"GIF89a broken")
    out = tmp_path / "ds"
    assert main(["ingest", str(tmp_path / "in"), "--out", str(out), "--size", "16"]) == 1
    assert "none of the 2 input(s) could be used" in capsys.readouterr().err
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["in"]


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(PlayworldError, match="does not exist"):
        find_inputs([tmp_path / "nope.mp4"])
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("hi")
    with pytest.raises(PlayworldError, match="no videos"):
        find_inputs([tmp_path / "docs"])


def test_image_folders_sorted_naturally_and_gifs(tmp_path, mp4):
    frames_dir = tmp_path / "in" / "seq"
    frames_dir.mkdir(parents=True)
    for i in range(12):  # frame2 must come before frame10
        Image.fromarray(np.full((20, 30, 3), 20 * i, np.uint8)).save(frames_dir / f"frame{i}.png")
    gif = [Image.fromarray(np.full((24, 24, 3), 40 * i, np.uint8)) for i in range(6)]
    gif[0].save(tmp_path / "in" / "anim.gif", save_all=True, append_images=gif[1:], duration=100, loop=0)
    (tmp_path / "in" / "nested").mkdir()
    (tmp_path / "in" / "nested" / "clip.mp4").write_bytes(mp4.read_bytes())
    assert find_inputs([tmp_path / "in"]) == [
        ("video", tmp_path / "in" / "anim.gif"),
        ("video", tmp_path / "in" / "nested" / "clip.mp4"),
        ("images", frames_dir),
    ]

    ingest_videos([tmp_path / "in"], tmp_path / "ds", fps=5, size=16, progress=False)
    ds = load_dataset(tmp_path / "ds")
    by_source = {ds.episode(i)["info"]["source"]: ds.episode(i)["frames"] for i in range(ds.num_episodes)}
    seq = by_source[str(frames_dir)]
    assert seq.shape == (12, 16, 16, 3)  # one image = one frame without --image-fps
    np.testing.assert_array_equal(seq[:, 8, 8, 0], 20 * np.arange(12))
    anim = by_source[str(tmp_path / "in" / "anim.gif")]  # 6 frames at 10 fps -> 3 at 5 fps
    assert anim.shape[0] == 3
    assert np.abs(anim[:, 8, 8, 0].astype(int) - [0, 80, 160]).max() <= 4
    assert by_source[str(tmp_path / "in" / "nested" / "clip.mp4")].shape[0] == 10


def test_interrupted_ingest_leaves_nothing(mp4, tmp_path, monkeypatch):
    import playworld.data.ingest as ingest

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(ingest, "decode_images", interrupted)
    (tmp_path / "in" / "seq").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "in" / "seq" / "0.png")
    (tmp_path / "in" / "a.mp4").write_bytes(mp4.read_bytes())  # decoded and written first
    with pytest.raises(KeyboardInterrupt):
        ingest_videos([tmp_path / "in"], tmp_path / "ds", size=16, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]
