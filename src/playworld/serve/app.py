"""Play a world in the browser: a FastAPI app that streams generated frames over a WebSocket.

Each browser tab opens one WebSocket = one play *session* with its own world state
(``world.fork()``, sharing the read-only weights). Model steps run on a worker thread, never on
the event loop; one session's steps are strictly sequential (``World.step`` is not thread-safe
per instance) while different sessions step concurrently. At most ``max_sessions`` sessions
exist at once; a further tab gets a ``busy`` message. A session's state is dropped when its
tab disconnects. The server only knows the World *contract* (``num_actions``, ``frame_size``,
``action_labels``, ``fork``, ``reset``, ``step``, ``sample_prompts``), never model internals.

WebSocket protocol (``/ws``)
============================
Client -> server: JSON text messages (at most 64 KiB; binary messages are refused)::

    {"type": "step", "action": 3}                 # one model step with latent action 3 -> a frame
    {"type": "reset"}                              # restart from the current prompt -> a frame
    {"type": "reset", "prompt": "sample:0",        # or "upload:<id>" from POST /api/prompts
     "seed": 7}                                    # optional: a deterministic rollout
    {"type": "record", "on": true}                 # start (clears) / stop recording the frames
    {"type": "settings", "maskgit_steps": 4}       # this tab's decoding steps (fewer = faster)
    {"type": "ping"}                               # -> {"type": "pong"}

Server -> client: JSON text messages::

    {"type": "hello", "session": TOKEN, "num_actions": 8, "action_labels": [...],
     "frame_size": [H, W], "fps_cap": 30, "prompts": [{"id": "sample:0", "url": ...}],
     "max_upload_bytes": N, "maskgit_steps": 25}  # first message of every session
                                                   # (maskgit_steps null: the world has none)
    {"type": "busy", "message": "..."}             # no free session; the socket is then closed (1013)
    {"type": "reset", "prompt": "sample:0", "seed": null}   # a reset frame (seq 0) follows
    {"type": "recording", "on": true, "frames": 12, "reason": "..."?}
    {"type": "settings", "maskgit_steps": 4}
    {"type": "error", "message": "...", "request": "step"}  # the session goes on
    {"type": "pong"}

and one *binary* message per generated frame: a 12-byte little-endian header
``uint32 seq, uint16 H, uint16 W, float32 step_ms`` followed by H*W*3 bytes of raw RGB, row
major. (Raw RGB beats PNG here: a 64x64 frame is 12 KiB, needs no encode on the server nor an
async decode in the browser, and goes straight into a canvas ``ImageData``.) ``seq`` counts
steps since the last reset; ``step_ms`` is the model's time for that frame.

HTTP
====
``GET /`` the page; ``GET /static/{index.html,app.js,style.css,favicon.svg}`` (nothing else);
``GET /api/info``; ``GET /api/prompts/sample/{i}.png`` the world's sample prompts;
``POST /api/prompts`` an image upload (multipart field ``file``, or the raw bytes as the body;
<= 10 MB, verified with PIL) -> ``{"id": "upload:..."}``;
``GET /api/sessions/{session}/recording.{gif,mp4}`` the session's recording, encoded on demand.

Malformed, unknown or invalid messages are answered with an ``error`` message and never end the
session. A single message over the transport limit (uvicorn's ``ws_max_size``, 16 MiB) is cut
off by the WebSocket layer itself, which closes that one connection.

Security: a WebSocket from another site's page (``Origin`` != ``Host``) is refused (code 1008);
``allowed_hosts`` (loopback names when serving on loopback) defeats DNS rebinding; a strict CSP
allows only the server's own scripts; a recording is reachable only with its tab's unguessable
session token; uploads decode only PNG/JPEG/GIF/WebP/BMP, with pixel limits checked before decoding.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import struct
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import FileResponse, JSONResponse, Response
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.websockets import WebSocketDisconnect

from playworld.errors import PlayworldError
from playworld.serve.uploads import MAX_UPLOAD_BYTES, decode_upload
from playworld.utils import get_logger
from playworld.viz import VIDEO_FORMATS, encode_video

log = get_logger("serve")

STATIC_DIR = Path(__file__).parent / "static"
# The only files the server ever reads from disk besides the world's sample prompts.
STATIC_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
MAX_MESSAGE_CHARS = 64 * 1024
FRAME_HEADER = struct.Struct("<IHHf")  # seq, H, W, step_ms
MAX_STORED_UPLOADS = 32
MAX_MASKGIT_STEPS = 64
RECORD_LIMIT_BYTES = 64 * 2**20  # per session: ~5,000 frames at 64x64
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; "
        "connect-src 'self'; style-src 'self'; script-src 'self'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]


@dataclass
class Session:
    """One browser tab's play state."""

    token: str
    world: Any  # this tab's World fork
    prompt_id: str = ""
    prompt: Any = None
    frame: np.ndarray | None = None
    seq: int = 0
    last_step: float = 0.0
    recording: bool = False
    frames: list[np.ndarray] = field(default_factory=list)


def _error(message: str, request: str | None = None) -> dict:
    return {"type": "error", "message": message, "request": request}


async def _file_bytes(request: Request, body: bytes) -> bytes:
    """The uploaded file: the ``file`` field of a multipart form, or else the raw body."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return body

    async def replay() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=4)
    except Exception as e:
        raise PlayworldError(
            f"malformed multipart upload ({e}); send the image in a field named 'file'"
        ) from None
    try:
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise PlayworldError("send the image in a multipart field named 'file'")
        return await upload.read()
    finally:
        await form.close()


def create_app(
    world,
    *,
    max_sessions: int = 4,
    fps_cap: float = 30.0,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    allowed_hosts: list[str] | None = None,
    record_limit_bytes: int = RECORD_LIMIT_BYTES,
    video_fps: float = 10.0,
) -> FastAPI:
    """The play app for ``world`` (any object with the World contract).

    ``fps_cap`` bounds each session's steps per second (<= 0: no cap). ``allowed_hosts``
    restricts the HTTP ``Host`` header (a guard against DNS rebinding when serving on
    loopback); ``None`` allows any. ``video_fps`` is the frame rate of downloaded recordings.
    """
    if max_sessions < 1:
        raise PlayworldError(f"--max-sessions must be at least 1, got {max_sessions}")
    num_actions = int(world.num_actions)
    h, w = (int(s) for s in world.frame_size)
    labels = [str(s) for s in getattr(world, "action_labels", None) or []]
    labels += [f"action {i}" for i in range(len(labels), num_actions)]
    samples = [Path(p) for p in world.sample_prompts()]
    executor = ThreadPoolExecutor(max_workers=max_sessions, thread_name_prefix="playworld-step")
    max_record_frames = max(1, record_limit_bytes // (h * w * 3))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="playworld", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.world = world
    app.state.sessions: dict[str, Session | None] = {}
    app.state.uploads: OrderedDict[str, Image.Image] = OrderedDict()
    app.state.max_sessions = max_sessions
    if allowed_hosts:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        for k, v in SECURITY_HEADERS.items():
            response.headers.setdefault(k, v)
        return response

    async def in_worker(fn, *args, **kwargs):
        return await asyncio.get_running_loop().run_in_executor(executor, lambda: fn(*args, **kwargs))

    def prompt_list() -> list[dict]:
        return [
            {"id": f"sample:{i}", "name": p.stem, "url": f"/api/prompts/sample/{i}.png"}
            for i, p in enumerate(samples)
        ]

    def resolve_prompt(prompt_id: str):
        if prompt_id == "blank":
            return Image.new("RGB", (w, h), (32, 34, 44))
        kind, _, key = prompt_id.partition(":")
        if kind == "sample" and key.isdecimal() and len(key) < 10 and int(key) < len(samples):
            return samples[int(key)]
        if kind == "upload" and key in app.state.uploads:
            app.state.uploads.move_to_end(key)
            return app.state.uploads[key]
        valid = ", ".join([p["id"] for p in prompt_list()] + ["upload:<id from POST /api/prompts>"])
        raise PlayworldError(f"unknown prompt '{prompt_id}'; valid prompts: {valid}")

    # ---- HTTP --------------------------------------------------------------------------------
    def static_file(name: str) -> Response:
        if name not in STATIC_FILES:  # a whitelist: no path from the URL ever reaches the disk
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        return FileResponse(STATIC_DIR / name, media_type=STATIC_FILES[name])

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        return static_file("index.html")

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return static_file("favicon.svg")

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        return static_file(name)

    @app.get("/api/info")
    async def info() -> dict:
        return {
            "num_actions": num_actions,
            "action_labels": labels,
            "frame_size": [h, w],
            "fps_cap": fps_cap,
            "prompts": prompt_list(),
            "sessions": len(app.state.sessions),
            "max_sessions": max_sessions,
        }

    @app.get("/api/prompts/sample/{index}.png")
    async def sample_prompt(index: int) -> Response:
        if not 0 <= index < len(samples):
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        return FileResponse(samples[index], media_type="image/png")

    @app.post("/api/prompts")
    async def upload_prompt(request: Request) -> Response:
        declared = request.headers.get("content-length")
        slack = 64 * 1024  # multipart boundaries and headers
        if declared and declared.isdigit() and int(declared) > max_upload_bytes + slack:
            return _too_large(int(declared))
        body = bytearray()
        async for chunk in request.stream():  # counted, so a missing/lying Content-Length can't bypass it
            body += chunk
            if len(body) > max_upload_bytes + slack:
                return _too_large(len(body))
        try:
            data = await _file_bytes(request, bytes(body))
            image = await run_in_threadpool(decode_upload, data, max_upload_bytes)
        except PlayworldError as e:
            return JSONResponse({"error": str(e)}, status_code=400)
        key = secrets.token_urlsafe(12)
        app.state.uploads[key] = image
        while len(app.state.uploads) > MAX_STORED_UPLOADS:
            app.state.uploads.popitem(last=False)
        return JSONResponse({"id": f"upload:{key}", "width": image.width, "height": image.height})

    def _too_large(n: int) -> Response:
        return JSONResponse(
            {
                "error": f"the upload is too large ({n / 2**20:.1f} MB); images up to "
                f"{max_upload_bytes / 2**20:.0f} MB are accepted"
            },
            status_code=413,
        )

    @app.get("/api/sessions/{token}/recording.{fmt}")
    async def recording(token: str, fmt: str) -> Response:
        session = app.state.sessions.get(token)
        if session is None or fmt not in VIDEO_FORMATS:
            return JSONResponse({"error": "no such session or format (gif, mp4)"}, status_code=404)
        frames = list(session.frames)  # a snapshot: the session may keep recording meanwhile
        if not frames:
            return JSONResponse(
                {"error": "nothing recorded yet: press Record, play, then download"}, status_code=409
            )
        scale = max(1, 256 // max(h, w))  # downloads are at least ~256 px, pixels kept crisp
        data = await run_in_threadpool(encode_video, frames, fmt, video_fps, scale)  # not the step workers
        headers = {
            "content-disposition": f'attachment; filename="playworld-{time.strftime("%Y%m%d-%H%M%S")}.{fmt}"'
        }
        return Response(data, media_type=VIDEO_FORMATS[fmt], headers=headers)

    # ---- WebSocket ---------------------------------------------------------------------------
    async def send_frame(ws: WebSocket, session: Session, frame: np.ndarray, step_ms: float) -> None:
        frame = np.ascontiguousarray(frame, dtype=np.uint8)
        session.frame = frame
        if session.recording:
            session.frames.append(frame.copy())
            if len(session.frames) >= max_record_frames:
                session.recording = False
                await ws.send_json(
                    {
                        "type": "recording",
                        "on": False,
                        "frames": len(session.frames),
                        "reason": f"the recording reached its limit of {max_record_frames} frames",
                    }
                )
        fh, fw = frame.shape[:2]
        await ws.send_bytes(FRAME_HEADER.pack(session.seq, fh, fw, step_ms) + frame.tobytes())

    async def do_reset(ws: WebSocket, session: Session, prompt_id: str | None, seed: int | None) -> None:
        prompt_id = prompt_id or session.prompt_id
        prompt = resolve_prompt(prompt_id)
        kwargs = {} if seed is None else {"seed": seed}
        t0 = time.perf_counter()
        frame = await in_worker(session.world.reset, prompt, **kwargs)
        session.prompt_id, session.prompt, session.seq = prompt_id, prompt, 0
        await ws.send_json({"type": "reset", "prompt": prompt_id, "seed": seed})
        await send_frame(ws, session, frame, (time.perf_counter() - t0) * 1000)

    async def on_step(ws: WebSocket, session: Session, msg: dict) -> None:
        action = msg.get("action")
        if isinstance(action, bool) or not isinstance(action, int) or not 0 <= action < num_actions:
            choices = ", ".join(f"{i}={lab}" for i, lab in enumerate(labels))
            raise PlayworldError(
                f"'action' must be an integer in 0..{num_actions - 1} ({choices}); got {action!r}"
            )
        if session.frame is None:
            raise PlayworldError('no prompt yet: send {"type": "reset", "prompt": ...} first')
        if fps_cap > 0:  # the server's own bound, whatever the client sends
            wait = session.last_step + 1.0 / fps_cap - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
        session.last_step = t0 = time.perf_counter()
        frame = await in_worker(session.world.step, action)
        session.seq += 1
        await send_frame(ws, session, frame, (time.perf_counter() - t0) * 1000)

    async def on_reset(ws: WebSocket, session: Session, msg: dict) -> None:
        prompt_id, seed = msg.get("prompt"), msg.get("seed")
        if prompt_id is not None and not isinstance(prompt_id, str):
            raise PlayworldError(f"'prompt' must be a prompt id string such as 'sample:0'; got {prompt_id!r}")
        if seed is not None and (
            isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63
        ):
            raise PlayworldError(f"'seed' must be a non-negative integer or null; got {seed!r}")
        await do_reset(ws, session, prompt_id, seed)

    async def on_record(ws: WebSocket, session: Session, msg: dict) -> None:
        on = msg.get("on")
        if not isinstance(on, bool):
            raise PlayworldError(f"'on' must be true or false; got {on!r}")
        if on:
            session.frames = [] if session.frame is None else [session.frame.copy()]
        session.recording = on
        await ws.send_json({"type": "recording", "on": on, "frames": len(session.frames)})

    async def on_settings(ws: WebSocket, session: Session, msg: dict) -> None:
        steps = msg.get("maskgit_steps")
        if not hasattr(session.world, "maskgit_steps"):
            raise PlayworldError("this world has no MaskGIT decoding steps to set")
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_MASKGIT_STEPS:
            raise PlayworldError(
                f"'maskgit_steps' must be an integer in 1..{MAX_MASKGIT_STEPS}; got {steps!r}"
            )
        session.world.maskgit_steps = steps  # this fork only; safe: the session's steps are sequential
        await ws.send_json({"type": "settings", "maskgit_steps": steps})

    async def on_ping(ws: WebSocket, session: Session, msg: dict) -> None:
        await ws.send_json({"type": "pong"})

    handlers = {
        "step": on_step,
        "reset": on_reset,
        "record": on_record,
        "settings": on_settings,
        "ping": on_ping,
    }

    async def handle(ws: WebSocket, session: Session, message: dict) -> None:
        text = message.get("text")
        if text is None:
            await ws.send_json(
                _error(
                    'binary messages are not accepted; send JSON text such as {"type": "step", "action": 0}'
                )
            )
            return
        if len(text) > MAX_MESSAGE_CHARS:
            await ws.send_json(
                _error(f"message too large ({len(text)} characters; at most {MAX_MESSAGE_CHARS})")
            )
            return
        try:
            msg = json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: deeply nested arrays
            await ws.send_json(_error('messages must be JSON objects such as {"type": "step", "action": 0}'))
            return
        kind = msg.get("type") if isinstance(msg, dict) else None
        handler = handlers.get(kind) if isinstance(kind, str) else None
        if handler is None:
            await ws.send_json(
                _error(
                    f"unknown message type {kind!r}; valid types: {', '.join(handlers)}",
                    kind if isinstance(kind, str) else None,
                )
            )
            return
        try:
            await handler(ws, session, msg)
        except PlayworldError as e:
            await ws.send_json(_error(str(e), kind))
        except (WebSocketDisconnect, asyncio.CancelledError):
            raise
        except Exception as e:  # a model bug must not end the tab's session, let alone the server
            log.exception("error while handling a '%s' message", kind)
            await ws.send_json(
                _error(f"internal error while handling '{kind}': {type(e).__name__}: {e}", kind)
            )

    def origin_ok(ws: WebSocket) -> bool:
        """Refuse cross-site pages (a browser always sends Origin; scripts and tools may not)."""
        origin = ws.headers.get("origin")
        if not origin:
            return True
        return urlsplit(origin).netloc.lower() == ws.headers.get("host", "").lower()

    @app.websocket("/ws")
    async def play(ws: WebSocket) -> None:
        if not origin_ok(ws):
            await ws.close(code=1008, reason="cross-origin WebSocket refused")
            return
        await ws.accept()
        sessions = app.state.sessions
        if len(sessions) >= max_sessions:
            await ws.send_json(
                {
                    "type": "busy",
                    "message": f"The server is busy: all {max_sessions} play sessions are in use. Close another "
                    "playworld tab and reload, or restart the server with a larger --max-sessions.",
                }
            )
            await ws.close(code=1013, reason="busy")
            return
        token = secrets.token_urlsafe(16)
        sessions[token] = None  # hold the slot while the fork is made
        try:
            try:
                session = Session(token, await in_worker(world.fork))
            except Exception as e:
                log.exception("world.fork() failed")
                await ws.send_json(_error(f"could not start a play session: {type(e).__name__}: {e}"))
                await ws.close(code=1011)
                return
            sessions[token] = session
            await ws.send_json(
                {
                    "type": "hello",
                    "session": token,
                    "num_actions": num_actions,
                    "action_labels": labels,
                    "frame_size": [h, w],
                    "fps_cap": fps_cap,
                    "prompts": prompt_list(),
                    "max_upload_bytes": max_upload_bytes,
                    "maskgit_steps": getattr(session.world, "maskgit_steps", None),
                }
            )
            try:
                await do_reset(ws, session, "sample:0" if samples else "blank", None)
            except (WebSocketDisconnect, asyncio.CancelledError):
                raise
            except Exception as e:  # the tab can still pick or upload another prompt
                log.exception("the first reset failed")
                await ws.send_json(_error(f"could not start from the first sample prompt: {e}", "reset"))
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                await handle(ws, session, message)
        except WebSocketDisconnect:
            pass
        except Exception as e:  # e.g. the client vanished mid-send; the session just ends
            log.debug("session %s ended: %r", token[:6], e)
        finally:
            sessions.pop(token, None)  # drops the fork and the recording

    return app
