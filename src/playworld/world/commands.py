"""``playworld world assemble|export``: turn three trained parts into a playable world folder.

``playworld train world`` runs ``assemble`` itself; use these when the parts were trained one
by one (``playworld train tokenizer|lam|dynamics``), or to export a compact copy (bf16
weights, no checkpoints or logs) to share or to bundle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from playworld.data.clips import ClipDataset
from playworld.data.format import load_dataset
from playworld.utils import atomic_write_json, get_logger

log = get_logger("world")


def pick_prompts(ds, num: int, seed: int = 0) -> list[np.ndarray]:
    """Sample prompt frames from the test episodes, cycling over games/sources so each appears."""
    test_eps = ds.split_episodes("test", seed=seed) or list(range(ds.num_episodes))
    by_source: dict[str, list[int]] = {}
    for e in test_eps:
        info = ds.episode(e)["info"]
        by_source.setdefault(str(info.get("game", info.get("source", ""))), []).append(e)
    chosen: list[int] = []
    while len(chosen) < min(num, len(test_eps)):
        for eps in by_source.values():
            if eps and len(chosen) < num:
                chosen.append(eps.pop(0))
    rng = np.random.default_rng(seed)
    prompts = []
    for e in chosen:
        frames = ds.episode_frames(e)
        prompts.append(np.array(frames[int(rng.integers(0, max(1, len(frames) // 2)))]))
    return prompts


def assemble_world(
    out: Path, data: Path, maskgit_steps: int = 4, seed: int = 0, num_prompts: int = 8, temperature: float = 0.5
) -> Path:
    """Write ``world.json`` (with automatic action labels) and sample prompts into ``out``.

    ``out`` holds ``tokenizer/``, ``lam/`` and ``dynamics/``. Labels: the motion each latent
    action causes across the prompts (:func:`~playworld.world.labels.motion_labels`), refined
    with the true action it co-occurs with most where the data has true actions.
    """
    from playworld.viz import save_png
    from playworld.world.dynamics import DynamicsModel
    from playworld.world.labels import combine_labels, labels_from_counts, latent_true_counts, motion_labels
    from playworld.world.latent_actions import LatentActionModel
    from playworld.world.tokenizer import VideoTokenizer
    from playworld.world.world import WORLD_FILE, WORLD_FORMAT, WORLD_VERSION, World

    out = Path(out)
    world = World(
        VideoTokenizer.from_pretrained(out / "tokenizer"),
        LatentActionModel.from_pretrained(out / "lam"),
        DynamicsModel.from_pretrained(out / "dynamics"),
        maskgit_steps=maskgit_steps,
        temperature=temperature,
    )
    ds = load_dataset(data)
    prompts = pick_prompts(ds, num_prompts, seed)
    true_labels = None
    if ds.has_actions:
        clips = ClipDataset(ds, 6, split="train", with_actions=True, seed=seed)
        got = latent_true_counts(world.lam, clips)
        if got is not None:
            true_labels = labels_from_counts(*got)
    motion, shifts = motion_labels(world, prompts[:4], seed=seed)
    labels = combine_labels(motion, true_labels)
    for i, p in enumerate(prompts):
        save_png(p, out / "prompts" / f"prompt-{i:02d}.png")
    meta = {
        "format": WORLD_FORMAT,
        "version": WORLD_VERSION,
        "frame_size": list(world.frame_size),
        "num_actions": world.num_actions,
        "action_labels": labels,
        "action_motion_pixels": [[round(float(v), 2) for v in s] for s in shifts],
        "maskgit_steps": maskgit_steps,
        "temperature": world.temperature,
        "trained_on": {"data": str(data), "source": ds.meta.get("source"),
                       "games": sorted({str(ds.episode(e)["info"].get("game", "")) for e in range(ds.num_episodes)})},
    }
    atomic_write_json(out / WORLD_FILE, meta)
    log.info("world assembled in %s; action labels: %s", out, labels)
    return out


@dataclass
class AssembleWorld:
    """Make a world folder playable: write world.json (automatic action labels) and sample prompts."""

    world: Path
    """Folder holding tokenizer/, lam/ and dynamics/ (each a trained model folder)."""
    data: Path
    """The dataset the parts were trained on (prompts come from its test episodes)."""
    maskgit_steps: int = 4
    """MaskGIT decoding steps at play time (Genie: 25; fewer is faster, see benchmarks/play_fps.py)."""
    temperature: float = 0.5
    """MaskGIT sampling temperature at play time (Genie: 2 with 25 steps; small models with few
    steps keep sharper, steadier frames at 0.5, see docs/genie.md)."""
    num_prompts: int = 8
    """How many sample prompt frames to include."""
    seed: int = 0
    """Seed for the prompt choice and the labelling rollouts."""

    def run(self) -> int:
        assemble_world(self.world, self.data, self.maskgit_steps, self.seed, self.num_prompts, self.temperature)
        print(f"assembled {self.world}: play it with `playworld play --world {self.world}`")
        return 0


@dataclass
class ExportWorld:
    """Write a compact, shareable copy of a world: weights (optionally bf16), world.json and prompts only."""

    world: Path
    """World folder to export (from `playworld train world` or `playworld world assemble`)."""
    out: Path
    """Destination folder (replaced atomically)."""
    dtype: Literal["bf16", "fp32"] = "bf16"
    """Storage precision of the weights (bf16 halves the size; play computes in fp32 either way)."""

    def run(self) -> int:
        from playworld.world.world import World

        w = World.from_pretrained(self.world)
        w.save_pretrained(self.out, dtype=torch.bfloat16 if self.dtype == "bf16" else None)
        size = sum(f.stat().st_size for f in self.out.rglob("*") if f.is_file())
        print(f"exported {self.world} -> {self.out} ({size / 1e6:.1f} MB)")
        return 0
