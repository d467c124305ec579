"""The wrist (palm) camera: what the env renders, what the recorder writes, and the VLA that reads
it as extra image tokens (training, closed loop, save/load, bad input)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from playworld.errors import PlayworldError
from playworld.policy.action_tokenizer import ActionTokenizer
from playworld.policy.backbones import WordTokenizer
from playworld.policy.train_vla import Episode, VLADataset, training_texts
from playworld.policy.vla import VLA, VLAConfig, robot_prompt
from playworld.policy.vla_policy import VLAPolicy

pytest.importorskip("pybullet", reason="pybullet is not installed")

from playworld.envs.tabletop import Tabletop, TabletopConfig  # noqa: E402
from playworld.envs.tabletop.scene import COLORS  # noqa: E402

SPEC = {
    "suite": "seen",
    "family": "pick",
    "instruction": "pick up the red cube",
    "objects": [{"shape": "cube", "color": "red", "xy": [0.5, 0.1], "yaw": 0.0}],
    "goal": {"kind": "lift", "target": 0, "reference": None, "region": None},
    "tray": None,
    "markers": [],
    "seed": 3,
}


def _red_share(image: np.ndarray) -> np.ndarray:
    """Boolean mask of the pixels that look like the red cube."""
    red = np.round(np.array(COLORS["red"][:3]) * 255)
    return np.abs(image.astype(np.float32) - red).sum(-1) < 60


def _move_to(env: Tabletop, xy, z: float = 0.15, steps: int = 12) -> dict:
    obs = None
    for _ in range(steps):
        ee, _ = env.ee_pose()
        a = np.zeros(8, np.float32)
        a[1:4] = np.clip(np.array([xy[0], xy[1], z]) - ee, -0.05, 0.05)
        obs, *_ = env.step(a)
    return obs


def test_env_wrist_camera_sees_the_object_below_the_gripper_in_the_middle():
    with pytest.raises(PlayworldError, match="wrist_size"):
        TabletopConfig(wrist_size=15)
    env = Tabletop(wrist_size=32)
    try:
        obs, _ = env.reset(options={"episode": SPEC})
        assert obs["wrist_image"].shape == (32, 32, 3) and obs["wrist_image"].dtype == np.uint8
        assert env.observation_space["wrist_image"].shape == (32, 32, 3)
        assert env.observation_space.contains(obs)
        # straight above the cube: its pixels sit in the middle of the wrist image
        obs = _move_to(env, (0.5, 0.1))
        mask = _red_share(obs["wrist_image"])
        ys, xs = np.nonzero(mask)
        assert mask.sum() > 10
        assert abs(ys.mean() - 15.5) < 4 and abs(xs.mean() - 15.5) < 4
        # 8 cm to the side: off-centre (or out of view), while the fixed camera still sees it
        obs = _move_to(env, (0.5, 0.18))
        ys, xs = np.nonzero(_red_share(obs["wrist_image"]))
        assert len(xs) == 0 or max(abs(ys.mean() - 15.5), abs(xs.mean() - 15.5)) > 6
        assert _red_share(obs["image"]).sum() > 0
    finally:
        env.close()
    plain = Tabletop()
    try:
        obs, _ = plain.reset(options={"episode": SPEC})
        assert "wrist_image" not in obs  # RT-2's setting: one fixed camera
    finally:
        plain.close()


def test_recorder_writes_the_wrist_camera_as_a_second_stream(tmp_path):
    from playworld.data.lerobot import load_lerobot
    from playworld.data.tabletop import record_tabletop
    from playworld.policy.train_vla import load_episodes

    out = tmp_path / "wrist"
    record_tabletop(out, 2, tasks=("pick",), workers=1, size=32, wrist_size=16, progress=False)
    ds = load_lerobot(out)
    assert ds.camera == "observation.images.front" and ds.frame_size == (32, 32)  # the fixed camera stays first
    wrist = load_lerobot(out, camera="wrist")
    assert wrist.frame_size == (16, 16)
    eps, _, _ = load_episodes(out, 32, wrist_size=32)
    assert eps[0].wrist.shape == (len(eps[0].frames), 32, 32, 3)
    assert not np.array_equal(eps[0].wrist[0], eps[0].wrist[-1])  # the view moves with the hand
    plain = tmp_path / "plain"
    record_tabletop(plain, 1, tasks=("pick",), workers=1, size=32, progress=False)
    with pytest.raises(PlayworldError, match="no wrist camera"):
        load_episodes(plain, 32, wrist_size=16)


# -- the VLA ------------------------------------------------------------------------------------


def _episodes(n: int = 2, length: int = 4) -> list[Episode]:
    rng = np.random.default_rng(0)
    return [
        Episode(
            frames=rng.integers(0, 256, (length, 32, 32, 3), dtype=np.uint8),
            bins=rng.integers(0, 256, (length, 8)),
            states=rng.uniform(-0.5, 0.5, (length, 8)).astype(np.float32),
            instruction=SPEC["instruction"],
            spec=SPEC,
            wrist=rng.integers(0, 256, (length, 16, 16, 3), dtype=np.uint8),
        )
        for _ in range(n)
    ]


def _model(**overrides) -> VLA:
    torch.manual_seed(0)
    fields = dict(
        backbone="tiny", image_size=32, dim=32, depth=1, heads=2, max_text_len=48,
        vocab=tuple(WordTokenizer.build(training_texts(_episodes())).vocab),
        action_tokenizer=ActionTokenizer([0.0] + [-0.04] * 6 + [0.0], [1.0] + [0.04] * 6 + [1.0]).to_dict(),
        use_state=True, state_q01=(-1.0,) * 8, state_q99=(1.0,) * 8, wrist_size=16,
    )
    return VLA(VLAConfig(**{**fields, **overrides}))


def test_vla_reads_the_wrist_image_as_more_prefix_tokens(tmp_path):
    with pytest.raises(PlayworldError, match="wrist_size"):
        VLAConfig(backbone="tiny", image_size=32, wrist_size=12)  # not a multiple of the 8 px tokens
    model = _model().eval()
    plain = _model(wrist_size=0)
    assert model.num_prefix_tokens == plain.num_prefix_tokens + (16 // 8) ** 2
    eps = _episodes()
    item = VLADataset(model, eps)[0]
    assert item["wrist"].shape == (16, 16, 3)
    batch = torch.utils.data.default_collate([VLADataset(model, eps)[i] for i in range(3)])
    loss, _ = model.training_step(batch["image"], batch["input_ids"], batch["labels"], batch["state"], batch["wrist"])
    loss.backward()
    assert model.wrist_pos.grad is not None and model.wrist_pos.grad.abs().sum() > 0
    with pytest.raises(PlayworldError, match="wrist"):
        model(batch["image"], batch["input_ids"], batch["state"])  # the wrist image is required
    with pytest.raises(PlayworldError, match="wrist"):
        VLADataset(model, [Episode(e.frames, e.bins, e.states, e.instruction, e.spec) for e in eps])

    # the wrist image changes what the model writes; save/load keeps it
    model.zero_grad()
    ids = torch.tensor([model.encode_text(robot_prompt(SPEC["instruction"]))])
    img, state = batch["image"][:1], batch["state"][:1]
    with torch.no_grad():
        a, _ = model.prefill(img, ids, state, batch["wrist"][:1])
        b, _ = model.prefill(img, ids, state, torch.zeros_like(batch["wrist"][:1]))
    assert not torch.allclose(a, b)
    model.save_pretrained(tmp_path / "w")
    loaded = VLA.from_pretrained(tmp_path / "w").eval()
    assert loaded.config.wrist_size == 16
    with torch.no_grad():
        c, _ = loaded.prefill(img, ids, state, batch["wrist"][:1])
    assert torch.allclose(a, c, atol=1e-5)


def test_policy_needs_the_wrist_image_and_acts_in_the_env():
    policy = VLAPolicy(_model(), dtype="float32")
    obs = {"image": np.zeros((32, 32, 3), np.uint8), "state": np.zeros(8, np.float32)}
    with pytest.raises(PlayworldError, match="wrist_size=16"):
        policy.select_action(obs, "pick up the red cube")
    with pytest.raises(PlayworldError, match=r"wrist_image must be RGB shaped"):
        policy.select_action({**obs, "wrist_image": np.zeros((16, 16), np.uint8)}, "pick up the red cube")
    env = Tabletop(image_size=32, wrist_size=16, max_steps=3)
    try:
        obs, info = env.reset(options={"episode": SPEC})
        action = policy.select_action(obs, info["instruction"])
        assert action.shape == (8,) and np.all(np.isfinite(action))
        env.step(action)
    finally:
        env.close()


def test_init_adds_a_wrist_camera_to_a_checkpoint_without_one(tmp_path):
    from playworld.policy.lapa import init_from_checkpoint

    source = _model(wrist_size=0)
    source.save_pretrained(tmp_path / "src")
    eps = _episodes()
    model = init_from_checkpoint(tmp_path / "src", "tiny", eps, {"wrist_size": 16}, plan=False)
    assert model.config.wrist_size == 16 and model.num_prefix_tokens == source.num_prefix_tokens + 4
    # the shared weights come from the checkpoint; only the wrist positions start fresh
    assert torch.equal(model.projector[1].weight, source.projector[1].weight)
    assert torch.equal(model.image_pos, source.image_pos)


def test_record_train_eval_commands_with_the_wrist_camera(tmp_path, capsys):
    import json

    from playworld.cli import main

    data, out = tmp_path / "demos", tmp_path / "vla"
    assert main(["record", "tabletop", "--out", str(data), "--episodes", "2", "--tasks", "pick", "--workers", "1",
                 "--size", "32", "--wrist-size", "16", "--no-progress"]) == 0
    assert main(["train", "vla", "--data", str(data), "--out", str(out), "--image-size", "32", "--wrist-size", "16",
                 "--robot-fraction", "1", "--steps", "2", "--batch-size", "4", "--threads", "1", "--no-progress"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["wrist_size"] == 16 and config["wrist_camera_size"] == 16
    assert main(["eval", "vla", "--policy", str(out), "--tasks", "pick", "--episodes", "1", "--max-steps", "2",
                 "--vqa-per-episode", "0", "--gif-episodes", "1", "--threads", "1"]) == 0
    report = json.loads((out / "eval" / "vla_eval.json").read_text())
    assert report["wrist_camera_size"] == 16
    from PIL import Image

    gif = Image.open(report["suites"]["seen"]["gif"])
    assert gif.width > 1.8 * (gif.height - 60)  # both cameras side by side (above and below: text bands)
    assert main(["train", "vla", "--data", str(data), "--out", str(tmp_path / "bad"), "--wrist-size", "-1"]) == 1
    assert "--wrist-size" in capsys.readouterr().err
