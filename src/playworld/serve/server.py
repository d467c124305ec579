"""Listening sockets and uvicorn: in the foreground for ``playworld play``, in a thread for tests."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time

from playworld.errors import PlayworldError

# uvicorn's per-message WebSocket limit; the app itself answers anything over 64 KiB with an error
WS_MAX_SIZE = 16 * 2**20


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0 = any free port), or a clear error."""
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise PlayworldError(f"cannot resolve --host '{host}' ({e.strerror}); use e.g. 127.0.0.1") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise PlayworldError(
            f"cannot listen on {host}:{port} ({e.strerror}); is another server using it? "
            f"Pass another --port, e.g. --port {port + 1 if port else 8001}"
        ) from None
    sock.listen(128)
    return sock


def uvicorn_server(app):
    import uvicorn

    config = uvicorn.Config(
        app,
        log_level="warning",
        ws_max_size=WS_MAX_SIZE,
        ws_ping_interval=20,
        ws_ping_timeout=20,
        lifespan="on",
    )
    return uvicorn.Server(config)


class BackgroundServer:
    """Serve ``app`` with uvicorn on a free loopback port in a daemon thread (tests, benchmarks).

    >>> with BackgroundServer(app) as server:
    ...     httpx.get(server.url + "/api/info")
    """

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        self.app, self.host, self.port = app, host, port
        self.server = None
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/ws"

    def __enter__(self) -> BackgroundServer:
        sock = bind_socket(self.host, self.port)
        self.port = sock.getsockname()[1]
        self.server = uvicorn_server(self.app)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the play server did not start")
            time.sleep(0.01)
        self._sock = sock
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self._sock.close()
