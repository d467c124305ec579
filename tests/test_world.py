"""World: prompt handling, play loop, determinism, folder round-trip and clear errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from playworld.errors import PlayworldError
from playworld.world.dynamics import DynamicsConfig, DynamicsModel
from playworld.world.latent_actions import LatentActionConfig, LatentActionModel
from playworld.world.prompt import load_prompt
from playworld.world.tokenizer import VideoTokenizer, VideoTokenizerConfig
from playworld.world.world import World

SMALL = dict(enc_dim=32, enc_depth=1, dec_dim=32, dec_depth=1, head_dim=16, num_codes=64, code_dim=8)


def tiny_parts(size=32, patch=8, num_codes=64, num_actions=4):
    torch.manual_seed(0)
    tok = VideoTokenizer(VideoTokenizerConfig(image_size=(size, size), patch_size=patch, **{**SMALL, "num_codes": num_codes}))
    lam = LatentActionModel(LatentActionConfig(image_size=(size, size), patch_size=16, dim=32, enc_depth=1, dec_depth=1,
                                               head_dim=16, num_actions=num_actions))
    dyn = DynamicsModel(DynamicsConfig(num_codes=num_codes, token_grid=tok.config.token_grid, num_actions=num_actions,
                                       dim=32, depth=1, head_dim=16, max_frames=8, maskgit_steps=2))
    return tok, lam, dyn


@pytest.fixture
def world():
    return World(*tiny_parts(), action_labels=["a", "b", "c", "d"])


def test_step_returns_frames_and_reuses_cache(world):
    first = world.reset(np.zeros((50, 70, 3), np.uint8), seed=0)
    assert first.shape == (32, 32, 3) and first.dtype == np.uint8
    frames = [world.step(a) for a in (0, 1, 2, 3, 3)]
    assert all(f.shape == (32, 32, 3) for f in frames)
    # The dynamics cache grows one frame per step instead of being rebuilt.
    assert world._state.frames == 6


def test_rollout_is_deterministic_with_seed(world):
    prompt = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    a = world.rollout(prompt, [0, 1, 2, 3], seed=7)
    b = world.fork().rollout(prompt, [0, 1, 2, 3], seed=7)
    assert a.shape == (5, 32, 32, 3)
    assert np.array_equal(a, b)


def test_forks_have_independent_state(world):
    w1, w2 = world.fork(), world.fork()
    w1.reset(np.zeros((32, 32, 3), np.uint8), seed=0)
    with pytest.raises(PlayworldError, match="reset"):
        w2.step(0)
    w1.step(1)
    assert w1.tokenizer is w2.tokenizer  # weights shared, not copied


@pytest.mark.parametrize("bad", [-1, 4, 1.5, "x", None])
def test_action_out_of_range_lists_valid_ids(world, bad):
    world.reset(np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(PlayworldError, match=r"0\.\.3"):
        world.step(bad)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Image.new("RGBA", (300, 200), (255, 0, 0, 128)),
        lambda: Image.new("L", (10, 10), 128),
        lambda: Image.new("P", (64, 48)),
        lambda: Image.new("I;16", (40, 40), 1000),
        lambda: Image.new("F", (40, 40), 0.5),
        lambda: Image.new("RGB", (4000, 3000), (0, 0, 255)),
        lambda: Image.new("1", (33, 17)),
    ],
)
def test_prompts_of_any_mode_and_size_become_frames(make):
    frames = load_prompt(make(), (32, 32))
    assert frames.shape == (1, 32, 32, 3) and frames.dtype == np.uint8


def test_prompt_arrays_and_files(tmp_path):
    assert load_prompt(np.random.rand(3, 20, 20, 4), (16, 16)).shape == (3, 16, 16, 3)
    assert load_prompt(np.zeros((20, 20)), (16, 16)).shape == (1, 16, 16, 3)
    p = tmp_path / "x.png"
    Image.new("RGB", (50, 50), (1, 2, 3)).save(p)
    assert load_prompt(p, (8, 8))[0, 0, 0].tolist() == [1, 2, 3]
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(PlayworldError, match="not a readable image"):
        load_prompt(tmp_path / "bad.png", (8, 8))
    with pytest.raises(PlayworldError, match="does not exist"):
        load_prompt(tmp_path / "missing.png", (8, 8))


def test_multi_frame_prompt_uses_inferred_actions(world):
    prompt = np.random.default_rng(1).integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)
    world.reset(prompt, seed=0)
    assert world._state.frames == 3
    assert world.step(0).shape == (32, 32, 3)


def test_save_load_round_trip(world, tmp_path):
    world.save_pretrained(tmp_path / "w", prompts=[np.zeros((32, 32, 3), np.uint8)])
    loaded = World.from_pretrained(tmp_path / "w")
    assert loaded.action_labels == ["a", "b", "c", "d"]
    assert [p.name for p in loaded.sample_prompts()] == ["prompt-00.png"]
    prompt = np.full((32, 32, 3), 80, np.uint8)
    assert np.array_equal(world.rollout(prompt, [1, 2], seed=3), loaded.rollout(prompt, [1, 2], seed=3))


def test_bf16_storage_loads_and_plays(world, tmp_path):
    world.save_pretrained(tmp_path / "w", dtype=torch.bfloat16)
    loaded = World.from_pretrained(tmp_path / "w")
    assert loaded.rollout(np.zeros((32, 32, 3), np.uint8), [0, 1]).shape == (3, 32, 32, 3)


def test_missing_part_and_mismatched_parts_are_named(world, tmp_path):
    world.save_pretrained(tmp_path / "w")
    shutil.rmtree(tmp_path / "w" / "lam")
    with pytest.raises(PlayworldError, match="'lam'"):
        World.from_pretrained(tmp_path / "w")
    tok, lam, _ = tiny_parts()
    _, _, other_dyn = tiny_parts(num_codes=32)
    with pytest.raises(PlayworldError, match="codebook 64 != dynamics vocabulary 32"):
        World(tok, lam, other_dyn)
    _, lam6, _ = tiny_parts(num_actions=6)
    with pytest.raises(PlayworldError, match="6 actions"):
        World(tok, lam6, tiny_parts()[2])
    with pytest.raises(PlayworldError, match="not a world folder"):
        World.from_pretrained(tmp_path)
    (tmp_path / "w2").mkdir()
    (tmp_path / "w2" / "world.json").write_text(json.dumps({"format": "playworld-world", "version": 99}))
    with pytest.raises(PlayworldError, match="newer playworld"):
        World.from_pretrained(tmp_path / "w2")


def test_part_folder_of_another_model_is_rejected(world, tmp_path):
    world.save_pretrained(tmp_path / "w")
    shutil.rmtree(tmp_path / "w" / "lam")
    shutil.copytree(tmp_path / "w" / "tokenizer", tmp_path / "w" / "lam")
    with pytest.raises(PlayworldError, match="video_tokenizer"):
        World.from_pretrained(tmp_path / "w")


def test_action_labels_combine_motion_and_specific_true_actions():
    import numpy as np

    from playworld.world.labels import combine_labels, labels_from_counts

    counts = np.array([[8, 2, 0], [0, 0, 0], [1, 1, 1]])
    true = labels_from_counts(counts, ["NOOP", "LEFT_FIRE", "RIGHT"])
    assert true == ["noop (80%)", "unused", "noop (33%)"]
    assert combine_labels(["stays still", "moves left", "stays still"], true) == [
        "stays still (noop)", "moves left", "stays still"]
    assert combine_labels(["a", "a", "b"], None) == ["a #1", "a #2", "b"]
