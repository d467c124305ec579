"""The play server against the World contract (FakeWorld): protocol, sessions, uploads, files."""

from __future__ import annotations

import gc
import io
import json
import struct
import time
import zlib

import numpy as np
import pytest
from fake_world import FakeWorld, write_sample_prompts
from fastapi.testclient import TestClient
from PIL import Image
from starlette.websockets import WebSocketDisconnect

from playworld.serve.app import FRAME_HEADER, LOOPBACK_HOSTS, create_app


@pytest.fixture
def world(tmp_path):
    write_sample_prompts(tmp_path / "prompts")
    return FakeWorld(prompts_dir=tmp_path / "prompts", step_s=0.0)


def make_client(world, **kwargs) -> TestClient:
    kwargs.setdefault("fps_cap", 0)
    return TestClient(create_app(world, **kwargs))


@pytest.fixture
def client(world):
    with make_client(world) as c:
        yield c


def read_frame(ws) -> tuple[int, np.ndarray]:
    data = ws.receive_bytes()
    seq, h, w, _ = FRAME_HEADER.unpack(data[: FRAME_HEADER.size])
    frame = np.frombuffer(data[FRAME_HEADER.size :], dtype=np.uint8).reshape(h, w, 3)
    return seq, frame


def open_session(ws) -> tuple[dict, np.ndarray]:
    hello = ws.receive_json()
    assert hello["type"] == "hello", hello
    assert ws.receive_json()["type"] == "reset"
    seq, frame = read_frame(ws)
    assert seq == 0
    return hello, frame


def step(ws, action) -> np.ndarray:
    ws.send_text(json.dumps({"type": "step", "action": action}))
    seq, frame = read_frame(ws)
    return frame


def png_bytes(size=(32, 24), color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


# ---- the protocol -------------------------------------------------------------------------------
def test_hello_describes_the_world_and_steps_stream_changing_frames(client, world):
    with client.websocket_connect("/ws") as ws:
        hello, first = open_session(ws)
        assert hello["num_actions"] == world.num_actions
        assert hello["action_labels"] == world.action_labels
        assert hello["frame_size"] == [64, 64]
        assert [p["id"] for p in hello["prompts"]] == ["sample:0", "sample:1", "sample:2"]
        assert first.shape == (64, 64, 3)
        frames = [step(ws, 1) for _ in range(4)]
        assert all(not np.array_equal(a, b) for a, b in zip([first] + frames[:-1], frames, strict=True))
        ws.send_text(json.dumps({"type": "ping"}))
        assert ws.receive_json() == {"type": "pong"}


def test_frame_header_counts_steps_since_reset(client):
    with client.websocket_connect("/ws") as ws:
        open_session(ws)
        for expected in (1, 2, 3):
            ws.send_json({"type": "step", "action": 0})
            assert read_frame(ws)[0] == expected
        ws.send_json({"type": "reset", "prompt": "sample:2"})
        assert ws.receive_json() == {"type": "reset", "prompt": "sample:2", "seed": None}
        assert read_frame(ws)[0] == 0


def test_seeded_reset_replays_the_same_rollout(client):
    with client.websocket_connect("/ws") as ws:
        open_session(ws)

        def play(seed):
            ws.send_json({"type": "reset", "prompt": "sample:1", "seed": seed})
            ws.receive_json()
            return [read_frame(ws)[1]] + [step(ws, a) for a in (0, 3, 3, 1)]

        a, b, c = play(7), play(7), play(8)
        assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
        assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_settings_change_only_this_tabs_maskgit_steps(client, world):
    with client.websocket_connect("/ws") as ws:
        hello, _ = open_session(ws)
        assert hello["maskgit_steps"] == 25
        ws.send_json({"type": "settings", "maskgit_steps": 4})
        assert ws.receive_json() == {"type": "settings", "maskgit_steps": 4}
        (session,) = client.app.state.sessions.values()
        assert session.world.maskgit_steps == 4 and world.maskgit_steps == 25


def test_fps_cap_bounds_each_sessions_step_rate(world):
    with make_client(world, fps_cap=25) as client, client.websocket_connect("/ws") as ws:
        open_session(ws)
        t0 = time.perf_counter()
        for _ in range(6):
            step(ws, 1)
        assert time.perf_counter() - t0 >= 5 / 25 * 0.95


BAD_MESSAGES = {
    "not json": "this is not json",
    "json list": "[1, 2, 3]",
    "no type": json.dumps({"action": 1}),
    "unknown type": json.dumps({"type": "teleport"}),
    "type not a string": json.dumps({"type": 5}),
    "action out of range": json.dumps({"type": "step", "action": 8}),
    "negative action": json.dumps({"type": "step", "action": -1}),
    "action string": json.dumps({"type": "step", "action": "left"}),
    "action float": json.dumps({"type": "step", "action": 1.5}),
    "action bool": json.dumps({"type": "step", "action": True}),
    "missing action": json.dumps({"type": "step"}),
    "unknown prompt": json.dumps({"type": "reset", "prompt": "sample:99"}),
    "prompt traversal": json.dumps({"type": "reset", "prompt": "upload:../../etc/passwd"}),
    "prompt not a string": json.dumps({"type": "reset", "prompt": {"x": 1}}),
    "negative seed": json.dumps({"type": "reset", "seed": -3}),
    "record not bool": json.dumps({"type": "record", "on": "yes"}),
    "maskgit steps zero": json.dumps({"type": "settings", "maskgit_steps": 0}),
    "maskgit steps huge": json.dumps({"type": "settings", "maskgit_steps": 10**9}),
    "huge message": json.dumps({"type": "step", "action": 1, "pad": "x" * 200_000}),
}


@pytest.mark.parametrize("name", list(BAD_MESSAGES))
def test_malformed_messages_get_an_error_and_the_session_goes_on(client, name):
    with client.websocket_connect("/ws") as ws:
        open_session(ws)
        ws.send_text(BAD_MESSAGES[name])
        reply = ws.receive_json()
        assert reply["type"] == "error" and reply["message"], reply
        if "action" in name:
            assert "0..7" in reply["message"]
        assert step(ws, 2).shape == (64, 64, 3)  # still alive


def test_binary_client_messages_are_refused_politely(client):
    with client.websocket_connect("/ws") as ws:
        open_session(ws)
        ws.send_bytes(b"\x00\x01\x02")
        assert "binary" in ws.receive_json()["message"]
        assert step(ws, 0).shape == (64, 64, 3)


def test_a_model_error_is_reported_and_the_session_survives(client):
    app = client.app
    with client.websocket_connect("/ws") as ws:
        open_session(ws)
        (session,) = app.state.sessions.values()
        good_step = session.world.step

        def broken(action):
            raise RuntimeError("boom")

        session.world.step = broken
        ws.send_json({"type": "step", "action": 1})
        reply = ws.receive_json()
        assert reply["type"] == "error" and "boom" in reply["message"]
        session.world.step = good_step
        assert step(ws, 1).shape == (64, 64, 3)


# ---- sessions ----------------------------------------------------------------------------------------
def test_sessions_are_bounded_and_extra_tabs_get_a_busy_message(world):
    with make_client(world, max_sessions=2) as client:
        with client.websocket_connect("/ws") as a, client.websocket_connect("/ws") as b:
            open_session(a)
            open_session(b)
            with client.websocket_connect("/ws") as c:
                busy = c.receive_json()
                assert busy["type"] == "busy" and "2 play sessions" in busy["message"]
                with pytest.raises(WebSocketDisconnect) as closed:
                    c.receive_json()
                assert closed.value.code == 1013
            # the two sessions are independent: stepping one leaves the other where it was
            frame_b = step(b, 4)
            for _ in range(3):
                step(a, 1)
            assert not np.array_equal(step(a, 4), frame_b)
        # both tabs closed: a new one gets a session again
        with client.websocket_connect("/ws") as d:
            open_session(d)


def test_session_state_is_freed_when_the_tab_disconnects(client, world):
    with client.websocket_connect("/ws") as ws:
        open_session(ws)
        ws.send_json({"type": "record", "on": True})
        ws.receive_json()
        step(ws, 1)
        assert len(client.app.state.sessions) == 1
        assert len(world.forks) == 1
    for _ in range(100):  # the server notices the close asynchronously
        if not client.app.state.sessions:
            break
        time.sleep(0.01)
    gc.collect()
    assert client.app.state.sessions == {}
    assert len(world.forks) == 0  # the fork (and its recording) were dropped
    assert client.get("/api/info").json()["sessions"] == 0


def test_cross_origin_pages_cannot_open_a_session(client):
    with pytest.raises(WebSocketDisconnect) as refused:
        with client.websocket_connect("/ws", headers={"origin": "http://evil.example"}) as ws:
            ws.receive_json()
    assert refused.value.code == 1008
    with client.websocket_connect("/ws", headers={"origin": "http://testserver"}) as ws:
        open_session(ws)


def test_loopback_server_refuses_foreign_host_headers(world):
    with make_client(world, allowed_hosts=LOOPBACK_HOSTS) as client:
        assert client.get("/api/info", headers={"host": "evil.example"}).status_code == 400
        assert client.get("/api/info", headers={"host": "127.0.0.1:8000"}).status_code == 200


# ---- uploads -------------------------------------------------------------------------------------------
def test_uploaded_image_becomes_the_prompt(client):
    res = client.post("/api/prompts", files={"file": ("red.png", png_bytes(), "image/png")})
    assert res.status_code == 200, res.text
    upload_id = res.json()["id"]
    assert upload_id.startswith("upload:")
    raw = client.post(
        "/api/prompts", content=png_bytes(color=(0, 0, 255)), headers={"content-type": "image/png"}
    )
    assert raw.status_code == 200, raw.text
    with client.websocket_connect("/ws") as ws:
        open_session(ws)
        ws.send_json({"type": "reset", "prompt": upload_id})
        assert ws.receive_json()["prompt"] == upload_id
        _, frame = read_frame(ws)
        corner = frame[:4, :4].reshape(-1, 3).mean(0)
        assert corner[0] > 150 and corner[1] < 80  # the red prompt


def _png_with_size(width: int, height: int) -> bytes:
    """A tiny, valid-looking PNG whose header claims ``width`` x ``height`` (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


BAD_UPLOADS = {
    "text file": (b"hello, I am not an image\n" * 10, "not an image"),
    "truncated png": (png_bytes((200, 200))[:-40], "corrupt or truncated"),
    "png header only": (png_bytes()[:30], "not an image"),
    "decompression bomb": (_png_with_size(100_000, 100_000), "too large to decode safely"),
    "large but under PIL's limit": (_png_with_size(8_000, 8_000), "too large to decode safely"),
    "eps (a PIL plugin that runs ghostscript)": (
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n",
        "not an image",
    ),
    "empty": (b"", "empty"),
}


@pytest.mark.parametrize("name", list(BAD_UPLOADS))
def test_bad_uploads_are_rejected_with_a_clear_message(client, name):
    data, expected = BAD_UPLOADS[name]
    res = client.post("/api/prompts", files={"file": ("x.png", data, "image/png")})
    assert res.status_code == 400, res.text
    assert expected in res.json()["error"]


def test_pil_decompression_bomb_warning_is_an_error(client, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # a 32x24 = 768 px image is now a "bomb"
    res = client.post("/api/prompts", files={"file": ("x.png", png_bytes(), "image/png")})
    assert res.status_code == 400 and "decompression bomb" in res.json()["error"]


def test_oversized_uploads_are_rejected(client):
    big = b"\x89PNG" + b"\0" * (11 * 2**20)
    res = client.post("/api/prompts", files={"file": ("big.png", big, "image/png")})
    assert res.status_code == 413 and "10 MB" in res.json()["error"]

    def chunks():  # no Content-Length: the server must count
        for _ in range(12):
            yield b"\0" * 2**20

    res = client.post("/api/prompts", content=chunks(), headers={"content-type": "image/png"})
    assert res.status_code == 413


def test_multipart_without_a_file_field_is_rejected(client):
    res = client.post("/api/prompts", files={"image": ("x.png", png_bytes(), "image/png")})
    assert res.status_code == 400 and "'file'" in res.json()["error"]


# ---- files and downloads --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path",
    [
        "/static/../app.py",
        "/static/%2e%2e/app.py",
        "/static/..%2fapp.py",
        "/static/%2e%2e%2fapp.py",
        "/static/..%5capp.py",
        "/static/%2e%2e%2f%2e%2e%2fpyproject.toml",
        "/static/app.py",
        "/static/%2fetc%2fpasswd",
        "/static//etc/passwd",
        "/static/",
        "/api/prompts/sample/..%2f..%2fapp.py",
        "/api/prompts/sample/-1.png",
        "/api/prompts/sample/3.png",
        "/app.py",
    ],
)
def test_only_the_servers_own_files_are_served(client, path):
    res = client.get(path)
    assert res.status_code in (404, 405), (path, res.status_code)
    assert "create_app" not in res.text and "[project]" not in res.text


def test_static_files_and_security_headers(client):
    for path, ctype in [
        ("/", "text/html"),
        ("/static/app.js", "text/javascript"),
        ("/static/style.css", "text/css"),
    ]:
        res = client.get(path)
        assert res.status_code == 200 and res.headers["content-type"].startswith(ctype)
        assert "frame-ancestors 'none'" in res.headers["content-security-policy"]
        assert res.headers["x-content-type-options"] == "nosniff"
    res = client.get("/api/prompts/sample/1.png")
    assert res.status_code == 200 and res.content.startswith(b"\x89PNG")


def test_recording_downloads_as_gif_and_mp4(client):
    import av

    with client.websocket_connect("/ws") as ws:
        hello, _ = open_session(ws)
        url = f"/api/sessions/{hello['session']}/recording"
        assert client.get(url + ".gif").status_code == 409  # nothing recorded yet
        ws.send_json({"type": "record", "on": True})
        assert ws.receive_json() == {"type": "recording", "on": True, "frames": 1}
        for a in (1, 1, 2, 3, 0):
            step(ws, a)
        ws.send_json({"type": "record", "on": False})
        assert ws.receive_json() == {"type": "recording", "on": False, "frames": 6}
        gif = client.get(url + ".gif")
        assert gif.status_code == 200 and gif.content.startswith(b"GIF8")
        assert "attachment" in gif.headers["content-disposition"]
        assert Image.open(io.BytesIO(gif.content)).n_frames == 6
        mp4 = client.get(url + ".mp4")
        assert mp4.status_code == 200 and mp4.content[4:8] == b"ftyp"
        with av.open(io.BytesIO(mp4.content)) as container:
            assert sum(1 for _ in container.decode(video=0)) == 6
        assert client.get(url + ".avi").status_code == 404
    assert client.get(url + ".gif").status_code == 404  # the session (and recording) is gone


def test_recording_stops_at_its_memory_limit(world):
    with (
        make_client(world, record_limit_bytes=64 * 64 * 3 * 4) as client,
        client.websocket_connect("/ws") as ws,
    ):
        open_session(ws)
        ws.send_json({"type": "record", "on": True})
        ws.receive_json()
        for _ in range(2):
            step(ws, 1)
        ws.send_json({"type": "step", "action": 1})
        stop = ws.receive_json()
        assert stop["type"] == "recording" and not stop["on"] and "limit" in stop["reason"]
        read_frame(ws)


def test_a_failing_fork_is_reported_and_frees_the_slot(world, monkeypatch):
    def broken_fork():
        raise MemoryError("no room for another player")

    monkeypatch.setattr(world, "fork", broken_fork)
    with make_client(world, max_sessions=1) as client:
        for _ in range(2):  # the slot is freed each time
            with client.websocket_connect("/ws") as ws:
                reply = ws.receive_json()
                assert reply["type"] == "error" and "no room" in reply["message"]
                with pytest.raises(WebSocketDisconnect) as closed:
                    ws.receive_json()
                assert closed.value.code == 1011
        assert client.app.state.sessions == {}
