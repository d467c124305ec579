"""LeRobot v3.0 writer, v3.0 / v2.1 reader, and the bridge into playworld's datasets."""

from __future__ import annotations

import json

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from playworld.data.lerobot import LeRobotWriter, _VideoFile, lerobot_to_playworld, load_lerobot  # noqa: E402
from playworld.errors import PlayworldError  # noqa: E402

NAMES8 = [f"d{i}" for i in range(8)]


def _frames(t: int, seed: int, size: int = 32) -> np.ndarray:
    """Smooth, distinct frames (video codecs keep these nearly exact): a moving colour block."""
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 200, size=3)
    f = np.zeros((t, size, size, 3), np.uint8)
    f[:] = base
    for i in range(t):  # a block moves 2 px a frame, a second one every 12: all frames differ
        x = (2 * i) % 24
        f[i, 4:16, x : x + 8] = (250, 30, 30)
        y = 6 * (i // 12)
        f[i, 20:28, y : y + 6] = (20, 20, 240)
    return f


def _write_v3(root, lengths, **kw) -> list[dict]:
    eps = []
    with LeRobotWriter(
        root, fps=10, cameras={"cam": (32, 32)}, state_names=NAMES8, action_names=NAMES8, **kw
    ) as w:
        for i, t in enumerate(lengths):
            rng = np.random.default_rng(i)
            ep = {
                "frames": _frames(t, i),
                "states": rng.normal(size=(t, 8)).astype(np.float32),
                "actions": rng.uniform(-1, 1, size=(t, 8)).astype(np.float32),
                "task": f"task {i % 2}",
            }
            w.add_episode({"cam": ep["frames"]}, ep["states"], ep["actions"], ep["task"])
            eps.append(ep)
    return eps


def _check_same(ds, eps):
    assert ds.num_episodes == len(eps)
    for i, want in enumerate(eps):
        got = ds.episode(i)
        np.testing.assert_array_equal(got["actions"], want["actions"])
        np.testing.assert_array_equal(got["state"], want["states"])
        assert got["task"] == want["task"]
        assert got["frames"].shape == want["frames"].shape and got["frames"].dtype == np.uint8
        _assert_frames_match(got["frames"], want["frames"])


def _assert_frames_match(got: np.ndarray, want: np.ndarray) -> None:
    """Lossy video, but every decoded frame is close to, and closest to, its own original."""
    g, w = got.astype(np.float32), want.astype(np.float32)
    assert np.abs(g - w).mean() < 6.0
    dist = np.abs(g[:, None] - w[None]).mean(axis=(2, 3, 4))  # (T, T)
    np.testing.assert_array_equal(dist.argmin(1), np.arange(len(got)))


def test_v3_round_trip(tmp_path):
    eps = _write_v3(tmp_path / "ds", [7, 12, 5])
    ds = load_lerobot(tmp_path / "ds")
    assert ds.version == "v3.0" and ds.fps == 10 and ds.frame_size == (32, 32)
    _check_same(ds, eps)
    assert ds.tasks == {0: "task 0", 1: "task 1"}
    stats = json.loads((tmp_path / "ds/meta/stats.json").read_text())
    allact = np.concatenate([e["actions"] for e in eps])
    np.testing.assert_allclose(stats["action"]["q99"], np.quantile(allact, 0.99, axis=0), rtol=1e-5)
    np.testing.assert_allclose(stats["action"]["mean"], allact.mean(0), rtol=1e-5, atol=1e-6)


def test_v3_many_files(tmp_path):
    """Tiny size limits force new data and video files; the reader follows the episode index."""
    lengths = [6, 9, 4, 8, 30, 30, 30, 30]  # the encoder emits its first bytes after ~40 frames
    eps = _write_v3(
        tmp_path / "ds", lengths, data_files_size_in_mb=1e-6, video_files_size_in_mb=1e-6, chunks_size=2
    )
    files = sorted(p.relative_to(tmp_path / "ds").as_posix() for p in (tmp_path / "ds").rglob("file-*.*"))
    assert "data/chunk-001/file-001.parquet" in files  # one data file per episode, two per chunk
    videos = [f for f in files if f.startswith("videos/")]
    assert len(videos) >= 3 and "videos/observation.images.cam/chunk-001/file-000.mp4" in videos
    _check_same(load_lerobot(tmp_path / "ds"), eps)


def test_several_episodes_share_a_video_file(tmp_path):
    eps = _write_v3(tmp_path / "ds", [5, 11, 7])
    rows = pq.read_table(tmp_path / "ds/meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [r["videos/observation.images.cam/from_timestamp"] for r in rows] == [0.0, 0.5, 1.6]
    assert [(r["dataset_from_index"], r["dataset_to_index"]) for r in rows] == [(0, 5), (5, 16), (16, 23)]
    ds = load_lerobot(tmp_path / "ds")
    _assert_frames_match(ds.episode(2)["frames"], eps[2]["frames"])  # read from the middle of the file


def _write_v21(root, lengths, image_dtype="video"):
    """A LeRobot v2.1 folder built by hand: jsonl metadata, one parquet + one mp4 per episode."""
    (root / "meta").mkdir(parents=True)
    features = {
        "observation.images.top": {
            "dtype": image_dtype,
            "shape": [32, 32, 3],
            "names": ["height", "width", "channel"],
        },
        "observation.state": {"dtype": "float32", "shape": [2], "names": {"motors": ["a", "b"]}},
        "action": {"dtype": "float32", "shape": [3], "names": {"motors": ["x", "y", "g"]}},
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},
        "frame_index": {"dtype": "int64", "shape": [1], "names": None},
        "episode_index": {"dtype": "int64", "shape": [1], "names": None},
        "index": {"dtype": "int64", "shape": [1], "names": None},
        "task_index": {"dtype": "int64", "shape": [1], "names": None},
    }
    info = {
        "codebase_version": "v2.1",
        "robot_type": None,
        "total_episodes": len(lengths),
        "total_frames": sum(lengths),
        "total_tasks": 2,
        "total_videos": len(lengths),
        "total_chunks": 1,
        "chunks_size": 1000,
        "fps": 15,
        "splits": {"train": f"0:{len(lengths)}"},
        "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
        "video_path": "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
        if image_dtype == "video"
        else None,
        "features": features,
    }
    (root / "meta/info.json").write_text(json.dumps(info))
    tasks = ["open the drawer", "close the drawer"]
    (root / "meta/tasks.jsonl").write_text(
        "".join(json.dumps({"task_index": i, "task": t}) + "\n" for i, t in enumerate(tasks))
    )
    lines, eps, start = [], [], 0
    for i, t in enumerate(lengths):
        frames = _frames(t, 10 + i)
        rng = np.random.default_rng(100 + i)
        actions = rng.normal(size=(t, 3)).astype(np.float32)
        state = rng.normal(size=(t, 2)).astype(np.float32)
        cols = {
            "observation.state": pa.array(state.tolist(), pa.list_(pa.float32())),
            "action": pa.array(actions.tolist(), pa.list_(pa.float32())),
            "timestamp": pa.array((np.arange(t) / 15).astype(np.float32)),
            "frame_index": pa.array(np.arange(t)),
            "episode_index": pa.array(np.full(t, i)),
            "index": pa.array(np.arange(start, start + t)),
            "task_index": pa.array(np.full(t, i % 2)),
        }
        if image_dtype == "image":
            from io import BytesIO

            from PIL import Image

            pngs = []
            for f in frames:
                buf = BytesIO()
                Image.fromarray(f).save(buf, format="PNG")
                pngs.append({"bytes": buf.getvalue(), "path": None})
            cols["observation.images.top"] = pa.array(pngs)
        else:
            video = _VideoFile(
                root / f"videos/chunk-000/observation.images.top/episode_{i:06d}.mp4", 15, 32, 32, "mpeg4"
            )
            video.write(frames)
            video.close()
        (root / "data/chunk-000").mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(cols), root / f"data/chunk-000/episode_{i:06d}.parquet")
        lines.append(json.dumps({"episode_index": i, "tasks": [tasks[i % 2]], "length": t}) + "\n")
        eps.append({"frames": frames, "actions": actions, "states": state, "task": tasks[i % 2]})
        start += t
    (root / "meta/episodes.jsonl").write_text("".join(lines))
    return eps


@pytest.mark.parametrize("image_dtype", ["video", "image"])
def test_v21_folder_loads(tmp_path, image_dtype):
    eps = _write_v21(tmp_path / "old", [6, 9], image_dtype)
    ds = load_lerobot(tmp_path / "old")
    assert ds.version == "v2.1" and ds.fps == 15 and ds.action_names == ["x", "y", "g"]
    _check_same(ds, eps)
    if image_dtype == "image":  # PNG frames are exact
        np.testing.assert_array_equal(ds.episode(1)["frames"], eps[1]["frames"])


def test_unsupported_version_names_supported_ones(tmp_path):
    _write_v21(tmp_path / "old", [3])
    info = json.loads((tmp_path / "old/meta/info.json").read_text())
    info["codebase_version"] = "v1.6"
    (tmp_path / "old/meta/info.json").write_text(json.dumps(info))
    with pytest.raises(PlayworldError, match=r"v1\.6.*v2\.1, v3\.0"):
        load_lerobot(tmp_path / "old")
    with pytest.raises(PlayworldError, match="does not exist"):
        load_lerobot(tmp_path / "missing")


def test_playworld_clip_dataset_reads_lerobot_folders(tmp_path):
    from playworld.data.clips import ClipDataset
    from playworld.data.format import load_dataset

    eps = _write_v3(tmp_path / "ds", [8, 10, 9, 7, 12])
    clips = ClipDataset(tmp_path / "ds", clip_len=4, split="all", with_actions=True)
    assert len(clips) == sum(t - 3 for t in (8, 10, 9, 7, 12))
    item = clips[len(clips) - 1]  # last clip of the last episode
    assert item["frames"].shape == (4, 32, 32, 3) and item["actions"].shape == (4, 8)
    np.testing.assert_array_equal(item["actions"].numpy(), eps[4]["actions"][-4:])

    out = lerobot_to_playworld(tmp_path / "ds", tmp_path / "pw")
    pw = load_dataset(out)
    assert pw.num_episodes == 5 and pw.fps == 10 and pw.frame_size == (32, 32) and pw.action_names == NAMES8
    for i in range(5):
        ep = pw.episode(i)
        np.testing.assert_array_equal(ep["actions"], eps[i]["actions"])
        assert ep["info"]["task"] == eps[i]["task"]
        _assert_frames_match(np.asarray(ep["frames"]), eps[i]["frames"])


def test_writer_is_atomic_and_checks_input(tmp_path):
    w = LeRobotWriter(
        tmp_path / "ds", fps=10, cameras={"cam": (32, 32)}, state_names=NAMES8, action_names=NAMES8
    )
    with pytest.raises(ValueError, match="uint8"):
        w.add_episode(np.zeros((3, 32, 30, 3), np.uint8), np.zeros((3, 8)), np.zeros((3, 8)), "t")
    w.abort()
    assert not (tmp_path / "ds").exists() and not list(tmp_path.iterdir())
    with pytest.raises(PlayworldError, match="no episodes"):
        LeRobotWriter(
            tmp_path / "ds", fps=10, cameras={"cam": (32, 32)}, state_names=NAMES8, action_names=NAMES8
        ).close()
    assert not (tmp_path / "ds").exists()
