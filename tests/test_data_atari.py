"""The Atari recorder: stored frames and actions line up (exact replay), names, chunking, atomicity."""

import numpy as np
import pytest

import playworld.data.atari as atari
from playworld.cli import main
from playworld.data.atari import record_atari, replay_atari_episode, resolve_game
from playworld.data.format import load_dataset
from playworld.errors import PlayworldError


@pytest.fixture(scope="module")
def pitfall(tmp_path_factory):
    out = tmp_path_factory.mktemp("atari") / "pitfall"
    record_atari(
        ["Pitfall"], frames=160, size=32, seed=3, out=out, envs=2, max_episode_frames=30, progress=False
    )
    return load_dataset(out)


def test_stored_actions_replay_to_the_stored_frames(pitfall):
    ds = pitfall
    assert ds.num_frames == 160 and ds.frame_size == (32, 32) and ds.fps == 15
    assert len(ds.action_names) == 18 and ds.action_names[0] == "NOOP"
    firsts = [i for i in range(ds.num_episodes) if ds.episode(i)["info"]["run_start"] == 0]
    assert len(firsts) == 2  # one per emulator
    for i in firsts:
        ep = ds.episode(i)
        np.testing.assert_array_equal(replay_atari_episode(ds, i), ep["frames"])
        # ...and the check has teeth: the same actions one step late give other frames.
        late = np.concatenate([[0], ep["actions"][:-1]])
        assert not np.array_equal(replay_atari_episode(ds, i, late), ep["frames"])
    frames = ds.episode(firsts[0])["frames"].astype(int)
    moved = np.abs(np.diff(frames, axis=0)).sum(axis=(1, 2, 3)) > 0
    assert moved.mean() > 0.5  # the screen changes in most steps: real, moving game video
    assert ds.meta["extra"]["seed"] == 3 and ds.meta["extra"]["full_action_space"] is False


def test_sticky_random_policy_holds_actions(pitfall):
    a = np.asarray(pitfall.episode(0)["actions"])
    assert len(np.unique(a)) > 3  # random...
    assert np.mean(a[1:] == a[:-1]) > 0.5  # ...but held (mean repeat 4 -> ~0.75 + 1/18)


def test_long_runs_are_cut_into_consecutive_episodes(pitfall):
    ds = pitfall
    assert ds.episode_lengths.max() <= 30 and ds.episode_lengths.min() >= 15  # even cuts, no tiny tails
    runs = {}
    for i in range(ds.num_episodes):
        info = ds.episode(i)["info"]
        runs.setdefault((info["env_seed"], info["run"]), []).append(
            (info["run_start"], int(ds.episode_lengths[i]))
        )
    for chunks in runs.values():
        pos = 0
        for start, length in sorted(chunks):
            assert start == pos
            pos += length
    assert sum(ds.episode_lengths) == 160 and {s for s, _ in runs} == {3, 4}


def test_several_games_split_frames_evenly(tmp_path):
    out = record_atari(["Pitfall", "pong"], frames=41, size=16, out=tmp_path / "two", envs=2, progress=False)
    ds = load_dataset(out)
    per_game = {}
    for i in range(ds.num_episodes):
        g = ds.episode(i)["info"]["source"]
        per_game[g] = per_game.get(g, 0) + int(ds.episode_lengths[i])
    assert per_game == {"Pitfall": 21, "Pong": 20}
    # Pong's minimal action set differs from Pitfall's, so the full 18-action set is used.
    assert ds.meta["extra"]["full_action_space"] is True and len(ds.action_names) == 18


def test_game_names():
    assert resolve_game("MontezumaRevenge") == "montezuma_revenge"
    assert resolve_game("montezuma_revenge") == "montezuma_revenge"
    assert resolve_game("ALE/Pitfall-v5") == "pitfall"
    with pytest.raises(
        PlayworldError, match=r"unknown Atari game 'Pitfal'\. Did you mean Pitfall.*Valid games: .*Pong"
    ):
        resolve_game("Pitfal")


def test_wrong_game_on_the_cli_exits_1_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "x"
    assert (
        main(["record", "atari", "--game", "Pitfall", "Montezuma", "--frames", "10", "--out", str(out)]) == 1
    )
    err = capsys.readouterr().err
    assert "unknown Atari game 'Montezuma'" in err and "MontezumaRevenge" in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_interrupted_recording_leaves_nothing(tmp_path, monkeypatch):
    make = atari.make_atari_env

    class Interrupting:
        def __init__(self, env):
            self.env, self.steps = env, 0

        def __getattr__(self, name):
            return getattr(self.env, name)

        def step(self, action):
            self.steps += 1
            if self.steps == 40:
                raise KeyboardInterrupt
            return self.env.step(action)

    monkeypatch.setattr(atari, "make_atari_env", lambda *a, **k: Interrupting(make(*a, **k)))
    with pytest.raises(KeyboardInterrupt):
        record_atari(
            "Pitfall", frames=200, size=16, out=tmp_path / "x", envs=1, max_episode_frames=10, progress=False
        )
    assert list(tmp_path.iterdir()) == []
