"""Look at a dataset: ``playworld data info DIR`` (counts, sources, actions) and
``playworld data preview DIR --out preview.png|.gif`` (a grid of clips from different episodes).

Both accept anything :func:`~playworld.data.format.load_dataset` opens, including a LeRobot
folder when ``playworld.data.lerobot`` is installed.
"""

from __future__ import annotations

import io
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import tyro
from einops import rearrange, repeat

from playworld.data.format import VideoDataset, load_dataset
from playworld.errors import PlayworldError
from playworld.utils import atomic_write_bytes

GUTTER = 1  # pixels (before scaling) between clips and frames in a preview
BACKGROUND = 32  # gutter grey: dark, so it never looks like part of a game frame


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def _duration(seconds: float) -> str:
    h, rest = divmod(int(round(seconds)), 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}"


def dataset_summary(ds: VideoDataset) -> dict:
    """The numbers ``data info`` prints, as a dict (handy in notebooks and tests)."""
    lengths = ds.episode_lengths
    by_source: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for e in ds.episodes:
        by_source[e.get("source", ds.source)][0] += 1
        by_source[e.get("source", ds.source)][1] += int(e["length"])
    # Whole-dataset arrays exist in the playworld format; other readers (LeRobot) may lack them.
    rewards, actions = getattr(ds, "rewards", None), getattr(ds, "actions", None)
    summary = {
        "root": str(ds.root),
        "source": ds.source,
        "format_version": ds.meta.get("format_version", ds.meta.get("codebase_version")),
        "num_frames": ds.num_frames,
        "num_episodes": ds.num_episodes,
        "frame_size": ds.frame_size,
        "fps": ds.fps,
        "duration_s": ds.num_frames / ds.fps,
        "episode_length": (int(lengths.min()), float(np.median(lengths)), int(lengths.max())),
        "disk_bytes": sum(f.stat().st_size for f in Path(ds.root).rglob("*") if f.is_file()),
        "by_source": {k: tuple(v) for k, v in by_source.items()},
        "splits": {s: ds.split_episodes(s) for s in ("train", "val", "test")},
        "rewards": None,
        "actions": None,
        "frame_arrays": list(getattr(ds, "frame_array_names", [])),
        "action_effects": None,
    }
    if rewards is not None:
        summary["rewards"] = (float(np.sum(rewards, dtype=np.float64)), int(np.count_nonzero(rewards)))
    if ds.has_actions and actions is not None:
        actions = np.asarray(actions)
        if actions.ndim == 1:
            n = max(int(actions.max()) + 1, len(ds.action_names or []))
            summary["actions"] = {"kind": "discrete", "counts": np.bincount(actions, minlength=n).tolist()}
        else:
            stats = {k: getattr(actions, k)(0).tolist() for k in ("mean", "std", "min", "max")}
            summary["actions"] = {"kind": "continuous", **stats}
    if {"action_effect", "equivalent_actions"} <= set(summary["frame_arrays"]) and ds.action_names:
        effect = np.asarray(ds.frame_array("action_effect"), dtype=bool)
        bits = (np.asarray(ds.frame_array("equivalent_actions"))[:, None] >> np.arange(len(ds.action_names))) & 1
        summary["action_effects"] = {
            "effect_share": float(effect.mean()),
            "mean_equivalent_on_effect": float(bits[effect].sum(1).mean()) if effect.any() else float("nan"),
        }
    return summary


@dataclass(kw_only=True)
class DataInfo:
    """Print what is in a dataset: counts, sizes, fps, episodes per game/source, actions."""

    path: Annotated[Path, tyro.conf.Positional]
    """The dataset folder."""
    max_sources: int = 20
    """Show at most this many sources (games or files), the largest first."""

    def run(self) -> int:
        from rich.console import Console
        from rich.table import Table

        ds = load_dataset(self.path)
        s = dataset_summary(ds)
        console = Console()

        overview = Table(title=f"dataset {s['root']}", show_header=False)
        overview.add_column(style="bold")
        overview.add_column()
        lo, med, hi = s["episode_length"]
        rows = [
            ("source", s["source"]),
            ("format version", str(s["format_version"])),
            ("frames", f"{s['num_frames']:,}"),
            ("episodes", f"{s['num_episodes']:,}"),
            ("episode length", f"min {lo}, median {med:g}, max {hi}"),
            ("frame size", f"{s['frame_size'][0]}x{s['frame_size'][1]} (HxW) RGB"),
            ("fps", f"{s['fps']:g}"),
            ("duration", _duration(s["duration_s"])),
            ("on disk", _human_bytes(s["disk_bytes"])),
            ("splits (episodes)", ", ".join(f"{k} {len(v)}" for k, v in s["splits"].items())),
        ]
        if s["rewards"] is not None:
            total, nonzero = s["rewards"]
            rows.append(("rewards", f"sum {total:g} over {nonzero:,} frames with a nonzero reward"))
        dtype = ds.meta.get("action_dtype", "float32")
        shape = ds.meta.get("action_shape")
        shape = tuple(shape) if shape is not None else (len(ds.action_names or []),)
        rows.append(("actions", f"{dtype} {shape}" if ds.has_actions else "none"))
        if s["frame_arrays"]:
            rows.append(("per-frame arrays", ", ".join(s["frame_arrays"])))
        if s["action_effects"] is not None:
            fx = s["action_effects"]
            rows.append(("action effects", f"{100 * fx['effect_share']:.1f}% of actions change the next frame vs NOOP; "
                                           f"those have {fx['mean_equivalent_on_effect']:.1f} equivalent actions on average"))
        for k, v in rows:
            overview.add_row(k, v)
        console.print(overview)

        sources = Table(title="episodes by source")
        for col in ("source", "episodes", "frames", "share"):
            sources.add_column(col, justify="left" if col == "source" else "right")
        ranked = sorted(s["by_source"].items(), key=lambda kv: -kv[1][1])
        for name, (n_ep, n_fr) in ranked[: self.max_sources]:
            sources.add_row(name, f"{n_ep:,}", f"{n_fr:,}", f"{100 * n_fr / s['num_frames']:.1f}%")
        if len(ranked) > self.max_sources:
            sources.add_row(f"... {len(ranked) - self.max_sources} more", "", "", "")
        console.print(sources)

        a = s["actions"]
        names = ds.action_names or []
        if a and a["kind"] == "discrete":
            hist = Table(title="action histogram")
            for col in ("id", "action", "frames", "share", ""):
                hist.add_column(col, justify="right" if col in ("id", "frames", "share") else "left")
            counts = np.array(a["counts"])
            for i, c in enumerate(counts):
                name = names[i] if i < len(names) else "?"
                bar = "█" * int(round(30 * c / max(1, counts.max())))
                hist.add_row(str(i), name, f"{c:,}", f"{100 * c / counts.sum():.1f}%", bar)
            console.print(hist)
        elif a:
            stats = Table(title="continuous actions")
            for col in ("dim", "name", "mean", "std", "min", "max"):
                stats.add_column(col, justify="left" if col == "name" else "right")
            for d in range(len(a["mean"])):
                name = names[d] if d < len(names) else ""
                stats.add_row(str(d), name, *(f"{a[k][d]:.3g}" for k in ("mean", "std", "min", "max")))
            console.print(stats)
        return 0


def sample_clips(
    ds: VideoDataset, clips: int, clip_len: int, frame_skip: int = 1, seed: int = 0
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """``clips`` clips spread evenly over the episodes (so every game/file of a big dataset
    shows up), each from a random start: uint8 (R, T, H, W, 3) and their (episode, start).
    Episodes shorter than a clip are held on their last frame."""
    if clips < 1 or clip_len < 1 or frame_skip < 1:
        raise PlayworldError(
            f"--clips, --clip-len and --frame-skip must be >= 1, got {clips}, {clip_len}, {frame_skip}."
        )
    rng = np.random.default_rng(seed)
    span = (clip_len - 1) * frame_skip + 1
    # Take turns between sources (games, files) so each shows up, however many episodes it
    # has; within a source, spread the picks evenly over its episodes.
    by_source: dict[str, list[int]] = defaultdict(list)
    for i, e in enumerate(ds.episodes):
        by_source[e.get("source", ds.source)].append(i)
    groups = list(by_source.values())
    wanted = [len(range(k, clips, len(groups))) for k in range(len(groups))]
    picks = [
        [g[j] for j in np.linspace(0, len(g) - 1, n).round().astype(int)]
        for g, n in zip(groups, wanted, strict=True)
    ]
    episodes = [picks[k % len(groups)][k // len(groups)] for k in range(clips)]
    out, where = [], []
    for e in episodes:
        frames = ds.episode_frames(int(e))
        start = int(rng.integers(0, len(frames) - span + 1)) if len(frames) >= span else 0
        idx = np.minimum(np.arange(clip_len) * frame_skip + start, len(frames) - 1)
        out.append(np.asarray(frames[idx]))
        where.append((int(e), start))
    return np.stack(out), where


def grid_png(clips: np.ndarray, scale: int = 1) -> np.ndarray:
    """(R, T, H, W, 3) clips -> one (H', W', 3) image: rows are clips, columns are time."""
    g = GUTTER
    cells = np.pad(clips, ((0, 0), (0, 0), (0, g), (0, g), (0, 0)), constant_values=BACKGROUND)
    img = rearrange(cells, "r t h w c -> (r h) (t w) c")
    img = np.pad(img, ((g, 0), (g, 0), (0, 0)), constant_values=BACKGROUND)
    return repeat(img, "h w c -> (h s1) (w s2) c", s1=scale, s2=scale)


def grid_gif_frames(clips: np.ndarray, scale: int = 1) -> np.ndarray:
    """(R, T, H, W, 3) clips -> (T, H', W', 3) frames of an animated, near-square grid of clips."""
    r = len(clips)
    cols = math.ceil(math.sqrt(r))
    rows = math.ceil(r / cols)
    g = GUTTER
    cells = np.pad(clips, ((0, rows * cols - r), (0, 0), (0, g), (0, g), (0, 0)), constant_values=BACKGROUND)
    video = rearrange(cells, "(gr gc) t h w c -> t (gr h) (gc w) c", gr=rows, gc=cols)
    video = np.pad(video, ((0, 0), (g, 0), (g, 0), (0, 0)), constant_values=BACKGROUND)
    return repeat(video, "t h w c -> t (h s1) (w s2) c", s1=scale, s2=scale)


@dataclass(kw_only=True)
class DataPreview:
    """Save a grid of clips from different episodes as a PNG (rows = clips, columns = time) or an animated GIF."""

    path: Annotated[Path, tyro.conf.Positional]
    """The dataset folder."""
    out: Path = Path("preview.png")
    """Image to write: .png (frames laid out in a grid) or .gif (animated grid of clips)."""
    clips: int = 8
    """How many clips (taken from episodes spread over the whole dataset)."""
    clip_len: int = 16
    """Frames per clip."""
    frame_skip: int = 1
    """Show every n-th frame (larger = more motion per column)."""
    scale: int = 2
    """Enlarge every pixel this many times (nearest neighbour, keeps pixel art sharp)."""
    seed: int = 0
    """Seed for where in each episode a clip starts."""

    def run(self) -> int:
        from PIL import Image

        kind = self.out.suffix.lower()
        if kind not in (".png", ".gif"):
            raise PlayworldError(f"--out must end in .png or .gif, got '{self.out.name}'.")
        if self.scale < 1:
            raise PlayworldError(f"--scale must be >= 1, got {self.scale}.")
        ds = load_dataset(self.path)
        clips, where = sample_clips(ds, self.clips, self.clip_len, self.frame_skip, self.seed)
        buf = io.BytesIO()
        if kind == ".png":
            Image.fromarray(grid_png(clips, self.scale)).save(buf, format="PNG")
        else:
            frames = [Image.fromarray(f) for f in grid_gif_frames(clips, self.scale)]
            ms = int(round(1000 * self.frame_skip / ds.fps))
            frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=ms, loop=0)
        atomic_write_bytes(self.out, buf.getvalue())
        eps = sorted({e for e, _ in where})
        print(f"wrote {self.out}: {len(clips)} clips x {self.clip_len} frames from episodes {eps}")
        return 0
