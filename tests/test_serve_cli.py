"""`playworld play`: headless rollouts to GIF/MP4, flag errors, and the real uvicorn server."""

from __future__ import annotations

import contextlib
import io
import json
import socket
import threading

import httpx
import numpy as np
import pytest
from fake_world import FakeWorld, write_sample_prompts
from PIL import Image

from playworld import cli
from playworld.errors import PlayworldError
from playworld.serve import commands
from playworld.serve.app import FRAME_HEADER, create_app
from playworld.serve.server import BackgroundServer, bind_socket, is_loopback


@pytest.fixture
def world(tmp_path):
    write_sample_prompts(tmp_path / "prompts")
    return FakeWorld(prompts_dir=tmp_path / "prompts", step_s=0.0)


@pytest.fixture
def fake_loader(monkeypatch, world):
    monkeypatch.setattr(commands, "load_world", lambda path=None: world)
    return world


def test_headless_gif_from_listed_actions(fake_loader, tmp_path, capsys):
    out = tmp_path / "run.gif"
    assert cli.main(["play", "--headless", "--actions", "0,3,3,1", "--out", str(out), "--scale", "2"]) == 0
    with Image.open(out) as gif:
        assert gif.n_frames == 5 and gif.size == (128, 128)
    assert "5 frames" in capsys.readouterr().out


def test_headless_mp4_from_random_actions_is_reproducible(fake_loader, tmp_path):
    import av

    prompt = tmp_path / "prompt.jpg"
    Image.new("RGB", (100, 80), (10, 200, 10)).save(prompt)
    outs = []
    for name in ("a.mp4", "b.mp4"):
        out = tmp_path / name
        args = [
            "play",
            "--headless",
            "--random-actions",
            "12",
            "--seed",
            "3",
            "--prompt",
            str(prompt),
            "--out",
            str(out),
        ]
        assert cli.main(args) == 0
        with av.open(str(out)) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert len(frames) == 13 and frames[0].shape == (256, 256, 3)
        outs.append(frames)
    assert all(np.array_equal(a, b) for a, b in zip(*outs, strict=True))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--headless", "--actions", "0,9"], "0..7"),
        (["--headless", "--actions", "left"], "comma-separated integers"),
        (["--headless"], "exactly one of"),
        (["--headless", "--actions", "1", "--random-actions", "3"], "exactly one of"),
        (["--headless", "--actions", "1", "--out", "run.avi"], ".gif or .mp4"),
        (["--headless", "--actions", "1", "--prompt", "missing.png"], "does not exist"),
        (["--actions", "1"], "need --headless"),
        (["--max-sessions", "0"], "at least 1"),
    ],
)
def test_bad_flags_exit_1_with_a_clear_message(fake_loader, tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["play", *args]) == 1
    assert message in capsys.readouterr().err


def test_help_lists_the_flags(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["play", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for flag in (
        "--world",
        "--host",
        "--port",
        "--max-sessions",
        "--headless",
        "--prompt",
        "--actions",
        "--random-actions",
        "--out",
        "--fps-cap",
    ):
        assert flag in text


def test_a_port_in_use_is_a_clear_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PlayworldError, match=f"cannot listen on 127.0.0.1:{port}.*--port"):
            bind_socket("127.0.0.1", port)


def test_loopback_detection():
    assert (
        is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1") and is_loopback("[::1]")
    )
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")


def test_play_serves_on_loopback_and_prints_the_url(fake_loader, monkeypatch, capsys):
    import uvicorn

    started = threading.Event()

    def run(self, sockets):  # stand-in for the blocking uvicorn loop: check the socket, then return
        (sock,) = sockets
        assert sock.getsockname()[0] == "127.0.0.1"
        started.set()

    monkeypatch.setattr(uvicorn.Server, "run", run)
    assert cli.main(["play", "--port", "0"]) == 0
    assert started.is_set()
    assert "http://127.0.0.1:" in capsys.readouterr().out


# ---- the real server: uvicorn + websockets, several tabs stepping at once ---------------------------
def _frame(ws) -> np.ndarray:
    data = ws.recv()
    assert isinstance(data, bytes), data
    _, h, w, _ = FRAME_HEADER.unpack(data[: FRAME_HEADER.size])
    return np.frombuffer(data[FRAME_HEADER.size :], np.uint8).reshape(h, w, 3)


@contextlib.contextmanager
def _open(url):
    from websockets.sync.client import connect

    with connect(url, max_size=None) as ws:
        assert json.loads(ws.recv())["type"] == "hello"
        assert json.loads(ws.recv())["type"] == "reset"
        _frame(ws)
        yield ws


def test_real_server_handles_concurrent_tabs_and_huge_messages(tmp_path):
    write_sample_prompts(tmp_path / "prompts")
    world = FakeWorld(prompts_dir=tmp_path / "prompts", step_s=0.002)
    app = create_app(world, max_sessions=3, fps_cap=0)
    with BackgroundServer(app) as server:
        assert httpx.get(server.url + "/api/info").json()["max_sessions"] == 3
        errors: list[BaseException] = []

        def tab(action):
            try:
                with _open(server.ws_url) as ws:
                    for _ in range(30):
                        ws.send(json.dumps({"type": "step", "action": action}))
                        assert _frame(ws).shape == (64, 64, 3)
            except BaseException as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=tab, args=(a,)) for a in (0, 1, 2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not errors, errors

        with _open(server.ws_url) as ws:
            ws.send(json.dumps({"type": "step", "action": 1, "pad": "x" * 2**20}))  # 1 MiB
            reply = json.loads(ws.recv())
            assert reply["type"] == "error" and "too large" in reply["message"]
            ws.send(json.dumps({"type": "step", "action": 1}))
            assert _frame(ws).shape == (64, 64, 3)

        png = io.BytesIO()
        Image.new("RGB", (16, 16)).save(png, format="PNG")
        res = httpx.post(server.url + "/api/prompts", files={"file": ("p.png", png.getvalue(), "image/png")})
        assert res.status_code == 200
