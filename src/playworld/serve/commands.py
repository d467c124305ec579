"""``playworld play``: serve a world to the browser, or roll it out headless to a GIF/MP4."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from playworld.errors import PlayworldError
from playworld.utils import get_logger

log = get_logger("play")


def load_world(path: str | Path | None = None):
    """The World in folder ``path`` (default: the bundled world)."""
    try:
        from playworld.world.world import World, bundled_world_path
    except ImportError as e:
        raise PlayworldError(f"the world model code is not available in this install ({e})") from None
    return World.from_pretrained(bundled_world_path() if path is None else Path(path))


def parse_actions(text: str, num_actions: int) -> list[int]:
    """``"0,3,3,1"`` -> ``[0, 3, 3, 1]``, each checked against the world's ``num_actions``."""
    try:
        actions = [int(a) for a in text.replace(" ", "").split(",") if a != ""]
    except ValueError:
        raise PlayworldError(
            f"--actions must be comma-separated integers such as 0,3,3,1; got '{text}'"
        ) from None
    bad = [a for a in actions if not 0 <= a < num_actions]
    if bad or not actions:
        raise PlayworldError(f"--actions must list latent action ids in 0..{num_actions - 1}; got '{text}'")
    return actions


@dataclass
class Play:
    """Play a generated world in your browser (or headless to a GIF/MP4).

    Starts a local web server and prints its URL: open it, pick a prompt image (or upload
    your own), and hold the arrow keys to choose latent actions. With --headless, rolls the
    world out for given (or random) actions and writes a video instead.
    """

    world: Path | None = None
    """world folder written by `playworld train world` (default: the bundled world)"""
    host: str = "127.0.0.1"
    """address to listen on; the default only accepts this machine. 0.0.0.0 opens it to your network (no login!)"""
    port: int = 8000
    """port to listen on (0: any free port)"""
    max_sessions: int = 4
    """at most this many browser tabs play at once (each holds its own world state); more get a 'busy' message"""
    fps_cap: float = 30.0
    """at most this many generated frames per second per tab (0: no cap)"""
    headless: bool = False
    """don't serve: roll the world out and write --out"""
    prompt: Path | None = None
    """headless: the prompt image (default: the world's first sample prompt)"""
    actions: str | None = None
    """headless: latent action ids to play, comma-separated, e.g. 0,3,3,1"""
    random_actions: int | None = None
    """headless: play this many uniformly random latent actions instead of --actions"""
    seed: int | None = None
    """headless: seed for the random actions and the world's sampling (a reproducible rollout)"""
    out: Path = Path("run.gif")
    """headless: output video, .gif or .mp4"""
    video_fps: float = 10.0
    """frame rate of written videos and downloaded recordings (Genie's data is 10 FPS)"""
    scale: int = 4
    """headless: nearest-neighbour upscaling of the written video"""

    def run(self) -> int:
        if self.headless:
            return self.run_headless()
        if self.actions is not None or self.random_actions is not None:
            raise PlayworldError(
                "--actions/--random-actions need --headless (in the browser you choose the actions)"
            )
        return self.serve()

    def run_headless(self) -> int:
        from playworld.viz import VIDEO_FORMATS, save_video

        if self.out.suffix.lower().lstrip(".") not in VIDEO_FORMATS:
            raise PlayworldError(f"--out must end in .gif or .mp4, got '{self.out}'")
        if (self.actions is None) == (self.random_actions is None):
            raise PlayworldError("--headless needs exactly one of --actions 0,3,3,1 or --random-actions N")
        if self.scale < 1:
            raise PlayworldError(f"--scale must be >= 1, got {self.scale}")
        world = load_world(self.world)
        if self.actions is not None:
            actions = parse_actions(self.actions, world.num_actions)
        else:
            if self.random_actions < 1:
                raise PlayworldError(f"--random-actions must be >= 1, got {self.random_actions}")
            rng = np.random.default_rng(self.seed)
            actions = rng.integers(0, world.num_actions, size=self.random_actions).tolist()
        prompt = self.prompt
        if prompt is None:
            samples = world.sample_prompts()
            if not samples:
                raise PlayworldError("this world ships no sample prompts; pass --prompt IMAGE")
            prompt = samples[0]
        elif not prompt.is_file():
            raise PlayworldError(f"--prompt {prompt} does not exist; pass an image file (PNG, JPEG, ...)")
        frames = world.rollout(prompt, actions, seed=self.seed)
        save_video(frames, self.out, fps=self.video_fps, scale=self.scale)
        labels = getattr(world, "action_labels", [])
        used = ", ".join(f"{a}={labels[a]}" if a < len(labels) else str(a) for a in sorted(set(actions)))
        print(f"wrote {self.out} ({len(frames)} frames: the prompt + {len(actions)} steps; actions {used})")
        return 0

    def serve(self) -> int:
        from playworld.serve.app import LOOPBACK_HOSTS, create_app
        from playworld.serve.server import bind_socket, is_loopback, uvicorn_server

        if self.max_sessions < 1:
            raise PlayworldError(f"--max-sessions must be at least 1, got {self.max_sessions}")
        world = load_world(self.world)
        sock = bind_socket(self.host, self.port)
        port = sock.getsockname()[1]
        app = create_app(
            world,
            max_sessions=self.max_sessions,
            fps_cap=self.fps_cap,
            # on loopback, only loopback Host headers: a web page can't DNS-rebind onto the server
            allowed_hosts=LOOPBACK_HOSTS if is_loopback(self.host) else None,
            video_fps=self.video_fps,
        )
        shown = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        shown = f"[{shown}]" if ":" in shown else shown
        print(f"playworld: playing at http://{shown}:{port}  (Ctrl-C to stop)", flush=True)
        if not is_loopback(self.host):
            print("warning: the server is reachable from your network and has no login", flush=True)
        try:
            uvicorn_server(app).run(sockets=[sock])
        finally:
            sock.close()
        return 0
