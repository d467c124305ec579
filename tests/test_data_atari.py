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


# --- --action-effects: every action tried from the same emulator state -------------------------


@pytest.fixture(scope="module")
def breakout_effects(tmp_path_factory):
    out = tmp_path_factory.mktemp("atari") / "breakout-effects"
    record_atari(
        ["Breakout"], frames=160, size=32, seed=2, out=out, envs=2, max_episode_frames=40,
        progress=False, action_effects=True,
    )
    return load_dataset(out)


def _bits(masks: np.ndarray, n: int) -> np.ndarray:
    return (np.asarray(masks, np.int64)[:, None] >> np.arange(n)) & 1 == 1  # (N, n) bool


def test_action_effects_are_stored_and_consistent(breakout_effects):
    ds = breakout_effects
    assert ds.frame_array_names == ["action_effect", "equivalent_actions"]
    assert ds.meta["extra"]["action_effects"] is True and ds.action_names == ["NOOP", "FIRE", "RIGHT", "LEFT"]
    a = np.asarray(ds.actions)
    effect = np.asarray(ds.frame_array("action_effect"))
    equiv = _bits(ds.frame_array("equivalent_actions"), 4)
    assert effect.dtype == bool and ds.frame_array("equivalent_actions").dtype == np.int64
    assert equiv[np.arange(len(a)), a].all()  # the taken action is always in its own set
    assert not effect[a == 0].any()  # NOOP never differs from NOOP
    np.testing.assert_array_equal(effect, ~equiv[:, 0])  # effect <=> NOOP gives another frame
    # Real, varied answers: moving the paddle often shows (not when it is held against a wall),
    # and some actions do nothing visible.
    assert effect[a >= 2].mean() > 0.3 and (~effect[a != 0]).any()
    assert (equiv.sum(1) < 4).any() and (equiv.sum(1) > 1).any()
    np.testing.assert_array_equal(ds.episode_array("action_effect", 1), effect[ds.episode_starts[1] :][: ds.episode_lengths[1]])


def test_action_effects_recording_replays_and_is_deterministic(breakout_effects, tmp_path):
    ds = breakout_effects
    firsts = [i for i in range(ds.num_episodes) if ds.episode(i)["info"]["run_start"] == 0]
    assert len(firsts) == 2
    for i in firsts:  # the stored actions re-played in a fresh emulator give the stored frames
        np.testing.assert_array_equal(replay_atari_episode(ds, i), ds.episode(i)["frames"])
    again = load_dataset(record_atari(["Breakout"], frames=160, size=32, seed=2, out=tmp_path / "b", envs=2,
                                      max_episode_frames=40, progress=False, action_effects=True))
    for name in ("actions", "action_effect", "equivalent_actions"):
        get = (lambda d: d.actions) if name == "actions" else (lambda d, n=name: d.frame_array(n))
        np.testing.assert_array_equal(get(again), get(ds))
    np.testing.assert_array_equal(again.shards[0], ds.shards[0])


def test_equivalent_actions_match_restepping_each_action():
    """Independently of the recorder: from one cloned state, every action in the set gives the
    taken action's next frame and every other action gives another one; re-stepping after
    restoreState reproduces the frame."""
    env = atari.EffectsEnv("breakout", 32, 4, False, seed=7)
    env.reset()
    rng = np.random.default_rng(0)
    checked_diff = 0
    for _ in range(40):
        a = int(rng.integers(4))
        state, saved = env.ale.cloneState(include_rng=True), (env.raw[0].copy(), env.raw[1].copy(), env.elapsed)
        tries = []
        for b in range(4):
            env.ale.restoreState(state)
            env.raw[0][:], env.raw[1][:], env.elapsed = saved
            tries.append(env.step(b)[0])
        env.ale.restoreState(state)
        env.raw[0][:], env.raw[1][:], env.elapsed = saved
        frame, _, term, _, mask, effect = env.step_with_effects(a)
        np.testing.assert_array_equal(frame, tries[a])
        for b in range(4):
            assert bool(mask >> b & 1) == np.array_equal(tries[b], frame)
        assert effect == (not np.array_equal(tries[0], frame))
        checked_diff += int(mask != 15)
        assert not term
    assert checked_diff > 5


def test_effects_env_frames_equal_the_vector_envs():
    """The single-emulator path preprocesses exactly like ale-py's C++ vector env (max-pool + INTER_AREA)."""
    from ale_py.vector_env import AtariVectorEnv

    venv = AtariVectorEnv("breakout", 1, num_threads=1, img_height=48, img_width=40, grayscale=False, stack_num=1,
                          frameskip=4, maxpool=True, noop_max=0, repeat_action_probability=0.0,
                          reward_clipping=False, episodic_life=False, use_fire_reset=False)
    env = atari.EffectsEnv("breakout", 48, 4, False, seed=0, noop_max=0)
    env.resize = atari._AreaResize((210, 160), 48)  # 48 x 40 like the vector env above
    env.resize.xi, env.resize.xw = atari._area_table(160, 40)
    obs, _ = venv.reset(seed=0)
    np.testing.assert_array_equal(env.reset(), obs[0, 0])
    rng = np.random.default_rng(1)
    for _ in range(150):
        a = int(rng.integers(4))
        obs, *_ = venv.step(np.array([a]))
        np.testing.assert_array_equal(env.step(a)[0], obs[0, 0])
    venv.close()


def test_without_the_flag_nothing_changes(pitfall):
    assert pitfall.frame_array_names == [] and "frame_arrays" not in pitfall.meta
    assert "action_effects" not in pitfall.meta["extra"]
    with pytest.raises(KeyError, match="no per-frame array 'action_effect'"):
        pitfall.frame_array("action_effect")
