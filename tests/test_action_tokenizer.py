"""RT-2 action tokenizer: q01/q99 normalisation, 256 bins, text round trips."""

from __future__ import annotations

import numpy as np
import pytest

from playworld.errors import PlayworldError
from playworld.policy.action_tokenizer import ActionDecodeError, ActionTokenizer

Q01 = np.array([0.0, -0.04, -0.04, -0.04, -0.2, -0.2, -0.2, 0.0])
Q99 = np.array([1.0, 0.04, 0.04, 0.04, 0.2, 0.2, 0.2, 1.0])


@pytest.fixture
def tok():
    return ActionTokenizer(Q01, Q99)


def test_round_trip_within_half_a_bin(tok):
    rng = np.random.default_rng(0)
    actions = rng.uniform(Q01, Q99, size=(5000, 8))
    bins = tok.encode(actions)
    assert bins.dtype == np.int64 and bins.shape == (5000, 8)
    assert bins.min() >= 0 and bins.max() <= 255
    err = np.abs(tok.decode(bins) - actions)
    assert np.all(err <= tok.bin_width / 2 + 1e-6)
    # bins are used evenly by uniform data: the discretisation really is uniform
    counts = np.bincount(bins[:, 1], minlength=256)
    assert counts.min() > 0 and counts.max() < 3 * counts.mean()


def test_exact_at_bin_centres(tok):
    bins = np.random.default_rng(1).integers(0, 256, size=(100, 8))
    centres = tok.decode(bins)
    np.testing.assert_array_equal(tok.encode(centres), bins)
    np.testing.assert_allclose(tok.decode(tok.encode(centres)), centres, rtol=0, atol=0)
    # the middle of the range is the border between bins 127 and 128
    assert tok.encode((Q01 + Q99) / 2).tolist() == [128] * 8


def test_outliers_clip_to_edge_bins(tok):
    a = np.stack([Q01 - 5, Q99 + 5])
    assert tok.encode(a).tolist() == [[0] * 8, [255] * 8]
    with pytest.raises(ValueError, match="NaN"):
        tok.encode(np.full(8, np.nan))
    with pytest.raises(ValueError, match="dimension 8"):
        tok.encode(np.zeros(7))


def test_text(tok):
    bins = np.array([1, 128, 91, 241, 5, 101, 127, 217])
    text = tok.to_text(bins)
    assert text == "1 128 91 241 5 101 127 217"
    np.testing.assert_array_equal(tok.from_text(text), bins)
    np.testing.assert_array_equal(tok.from_text("  1 128\t91 241 5 101 127 217\n"), bins)
    a = np.array([1.0, 0.01, -0.02, 0.0, 0.1, 0.0, -0.1, 1.0])
    assert np.all(np.abs(tok.text_to_action(tok.action_to_text(a)) - a) <= tok.bin_width / 2 + 1e-6)


@pytest.mark.parametrize(
    "text",
    ["", "1 2 3", "1 128 91 241 5 101 127 217 4", "1 128 91 241 5 101 127 256", "1 128 91 -4 5 101 127 217",
     "1 128 91 2.5 5 101 127 217", "one 128 91 241 5 101 127 217", "1 128 91 241 5 101 127 ²"],
)  # fmt: skip
def test_malformed_text_raises_a_catchable_error(tok, text):
    with pytest.raises(ActionDecodeError):
        tok.from_text(text)
    assert issubclass(ActionDecodeError, PlayworldError)


def test_save_load(tok, tmp_path):
    path = tok.save(tmp_path / "tok.json")
    back = ActionTokenizer.load(path)
    a = np.random.default_rng(2).uniform(Q01, Q99, size=(50, 8))
    np.testing.assert_array_equal(back.encode(a), tok.encode(a))
    assert back.num_bins == 256
    (tmp_path / "bad.json").write_text('{"type": "something else"}')
    with pytest.raises(PlayworldError, match="not an action tokenizer"):
        ActionTokenizer.load(tmp_path / "bad.json")


def test_from_stats_keeps_rare_binary_values():
    # terminate is 1 on 0.5% of frames: its q99 is 0, so q01/q99 alone would clip it away
    rng = np.random.default_rng(3)
    n = 2000
    actions = np.zeros((n, 8))
    actions[rng.choice(n, 10, replace=False), 0] = 1.0
    actions[:, 1:4] = rng.normal(0, 0.01, size=(n, 3))
    actions[:, 7] = rng.random(n) < 0.4
    stats = {
        "action": {
            "q01": np.quantile(actions, 0.01, axis=0).tolist(),
            "q99": np.quantile(actions, 0.99, axis=0).tolist(),
            "min": actions.min(0).tolist(),
            "max": actions.max(0).tolist(),
        }
    }
    assert stats["action"]["q99"][0] == 0.0
    tok = ActionTokenizer.from_stats(stats)
    decoded = tok.decode(tok.encode(actions))
    np.testing.assert_array_equal(decoded[:, 0] > 0.5, actions[:, 0] > 0.5)
    np.testing.assert_array_equal(decoded[:, 7] > 0.5, actions[:, 7] > 0.5)
    np.testing.assert_allclose(decoded[:, 4:7], 0.0, atol=1e-6)  # constant dims come back exactly
    with pytest.raises(PlayworldError, match="q01"):
        ActionTokenizer.from_stats({"action": {"min": [0], "max": [1]}})


def test_invalid_construction():
    with pytest.raises(PlayworldError, match="q99 < q01"):
        ActionTokenizer([1.0], [0.0])
    with pytest.raises(PlayworldError, match="num_bins"):
        ActionTokenizer([0.0], [1.0], num_bins=1)
