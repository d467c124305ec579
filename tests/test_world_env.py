"""WorldEnv: a world as a gymnasium env (check_env, seeding, rewards, truncation, registration)."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from fake_world import FakeWorld, write_sample_prompts
from gymnasium.utils.env_checker import check_env

from playworld.envs import WorldEnv
from playworld.errors import PlayworldError


@pytest.fixture
def world(tmp_path):
    write_sample_prompts(tmp_path / "prompts")
    return FakeWorld(prompts_dir=tmp_path / "prompts", step_s=0.0)


def test_check_env_passes(world):
    # made through the registry, so check_env can also try the other render modes via the spec
    env = gym.make("playworld/World-v0", world=world, max_steps=50, disable_env_checker=True).unwrapped
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env, skip_render_check=False)
    assert [str(w.message) for w in caught] == []
    with warnings.catch_warnings():  # constructed directly too (no spec: one render mode checked)
        warnings.filterwarnings("ignore", message=".*not having a spec")
        check_env(WorldEnv(world, max_steps=50))


def test_spaces_follow_the_world(world):
    env = WorldEnv(world)
    assert env.observation_space.shape == (64, 64, 3) and env.observation_space.dtype == np.uint8
    assert env.action_space == gym.spaces.Discrete(8)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert np.array_equal(env.render(), obs)


def _episode(env, seed, actions):
    obs, _ = env.reset(seed=seed)
    return [obs] + [env.step(a)[0] for a in actions]


def test_seeded_reset_makes_episodes_reproducible(world):
    actions = [0, 3, 3, 1, 7, 2]
    a = _episode(WorldEnv(world), 5, actions)
    b = _episode(WorldEnv(world), 5, actions)
    c = _episode(WorldEnv(world), 6, actions)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    # and the episodes *after* a seeded reset are reproducible too
    env1, env2 = WorldEnv(world), WorldEnv(world)
    env1.reset(seed=9)
    env2.reset(seed=9)
    assert np.array_equal(env1.reset()[0], env2.reset()[0])


def test_reward_fn_sees_prev_frame_action_and_frame(world):
    calls = []

    def reward(prev, action, frame):
        calls.append((prev.copy(), action, frame.copy()))
        return float(action)

    env = WorldEnv(world, reward_fn=reward)
    obs0, _ = env.reset(seed=1)
    obs1, r, terminated, truncated, info = env.step(3)
    assert r == 3.0 and not terminated and not truncated
    assert info["action_label"] == world.action_labels[3]
    prev, action, frame = calls[0]
    assert np.array_equal(prev, obs0) and action == 3 and np.array_equal(frame, obs1)
    assert env.step(0)[1] == 0.0


def test_episodes_truncate_after_max_steps(world):
    env = WorldEnv(world, max_steps=3)
    env.reset(seed=0)
    flags = [env.step(1)[3] for _ in range(3)]
    assert flags == [False, False, True]


def test_envs_share_weights_but_not_state(world):
    env1, env2 = WorldEnv(world), WorldEnv(world)
    assert env1.world is not env2.world and len(world.forks) == 2
    o1, _ = env1.reset(seed=0, options={"prompt": world.sample_prompts()[0]})
    o2, _ = env2.reset(seed=0, options={"prompt": world.sample_prompts()[0]})
    for _ in range(3):
        o1 = env1.step(1)[0]
    assert not np.array_equal(o1, env2.step(0)[0])


def test_prompt_choices(world, tmp_path):
    img = np.zeros((40, 30, 3), np.uint8)
    env = WorldEnv(world, prompt=img)
    obs, _ = env.reset(seed=0)
    assert obs[..., 0].mean() < 60  # the black prompt, not a sample (plus the moving square)
    env = WorldEnv(world, prompt=world.sample_prompts())  # a list: one drawn per reset
    assert env.reset(seed=0)[0].shape == (64, 64, 3)
    empty = FakeWorld(prompts_dir=tmp_path / "none")
    with pytest.raises(PlayworldError, match="prompt"):
        WorldEnv(empty)


def test_invalid_actions_and_step_before_reset(world):
    env = WorldEnv(world)
    with pytest.raises(gym.error.ResetNeeded):
        env.step(0)
    env.reset(seed=0)
    for bad in (8, -1, "left"):
        with pytest.raises(PlayworldError, match="0..7"):
            env.step(bad)


def test_registered_as_world_v0(world):
    assert "playworld/World-v0" in gym.registry
    env = gym.make("playworld/World-v0", world=world, max_steps=10)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (64, 64, 3)
    obs, *_ = env.step(env.action_space.sample())
    assert obs.shape == (64, 64, 3)
    env.close()
