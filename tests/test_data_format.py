"""The on-disk dataset format: round trips, atomic writes, clear errors, episode splits."""

import json
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import playworld.data
from playworld.data.format import (
    DatasetWriter,
    VideoDataset,
    load_dataset,
    split_episode_indices,
)
from playworld.errors import PlayworldError

H, W = 6, 5


def episode_frames(e: int, t: int) -> np.ndarray:
    """Frames whose pixels say which episode and which step they are: (t, H, W, 3)."""
    f = np.zeros((t, H, W, 3), np.uint8)
    f[..., 0] = e
    f[..., 1] = np.arange(t)[:, None, None]
    return f


def test_round_trip_discrete_actions_over_several_shards(tmp_path):
    lengths = [3, 7, 1, 12, 4]
    out = tmp_path / "ds"
    names = list("abcd")
    with DatasetWriter(
        out, fps=15, frame_size=(H, W), source="t", action_names=names, extra_meta={"k": 1}, shard_frames=8
    ) as w:
        for e, t in enumerate(lengths):
            info = {"source": f"game{e % 2}", "seed": e}
            w.add_episode(episode_frames(e, t), np.arange(t) % 4, np.full(t, e, np.float32), info)
    ds = load_dataset(out)
    assert isinstance(ds, VideoDataset)
    assert (ds.num_frames, ds.num_episodes, ds.frame_size, ds.fps) == (sum(lengths), 5, (H, W), 15.0)
    assert ds.has_actions and ds.action_names == list("abcd") and ds.meta["extra"] == {"k": 1}
    assert len(ds.meta["shards"]) >= 3  # small shards really were used
    for e, t in enumerate(lengths):
        ep = ds.episode(e)
        assert isinstance(ep["frames"], np.memmap)  # zero-copy view: episodes never straddle shards
        np.testing.assert_array_equal(ep["frames"], episode_frames(e, t))
        np.testing.assert_array_equal(ep["actions"], np.arange(t) % 4)
        assert ep["actions"].dtype == np.int64 and ep["rewards"].dtype == np.float32
        np.testing.assert_array_equal(ep["rewards"], np.full(t, e))
        assert ep["info"] == {"source": f"game{e % 2}", "seed": e}
    np.testing.assert_array_equal(ds.episode_index, np.repeat(np.arange(5), lengths))
    assert ds.episode(-1)["frames"].shape == (4, H, W, 3)
    with pytest.raises(IndexError):
        ds.episode(5)


def test_round_trip_continuous_actions_and_no_actions(tmp_path):
    acts = np.random.default_rng(0).normal(size=(9, 8)).astype(np.float64)
    with DatasetWriter(tmp_path / "robot", fps=5, frame_size=(H, W), source="tabletop") as w:
        w.add_episode(episode_frames(0, 9), actions=acts)
    ep = load_dataset(tmp_path / "robot").episode(0)
    assert ep["actions"].dtype == np.float32 and ep["actions"].shape == (9, 8)
    np.testing.assert_allclose(ep["actions"], acts, rtol=1e-6)
    assert ep["info"] == {"source": "tabletop"}

    with DatasetWriter(tmp_path / "video", fps=10, frame_size=(H, W), source="video") as w:
        w.add_episode(episode_frames(0, 2))
    ds = load_dataset(tmp_path / "video")
    assert not ds.has_actions and ds.episode(0)["actions"] is None
    np.testing.assert_array_equal(ds.episode(0)["rewards"], [0, 0])
    with pytest.raises(PlayworldError, match="one-camera playworld dataset; drop --camera wrist"):
        load_dataset(tmp_path / "video", camera="wrist")


def test_bad_episodes_are_rejected(tmp_path):
    with DatasetWriter(tmp_path / "ds", fps=10, frame_size=(H, W), source="t") as w:
        with pytest.raises(ValueError, match="uint8"):
            w.add_episode(np.zeros((2, H, W, 3), np.float32))
        with pytest.raises(ValueError, match="uint8"):
            w.add_episode(np.zeros((2, H + 1, W, 3), np.uint8))
        with pytest.raises(ValueError, match="one action per frame"):
            w.add_episode(episode_frames(0, 3), actions=np.zeros(2, np.int64))
        w.add_episode(episode_frames(0, 3), actions=np.zeros(3, np.int64))
        with pytest.raises(ValueError, match="pass actions"):
            w.add_episode(episode_frames(1, 3))
        with pytest.raises(ValueError, match="differ"):
            w.add_episode(episode_frames(1, 3), actions=np.zeros((3, 2), np.float32))
        with pytest.raises(ValueError, match="JSON"):
            w.add_episode(episode_frames(1, 3), actions=np.zeros(3, np.int64), info={"x": object()})
    assert load_dataset(tmp_path / "ds").num_episodes == 1


def leftovers(parent):
    return sorted(p.name for p in parent.iterdir())


def test_exception_leaves_nothing_at_out(tmp_path):
    out = tmp_path / "ds"
    with pytest.raises(RuntimeError, match="boom"):
        with DatasetWriter(out, fps=10, frame_size=(H, W), source="t", shard_frames=2) as w:
            w.add_episode(episode_frames(0, 5))
            raise RuntimeError("boom")
    assert leftovers(tmp_path) == []  # neither the dataset nor its temporary folder


def test_unfinished_writer_never_looks_complete(tmp_path):
    # A killed process never reaches close(): only a hidden temp folder without meta.json exists.
    w = DatasetWriter(tmp_path / "ds", fps=10, frame_size=(H, W), source="t")
    w.add_episode(episode_frames(0, 5))
    assert not (tmp_path / "ds").exists()
    (tmp,) = tmp_path.iterdir()
    assert tmp.name.startswith(".ds.tmp-")
    with pytest.raises(PlayworldError, match="interrupted"):
        load_dataset(tmp)
    w.abort()
    assert leftovers(tmp_path) == []


def test_empty_writer_creates_nothing(tmp_path):
    with pytest.raises(PlayworldError, match="no episodes"):
        with DatasetWriter(tmp_path / "ds", fps=10, frame_size=(H, W), source="t"):
            pass
    assert leftovers(tmp_path) == []


def test_existing_out_needs_overwrite_and_only_for_datasets(tmp_path):
    out = tmp_path / "ds"
    with DatasetWriter(out, fps=10, frame_size=(H, W), source="t") as w:
        w.add_episode(episode_frames(0, 2))
    with pytest.raises(PlayworldError, match="already exists"):
        DatasetWriter(out, fps=10, frame_size=(H, W), source="t")
    with DatasetWriter(out, fps=10, frame_size=(H, W), source="t", overwrite=True) as w:
        w.add_episode(episode_frames(7, 3))
    assert load_dataset(out).episode(0)["frames"][0, 0, 0, 0] == 7
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "thesis.tex").write_text("do not delete")
    with pytest.raises(PlayworldError, match="not a playworld dataset"):
        DatasetWriter(precious, fps=10, frame_size=(H, W), source="t", overwrite=True)
    assert (precious / "thesis.tex").exists()


@pytest.fixture
def small(tmp_path):
    out = tmp_path / "ds"
    with DatasetWriter(out, fps=10, frame_size=(H, W), source="t") as w:
        w.add_episode(episode_frames(0, 4))
    return out


def test_load_errors_say_what_to_do(tmp_path, small):
    with pytest.raises(PlayworldError, match="does not exist"):
        load_dataset(tmp_path / "nope")
    with pytest.raises(PlayworldError, match="is a file"):
        load_dataset(small / "meta.json")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PlayworldError, match="not a playworld dataset.*playworld record atari"):
        load_dataset(tmp_path / "empty")

    meta = json.loads((small / "meta.json").read_text())
    (small / "meta.json").write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(PlayworldError, match="format_version 99.*upgrade playworld"):
        load_dataset(small)
    (small / "meta.json").write_text('{"format": "playworld-dat')  # truncated write
    with pytest.raises(PlayworldError, match="corrupt"):
        load_dataset(small)
    (small / "meta.json").write_text(json.dumps(meta))
    assert load_dataset(small).num_frames == 4
    (small / "frames-00000.npy").unlink()
    with pytest.raises(PlayworldError, match="frames-00000.npy is missing"):
        load_dataset(small)


def test_lerobot_folders_go_to_the_lerobot_reader(tmp_path, monkeypatch):
    root = tmp_path / "lr"
    (root / "meta").mkdir(parents=True)
    (root / "meta" / "info.json").write_text("{}")
    monkeypatch.delattr(playworld.data, "lerobot", raising=False)
    monkeypatch.setitem(sys.modules, "playworld.data.lerobot", None)  # as if not installed
    with pytest.raises(PlayworldError, match="LeRobot"):
        load_dataset(root)

    class FakeLeRobot:
        @staticmethod
        def load_lerobot(r, camera=None):
            return ("loaded", r) if camera is None else ("loaded", r, camera)

    monkeypatch.setitem(sys.modules, "playworld.data.lerobot", FakeLeRobot)
    assert load_dataset(root) == ("loaded", root)
    assert load_dataset(root, camera="wrist") == ("loaded", root, "wrist")


@settings(max_examples=60, deadline=None)
@given(n=st.integers(3, 400), seed=st.integers(0, 10_000))
def test_splits_are_disjoint_complete_nonempty_and_deterministic(n, seed):
    parts = [split_episode_indices(n, s, seed=seed) for s in ("train", "val", "test")]
    assert all(parts), "every split gets an episode when there are >= 3"
    assert sorted(sum(parts, [])) == list(range(n))  # disjoint and complete
    assert parts == [split_episode_indices(n, s, seed=seed) for s in ("train", "val", "test")]
    assert abs(len(parts[0]) - 0.8 * n) <= 2


def test_split_fractions_and_seed():
    train, val, test = (
        split_episode_indices(100, s, (0.8, 0.1, 0.1), seed=1) for s in ("train", "val", "test")
    )
    assert (len(train), len(val), len(test)) == (80, 10, 10)
    assert split_episode_indices(100, "val", seed=2) != val  # the seed matters
    assert sorted(split_episode_indices(2, "train") + split_episode_indices(2, "val")) == [0, 1]
    assert split_episode_indices(5, "test", (1, 0, 0)) == []
    with pytest.raises(PlayworldError, match="unknown split"):
        split_episode_indices(10, "validation")


def test_split_episodes_on_a_dataset_is_stable_across_loads(tmp_path):
    out = tmp_path / "ds"
    with DatasetWriter(out, fps=10, frame_size=(H, W), source="t") as w:
        for e in range(10):
            w.add_episode(episode_frames(e, 2))
    a, b = load_dataset(out), load_dataset(out)
    assert a.split_episodes("val") == b.split_episodes("val")
    assert set(a.split_episodes("train")).isdisjoint(a.split_episodes("test"))


def test_extra_per_frame_arrays_round_trip_and_are_checked(tmp_path):
    out = tmp_path / "ds"
    lengths = [3, 5, 2]
    with DatasetWriter(out, fps=15, frame_size=(H, W), source="t", action_names=list("ab"), shard_frames=4) as w:
        for e, t in enumerate(lengths):
            w.add_episode(episode_frames(e, t), np.zeros(t, np.int64),
                          arrays={"flag": np.arange(t) % 2 == 0, "mask": np.full(t, 1 << e, np.int64)})
        with pytest.raises(ValueError, match="differ from the first episode"):
            w.add_episode(episode_frames(9, 2), np.zeros(2, np.int64), arrays={"flag": np.ones(2, bool)})
        with pytest.raises(ValueError, match="one row per frame"):
            w.add_episode(episode_frames(9, 2), np.zeros(2, np.int64),
                          arrays={"flag": np.ones(3, bool), "mask": np.ones(2, np.int64)})
        with pytest.raises(ValueError, match="identifier other than"):
            w.add_episode(episode_frames(9, 2), np.zeros(2, np.int64), arrays={"rewards": np.ones(2)})
    ds = load_dataset(out)
    assert ds.frame_array_names == ["flag", "mask"]
    assert ds.meta["frame_arrays"] == {"flag": {"dtype": "bool", "shape": []}, "mask": {"dtype": "int64", "shape": []}}
    assert ds.frame_array("flag").dtype == bool and len(ds.frame_array("mask")) == sum(lengths)
    for e, t in enumerate(lengths):
        np.testing.assert_array_equal(ds.episode_array("flag", e), np.arange(t) % 2 == 0)
        np.testing.assert_array_equal(ds.episode_array("mask", e), np.full(t, 1 << e))
    with pytest.raises(KeyError, match="has no per-frame array 'nope'"):
        ds.frame_array("nope")
    (out / "mask.npy").unlink()  # a listed array that is missing: the dataset is damaged
    with pytest.raises(PlayworldError, match="mask.npy is missing"):
        load_dataset(out)
