"""The robot tabletop: env API, success detection, scripted expert, suites."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("pybullet")

import playworld.envs  # noqa: E402,F401 - registers playworld/Tabletop-v0
from playworld.envs.tabletop import (  # noqa: E402
    FAMILIES,
    SUITES,
    Tabletop,
    TabletopConfig,
    get_suite,
    run_expert_episode,
    scene,
    tasks,
)
from playworld.errors import PlayworldError  # noqa: E402

NOOP = np.array([0, 0, 0, 0, 0, 0, 0, 0], dtype=np.float32)


@pytest.fixture(scope="module")
def blind_env():
    """No rendering: the expert and success checks only need the simulator."""
    env = Tabletop(render_images=False, terminate_on_success=False)
    yield env
    env.close()


def test_expert_solves_seen_episodes(blind_env):
    eps = get_suite("seen").episodes(20, seed=123)
    results = [run_expert_episode(blind_env, episode=ep, record=False) for ep in eps]
    solved = sum(r["success"] for r in results)
    assert solved >= 19, [
        (ep.instruction, r["steps"]) for ep, r in zip(eps, results, strict=True) if not r["success"]
    ]
    # every family of the training suite shows up in 20 episodes, and each ends by terminating
    assert {ep.family for ep in eps} == set(tasks.SUITE_FAMILIES["seen"])
    assert all(r["actions"][-1][0] == 1.0 and (r["actions"][:-1, 0] == 0).all() for r in results)


@pytest.mark.parametrize("suite", [s for s in SUITES if s != "seen"])
def test_expert_solves_other_suites(blind_env, suite):
    eps = get_suite(suite).episodes(4, seed=7)
    assert sum(run_expert_episode(blind_env, episode=ep, record=False)["success"] for ep in eps) >= 3


def test_doing_nothing_never_succeeds(blind_env):
    for family in FAMILIES:
        suite = "symbols" if family == "put_on_symbol" else "seen"
        for ep in get_suite(suite, [family]).episodes(2, seed=5):
            obs, info = blind_env.reset(options={"episode": ep})
            assert not info["success"]
            for _ in range(12):
                obs, reward, terminated, truncated, info = blind_env.step(NOOP)
                assert not info["success"] and reward == 0.0 and not terminated, ep.instruction


def test_success_is_read_from_the_simulator(blind_env):
    """Moving the target by hand into the goal flips success; the expert is not involved."""
    ep = next(
        e for e in get_suite("seen", ["put_in_tray"]).episodes(10, seed=2) if e.objects[0].shape == "cube"
    )
    blind_env.reset(options={"episode": ep})
    assert not blind_env.is_success()
    body = blind_env.object_ids[ep.goal.target]
    tx, ty = ep.tray.xy
    blind_env.pb.resetBasePositionAndOrientation(body, [tx, ty, 0.06], [0, 0, 0, 1])
    for _ in range(60):
        blind_env.pb.stepSimulation()
    assert blind_env.is_success()

    ep = get_suite("seen", ["push"]).episodes(1, seed=3)[0]
    blind_env.reset(options={"episode": ep})
    gx, gy = tasks.region_goal_point(ep.goal.region, ep.objects[0].xy)
    z = scene.SHAPES[ep.objects[0].shape].half_height
    blind_env.pb.resetBasePositionAndOrientation(blind_env.object_ids[0], [gx, gy, z], [0, 0, 0, 1])
    assert blind_env.is_success()


def test_check_env_passes():
    from gymnasium.utils.env_checker import check_env

    env = gym.make("playworld/Tabletop-v0", image_size=32, render_mode="rgb_array")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warnings either (e.g. unbounded spaces)
        check_env(env.unwrapped, skip_render_check=False)
    obs, info = env.reset(seed=0)
    assert obs["image"].shape == (32, 32, 3) and obs["image"].dtype == np.uint8
    assert obs["state"].shape == (8,) and obs["instruction"] == info["instruction"]
    assert env.render().shape == (32, 32, 3)
    env.close()


def test_reset_is_reproducible_and_image_shows_the_scene():
    env = Tabletop(image_size=96)
    a, info_a = env.reset(seed=11)
    b, info_b = env.reset(seed=11)
    c, _ = env.reset(seed=12)
    assert info_a["instruction"] == info_b["instruction"]
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["state"], b["state"])
    assert not np.array_equal(a["image"], c["image"])
    # every object's colour is visible somewhere in the picture
    env.reset(seed=11)
    img = a["image"].astype(np.float32) / 255
    for o in env.episode.objects:
        want = np.array(scene.COLORS[o.color])
        close = np.abs(img - want).max(-1) < 0.25
        assert close.sum() >= 3, f"{o.name} not visible"
    # the arm (light grey) and the table (tan) are there too
    assert (np.abs(img - np.array(scene.TABLE_COLOR)).max(-1) < 0.2).mean() > 0.3
    assert (img.min(-1) > 0.8).sum() > 20
    env.close()


def test_action_checks(blind_env):
    blind_env.reset(seed=0)
    blind_env._warned_clip = False
    big = np.array([0, 0.5, 0, 0, 0, 0, 0, 2.0])
    with pytest.warns(UserWarning, match="clipping"):
        blind_env.step(big)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        blind_env.step(big)  # warned once only
    with pytest.raises(ValueError, match="NaN"):
        blind_env.step(np.array([0, np.nan, 0, 0, 0, 0, 0, 0]))
    with pytest.raises(ValueError, match="8 numbers"):
        blind_env.step(np.zeros(7))
    # terminate ends the episode
    *_, terminated, truncated, _ = blind_env.step(np.array([1, 0, 0, 0, 0, 0, 0, 0]))
    assert terminated and not truncated


def test_control_moves_the_end_effector(blind_env):
    blind_env.reset(seed=0)
    start = blind_env.ee_pose()[0]
    for _ in range(5):
        obs, *_ = blind_env.step(np.array([0, 0.03, -0.02, 0.0, 0, 0, 0, 0]))
    moved = obs["state"][:3] - start
    np.testing.assert_allclose(moved, [0.15, -0.10, 0.0], atol=0.02)
    for _ in range(4):  # close the gripper, turn 0.2 rad a step
        obs, *_ = blind_env.step(np.array([0, 0, 0, 0, 0, 0, 0.2, 1]))
    assert obs["state"][6] < 0.01 and obs["state"][7] == 1.0
    assert obs["state"][5] == pytest.approx(0.8, abs=0.05)


def test_unknown_names_list_valid_ones():
    with pytest.raises(PlayworldError, match="valid suites: seen, unseen-objects"):
        Tabletop(suite="nope")
    with pytest.raises(PlayworldError, match="valid tasks: pick, push"):
        TabletopConfig(tasks=("fly",))
    with pytest.raises(PlayworldError, match="its tasks are: put_on_symbol"):
        get_suite("symbols", ["pick"])
    with pytest.raises(PlayworldError, match="even"):
        TabletopConfig(image_size=33)


def test_suites_are_seeded_lists():
    s = get_suite("seen")
    assert s.episodes(5, seed=1) == s.episodes(5, seed=1)
    assert s.episodes(3, seed=1) == s.episodes(5, seed=1)[:3]  # prefix-stable
    assert s.episodes(3, seed=1) != s.episodes(3, seed=2)
    ep = s.episodes(1, seed=4)[0]
    assert tasks.EpisodeSpec.from_dict(ep.to_dict()) == ep


def test_suites_hold_out_what_they_say():
    charset = set(tasks.INSTRUCTION_CHARSET)
    seen = get_suite("seen").episodes(150, seed=0)
    seen_words = {w for ep in seen for w in ep.instruction.lower().replace("?", "").split()}
    for ep in seen:
        for o in ep.objects:
            assert (o.color, o.shape) in tasks.SEEN_COMBOS
    for ep in get_suite("unseen-objects").episodes(60, seed=0):
        assert (ep.objects[0].color, ep.objects[0].shape) in tasks.HELD_OUT
    unseen_ins = get_suite("unseen-instructions").episodes(80, seed=0)
    new_words = {w for ep in unseen_ins for w in ep.instruction.lower().replace("?", "").split()} - seen_words
    assert {"crimson", "block", "furthest"} <= new_words
    assert any(
        "furthest from you" in ep.instruction or "closest to you" in ep.instruction for ep in unseen_ins
    )
    assert not {ep.instruction for ep in unseen_ins} & {ep.instruction for ep in seen}
    for ep in get_suite("symbols").episodes(20, seed=0):
        assert ep.goal.kind == "marker" and ep.markers[ep.goal.reference].glyph in ep.instruction
    reasoning = get_suite("reasoning").episodes(60, seed=0)
    for ep in reasoning:
        if ep.goal.kind == "marker" and "plus" in ep.instruction:
            words = ep.instruction.split("numbered ")[1].split()
            a, b = tasks.NUMBER_WORDS.index(words[0]), tasks.NUMBER_WORDS.index(words[2])
            assert ep.markers[ep.goal.reference].glyph == str(a + b)
        if "same colour as the tray" in ep.instruction:
            assert ep.objects[ep.goal.target].color == ep.tray.color
            assert sum(o.color == ep.tray.color for o in ep.objects) == 1
    for ep in seen + unseen_ins + reasoning:
        assert set(ep.instruction) <= charset and len(ep.instruction) <= tasks.INSTRUCTION_MAX_LEN


def test_dart_noise_perturbs_executed_actions_but_labels_stay_clean(blind_env):
    """DART recovery data: the env runs noisy actions, the labels are the expert's clean ones."""
    ep = get_suite("seen", ["pick"]).episodes(1, seed=11)[0]
    clean = run_expert_episode(blind_env, episode=ep, record=False)
    np.testing.assert_array_equal(clean["executed_actions"], clean["actions"])  # no noise: what was sent
    noisy = run_expert_episode(blind_env, episode=ep, record=False, action_noise=0.015, noise_seed=3)
    again = run_expert_episode(blind_env, episode=ep, record=False, action_noise=0.015, noise_seed=3)
    np.testing.assert_array_equal(noisy["executed_actions"], again["executed_actions"])  # seeded
    sent, label = noisy["executed_actions"], noisy["actions"]
    moved = np.abs(sent[:, 1:4] - label[:, 1:4]).max(1) > 0
    # noise_prob=1 (the default here): every step but the last is perturbed, on dx..dz and dyaw only
    assert moved[:-1].all() and not moved[-1]  # the final terminate step is never perturbed
    np.testing.assert_array_equal(sent[:, [0, 4, 5, 7]], label[:, [0, 4, 5, 7]])  # terminate, roll, pitch, gripper
    assert (sent >= blind_env.action_space.low).all() and (sent <= blind_env.action_space.high).all()
    # the labels are what the expert asks for from the perturbed states: they differ from the clean run
    assert len(label) != len(clean["actions"]) or not np.array_equal(label, clean["actions"])
    # noise_prob 0.3 (the recorder's default): about that share of steps, and the expert still succeeds
    few = run_expert_episode(blind_env, episode=ep, record=False, action_noise=0.015, noise_seed=3, noise_prob=0.3)
    share = (np.abs(few["executed_actions"] - few["actions"]).max(1) > 0)[:-1].mean()
    assert 0.1 < share < 0.5, share
    assert few["success"]
    with pytest.raises(ValueError):
        run_expert_episode(blind_env, episode=ep, record=False, action_noise=-1.0)


def test_expert_actions_are_a_function_of_what_the_policy_sees(blind_env):
    """No timed waits: the expert never shows the same observation twice in a row with different
    actions (a wait of N steps would: "stay" N-1 times, then "go on" - which a policy that reads
    one observation can only imitate by sampling, and greedy decoding would stall on)."""
    eps = get_suite("seen").episodes(15, seed=21)
    for ep in eps:
        r = run_expert_episode(blind_env, episode=ep)
        s, a = r["states"], r["actions"]
        same = np.abs(np.diff(s, axis=0)).max(1) < 5e-4  # (T-1,): the robot did not move
        differ = np.abs(np.diff(a, axis=0)).max(1) > 1e-6
        assert not (same & differ).any(), (ep.instruction, np.flatnonzero(same & differ))
