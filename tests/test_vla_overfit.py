"""The tiny VLA overfits two expert demonstrations and then solves those episodes in closed loop.

Slow (minutes on a 2-core CPU): ``make test-slow`` or ``pytest -m slow tests/test_vla_overfit.py``.
"""

from __future__ import annotations

import json

import pytest
import torch

from playworld.data.lerobot import load_lerobot
from playworld.data.tabletop import record_tabletop
from playworld.envs.tabletop import Tabletop
from playworld.policy.train_vla import TrainVLA
from playworld.policy.vla_policy import VLAPolicy
from playworld.train.loop import TrainConfig

pytestmark = pytest.mark.slow


def test_tiny_vla_overfits_demos_and_succeeds_in_closed_loop(tmp_path):
    torch.set_num_threads(1)  # a 2-core machine: one thread avoids contention between the two
    data = tmp_path / "demos"
    record_tabletop(data, episodes=2, tasks=("pick",), workers=1, progress=False)
    out = tmp_path / "vla"
    TrainVLA(
        data=data, out=out, robot_fraction=1.0, image_size=64,
        train=TrainConfig(
            steps=300, batch_size=16, lr=1e-3, warmup_steps=30, num_workers=0, eval_every=0, sample_every=0,
            ckpt_every=1000, progress=False,
        ),
    ).run()
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["action_token_acc"] > 0.9

    policy = VLAPolicy.from_pretrained(out)
    ds = load_lerobot(data)
    env = Tabletop()
    try:
        for i in range(ds.num_episodes):
            spec = json.loads(ds.episodes[i]["playworld/spec"])
            obs, info = env.reset(options={"episode": spec})
            policy.reset(seed=0)
            for _ in range(3 * int(ds.episode_lengths[i])):
                obs, _, terminated, truncated, info = env.step(policy.select_action(obs, spec["instruction"]))
                if terminated or truncated:
                    break
            assert info["success"], f"episode {i} ({spec['instruction']}) failed in closed loop"
    finally:
        env.close()
    assert policy.num_fallbacks == 0
