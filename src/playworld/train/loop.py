"""The one training loop for every playworld model.

Written out top to bottom (CleanRL-style), shared by the tokenizer, the latent action model,
the dynamics model and the policies. A model plugs in through one method::

    loss, logs = model.training_step(*batch_fn(batch))

What the loop gives every model: AdamW with linear warmup + cosine decay, bf16 autocast (CPU
and CUDA), gradient clipping, NaN-step skipping, a progress bar with loss and throughput,
TensorBoard scalars and sample images, periodic validation, and atomic checkpoints with
exact resume (model, optimiser, step, RNG states and the data position), each checksummed so
a corrupt checkpoint is detected and the previous one used. DDP when launched by torchrun.

Output folder layout (``out``)::

    out/config.json, out/model.safetensors   the final model (from_pretrained(out) loads it)
    out/train_config.json                    the TrainConfig used
    out/checkpoints/step-00000500/           model + optimizer.safetensors + trainer_state.json
    out/tb/                                  TensorBoard event files
    out/samples/step-00000500-*.png|gif      sample pictures
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import random
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from playworld.errors import PlayworldError
from playworld.nn.pretrained import PretrainedModel
from playworld.utils import atomic_dir, atomic_write_json, get_logger

log = get_logger("train")


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping settings shared by every model's training."""

    steps: int = 2000
    """Total optimiser steps."""
    batch_size: int = 8
    """Global batch size (clips per step, summed over DDP ranks)."""
    lr: float = 3e-4
    """Peak learning rate (AdamW)."""
    weight_decay: float = 0.05
    """AdamW weight decay (applied to matrices only, not to norms, biases or embeddings)."""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW betas."""
    warmup_steps: int = 100
    """Linear warm-up steps before the cosine decay."""
    min_lr_ratio: float = 0.1
    """The cosine decays to lr * min_lr_ratio at the last step."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value (0 disables)."""
    precision: Literal["bf16", "fp32"] = "bf16"
    """bf16 autocast (about 1.5x faster on CPU, much more on GPU) or plain fp32."""
    log_every: int = 10
    """Write scalars to TensorBoard every N steps."""
    eval_every: int = 250
    """Run validation every N steps (0 disables)."""
    eval_batches: int = 4
    """Batches per validation."""
    sample_every: int = 500
    """Write sample pictures every N steps (0 disables)."""
    ckpt_every: int = 250
    """Write a resumable checkpoint every N steps."""
    keep_last: int = 2
    """How many checkpoints to keep."""
    seed: int = 0
    """Seed for model init, data order and every random choice in training."""
    num_workers: int = 1
    """DataLoader worker processes."""
    max_nan_skips: int = 5
    """Consecutive non-finite losses tolerated (each step skipped) before training stops."""
    device: str = "auto"
    """'auto' (cuda if available), 'cpu' or 'cuda'."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "log_every", "ckpt_every", "keep_last"):
            if getattr(self, name) < 1:
                raise PlayworldError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}.")
        if self.lr <= 0:
            raise PlayworldError(f"--lr must be > 0, got {self.lr}.")
        if not 0 <= self.min_lr_ratio <= 1:
            raise PlayworldError(f"--min-lr-ratio must be in [0, 1], got {self.min_lr_ratio}.")
        if self.warmup_steps < 0:
            raise PlayworldError("--warmup-steps must be >= 0.")


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up to ``cfg.lr``, then cosine decay to ``cfg.lr * cfg.min_lr_ratio``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


# ---------------------------------------------------------------------------------------------
# Data order: a resumable, rank-aware infinite sampler
# ---------------------------------------------------------------------------------------------


class ResumableSampler(Sampler[int]):
    """Infinite shuffled stream of dataset indices that can restart at any sample.

    Epoch ``e`` is ``randperm(n)`` seeded by ``(seed, e)``; rank ``r`` of ``world`` takes every
    ``world``-th index of it (a distributed sampler). ``start`` is the number of samples this
    rank has already consumed, so resuming is just ``ResumableSampler(..., start=consumed)``.
    """

    def __init__(self, n: int, seed: int, rank: int = 0, world: int = 1, start: int = 0):
        if n < 1:
            raise PlayworldError("the training dataset is empty: record or ingest more video.")
        self.n, self.seed, self.rank, self.world, self.start = n, seed, rank, world, start

    def _epoch(self, e: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + e)
        perm = torch.randperm(self.n, generator=g)
        per_rank = self.n // self.world if self.n >= self.world else 1
        return perm.repeat(self.world)[self.rank :: self.world][:per_rank]

    def __iter__(self) -> Iterator[int]:
        per_epoch = len(self._epoch(0))
        e, i = divmod(self.start, per_epoch)
        while True:
            yield from self._epoch(e)[i:].tolist()
            e, i = e + 1, 0

    def __len__(self) -> int:  # infinite in practice; DataLoader only needs a number
        return 2**62


# ---------------------------------------------------------------------------------------------
# Checkpoints: model + optimiser (safetensors, no pickle) + JSON state, checksummed
# ---------------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _optimizer_to_flat(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"state.{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_from_flat(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        _, pid, k = key.split(".", 2)
        state.setdefault(int(pid), {})[k] = v
    for key, v in meta["scalars"].items():
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    np_state = np.random.get_state()
    meta = {
        "python": repr(random.getstate()),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }
    return tensors, meta


def _set_rng_state(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    import ast

    torch.set_rng_state(tensors["rng.torch"])
    if torch.cuda.is_available():
        states = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
        if states:
            torch.cuda.set_rng_state_all(states)
    random.setstate(ast.literal_eval(meta["python"]))
    n = meta["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), *n[2:]))


def list_checkpoints(out: Path) -> list[Path]:
    """Checkpoint folders under ``out/checkpoints``, oldest first (temporary folders ignored)."""
    d = Path(out) / "checkpoints"
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if p.is_dir() and p.name.startswith("step-"))


def verify_checkpoint(ckpt: Path) -> dict[str, Any]:
    """Return the checkpoint's trainer state, or raise ValueError if any file is missing/corrupt."""
    state_file = ckpt / "trainer_state.json"
    if not state_file.exists():
        raise ValueError("trainer_state.json missing")
    state = json.loads(state_file.read_text())
    for name, digest in state["sha256"].items():
        f = ckpt / name
        if not f.exists():
            raise ValueError(f"{name} missing")
        if _sha256(f) != digest:
            raise ValueError(f"{name} fails its checksum")
    return state


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------


class _StepModule(nn.Module):
    """Routes ``forward`` to ``model.training_step`` so DDP can wrap any playworld model."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *args: Any) -> tuple[torch.Tensor, dict[str, float]]:
        return self.model.training_step(*args)


def _dist_info() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment (1 process: 0, 1, 0)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


SampleFn = Callable[[nn.Module, dict[str, Any]], dict[str, torch.Tensor]]


class Trainer:
    """Train ``model`` on ``train_data`` with :class:`TrainConfig`; see the module docstring.

    Args:
        model: a :class:`PretrainedModel` with ``training_step(*args) -> (loss, logs)``.
        cfg: the optimisation settings.
        out: output folder (final model, checkpoints, TensorBoard, samples).
        train_data / val_data: torch Datasets yielding dicts (e.g. ClipDataset).
        batch_fn: turns a collated batch (on the device) into ``training_step``'s arguments,
            e.g. uint8 frames -> float video, or frames -> frozen-tokenizer tokens.
        sample_fn: optional; returns named pictures ((3,H,W) images or (T,3,H,W) clips in [0,1])
            written to TensorBoard and ``out/samples``.
        name: a label for the progress bar and logs.
    """

    def __init__(
        self,
        model: PretrainedModel,
        cfg: TrainConfig,
        out: str | os.PathLike,
        train_data: Dataset,
        batch_fn: Callable[[dict[str, Any]], tuple],
        val_data: Dataset | None = None,
        sample_fn: SampleFn | None = None,
        name: str = "model",
    ):
        self.cfg, self.out, self.name = cfg, Path(out), name
        self.rank, self.world, local_rank = _dist_info()
        if self.world > 1 and not torch.distributed.is_initialized():
            backend = "nccl" if torch.cuda.is_available() and cfg.device != "cpu" else "gloo"
            torch.distributed.init_process_group(backend)
        if cfg.device == "auto":
            self.device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
        else:
            self.device = torch.device(cfg.device if cfg.device != "cuda" else f"cuda:{local_rank}")
        if cfg.batch_size % self.world:
            raise PlayworldError(f"--batch-size {cfg.batch_size} must be divisible by the {self.world} processes.")
        self.model = model.to(self.device)
        self.step_module: nn.Module = _StepModule(self.model)
        if self.world > 1:
            self.step_module = nn.parallel.DistributedDataParallel(
                self.step_module, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.train_data, self.val_data = train_data, val_data
        self.batch_fn, self.sample_fn = batch_fn, sample_fn
        self.optimizer = self._make_optimizer()
        self.step = 0
        self.samples_seen = 0  # per rank

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def _make_optimizer(self) -> torch.optim.Optimizer:
        decay, no_decay = [], []
        for n, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            (decay if p.ndim >= 2 and "embed" not in n and "codebook" not in n else no_decay).append(p)
        groups = [
            {"params": decay, "weight_decay": self.cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        return torch.optim.AdamW(groups, lr=self.cfg.lr, betas=self.cfg.betas)

    # -- checkpoints ---------------------------------------------------------------------------

    def save_checkpoint(self) -> Path | None:
        """Write ``checkpoints/step-N`` atomically (temp folder + rename) and prune old ones."""
        if not self.is_main:
            return None
        final = self.out / "checkpoints" / f"step-{self.step:08d}"
        with atomic_dir(final, overwrite=True) as tmp:
            self.model.save_pretrained(tmp / "model")
            opt_t, opt_meta = _optimizer_to_flat(self.optimizer)
            rng_t, rng_meta = _rng_state()
            save_file({**opt_t, **rng_t}, str(tmp / "optimizer.safetensors"))
            files = ["optimizer.safetensors", "model/model.safetensors", "model/config.json"]
            state = {
                "step": self.step,
                "samples_seen": self.samples_seen,
                "world_size": self.world,
                "optimizer": opt_meta,
                "rng": rng_meta,
                "train_config": dataclasses.asdict(self.cfg),
                "sha256": {f: _sha256(tmp / f) for f in files},
            }
            (tmp / "trainer_state.json").write_text(json.dumps(state))
        for old in list_checkpoints(self.out)[: -self.cfg.keep_last]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def load_latest_checkpoint(self) -> bool:
        """Restore the newest valid checkpoint; a corrupt one is skipped with a warning."""
        for ckpt in reversed(list_checkpoints(self.out)):
            try:
                state = verify_checkpoint(ckpt)
            except (ValueError, json.JSONDecodeError, KeyError) as e:
                warnings.warn(f"checkpoint {ckpt} is corrupt ({e}); trying the previous one.", stacklevel=2)
                continue
            if state.get("world_size", 1) != self.world:
                raise PlayworldError(
                    f"{ckpt} was written by {state['world_size']} processes, this run has {self.world}; "
                    "resume with the same number of processes."
                )
            loaded = type(self.model).from_pretrained(ckpt / "model", map_location=str(self.device))
            self.model.load_state_dict(loaded.state_dict())
            tensors = load_file(str(ckpt / "optimizer.safetensors"))
            _optimizer_from_flat(self.optimizer, {k: v for k, v in tensors.items() if k.startswith("state.")}, state["optimizer"])
            _set_rng_state({k: v for k, v in tensors.items() if k.startswith("rng.")}, state["rng"])
            self.step, self.samples_seen = state["step"], state["samples_seen"]
            log.info("resumed %s from %s (step %d)", self.name, ckpt, self.step)
            return True
        return False

    # -- one step ------------------------------------------------------------------------------

    def _autocast(self):
        enabled = self.cfg.precision == "bf16"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def _to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}

    def _loader(self, data: Dataset, start: int, seed: int, shuffle: bool = True) -> DataLoader:
        sampler = ResumableSampler(len(data), seed, self.rank, self.world, start)
        return DataLoader(
            data,
            batch_size=self.cfg.batch_size // self.world,
            sampler=sampler,
            num_workers=self.cfg.num_workers,
            persistent_workers=False,
            # Own generator: creating the iterator must not consume the global RNG, or a resumed
            # run would draw different random numbers than an uninterrupted one.
            generator=torch.Generator().manual_seed(seed),
            drop_last=True,
        )

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        if self.val_data is None or len(self.val_data) == 0:
            return {}
        self.model.eval()
        totals: dict[str, float] = {}
        # A fixed slice of the validation set, the same every time (comparable curves).
        it = iter(self._loader(self.val_data, 0, seed=12345))
        rng = torch.get_rng_state()
        torch.manual_seed(12345)
        for _ in range(self.cfg.eval_batches):
            batch = self._to_device(next(it))
            with self._autocast():
                loss, logs = self.model.training_step(*self.batch_fn(batch))
            for k, v in {"loss": float(loss), **logs}.items():
                totals[k] = totals.get(k, 0.0) + float(v) / self.cfg.eval_batches
        torch.set_rng_state(rng)  # validation must not change the training run's randomness
        self.model.train()
        return totals

    def _write_samples(self, writer, batch: dict[str, Any]) -> None:
        from playworld.train.pictures import save_pictures

        self.model.eval()
        rng = torch.get_rng_state()
        with torch.no_grad():
            pics = self.sample_fn(self.model, batch)
        torch.set_rng_state(rng)
        self.model.train()
        save_pictures(pics, self.out / "samples", f"step-{self.step:08d}", writer, self.step)

    def fit(self, resume: bool = False) -> Path:
        """Train to ``cfg.steps``; returns the output folder holding the final model."""
        cfg = self.cfg
        if self.is_main:
            if self.out.exists() and not resume and list_checkpoints(self.out):
                raise PlayworldError(
                    f"{self.out} already holds a training run; pass --resume to continue it or choose another --out."
                )
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.out / "train_config.json", dataclasses.asdict(cfg))
        if resume and not self.load_latest_checkpoint():
            log.info("no checkpoint found in %s; starting from scratch", self.out)
        writer = None
        if self.is_main:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.out / "tb"), purge_step=self.step if self.step else None)
        loader = self._loader(self.train_data, self.samples_seen, seed=cfg.seed)
        it = iter(loader)
        from tqdm.auto import tqdm

        bar = tqdm(
            total=cfg.steps, initial=self.step, desc=f"train {self.name}", disable=not (cfg.progress and self.is_main),
            dynamic_ncols=True,
        )
        self.model.train()
        nan_streak, t0, seen0 = 0, time.perf_counter(), 0
        last_logs: dict[str, float] = {}
        while self.step < cfg.steps:
            batch = self._to_device(next(it))
            self.samples_seen += cfg.batch_size // self.world
            seen0 += cfg.batch_size
            for g in self.optimizer.param_groups:
                g["lr"] = lr_at(cfg, self.step)
            with self._autocast():
                loss, logs = self.step_module(*self.batch_fn(batch))
            if not torch.isfinite(loss):
                nan_streak += 1
                self.optimizer.zero_grad(set_to_none=True)
                warnings.warn(f"step {self.step}: non-finite loss ({float(loss)}); step skipped.", stacklevel=1)
                if nan_streak > cfg.max_nan_skips:
                    last = list_checkpoints(self.out)
                    raise PlayworldError(
                        f"training diverged: {nan_streak} non-finite losses in a row at step {self.step}. "
                        f"The last good checkpoint is kept ({last[-1] if last else 'none yet'}); "
                        "lower --lr or use --precision fp32, then --resume."
                    )
                self.step += 1
                continue
            nan_streak = 0
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = (
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                if cfg.grad_clip > 0
                else torch.tensor(0.0)
            )
            self.optimizer.step()
            self.step += 1
            last_logs = {"loss": float(loss), **{k: float(v) for k, v in logs.items()}}
            if self.is_main:
                elapsed = time.perf_counter() - t0
                bar.update(1)
                bar.set_postfix(loss=f"{last_logs['loss']:.4f}", clips_s=f"{seen0 / max(elapsed, 1e-9):.1f}")
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    for k, v in last_logs.items():
                        writer.add_scalar(f"train/{k}", v, self.step)
                    writer.add_scalar("train/lr", lr_at(cfg, self.step - 1), self.step)
                    writer.add_scalar("train/grad_norm", float(gnorm), self.step)
                    writer.add_scalar("train/clips_per_s", seen0 / max(elapsed, 1e-9), self.step)
            if cfg.eval_every and (self.step % cfg.eval_every == 0 or self.step == cfg.steps) and self.is_main:
                val = self.validate()
                for k, v in val.items():
                    writer.add_scalar(f"val/{k}", v, self.step)
                if val:
                    bar.write(f"[{self.name}] step {self.step}: " + ", ".join(f"val_{k}={v:.4g}" for k, v in val.items()))
            if self.sample_fn and cfg.sample_every and self.is_main and (
                self.step % cfg.sample_every == 0 or self.step == cfg.steps
            ):
                self._write_samples(writer, batch)
            if self.step % cfg.ckpt_every == 0 or self.step == cfg.steps:
                self.save_checkpoint()
        bar.close()
        if self.is_main:
            writer.flush()
            writer.close()
            # The final model sits at the top of `out`, so from_pretrained(out) loads it.
            tmp_model = self.out / ".final-model"
            self.model.save_pretrained(tmp_model)
            for f in ("config.json", "model.safetensors"):
                os.replace(tmp_model / f, self.out / f)
            shutil.rmtree(tmp_model, ignore_errors=True)
            atomic_write_json(self.out / "train_summary.json", {"step": self.step, **last_logs})
        if self.world > 1:
            torch.distributed.barrier()
        return self.out
