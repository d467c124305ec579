"""Learning to act from action-free video: experts, latent labels, the latent -> real map, the policy, the sweep."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from playworld.data.synthetic import SPRITE_ACTIONS, make_sprites_dataset
from playworld.errors import PlayworldError
from playworld.policy.latent_policy import (
    LatentActionPolicy,
    LatentPolicyConfig,
    LatentPolicyNet,
    check_codebook,
)
from playworld.policy.train_latent import (
    MIN_TRANSITIONS,
    TrainLatentPolicy,
    fit_action_map,
    imitation_split,
    label_transitions,
    recalibrate_latent_norm,
    select_labelled,
    transitions_of,
)
from playworld.world.latent_actions import LatentActionConfig, LatentActionModel

ROOT = Path(__file__).resolve().parents[1]
LAM = dict(image_size=(32, 32), patch_size=8, dim=32, enc_depth=1, dec_depth=1, head_dim=16, num_actions=8, code_dim=8)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


# -- the latent -> real map -------------------------------------------------------------------------


def test_action_map_recovers_a_permutation_from_few_labels(sprites):
    """Latent codes that are a relabelling of the true actions (plus 10% noise): K=50 labels recover it."""
    tr = transitions_of(imitation_split(sprites, "all")[0].dataset, list(range(6)))
    rng = np.random.default_rng(0)
    perm = np.array([6, 2, 7, 0, 4])  # true action a -> latent code perm[a]; codes 1, 3, 5 unused
    latent = perm[tr.real]
    noisy = rng.random(len(latent)) < 0.1
    latent[noisy] = rng.integers(0, 8, noisy.sum())
    labelled = select_labelled(len(tr), 50, seed=0)
    amap = fit_action_map(latent[labelled], tr.real[labelled], num_latent=8, num_actions=len(SPRITE_ACTIONS))
    assert amap.shape == (8,)
    for a, z in enumerate(perm):
        assert amap[z] == a, f"latent {z} should map to {SPRITE_ACTIONS[a]}"


def test_latent_delay_is_found_from_the_labels(sprites):
    """When an action only shows a step later (latent[t+1] = perm[real[t]]), the labels find delay 1."""
    from playworld.policy.train_latent import choose_latent_delay, delayed_latents

    tr = transitions_of(imitation_split(sprites, "all")[0].dataset, list(range(6)))
    perm = np.array([3, 0, 4, 1, 2])
    latent = np.zeros(len(tr), np.int64)
    idx, _ = delayed_latents(tr, latent, 1)
    latent[idx + 1] = perm[tr.real[idx]]  # each episode's first transition keeps code 0
    labelled = select_labelled(len(tr), 60, seed=1)
    assert choose_latent_delay(tr, latent, labelled, num_latent=8, num_actions=5) == 1
    j, z = delayed_latents(tr, latent, 1, labelled)
    assert np.array_equal(z, perm[tr.real[j]]) and len(j) >= 50  # never across an episode boundary


def test_select_labelled_is_seeded_and_refuses_too_many():
    a, b = select_labelled(500, 200, seed=3), select_labelled(500, 200, seed=3)
    assert np.array_equal(a, b) and len(np.unique(a)) == 200
    assert len(select_labelled(500, "all")) == 500
    with pytest.raises(PlayworldError, match="--labels 501 asks for more labelled transitions than .* has \\(500\\)"):
        select_labelled(500, 501)


# -- latent labels ----------------------------------------------------------------------------------


def test_latent_labelling_is_deterministic(sprites):
    torch.manual_seed(0)
    lam = LatentActionModel(LatentActionConfig(**LAM))
    recalibrate_latent_norm(lam, sprites, clip_len=5, max_clips=32)
    tr = imitation_split(sprites, "all")[0]
    a = label_transitions(lam, tr, clip_len=5, batch_size=16)
    b = label_transitions(lam, tr, clip_len=5, batch_size=16)
    assert a.shape == (len(tr),) and a.dtype == np.int64
    assert np.array_equal(a, b)
    assert len(np.unique(a)) > 1  # recalibrated statistics spread the transitions over codes
    # The label of a transition does not depend on what else is in the batch (eval-mode statistics).
    c = label_transitions(lam, tr, clip_len=5, batch_size=3)
    assert (a == c).mean() > 0.99


# -- the policy -------------------------------------------------------------------------------------


def test_policy_round_trip_and_closed_loop_select_action(tmp_path):
    cfg = LatentPolicyConfig.preset("tiny", image_size=(32, 32), num_latent=4, num_actions=3, action_map=[2, 0, 1, 1])
    net = LatentPolicyNet(cfg)
    net.save_pretrained(tmp_path / "p")
    policy = LatentActionPolicy.from_pretrained(tmp_path / "p")
    assert policy.config.action_map == [2, 0, 1, 1]
    frames = np.random.default_rng(0).integers(0, 255, (5, 32, 32, 3), dtype=np.uint8)
    with torch.no_grad():
        want = net.act(torch.from_numpy(np.stack([frames[0], frames[1]]))[None])  # history: frame 0, frame 1
    policy.reset()
    first = policy.select_action(frames[0])
    assert isinstance(first, int) and 0 <= first < 3
    assert policy.select_action(frames[1]) == int(want[0])
    batch = policy.select_action(np.random.default_rng(1).integers(0, 255, (3, 64, 64, 3), dtype=np.uint8))
    assert batch.shape == (3,)  # another batch size and frame size: the history restarts, frames are resized
    # Another map (fitted on another K) overrides the config's.
    assert LatentActionPolicy(net, action_map=[1, 1, 1, 1]).select_action(frames[0]) == 1


def test_policy_learns_the_latent_action_of_a_transition(sprites):
    """BC sanity: the net predicts which way the sprite moved (target = true action as stand-in labels)."""
    from playworld.policy.train_latent import TransitionDataset

    torch.manual_seed(0)
    tr = imitation_split(sprites, "all")[0]
    ds = TransitionDataset(tr.subset(np.arange(len(tr))), tr.real, num_frames=2)
    net = LatentPolicyNet(LatentPolicyConfig.preset("tiny", image_size=(32, 32), target="real", num_actions=5))
    opt = torch.optim.Adam(net.parameters(), 2e-3)
    losses = []
    for step in range(60):
        idx = np.random.default_rng(step).choice(len(ds), 32)
        items = [ds[int(i)] for i in idx]
        # obs = frames (t-1, t); target = action t-1 -> t is visible, so shift targets back by one
        frames = torch.stack([it["frames"] for it in items])
        target = torch.as_tensor([tr.real[max(int(i) - 1, 0)] for i in idx])
        loss, _ = net.training_step(frames, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) - 0.1


# -- bad input --------------------------------------------------------------------------------------


def test_codebook_mismatch_is_refused():
    check_codebook(8, 8)
    with pytest.raises(PlayworldError, match="codebook of 6 latent actions but the policy predicts 8"):
        check_codebook(6, 8)
    with pytest.raises(PlayworldError, match="one per latent action"):
        LatentPolicyConfig(num_latent=4, num_actions=3, action_map=[0, 1, 2])


def test_command_refuses_too_many_labels_a_mismatched_lam_and_too_little_video(sprites, tmp_path):
    lam_dir = tmp_path / "lam"
    LatentActionModel(LatentActionConfig(**{**LAM, "num_actions": 6})).save_pretrained(lam_dir)
    n = len(imitation_split(sprites, "all")[0])
    with pytest.raises(PlayworldError, match=f"--labels 100000 asks for more .* \\({n}\\)"):
        TrainLatentPolicy(sprites, tmp_path / "a", lam=lam_dir, labels=100000, imitate="all").run()
    with pytest.raises(PlayworldError, match="codebook of 6 latent actions but --num-latent 8"):
        TrainLatentPolicy(sprites, tmp_path / "b", lam=lam_dir, labels=10, num_latent=8, imitate="all").run()
    small = make_sprites_dataset(tmp_path / "small", episodes=3, length=10, size=32)
    with pytest.raises(PlayworldError, match=f"needs at least {MIN_TRANSITIONS}"):
        TrainLatentPolicy(small, tmp_path / "c", lam=lam_dir, labels=10, imitate="all").run()


# -- the Atari expert -------------------------------------------------------------------------------


def test_pong_ram_addresses_match_the_screen():
    from playworld.policy.experts import AtariRamEnv

    env = AtariRamEnv("Pong", size=64)
    env.reset(0)
    checked = 0
    for t in range(120):
        env.step(3 if (t // 15) % 2 else 2)  # down, then up, ...
        screen, ram = env.ale.getScreenRGB(), env.ram
        green = np.nonzero(np.all(screen[34:194, 140:144] == [92, 186, 92], axis=-1).any(1))[0] + 34
        # The screen is drawn during the frame, the RAM read after it: a moving object may be a
        # few rows off.
        if 0 < len(green) == 16:  # the paddle fully on screen: rows ram[51]-14 .. ram[51]+1
            assert abs(green.min() - (int(ram[51]) - 14)) <= 3
            checked += 1
        ball = np.nonzero(np.all(screen[34:194] == [236, 236, 236], axis=-1).any(1))[0] + 34
        if len(ball) and ram[54] > 0:  # ball rows ram[54]-14 .. ram[54]-11
            assert abs(ball.min() - (int(ram[54]) - 14)) <= 3
    assert checked > 10


def test_pong_expert_beats_random_play():
    from playworld.eval.latent_policy_eval import evaluate_agents

    expert = evaluate_agents("Pong", "expert", episodes=2, seed=0, max_steps=500)
    random = evaluate_agents("Pong", "random", episodes=2, seed=0, max_steps=500)
    assert expert["mean_return"] >= 2 and random["mean_return"] <= -3


def test_breakout_ram_addresses_match_the_screen():
    """ram[72] = paddle (left column ram[72]-47), ram[99] / ram[101] = ball x / y (column ram[99]-49,
    row ram[101]+9; ram[101] = 0 while no ball is in play), on the raw 210x160 screen."""
    from playworld.policy.experts import AtariRamEnv

    env = AtariRamEnv("Breakout", size=64)
    env.reset(0)
    assert env.action_names == ["NOOP", "FIRE", "RIGHT", "LEFT"]
    red = np.array([200, 72, 72])
    paddles = balls = 0
    for t in range(150):
        env.step(1 if t % 40 == 0 else (2 if (t // 12) % 2 else 3))  # serve, then right / left sweeps
        screen, ram = env.ale.getScreenRGB(), env.ram
        cols = np.nonzero(np.all(screen[190:194, 8:152] == red, axis=-1).any(0))[0] + 8
        if len(cols) == 16:  # the whole paddle in the court (the walls hide a part at the edges)
            assert abs(cols.min() - (int(ram[72]) - 47)) <= 1
            paddles += 1
        ys, xs = np.nonzero(np.all(screen[100:185, 8:152] == red, axis=-1))  # below the bricks, above the paddle
        if len(ys) and 0 < ys.min() and ys.max() < 84 and ram[101] > 0:  # the whole ball in that window
            assert abs(ys.min() + 100 - (int(ram[101]) + 9)) <= 1 and abs(xs.min() + 8 - (int(ram[99]) - 49)) <= 1
            balls += 1
        elif ram[101] == 0:
            assert not len(ys)
    assert paddles > 20 and balls > 10


def test_breakout_env_serves_each_ball_itself():
    """auto_serve: a policy that never presses FIRE still plays all five balls (ram[101] = 0: no ball)."""
    from playworld.policy.experts import AtariRamEnv

    env = AtariRamEnv("Breakout", size=64)
    env.reset(0)
    assert env.ram[101] > 0  # served at reset
    lost, no_ball = 0, 0
    for _ in range(400):
        lives = env.ale.lives()
        _, _, done = env.step(0)
        lost += env.ale.lives() < lives
        no_ball += int(env.ram[101] == 0)
        if done:
            break
    assert done and lost == 5 and no_ball <= 1  # only the last, unserved ball is missing
    manual = AtariRamEnv("Breakout", size=64, auto_serve=False)
    manual.reset(0)
    assert manual.ram[101] == 0 and all(manual.step(0)[2] is False for _ in range(50)) and manual.ram[101] == 0


def test_recorded_expert_frames_are_the_frames_a_policy_acts_on(tmp_path):
    """Replaying the stored actions in a fresh env from the same start gives the stored frames exactly:
    recording and acting share cropping, pooling, resizing, serving and action ids."""
    from playworld.data.format import load_dataset
    from playworld.policy.experts import AtariRamEnv, record_atari_expert

    ds = load_dataset(record_atari_expert("Breakout", 60, seed=3, out=tmp_path / "bk", random_fraction=0.0,
                                          progress=False))
    assert ds.action_names == ["NOOP", "FIRE", "RIGHT", "LEFT"]
    info = ds.episodes[0]["info"]
    frames, actions = np.asarray(ds.episode_frames(0)), np.asarray(ds.actions)[: ds.episode_lengths[0]]
    env = AtariRamEnv("Breakout", size=64)
    frame = env.reset(info["env_seed"])
    for t in range(len(frames)):
        assert np.array_equal(frame, frames[t]), f"frame {t} differs"
        frame, _, _ = env.step(int(actions[t]))
    assert len(set(actions.tolist())) >= 2  # the expert (exploring) moved the paddle


def test_breakout_expert_beats_random_play_also_while_exploring():
    from playworld.policy.experts import score_agents

    # Measured (the env serves each ball itself): expert [18, 25], exploring [24, 22], random <= 3 in 600 steps.
    expert = score_agents("Breakout", "expert", episodes=2, seed=0, max_steps=600)
    exploring = score_agents("Breakout", "expert", episodes=2, seed=0, max_steps=600, explore=0.1)
    random = score_agents("Breakout", "random", episodes=2, seed=0, max_steps=600)
    assert min(expert) >= 12 and min(exploring) >= 12 and max(random) <= 6


def _breakout_ram(paddle: int, ball_x: int, ball_y: int) -> np.ndarray:
    ram = np.zeros(128, np.uint8)
    ram[72], ram[99], ram[101] = paddle, ball_x, ball_y
    return ram


def test_breakout_follow_style_follows_the_ball_column_not_the_landing_point():
    """The 'follow' expert's action is sign(ball x - paddle centre) outside a 4-pixel dead zone (a rule a
    policy reads off one frame); the default expert goes for the landing point."""
    from playworld.policy.experts import BreakoutExpert, expert_styles, make_expert

    assert expert_styles("breakout") == ["default", "follow"] and expert_styles("Pong") == ["default"]
    follow, default = make_expert("Breakout", style="follow"), make_expert("Breakout", seed=1)
    assert isinstance(follow, BreakoutExpert) and follow.track == "ball" and follow.aim == 0 and follow.carry == 0
    assert default.track == "landing" and make_expert("Breakout", style="default").dead_zone == default.dead_zone
    # Ball coming down and to the left (x 140 -> 130, y 100 -> 110): it lands at x 60, left of the paddle
    # (centre 100 + 9), but its column is still right of it.
    for agent in (follow, default):
        agent.act(_breakout_ram(100, 140, 100))
    assert follow.act(_breakout_ram(100, 130, 110)) == BreakoutExpert.RIGHT
    assert default.act(_breakout_ram(100, 130, 110)) == BreakoutExpert.LEFT
    follow.reset()
    assert follow.act(_breakout_ram(100, 112, 110)) == BreakoutExpert.NOOP  # 3 pixels off: dead zone
    assert follow.act(_breakout_ram(100, 104, 120)) == BreakoutExpert.LEFT
    assert follow.act(_breakout_ram(100, 0, 0)) == BreakoutExpert.FIRE  # no ball in play
    with pytest.raises(PlayworldError, match="no expert style 'nope'"):
        make_expert("Breakout", style="nope")
    with pytest.raises(PlayworldError, match="track"):
        BreakoutExpert(track="paddle")  # type: ignore[arg-type]


def test_breakout_follow_expert_beats_random_play(tmp_path):
    from playworld.data.format import load_dataset
    from playworld.policy.experts import record_atari_expert, score_agents

    # Measured: follow [20, 20], exploring [20, 17], random <= 3 in 600 steps.
    follow = score_agents("Breakout", "expert", episodes=2, seed=0, max_steps=600, style="follow")
    exploring = score_agents("Breakout", "expert", episodes=2, seed=0, max_steps=600, explore=0.1, style="follow")
    random = score_agents("Breakout", "random", episodes=2, seed=0, max_steps=600)
    assert min(follow) >= 12 and min(exploring) >= 12 and max(random) <= 6
    ds = load_dataset(record_atari_expert("Breakout", 40, out=tmp_path / "bk", random_fraction=0.0, progress=False,
                                          expert_style="follow"))
    assert ds.meta["extra"]["expert_style"] == "follow"
    with pytest.raises(PlayworldError, match="no expert style"):
        record_atari_expert("Breakout", 40, out=tmp_path / "bad", expert_style="nope", progress=False)
    assert not (tmp_path / "bad").exists()
    # The `playworld record atari` path: style, exploration and the random share reach the expert recorder.
    from playworld.data.atari import record_atari

    ds = load_dataset(record_atari("Breakout", 40, policy="expert", out=tmp_path / "cli", expert_style="follow",
                                   explore=0.5, random_fraction=0.5, mean_repeat=1.0, progress=False))
    extra = ds.meta["extra"]
    assert extra["expert_style"] == "follow" and extra["explore"] == {"Breakout": 0.5}
    assert extra["random_fraction"] == 0.5 and extra["random_repeat"] == 1.0
    assert sorted({e["info"]["policy"] for e in ds.episodes}) == ["expert", "random"]
    with pytest.raises(PlayworldError, match="--policy expert only"):
        record_atari("Breakout", 40, policy="random", out=tmp_path / "r", explore=0.5, progress=False)


# -- end to end -------------------------------------------------------------------------------------


def _benchmark():
    spec = importlib.util.spec_from_file_location("latent_bc", ROOT / "benchmarks" / "latent_bc.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tiny_pipeline_end_to_end_produces_the_table(tmp_path):
    """Record a few hundred Pong frames, train a LAM, the latent policy and the oracles, play, tabulate."""
    out = tmp_path / "bc"
    res = _benchmark().main([
        "--out", str(out), "--frames", "400", "--lam-steps", "4", "--lam-clip-len", "4", "--policy-steps", "3",
        "--policy-preset", "tiny", "--batch-size", "8", "--episodes", "1", "--max-steps", "20",
        "--ks", "10", "all", "--seeds", "0",
    ])
    assert [r["K"] for r in res["rows"]] == [10, "all"]
    table = (out / "latent_bc.md").read_text()
    assert "| 10 |" in table and "| all |" in table
    assert (out / "latent_bc.png").stat().st_size > 1000
    assert json.loads((out / "latent_bc.json").read_text())["rows"][0]["latent"]["per_seed"]
    # The same data and LAM through the command line: train the latent policy, then evaluate it.
    from playworld.cli import main

    assert main(["train", "latent-policy", "--data", str(out / "data"), "--lam", str(out / "lam"), "--labels", "20",
                 "--lam-clip-len", "4", "--preset", "tiny", "--out", str(tmp_path / "policy"), "--steps", "2",
                 "--batch-size", "8", "--no-progress"]) == 0
    summary = json.loads((tmp_path / "policy" / "latent_policy.json").read_text())
    assert summary["labels"] == 20 and len(summary["action_map"]) == 8 and summary["latent_delay"] in (0, 1, 2)
    assert all(0 <= summary[k] <= 1 for k in ("nmi_latent_action_pair", "nmi_latent_prev_action",
                                               "nmi_latent_prev_real", "nmi_prev_real"))
    assert main(["eval", "latent-policy", "--policy", str(tmp_path / "policy"), "--episodes", "1", "--max-steps", "10",
                 "--out", str(tmp_path / "eval.json")]) == 0
    assert json.loads((tmp_path / "eval.json").read_text())["policy_score"]["steps"] == [10]


def test_benchmark_oracle_only_then_lam_on_other_video_reuses_the_oracles(tmp_path):
    """Breakout, 'follow' expert: --oracle-only trains and scores the oracles without a LAM; the full run then
    trains a 4-code LAM on separate random-play video (--lam-data) and reuses the cached oracles."""
    from playworld.policy.experts import record_atari_expert
    from playworld.world.latent_actions import LatentActionModel

    out, bench = tmp_path / "bc", _benchmark()
    common = ["--game", "Breakout", "--out", str(out), "--policy-steps", "3", "--batch-size", "8", "--episodes", "1",
              "--max-steps", "20", "--ks", "10", "all", "--seeds", "0", "--lam-clip-len", "4"]
    scores = bench.main([*common, "--frames", "300", "--expert-style", "follow", "--oracle-only"])
    assert set(scores) == {"expert", "random", "oracle/K=10/seed=0", "oracle/K=all/seed=0"}
    assert not (out / "lam").exists() and not (out / "latent_bc.json").exists()
    oracle_file = out / "seed0" / "oracle-K10" / "model.safetensors"
    stamp = oracle_file.stat().st_mtime_ns
    rand = record_atari_expert("Breakout", 200, out=tmp_path / "rand", random_fraction=1.0, random_repeat=1.0,
                               progress=False)
    lam_args = ["--lam-data", str(rand), "--lam-codes", "4", "--lam-steps", "4", "--latent-delay", "0"]
    part = bench.main([*common, *lam_args, "--latent-only"])
    assert {k for k in part["scores"] if "/" in k} == {f"latent/K={k}/seed=0" for k in (10, "all")} | set(scores) - {
        "expert", "random"}
    assert not (out / "latent_bc.json").exists()
    latent_file = out / "seed0" / "latent" / "model.safetensors"
    latent_stamp = latent_file.stat().st_mtime_ns
    res = bench.main([*common, *lam_args])
    assert res["expert_style"] == "follow" and res["lam_data"] == str(rand)  # the style read from the data
    assert LatentActionModel.from_pretrained(out / "lam").num_actions == 4
    assert len(res["lam_quality"]["latent_histogram"]) == 4
    assert oracle_file.stat().st_mtime_ns == stamp and latent_file.stat().st_mtime_ns == latent_stamp  # reused
    assert [r["K"] for r in res["rows"]] == [10, "all"]


def test_lam_without_encoder_positions_cannot_tell_where_a_change_happened(tmp_path):
    """encoder_positions=False: swapping two patch columns of every frame leaves the continuous latents
    unchanged (the encoder sees what changed, not where); with positions (the default) they change. The
    option survives save/load and the encoder's position embedding stays zero through training."""
    torch.manual_seed(0)
    video = torch.rand(2, 4, 3, 32, 32)
    swapped = video.clone()
    swapped[..., :, 0:8], swapped[..., :, 8:16] = video[..., :, 8:16], video[..., :, 0:8]  # patch columns 0 <-> 1
    free = LatentActionModel(LatentActionConfig(**LAM, encoder_positions=False)).eval()
    placed = LatentActionModel(LatentActionConfig(**LAM)).eval()
    with torch.no_grad():
        torch.testing.assert_close(free.encode_latents(video), free.encode_latents(swapped), atol=1e-5, rtol=1e-4)
        assert not torch.allclose(placed.encode_latents(video), placed.encode_latents(swapped), atol=1e-3)
    free.train()
    opt = torch.optim.AdamW([p for p in free.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    loss, _ = free.training_step(video)
    loss.backward()
    opt.step()
    assert free.encoder.pos_embed.abs().sum() == 0 and placed.encoder.pos_embed.abs().sum() > 0
    free.save_pretrained(tmp_path / "lam")
    loaded = LatentActionModel.from_pretrained(tmp_path / "lam")
    assert loaded.config.encoder_positions is False and not loaded.encoder.pos_embed.requires_grad
