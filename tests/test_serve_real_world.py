"""The play server, the headless CLI and WorldEnv with a real World (not the FakeWorld).

Uses the bundled world (``src/playworld/assets/world``), or the world folder named by
``PLAYWORLD_TEST_WORLD``; skipped when neither exists. MaskGIT is cut to 2 steps to stay fast.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from gymnasium.utils.env_checker import check_env
from PIL import Image

from playworld import cli
from playworld.envs import WorldEnv
from playworld.serve.app import FRAME_HEADER, create_app


def _world_path() -> Path | None:
    if os.environ.get("PLAYWORLD_TEST_WORLD"):
        return Path(os.environ["PLAYWORLD_TEST_WORLD"])
    try:
        from playworld.world.world import bundled_world_path
    except ImportError:
        return None
    path = bundled_world_path()
    return path if (path / "world.json").exists() else None


WORLD_PATH = _world_path()
pytestmark = pytest.mark.skipif(
    WORLD_PATH is None, reason="no bundled world yet (or set PLAYWORLD_TEST_WORLD)"
)


@pytest.fixture(scope="module")
def world():
    from playworld.serve.commands import load_world

    w = load_world(WORLD_PATH)
    if hasattr(w, "maskgit_steps"):
        w.maskgit_steps = 2
    return w


def _frame(ws) -> np.ndarray:
    data = ws.receive_bytes()
    _, h, w, _ = FRAME_HEADER.unpack(data[: FRAME_HEADER.size])
    return np.frombuffer(data[FRAME_HEADER.size :], np.uint8).reshape(h, w, 3)


def test_real_world_plays_through_the_server(world):
    h, w = world.frame_size
    with TestClient(create_app(world, fps_cap=0)) as client, client.websocket_connect("/ws") as ws:
        hello = ws.receive_json()
        assert hello["num_actions"] == world.num_actions and hello["action_labels"] == list(
            world.action_labels
        )
        ws.receive_json()
        assert _frame(ws).shape == (h, w, 3)

        def play(seed):
            ws.send_json({"type": "reset", "seed": seed})
            ws.receive_json()
            frames = [_frame(ws)]
            for a in (0, world.num_actions - 1, 1):
                ws.send_json({"type": "step", "action": a})
                frames.append(_frame(ws))
            return frames

        a, b = play(11), play(11)
        assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
        ws.send_json({"type": "step", "action": world.num_actions})
        assert ws.receive_json()["type"] == "error"

        buf = io.BytesIO()
        Image.new("RGB", (300, 200), (20, 120, 220)).save(buf, format="JPEG")
        up = client.post("/api/prompts", files={"file": ("photo.jpg", buf.getvalue(), "image/jpeg")})
        assert up.status_code == 200, up.text
        ws.send_json({"type": "reset", "prompt": up.json()["id"]})
        ws.receive_json()
        assert _frame(ws).shape == (h, w, 3)


def test_real_world_headless_gif(world, tmp_path, monkeypatch):
    from playworld.serve import commands

    monkeypatch.setattr(commands, "load_world", lambda path=None: world)
    out = tmp_path / "run.gif"
    assert cli.main(["play", "--headless", "--random-actions", "4", "--seed", "0", "--out", str(out)]) == 0
    with Image.open(out) as gif:
        assert gif.n_frames == 5


@pytest.mark.slow
def test_check_env_passes_with_a_real_world(world):
    env = WorldEnv(world, max_steps=20)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not having a spec")
        check_env(env)
    obs_a = [env.reset(seed=3)[0]] + [env.step(a)[0] for a in (0, 1, 2)]
    obs_b = [env.reset(seed=3)[0]] + [env.step(a)[0] for a in (0, 1, 2)]
    assert all(np.array_equal(x, y) for x, y in zip(obs_a, obs_b, strict=True))
