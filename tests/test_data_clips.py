"""ClipDataset: clips stay inside one episode, actions line up, splits, DataLoader workers."""

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from playworld.data.clips import ClipDataset
from playworld.data.format import DatasetWriter, load_dataset
from playworld.errors import PlayworldError

H = W = 4


@pytest.fixture(scope="module")
def many_short(tmp_path_factory):
    """40 short episodes (2..20 frames). Pixel channel 0 = episode id, channel 1 = step;
    the action of global frame n is n, so alignment errors show up as wrong numbers."""
    out = tmp_path_factory.mktemp("clips") / "ds"
    lengths = np.random.default_rng(0).integers(2, 21, size=40)
    n = 0
    with DatasetWriter(out, fps=10, frame_size=(H, W), source="t", shard_frames=50) as w:
        for e, t in enumerate(lengths):
            f = np.zeros((t, H, W, 3), np.uint8)
            f[..., 0], f[..., 1] = e, np.arange(t)[:, None, None]
            w.add_episode(f, actions=np.arange(n, n + t))
            n += t
    return out, lengths


@pytest.mark.parametrize("clip_len,frame_skip,stride", [(4, 1, None), (3, 3, None), (5, 2, 3), (1, 1, None)])
def test_clips_never_cross_episode_boundaries(many_short, clip_len, frame_skip, stride):
    root, lengths = many_short
    ds = ClipDataset(root, clip_len, frame_skip=frame_skip, split="all", with_actions=True, stride=stride)
    span = (clip_len - 1) * frame_skip + 1
    expected = {(e, s) for e, n in enumerate(lengths) for s in range(0, n - span + 1, stride or 1)}
    assert len(ds) == len(expected)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    seen = set()
    for i in range(len(ds)):
        item = ds[i]
        e, s, f = item["episode"], item["start"], item["frames"]
        assert f.dtype == torch.uint8 and f.shape == (clip_len, H, W, 3)
        assert (f[..., 0] == e).all(), "a clip mixes frames of two episodes"
        steps = s + frame_skip * torch.arange(clip_len)
        assert (f[:, 0, 0, 1] == steps).all()
        # actions[t] = the action stored at clip frame t (the first one of its window)
        assert item["actions"].dtype == torch.int64
        assert (item["actions"] == starts[e] + steps).all()
        seen.add((e, s))
    assert seen == expected


def test_continuous_actions_come_back_as_float32(tmp_path):
    acts = np.random.default_rng(1).normal(size=(10, 8)).astype(np.float32)
    with DatasetWriter(tmp_path / "r", fps=5, frame_size=(H, W), source="tabletop") as w:
        w.add_episode(np.zeros((10, H, W, 3), np.uint8), actions=acts)
    item = ClipDataset(tmp_path / "r", 4, frame_skip=2, split="all", with_actions=True)[1]
    assert item["actions"].dtype == torch.float32 and item["actions"].shape == (4, 8)
    torch.testing.assert_close(item["actions"], torch.from_numpy(acts[1:8:2]))


def test_splits_use_disjoint_episodes(many_short):
    root, _ = many_short
    eps = {}
    for split in ("train", "val", "test"):
        ds = ClipDataset(root, 2, split=split)
        eps[split] = {ds[i]["episode"] for i in range(len(ds))}
    assert all(eps.values())
    assert eps["train"].isdisjoint(eps["val"]) and eps["train"].isdisjoint(eps["test"])
    assert eps["val"].isdisjoint(eps["test"])
    assert ClipDataset(root, 2, split="val").episodes == ClipDataset(root, 2, split="val").episodes


def test_clip_longer_than_every_episode_is_a_clear_error(many_short):
    root, lengths = many_short
    with pytest.raises(PlayworldError, match=f"longest episode .* has {lengths.max()}"):
        ClipDataset(root, int(lengths.max()) + 1, split="all")
    with pytest.raises(PlayworldError, match="frame skip"):
        ClipDataset(root, 8, frame_skip=3, split="all")
    ClipDataset(root, int(lengths.max()), split="all")  # exactly the longest one fits


def test_with_actions_needs_actions_and_splits_need_episodes(tmp_path):
    with DatasetWriter(tmp_path / "v", fps=5, frame_size=(H, W), source="video") as w:
        w.add_episode(np.zeros((5, H, W, 3), np.uint8))
    with pytest.raises(PlayworldError, match="has no actions"):
        ClipDataset(tmp_path / "v", 2, with_actions=True, split="all")
    assert len(ClipDataset(tmp_path / "v", 2, split="train")) == 4  # a lone episode goes to train
    with pytest.raises(PlayworldError, match="split 'val' .* has no episodes"):
        ClipDataset(tmp_path / "v", 2, split="val")


def test_accepts_an_open_dataset_and_pickles(many_short):
    root, _ = many_short
    ds = ClipDataset(load_dataset(root), 4, split="all")
    _ = ds[0]  # maps the files in this process
    clone = pickle.loads(pickle.dumps(ds))
    assert clone.dataset._shards is None  # memory maps are reopened, not pickled
    assert torch.equal(clone[7]["frames"], ds[7]["frames"])


def test_dataloader_with_two_workers_sees_every_clip_once(many_short):
    root, _ = many_short
    ds = ClipDataset(root, 3, split="train", with_actions=True)
    loader = DataLoader(
        ds, batch_size=8, shuffle=True, num_workers=2, generator=torch.Generator().manual_seed(0)
    )
    seen = []
    for batch in loader:
        assert batch["frames"].dtype == torch.uint8 and batch["frames"].shape[1:] == (3, H, W, 3)
        assert (batch["frames"][:, :, 0, 0, 0] == batch["episode"][:, None]).all()
        seen += list(zip(batch["episode"].tolist(), batch["start"].tolist(), strict=True))
    assert len(seen) == len(ds) == len(set(seen))
