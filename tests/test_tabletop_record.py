"""`playworld record tabletop`: expert episodes -> LeRobot v3.0 folder -> back through the reader."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("pybullet")
pq = pytest.importorskip("pyarrow.parquet")

from playworld.cli import main  # noqa: E402
from playworld.data.lerobot import load_lerobot  # noqa: E402
from playworld.data.tabletop import RecordTabletop, record_tabletop  # noqa: E402
from playworld.envs.tabletop import Tabletop, get_suite, run_expert_episode  # noqa: E402
from playworld.envs.tabletop.tasks import EpisodeSpec, episode_seed  # noqa: E402
from playworld.errors import PlayworldError  # noqa: E402


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    out = tmp_path_factory.mktemp("rec") / "tabletop"
    report = record_tabletop(out, episodes=3, workers=1, size=48, seed=5, progress=False)
    return out, report


def test_recording_round_trips(recorded):
    out, report = recorded
    assert report.episodes == 3 and report.attempts >= 3 and 0 < report.success_rate <= 1
    ds = load_lerobot(out)
    assert ds.num_episodes == 3 and ds.fps == 10 and ds.frame_size == (48, 48)
    # the same episodes, run again by the expert, give the same actions and (nearly) the frames
    env = Tabletop(image_size=48, terminate_on_success=False)
    suite = get_suite("seen")
    seeds = iter(episode_seed(5, k) for k in range(100))
    for i in range(3):
        ep = ds.episode(i)
        while True:  # skip attempts the recorder dropped as failures
            want = run_expert_episode(env, episode=suite.sample(next(seeds)))
            if want["success"]:
                break
        assert ep["task"] == want["instruction"]
        np.testing.assert_array_equal(ep["actions"], want["actions"])
        np.testing.assert_array_equal(ep["state"], want["states"])
        assert ep["frames"].shape == want["frames"].shape and ep["frames"].dtype == np.uint8
        err = np.abs(ep["frames"].astype(np.float32) - want["frames"]).mean()
        assert err < 4.0, f"decoded video is {err:.1f} grey levels off"
        assert ep["actions"][-1, 0] == 1.0  # the expert says terminate at the end
    env.close()


def test_layout_and_metadata_are_lerobot_v3(recorded):
    out, _ = recorded
    info = json.loads((out / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["total_episodes"] == 3 and info["chunks_size"] == 1000
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    feats = info["features"]
    assert feats["action"]["shape"] == [8] and feats["action"]["names"][0] == "terminate"
    assert feats["observation.images.front"]["dtype"] == "video"
    for path in (
        "meta/tasks.parquet",
        "meta/episodes/chunk-000/file-000.parquet",
        "data/chunk-000/file-000.parquet",
        "videos/observation.images.front/chunk-000/file-000.mp4",
    ):
        assert (out / path).is_file(), path
    data = pq.read_table(out / "data/chunk-000/file-000.parquet")
    assert {
        "observation.state",
        "action",
        "timestamp",
        "frame_index",
        "episode_index",
        "index",
        "task_index",
    } <= set(data.column_names)
    assert data.num_rows == info["total_frames"]
    assert data["index"].to_pylist() == list(range(info["total_frames"]))
    episodes = pq.read_table(out / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    spec = EpisodeSpec.from_dict(json.loads(episodes[0]["playworld/spec"]))
    assert spec.instruction == episodes[0]["tasks"][0]
    stats = json.loads((out / "meta/stats.json").read_text())
    for key in ("action", "observation.state"):
        assert set(stats[key]) >= {"min", "max", "mean", "std", "count", "q01", "q99"}
        assert len(stats[key]["q01"]) == 8
    assert stats["action"]["max"][0] == 1.0 and stats["action"]["count"] == [info["total_frames"]]
    assert np.array(stats["observation.images.front"]["mean"]).shape == (3, 1, 1)
    meta = json.loads((out / "meta/playworld.json").read_text())
    assert meta["episodes"] == 3 and 0 < meta["expert_success_rate"] <= 1


def test_spawn_workers_record_the_same_dataset(recorded, tmp_path):
    out1, _ = recorded
    out2 = tmp_path / "two"
    record_tabletop(out2, episodes=3, workers=2, size=48, seed=5, progress=False)
    a, b = load_lerobot(out1), load_lerobot(out2)
    for i in range(3):
        np.testing.assert_array_equal(a.episode(i)["actions"], b.episode(i)["actions"])
        assert a.episode(i)["task"] == b.episode(i)["task"]


def test_cli(tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["record", "tabletop", "--episodes", "1", "--suite", "symbols", "--workers", "1", "--size", "32"]
    assert main([*argv, "--out", str(out), "--no-progress"]) == 0
    assert "expert success" in capsys.readouterr().out
    assert load_lerobot(out).episode(0)["task"]
    assert main([*argv, "--out", str(out), "--no-progress"]) == 1  # exists: a clear error, exit 1
    assert "already exists" in capsys.readouterr().err
    assert main(["record", "tabletop", "--out", str(tmp_path / "x"), "--suite", "nope"]) == 1
    assert "valid suites" in capsys.readouterr().err


def test_bad_settings_are_user_errors(tmp_path):
    with pytest.raises(PlayworldError, match="even"):
        RecordTabletop(out=tmp_path / "a", size=33)
    with pytest.raises(PlayworldError, match="its tasks are"):
        RecordTabletop(out=tmp_path / "a", suite="symbols", tasks=("stack",))


def test_record_with_dart_noise_keeps_clean_labels(tmp_path):
    out = tmp_path / "dart"
    report = record_tabletop(out, episodes=1, workers=1, size=32, seed=2, tasks=("pick",), progress=False,
                             action_noise=0.015, noise_prob=0.5)
    meta = json.loads((out / "meta/playworld.json").read_text())
    assert meta["action_noise"] == 0.015 and meta["noise_prob"] == 0.5
    ds = load_lerobot(out)
    ep = ds.episode(0)
    # the stored actions are the expert's clean labels for the (perturbed) states it saw
    env = Tabletop(image_size=32, terminate_on_success=False, tasks=("pick",))
    spec = EpisodeSpec.from_dict(json.loads(ds.episodes[0]["playworld/spec"]))
    k = report.attempts - 1  # the one successful attempt is the last one
    want = run_expert_episode(env, episode=spec, action_noise=0.015, noise_prob=0.5, noise_seed=[2, k, 7])
    env.close()
    np.testing.assert_array_equal(ep["actions"], want["actions"])
    np.testing.assert_array_equal(ep["state"], want["states"])
    assert not np.array_equal(want["executed_actions"], want["actions"])
    with pytest.raises(PlayworldError, match="action-noise"):
        RecordTabletop(out=tmp_path / "x", action_noise=0.5)
