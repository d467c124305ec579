"""``playworld train tokenizer|lam|dynamics|world``: the Genie parts, each through the one loop.

Each command reads a playworld dataset (``--data``), builds the model from a named preset with
the dataset's frame size, and trains it with :class:`~playworld.train.loop.Trainer`. The
dynamics model learns on tokens and latent actions produced on the fly by a frozen tokenizer
and latent action model: Genie never sees a true action.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import torch
import tyro

from playworld.data.clips import ClipDataset
from playworld.data.format import load_dataset
from playworld.errors import PlayworldError
from playworld.train.loop import TrainConfig, Trainer, list_checkpoints, resolve_device
from playworld.utils import atomic_write_json, get_logger, seed_everything

log = get_logger("train")

Preset = Literal["tiny", "small", "base"]
TrainSettings = Annotated[TrainConfig, tyro.conf.OmitArgPrefixes]


def _frames_to_video(batch: dict) -> torch.Tensor:
    # uint8 (B, T, H, W, 3) -> float (B, T, 3, H, W) in [0, 1]
    return batch["frames"].permute(0, 1, 4, 2, 3).float().div_(255.0)


def _datasets(data: Path, clip_len: int, frame_skip: int, seed: int,
              camera: str | None = None) -> tuple[ClipDataset, ClipDataset | None]:
    ds = load_dataset(data, camera)
    train = ClipDataset(ds, clip_len, frame_skip=frame_skip, split="train", seed=seed)
    span = (clip_len - 1) * frame_skip + 1
    val_eps = ds.split_episodes("val", seed=seed)
    if not val_eps or max(ds.episode_lengths[val_eps]) < span:
        log.warning("no validation clips in %s (too few or too short episodes); validation is skipped", data)
        return train, None
    return train, ClipDataset(ds, clip_len, frame_skip=frame_skip, split="val", seed=seed)


def _finished(out: Path, steps: int) -> bool:
    summary = out / "train_summary.json"
    return summary.exists() and json.loads(summary.read_text()).get("step", 0) >= steps and (out / "model.safetensors").exists()


@dataclass
class _PartCommand:
    data: Path
    """Dataset folder (from `playworld record` or `playworld ingest`)."""
    out: Path
    """Output folder: the trained model (config.json + model.safetensors), checkpoints, TensorBoard logs, samples."""
    preset: Preset = "tiny"
    """Model size: tiny (CPU, minutes), small, base (GPU)."""
    clip_len: int = 4
    """Frames per training clip."""
    frame_skip: int = 1
    """Take every N-th frame (raise it for slow-moving video)."""
    resume: bool = False
    """Continue the run in --out from its latest valid checkpoint."""
    camera: str | None = None
    """Which camera of a LeRobot dataset with several (e.g. wrist); default: its first (front for the tabletop)."""


@dataclass
class TrainTokenizer(_PartCommand):
    """Train the video tokenizer (ST-ViViT VQ-VAE): frames -> discrete tokens -> frames."""

    spatial_only: bool = False
    """Train the spatial-only ViT ablation instead of the ST-ViViT."""
    patch_size: int | None = None
    """Pixels per token side (default: the preset's, 4 as in Genie; 8 is 4x cheaper, for CPU play)."""
    train: TrainSettings = field(default_factory=lambda: TrainConfig(steps=3000, batch_size=8, lr=1e-3, warmup_steps=200))
    """Optimisation settings."""

    def build(self, ds) -> torch.nn.Module:
        from playworld.world.tokenizer import VideoTokenizer, VideoTokenizerConfig

        extra = {"patch_size": self.patch_size} if self.patch_size else {}
        cfg = VideoTokenizerConfig.preset(self.preset, image_size=ds.frame_size, spatial_only=self.spatial_only, **extra)
        return VideoTokenizer(cfg)

    def run(self) -> Path:
        seed_everything(self.train.seed)
        train, val = _datasets(self.data, self.clip_len, self.frame_skip, self.train.seed, self.camera)
        model = self.build(train.dataset)
        log.info("tokenizer %s: %.2fM parameters", self.preset, model.num_parameters() / 1e6)
        trainer = Trainer(
            model, self.train, self.out, train, batch_fn=lambda b: (_frames_to_video(b),), val_data=val,
            sample_fn=lambda m, b: {"reconstruction": m.sample_images(_frames_to_video(b))}, name="tokenizer",
        )
        return trainer.fit(resume=self.resume)


@dataclass
class TrainLAM(_PartCommand):
    """Train the latent action model: infers one of |A| discrete actions per frame transition, unsupervised."""

    clip_len: int = 6
    """Frames per training clip."""
    num_actions: int = 8
    """|A|: latent actions (Genie: 8)."""
    encoder_input: Literal["frames", "diff", "frames+diff"] = "frames"
    """What the encoder reads: the frames (Genie), their differences x_t - x_{t-1}, or both; on differences
    the codes follow how things moved rather than where they are (docs/bridge.md, Breakout)."""
    encoder_positions: bool = True
    """Spatial position embedding in the encoder (Genie); --no-encoder-positions: latents say what changed,
    not where."""
    change_weight: float = 0.0
    """Reconstruction weight 1 + W on the pixels that change between frames t and t+1 (0: plain mean)."""
    train: TrainSettings = field(default_factory=lambda: TrainConfig(steps=2500, batch_size=8, lr=6e-4, warmup_steps=200))
    """Optimisation settings."""

    def run(self) -> Path:
        from playworld.world.latent_actions import LatentActionConfig, LatentActionModel

        seed_everything(self.train.seed)
        train, val = _datasets(self.data, self.clip_len, self.frame_skip, self.train.seed, self.camera)
        model = LatentActionModel(
            LatentActionConfig.preset(self.preset, image_size=train.dataset.frame_size, num_actions=self.num_actions,
                                      encoder_input=self.encoder_input, encoder_positions=self.encoder_positions,
                                      change_weight=self.change_weight)
        )
        log.info("latent action model %s: %.2fM parameters", self.preset, model.num_parameters() / 1e6)
        trainer = Trainer(
            model, self.train, self.out, train, batch_fn=lambda b: (_frames_to_video(b),), val_data=val,
            sample_fn=lambda m, b: {"next_frame": m.sample_images(_frames_to_video(b))}, name="lam",
        )
        return trainer.fit(resume=self.resume)


def _dynamics_batch_fn(tokenizer, lam):
    @torch.no_grad()
    def batch_fn(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        video = _frames_to_video(batch)
        return tokenizer.encode(video), lam.infer_actions(video)  # (B, T, h, w), (B, T-1)

    return batch_fn


def _dynamics_samples(tokenizer, lam, prompt_len: int = 1, horizon: int = 6):
    """Sample pictures: real vs generated (inferred actions), and every latent action from one prompt."""
    from playworld.world.world import World

    @torch.no_grad()
    def sample_fn(model, batch: dict) -> dict[str, torch.Tensor]:
        world = World(tokenizer, lam, model, maskgit_steps=8)  # samples: cheap decoding is enough
        video = _frames_to_video(batch)[:2, : prompt_len + horizon]  # (2, T, 3, H, W)
        g = torch.Generator(device=video.device).manual_seed(0)
        inferred = lam.infer_actions(video)
        gen = world.generate(video[:, :prompt_len], inferred, generator=g)  # (2, horizon, 3, H, W)
        real_vs_gen = torch.cat([video[:, prompt_len:], gen], dim=0)  # rows: real clips, then generated
        A = world.num_actions
        prompt = video[:1, :1].expand(A, -1, -1, -1, -1)
        each = torch.arange(A, device=video.device)[:, None].expand(A, horizon)
        per_action = world.generate(prompt, each, generator=g)  # (A, horizon, 3, H, W)
        return {"real_vs_generated": real_vs_gen, "each_latent_action": per_action}

    return sample_fn


@dataclass
class TrainDynamics(_PartCommand):
    """Train the MaskGIT dynamics model on frozen tokenizer tokens and latent actions."""

    tokenizer: Path = Path("runs/world/tokenizer")
    """Trained tokenizer folder."""
    lam: Path = Path("runs/world/lam")
    """Trained latent action model folder."""
    clip_len: int = 8
    """Frames per training clip (Genie: 16)."""
    action_conditioning: Literal["additive", "token"] = "additive"
    """How latent actions enter: added to every token (Genie) or as a prepended token per frame."""
    train: TrainSettings = field(default_factory=lambda: TrainConfig(steps=3000, batch_size=8, lr=6e-4, warmup_steps=200))
    """Optimisation settings."""

    def run(self) -> Path:
        from playworld.world.dynamics import DynamicsConfig, DynamicsModel
        from playworld.world.latent_actions import LatentActionModel
        from playworld.world.tokenizer import VideoTokenizer

        seed_everything(self.train.seed)
        device = str(resolve_device(self.train.device))  # under torchrun: this rank's GPU, not cuda:0
        tok = VideoTokenizer.from_pretrained(self.tokenizer, map_location=device).eval().requires_grad_(False)
        lam = LatentActionModel.from_pretrained(self.lam, map_location=device).eval().requires_grad_(False)
        train, val = _datasets(self.data, self.clip_len, self.frame_skip, self.train.seed, self.camera)
        if tuple(tok.config.image_size) != tuple(train.dataset.frame_size):
            raise PlayworldError(
                f"the tokenizer was trained on {tuple(tok.config.image_size)} frames but {self.data} has "
                f"{tuple(train.dataset.frame_size)}; use data of the same frame size."
            )
        model = DynamicsModel(
            DynamicsConfig.preset(
                self.preset,
                num_codes=tok.config.num_codes,
                token_grid=tok.config.token_grid,
                num_actions=lam.num_actions,
                max_frames=max(self.clip_len, 2) if self.preset == "tiny" else 16,
                action_conditioning=self.action_conditioning,
            )
        )
        log.info("dynamics %s: %.2fM parameters", self.preset, model.num_parameters() / 1e6)
        trainer = Trainer(
            model, self.train, self.out, train, batch_fn=_dynamics_batch_fn(tok, lam), val_data=val,
            sample_fn=_dynamics_samples(tok, lam), name="dynamics",
        )
        return trainer.fit(resume=self.resume)


@dataclass
class TrainWorld:
    """Train a whole world (tokenizer, then latent action model, then dynamics) and assemble it for play."""

    data: Path
    """Dataset folder (from `playworld record` or `playworld ingest`)."""
    out: Path = Path("runs/world")
    """World folder: tokenizer/, lam/, dynamics/, world.json, prompts/ (playable with `playworld play --world`)."""
    preset: Preset = "tiny"
    """Model size for all three parts: tiny (CPU, minutes), small, base (GPU)."""
    tokenizer_steps: int = 900
    """Optimiser steps for the tokenizer (the defaults fit the `tiny` preset into < 20 min on a 2-core CPU; the bundled world used 900 / 1000 / 2200, and the tokenizer reaches 32 dB PSNR at 2500)."""
    lam_steps: int = 500
    """Optimiser steps for the latent action model."""
    dynamics_steps: int = 600
    """Optimiser steps for the dynamics model."""
    batch_size: int = 16
    """Clips per step for every part."""
    patch_size: int | None = 8
    """Tokenizer patch (Genie: 4; 8 gives 64 tokens per 64x64 frame, 4x cheaper to train and play on a CPU). None: the preset's."""
    num_actions: int = 8
    """|A|: latent actions (Genie: 8)."""
    frame_skip: int = 1
    """Take every N-th frame (raise it for slow-moving video)."""
    maskgit_steps: int = 4
    """MaskGIT decoding steps at play time (Genie: 25; fewer is faster, see benchmarks/play_fps.py)."""
    seed: int = 0
    """Seed for everything."""
    precision: Literal["bf16", "fp32"] = "bf16"
    """bf16 autocast or fp32."""
    resume: bool = False
    """Continue an interrupted world training: finished parts are kept, the unfinished one resumes."""

    def _cfg(self, steps: int, lr: float) -> TrainConfig:
        return TrainConfig(steps=steps, batch_size=self.batch_size, lr=lr, warmup_steps=min(100, steps // 10),
                           seed=self.seed, precision=self.precision)

    def run(self) -> Path:
        if self.out.exists() and any(self.out.iterdir()) and not self.resume:
            raise PlayworldError(f"{self.out} is not empty; pass --resume to continue it or choose another --out.")
        parts = [
            # Clip lengths and learning rates of the bundled world's recipe (README).
            ("tokenizer", TrainTokenizer(self.data, self.out / "tokenizer", self.preset, clip_len=2, frame_skip=self.frame_skip,
                                         patch_size=self.patch_size, train=self._cfg(self.tokenizer_steps, 1e-3))),
            ("lam", TrainLAM(self.data, self.out / "lam", self.preset, clip_len=4, frame_skip=self.frame_skip,
                             num_actions=self.num_actions, train=self._cfg(self.lam_steps, 1e-3))),
            ("dynamics", TrainDynamics(self.data, self.out / "dynamics", self.preset, clip_len=6, frame_skip=self.frame_skip,
                                       tokenizer=self.out / "tokenizer", lam=self.out / "lam",
                                       train=self._cfg(self.dynamics_steps, 1e-3))),
        ]
        timings_file = self.out / "train_world.json"  # wall-clock of each part, kept across resumes
        timings = json.loads(timings_file.read_text()) if self.resume and timings_file.exists() else {}
        rank0 = int(os.environ.get("RANK", 0)) == 0  # under torchrun, rank 0 alone writes the world
        for name, cmd in parts:
            if _finished(cmd.out, cmd.train.steps):
                log.info("%s already trained in %s; skipping", name, cmd.out)
                continue
            cmd.resume = self.resume or bool(list_checkpoints(cmd.out))
            log.info("training %s -> %s", name, cmd.out)
            t0 = time.perf_counter()
            cmd.run()
            timings[f"{name}_s"] = round(timings.get(f"{name}_s", 0.0) + time.perf_counter() - t0, 1)
            if rank0:
                atomic_write_json(timings_file, timings)
        if not rank0:
            return self.out
        from playworld.world.commands import assemble_world

        t0 = time.perf_counter()
        world = assemble_world(self.out, self.data, maskgit_steps=self.maskgit_steps, seed=self.seed)
        timings["assemble_s"] = round(time.perf_counter() - t0, 1)
        atomic_write_json(timings_file, timings)
        log.info("wall-clock per part (s): %s", timings)
        return world
