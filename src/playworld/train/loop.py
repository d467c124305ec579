"""The one training loop for every playworld model.

Written out top to bottom (CleanRL-style), shared by the tokenizer, the latent action model,
the dynamics model and the policies. A model plugs in through one method::

    loss, logs = model.training_step(*batch_fn(batch))

What the loop gives every model: AdamW with linear warmup + cosine decay, bf16 autocast (CPU
and CUDA), gradient clipping, NaN-step skipping, a progress bar with loss and throughput,
TensorBoard scalars and sample images, a ``metrics.jsonl`` log, periodic validation, and atomic
checkpoints with exact resume (model, optimiser, step, every rank's RNG states and the data
position), each checksummed so a corrupt or truncated checkpoint is detected and the previous
one used.

Scale-out (see ``docs/scaling.md``): launched by ``torchrun`` the loop trains data-parallel,
``strategy="ddp"`` (DistributedDataParallel; gloo on CPU, NCCL on GPU) or ``strategy="fsdp"``
(FSDP2 ``fully_shard`` on every repeated block, i.e. every child of an ``nn.ModuleList``; the
few remaining parameters - embeddings, codebooks, heads - stay replicated and the loop averages
their gradients). Initial weights are identical on every rank (broadcast from rank 0); the
global RNGs are then re-seeded per rank, so random choices during training (MaskGIT masks,
noise) differ between ranks. Only rank 0 writes logs, samples and checkpoints; ``--out`` must be
on a filesystem every rank sees to resume. Modules that change their own parameters outside
the optimiser (recognised by a ``restart_dead_codes`` method: the VQ codebooks' dead-code
restarts) are re-synchronised from rank 0 after every step, so ranks never drift apart.

Output folder layout (``out``)::

    out/config.json, out/model.safetensors   the final model (from_pretrained(out) loads it)
    out/train_config.json                    the TrainConfig used
    out/command.json                         every option of the `playworld train ...` command(s) that made it
    out/train_summary.json                   the last step and its logs (written at the end)
    out/metrics.jsonl                        one JSON line per logged step (rank 0; cut back on resume)
    out/checkpoints/step-00000500/           model/ + optimizer.safetensors + trainer_state.json
    out/tb/                                  TensorBoard event files
    out/samples/step-00000500-*.png|gif      sample pictures

A checkpoint is written into a hidden temporary folder and renamed into place only when
complete; a process killed mid-write (``kill -9``, power loss) leaves just that temporary folder,
which readers ignore and the next run deletes.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import math
import os
import random
import re
import shutil
import signal
import time
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from playworld.errors import PlayworldError
from playworld.nn.pretrained import CONFIG_NAME, WEIGHTS_NAME, PretrainedModel
from playworld.utils import atomic_dir, atomic_write_bytes, atomic_write_json, get_logger

log = get_logger("train")

METRICS_FILE = "metrics.jsonl"
# Temporary files of atomic_write_json / atomic_write_bytes for the files the loop writes.
_ATOMIC_FILE_TMP = re.compile(r"^\.(metrics\.jsonl|train_config\.json|train_summary\.json)\..+")
_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


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
    """Write scalars to TensorBoard and metrics.jsonl every N steps."""
    eval_every: int = 250
    """Run validation every N steps (0 disables)."""
    eval_batches: int = 4
    """Batches per validation."""
    sample_every: int = 500
    """Write sample pictures every N steps (0 disables)."""
    ckpt_every: int = 250
    """Write a resumable checkpoint every N steps."""
    keep_last: int = 2
    """How many checkpoints to keep (2 or more lets a corrupt newest one fall back to the previous)."""
    seed: int = 0
    """Seed for model init, data order and every random choice in training."""
    num_workers: int = 1
    """DataLoader worker processes (per rank)."""
    max_nan_skips: int = 5
    """Consecutive non-finite losses tolerated (each step skipped) before training stops."""
    device: str = "auto"
    """'auto' (cuda if available), 'cpu', 'cuda' (under torchrun: cuda:LOCAL_RANK) or 'cuda:N'."""
    progress: bool = True
    """Show a progress bar."""
    strategy: Literal["ddp", "fsdp"] = "ddp"
    """Under torchrun: 'ddp' replicates the model on every rank; 'fsdp' shards its blocks' weights, gradients and optimiser state (FSDP2) for models too big for one device."""

    def __post_init__(self) -> None:
        def bad(name: str, want: str) -> PlayworldError:
            return PlayworldError(f"--{name.replace('_', '-')} must be {want}, got {getattr(self, name)!r}.")

        ints = {  # name -> minimum
            "steps": 1, "batch_size": 1, "warmup_steps": 0, "log_every": 1, "eval_every": 0,
            "eval_batches": 1, "sample_every": 0, "ckpt_every": 1, "keep_last": 1, "seed": 0,
            "num_workers": 0, "max_nan_skips": 0,
        }
        for name, low in ints.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
                raise bad(name, f"an integer >= {low}")
            setattr(self, name, int(v))
        if self.seed >= 2**32:
            raise bad("seed", "an integer in [0, 2**32)")
        for name in ("lr", "weight_decay", "min_lr_ratio", "grad_clip"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) or not math.isfinite(v):
                raise bad(name, "a finite number")
            setattr(self, name, float(v))
        if self.lr <= 0:
            raise bad("lr", "> 0")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise PlayworldError(
                f"--weight-decay and --grad-clip must be >= 0, got {self.weight_decay} and {self.grad_clip}."
            )
        if not 0 <= self.min_lr_ratio <= 1:
            raise bad("min_lr_ratio", "in [0, 1]")
        b = self.betas
        if (
            not isinstance(b, (tuple, list))
            or len(b) != 2
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x < 1 for x in b)
        ):
            raise bad("betas", "two numbers in [0, 1), e.g. 0.9 0.95")
        self.betas = (float(b[0]), float(b[1]))
        if self.precision not in ("bf16", "fp32"):
            raise bad("precision", "'bf16' or 'fp32'")
        if self.strategy not in ("ddp", "fsdp"):
            raise bad("strategy", "'ddp' or 'fsdp'")
        if not isinstance(self.device, str) or not _DEVICE_RE.match(self.device):
            raise bad("device", "'auto', 'cpu', 'cuda' or 'cuda:N'")
        if not isinstance(self.progress, bool):
            raise bad("progress", "true or false")


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up to ``cfg.lr``, then cosine decay to ``cfg.lr * cfg.min_lr_ratio``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


# ---------------------------------------------------------------------------------------------
# Processes and devices
# ---------------------------------------------------------------------------------------------


def _dist_info() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment (1 process: 0, 1, 0)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def resolve_device(device: str = "auto") -> torch.device:
    """The device this process trains on: ``cuda`` means ``cuda:LOCAL_RANK`` under torchrun."""
    local_rank = _dist_info()[2]
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise PlayworldError(f"--device {device} was asked for but no CUDA GPU is visible; use --device cpu.")
    return torch.device(f"cuda:{local_rank}" if device == "cuda" else device)


def _fault_point(name: str, step: int) -> None:
    """Fault-injection hook for the tests: ``PLAYWORLD_FAULT=name:step`` kills this process here
    with SIGKILL (exactly what ``kill -9`` does: no cleanup, no exception handlers)."""
    if os.environ.get("PLAYWORLD_FAULT") == f"{name}:{step}":
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))


def _seed_rank(seed: int, rank: int) -> None:
    """Per-rank global RNG streams: random choices in training (masks, noise) must differ by rank."""
    s = (seed * 1_000_003 + 7919 * (rank + 1)) % 2**63
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)


# ---------------------------------------------------------------------------------------------
# Data order: a resumable, rank-aware infinite sampler
# ---------------------------------------------------------------------------------------------


class ResumableSampler(Sampler[int]):
    """Infinite shuffled stream of dataset indices that can restart at any sample.

    Epoch ``e`` is ``randperm(n)`` seeded by ``(seed, e)``; rank ``r`` of ``world`` takes every
    ``world``-th index of it (a distributed sampler: within an epoch the ranks' samples are
    disjoint, and with ``n % world == 0`` they cover it). So a step's global batch is the same set
    of clips whatever the number of ranks: ranks ``0..world-1`` take consecutive indices of the
    permutation. ``start`` is the number of samples this rank has already consumed, so resuming
    is just ``ResumableSampler(..., start=consumed)``.
    """

    def __init__(self, n: int, seed: int, rank: int = 0, world: int = 1, start: int = 0):
        if n < 1:
            raise PlayworldError("the training dataset is empty: record or ingest more video.")
        if not 0 <= rank < world:
            raise PlayworldError(f"rank {rank} is not in [0, world size {world}).")
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


def _state_digest(state: dict[str, Any]) -> str:
    body = {k: v for k, v in state.items() if k != "state_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _optimizer_to_flat(sd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimiser state dict (parameter ids as keys) -> (tensors, JSON-able rest)."""
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"state.{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _flat_to_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        _, pid, k = key.split(".", 2)
        state.setdefault(int(pid), {})[k] = v
    for key, v in meta["scalars"].items():
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    return {"state": state, "param_groups": meta["param_groups"]}


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
    torch.set_rng_state(tensors["rng.torch"])
    if torch.cuda.is_available():
        states = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
        if states:
            torch.cuda.set_rng_state_all(states)
    random.setstate(ast.literal_eval(meta["python"]))
    n = meta["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), *n[2:]))


def _save_model_folder(path: Path, model: PretrainedModel, state: dict[str, torch.Tensor]) -> None:
    """Write ``state`` as ``model.save_pretrained`` would (used for gathered FSDP weights)."""
    with atomic_dir(path, overwrite=True) as tmp:
        (tmp / CONFIG_NAME).write_text(json.dumps(model.config.to_dict(), indent=2) + "\n")
        seen: set[int] = set()
        out = {}
        for k, v in state.items():
            v = v.detach().cpu().contiguous()
            ptr = v.untyped_storage().data_ptr()
            out[k] = v.clone() if ptr in seen else v  # safetensors refuses shared storage
            seen.add(ptr)
        save_file(out, str(tmp / WEIGHTS_NAME), metadata={"model_type": model.config.model_type})


def _fsync_tree(root: Path) -> None:
    """Flush every file under ``root`` (and the folders) to disk before the folder is renamed
    into place, so a power loss cannot leave a complete-looking checkpoint of empty files."""
    for dirpath, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems cannot fsync a directory
        pass
    finally:
        os.close(fd)


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
    try:
        state = json.loads(state_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"trainer_state.json is not valid JSON ({e})") from None
    if not isinstance(state, dict) or not isinstance(state.get("sha256"), dict):
        raise ValueError("trainer_state.json has no checksums")
    if "state_sha256" in state and _state_digest(state) != state["state_sha256"]:
        raise ValueError("trainer_state.json fails its checksum")
    for name, digest in state["sha256"].items():
        f = ckpt / name
        if not f.exists():
            raise ValueError(f"{name} missing")
        if _sha256(f) != digest:
            raise ValueError(f"{name} fails its checksum")
    return state


def clean_stale_temporaries(out: Path) -> list[Path]:
    """Remove what an interrupted (``kill -9``) run left behind in ``out``: temporary checkpoint
    and model folders (``.*.tmp-*``), half-replaced ones (``.*.old-*``; restored if the final
    folder is missing and the old one is intact), ``.final-model`` and the loop's own temporary
    files (``.metrics.jsonl.*``, ...). Returns what was removed."""
    removed = []
    for folder in (Path(out), Path(out) / "checkpoints"):
        if not folder.is_dir():
            continue
        for p in sorted(folder.iterdir()):
            if not p.name.startswith("."):
                continue
            if ".old-" in p.name and p.is_dir():
                final = p.with_name(p.name[1:].split(".old-")[0])
                if final.name.startswith("step-") and not final.exists():
                    try:
                        verify_checkpoint(p)
                        os.replace(p, final)  # the rename of its replacement never happened
                        continue
                    except (ValueError, OSError):
                        pass
            if ".tmp-" in p.name or ".old-" in p.name or p.name == ".final-model" or _ATOMIC_FILE_TMP.match(p.name):
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                removed.append(p)
    return removed


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


def _is_dtensor(t: torch.Tensor) -> bool:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch without DTensor: nothing is sharded
        return False
    return isinstance(t, DTensor)


SampleFn = Callable[[nn.Module, dict[str, Any]], dict[str, torch.Tensor]]


class Trainer:
    """Train ``model`` on ``train_data`` with :class:`TrainConfig`; see the module docstring.

    Args:
        model: a :class:`PretrainedModel` with ``training_step(*args) -> (loss, logs)``.
        cfg: the optimisation settings.
        out: output folder (final model, checkpoints, TensorBoard, samples, metrics.jsonl).
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
        self.rank, self.world, self.local_rank = _dist_info()
        self.device = resolve_device(cfg.device)
        if cfg.batch_size % self.world:
            raise PlayworldError(f"--batch-size {cfg.batch_size} must be divisible by the {self.world} processes.")
        if self.world > 1 and not dist.is_initialized():
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        self.fsdp = cfg.strategy == "fsdp" and self.world > 1
        self.model = model.to(self.device)
        self.step_module: nn.Module = _StepModule(self.model)
        self._replicated: list[nn.Parameter] = []  # FSDP: parameters left unsharded (grads averaged here)
        if self.fsdp:
            self._shard_model()
        elif self.world > 1:
            # DDP broadcasts rank 0's weights and, before every forward, its buffers.
            self.step_module = nn.parallel.DistributedDataParallel(
                self.step_module, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        # Tensors a module rewrites itself (VQ dead-code restarts): rank 0's copy wins each step.
        self._rank0_tensors = [
            t for m in self.model.modules() if hasattr(m, "restart_dead_codes")
            for t in [*m.parameters(recurse=False), *m.buffers(recurse=False)] if not _is_dtensor(t)
        ]
        if self.world > 1:
            _seed_rank(cfg.seed, self.rank)  # after the identical init: from here on ranks differ
        self.train_data, self.val_data = train_data, val_data
        self.batch_fn, self.sample_fn = batch_fn, sample_fn
        self.optimizer = self._make_optimizer()
        names = {id(p): n for n, p in self.model.named_parameters()}
        self._param_names = [names[id(p)] for g in self.optimizer.param_groups for p in g["params"]]
        self.step = 0
        self.samples_seen = 0  # per rank

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def _shard_model(self) -> None:
        """FSDP2: shard every repeated block (each child of an nn.ModuleList) over all ranks."""
        try:
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import fully_shard
        except ImportError as e:
            raise PlayworldError(f"--strategy fsdp needs torch >= 2.6 with FSDP2 ({e}); use --strategy ddp.") from None
        for t in [*self.model.parameters(), *self.model.buffers()]:
            dist.broadcast(t.data, 0)  # identical initial weights on every rank
        mesh = init_device_mesh(self.device.type, (self.world,))
        blocks = [b for m in self.model.modules() if isinstance(m, nn.ModuleList) for b in m
                  if any(True for _ in b.parameters())]
        for block in reversed(blocks):  # inner blocks before the blocks holding them, as FSDP2 wants
            fully_shard(block, mesh=mesh)
        self._replicated = [p for p in self.model.parameters() if p.requires_grad and not _is_dtensor(p)]
        if not blocks:
            warnings.warn(f"--strategy fsdp: {type(self.model).__name__} has no nn.ModuleList blocks to shard; "
                          "every parameter stays replicated (as with ddp).", stacklevel=3)

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

    # -- collectives (no-ops in one process) ---------------------------------------------------

    def _broadcast_object(self, obj: Any) -> Any:
        if self.world == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def _all_mean(self, values: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            values = values.to(self.device)
            dist.all_reduce(values)  # SUM: gloo has no AVG
            values = values / self.world
        return values.cpu()

    def _reduce_logs(self, loss: torch.Tensor, logs: dict[str, float]) -> tuple[list[str], list[float]]:
        """``(keys, [mean loss, any rank non-finite, mean of each log])`` over ranks."""
        local = {"\0loss": float(loss.detach()), "\0nonfinite": float(not torch.isfinite(loss)), **logs}
        means = self._all_mean_dict(local)
        keys = sorted(k for k in means if not k.startswith("\0"))
        return keys, [means["\0loss"], means["\0nonfinite"], *(means[k] for k in keys)]

    def _all_mean_dict(self, values: dict[str, float]) -> dict[str, float]:
        """Each entry averaged over the ranks that have it.

        Models may log different keys on different ranks in the same step (e.g. a VLA batch with
        no question has no answer accuracy). The ranks first compare their key sets in one tiny
        all-reduce; only when they differ do they exchange the dicts (an object all-gather). Every
        rank runs the same collectives and gets the same numbers.
        """
        keys = sorted(values)
        if self.world == 1:
            return {k: float(values[k]) for k in keys}
        h = float(zlib.crc32("\0".join(keys).encode()))
        spread = self._all_max(torch.tensor([h, -h], dtype=torch.float64))
        if spread[0] == -spread[1]:  # max == min: every rank has the same keys
            means = self._all_mean(torch.tensor([float(values[k]) for k in keys], dtype=torch.float64))
            return dict(zip(keys, means.tolist(), strict=True))
        gathered: list[dict[str, float]] = [{} for _ in range(self.world)]
        dist.all_gather_object(gathered, {k: float(values[k]) for k in keys})
        union = sorted(set().union(*gathered))
        return {k: sum(g[k] for g in gathered if k in g) / sum(k in g for g in gathered) for k in union}

    def _all_max(self, values: torch.Tensor) -> torch.Tensor:
        values = values.to(self.device)
        dist.all_reduce(values, op=dist.ReduceOp.MAX)
        return values.cpu()

    def _sync_after_step(self) -> None:
        """Keep ranks identical where the optimiser alone would not (see the module docstring)."""
        if self.world == 1:
            return
        for t in self._rank0_tensors:
            dist.broadcast(t.data, 0)
        if self.fsdp:  # what DDP's broadcast_buffers does (BatchNorm statistics, VQ usage counters)
            for b in self.model.buffers():
                dist.broadcast(b, 0)

    def _average_replicated_grads(self) -> None:
        """FSDP: the unsharded parameters' gradients are averaged over ranks here, as DDP would."""
        if not self._replicated:
            return
        grads = []
        for p in self._replicated:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
        for dtype in {g.dtype for g in grads}:
            same = [g for g in grads if g.dtype == dtype]
            flat = torch.cat([g.reshape(-1) for g in same])
            dist.all_reduce(flat)
            flat /= self.world
            offset = 0
            for g in same:
                g.copy_(flat[offset : offset + g.numel()].view_as(g))
                offset += g.numel()

    def _clip_gradients(self) -> torch.Tensor:
        cfg = self.cfg
        if cfg.grad_clip <= 0:
            return torch.tensor(0.0)
        if not self.fsdp:
            return torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        # FSDP: sharded grads contribute their local shard's squares (summed over ranks), the
        # replicated ones (identical on every rank after averaging) theirs once.
        sharded = torch.zeros((), device=self.device, dtype=torch.float32)
        replicated = torch.zeros((), device=self.device, dtype=torch.float32)
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        for g in grads:
            if _is_dtensor(g):
                sharded += g.to_local().float().pow(2).sum()
            else:
                replicated += g.float().pow(2).sum()
        dist.all_reduce(sharded)
        total = (sharded + replicated).sqrt()
        coef = (cfg.grad_clip / (total + 1e-6)).clamp(max=1.0)
        for g in grads:
            (g.to_local() if _is_dtensor(g) else g).mul_(coef)
        return total

    def _check_replicas(self) -> None:
        """Warn (and repair from rank 0) if replicated parameters differ between ranks."""
        if self.world == 1:
            return
        params = [(n, p) for n, p in self.model.named_parameters() if not _is_dtensor(p)]
        if not params:
            return
        sums = torch.stack([p.detach().double().sum() for _, p in params]).to(self.device)
        hi, lo = sums.clone(), sums.clone()
        dist.all_reduce(hi, op=dist.ReduceOp.MAX)
        dist.all_reduce(lo, op=dist.ReduceOp.MIN)
        drifted = [n for (n, p), a, b in zip(params, hi.tolist(), lo.tolist(), strict=True) if a != b]
        if drifted:
            if self.is_main:
                warnings.warn(f"step {self.step}: parameters differ between ranks ({drifted[:5]}); "
                              "re-synchronised from rank 0.", stacklevel=2)
            for n, p in params:
                if n in drifted:
                    dist.broadcast(p.data, 0)

    # -- checkpoints ---------------------------------------------------------------------------

    def _full_model_state(self) -> dict[str, torch.Tensor] | None:
        """FSDP: the whole model's weights gathered on rank 0 (all ranks must call). Else None."""
        if not self.fsdp:
            return None
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def _full_optimizer_state(self) -> dict[str, Any] | None:
        """The optimiser state keyed by parameter number (rank 0; FSDP: gathered, all ranks call)."""
        if not self.fsdp:
            return self.optimizer.state_dict() if self.is_main else None
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        sd = get_optimizer_state_dict(
            self.model, self.optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )
        if not self.is_main:
            return None
        pid = {n: i for i, n in enumerate(self._param_names)}
        groups = [{**g, "params": [pid[n] for n in g["params"]]} for g in sd["param_groups"]]
        return {"state": {pid[n]: st for n, st in sd["state"].items()}, "param_groups": groups}

    def _gather_rng(self) -> list[tuple[dict[str, torch.Tensor], dict[str, Any]]]:
        mine = _rng_state()
        if self.world == 1:
            return [mine]
        every: list[Any] = [None] * self.world
        dist.all_gather_object(every, mine)
        return every

    def save_checkpoint(self) -> Path | None:
        """Write ``checkpoints/step-N`` atomically (temp folder + rename) and prune old ones.

        Every rank must call it (the RNG states, and with FSDP the weights, are gathered); only
        rank 0 writes. Returns the folder on rank 0, None elsewhere.
        """
        model_state = self._full_model_state()
        opt_sd = self._full_optimizer_state()
        rngs = self._gather_rng()
        if not self.is_main:
            return None
        final = self.out / "checkpoints" / f"step-{self.step:08d}"
        with atomic_dir(final, overwrite=True) as tmp:
            if model_state is None:
                self.model.save_pretrained(tmp / "model")
            else:
                _save_model_folder(tmp / "model", self.model, model_state)
            opt_t, opt_meta = _optimizer_to_flat(opt_sd)
            rng_t, rng_meta = dict(rngs[0][0]), rngs[0][1]
            for r, (tensors, _) in enumerate(rngs[1:], start=1):
                rng_t.update({f"rng.rank{r}.{k[4:]}": v for k, v in tensors.items()})
            save_file({**opt_t, **rng_t}, str(tmp / "optimizer.safetensors"))
            _fault_point("checkpoint-write", self.step)
            files = ["optimizer.safetensors", "model/model.safetensors", "model/config.json"]
            state = {
                "step": self.step,
                "samples_seen": self.samples_seen,
                "world_size": self.world,
                "strategy": self.cfg.strategy,
                "optimizer": opt_meta,
                "rng": rng_meta,
                "rng_ranks": {str(r): meta for r, (_, meta) in enumerate(rngs) if r > 0},
                "train_config": dataclasses.asdict(self.cfg),
                "sha256": {f: _sha256(tmp / f) for f in files},
            }
            state["state_sha256"] = _state_digest(state)
            (tmp / "trainer_state.json").write_text(json.dumps(state))
            _fsync_tree(tmp)
        _fsync_dir(final.parent)
        for old in list_checkpoints(self.out)[: -self.cfg.keep_last]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def load_latest_checkpoint(self) -> bool:
        """Restore the newest valid checkpoint; a corrupt one is skipped with a warning (and deleted).

        Rank 0 picks the checkpoint; every rank then reads it (``out`` must be shared).
        """
        chosen = None
        if self.is_main:
            corrupt = []
            for ckpt in reversed(list_checkpoints(self.out)):
                try:
                    verify_checkpoint(ckpt)
                except ValueError as e:
                    warnings.warn(f"checkpoint {ckpt} is corrupt ({e}); trying the previous one.", stacklevel=2)
                    corrupt.append(ckpt)
                    continue
                chosen = str(ckpt)
                break
            for ckpt in corrupt:  # unusable; left in place it would be tried again on every resume
                shutil.rmtree(ckpt, ignore_errors=True)
        chosen = self._broadcast_object(chosen)
        if chosen is None:
            return False
        ckpt = Path(chosen)
        try:
            state = json.loads((ckpt / "trainer_state.json").read_text())
        except FileNotFoundError:
            raise PlayworldError(
                f"rank {self.rank} cannot see {ckpt}; to resume, --out must be on a filesystem every node shares."
            ) from None
        if state.get("world_size", 1) != self.world:
            raise PlayworldError(
                f"{ckpt} was written by {state['world_size']} processes, this run has {self.world}; "
                "resume with the same number of processes."
            )
        saved = json.loads((ckpt / "model" / CONFIG_NAME).read_text())
        own = json.loads(json.dumps(self.model.config.to_dict()))  # tuples as lists, like the file
        # Fields only one side has (added or removed by another playworld version) are not compared.
        diff = sorted(k for k in saved.keys() & own.keys() if saved[k] != own[k])
        if diff:
            raise PlayworldError(
                f"{ckpt} holds a model with other settings ({', '.join(diff)} differ: "
                f"{ {k: saved.get(k) for k in diff} } vs now { {k: own.get(k) for k in diff} }); "
                "resume with the same model settings, or train into another --out."
            )
        tensors = load_file(str(ckpt / "optimizer.safetensors"))
        opt_sd = _flat_to_optimizer({k: v for k, v in tensors.items() if k.startswith("state.")}, state["optimizer"])
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                set_model_state_dict,
                set_optimizer_state_dict,
            )

            own = self.model.state_dict()
            weights = load_file(str(ckpt / "model" / WEIGHTS_NAME))
            weights = {k: v.to(own[k].dtype) for k, v in weights.items()}
            opts = StateDictOptions(full_state_dict=True)
            set_model_state_dict(self.model, weights, options=opts)
            groups = [{**g, "params": [self._param_names[i] for i in g["params"]]} for g in opt_sd["param_groups"]]
            fqn_sd = {"state": {self._param_names[i]: st for i, st in opt_sd["state"].items()}, "param_groups": groups}
            set_optimizer_state_dict(self.model, self.optimizer, fqn_sd, options=opts)
        else:
            loaded = type(self.model).from_pretrained(ckpt / "model", map_location=str(self.device))
            self.model.load_state_dict(loaded.state_dict())
            self.optimizer.load_state_dict(opt_sd)
        if self.rank == 0:
            rng_t = {k: v for k, v in tensors.items() if k.startswith("rng.") and not k.startswith("rng.rank")}
            _set_rng_state(rng_t, state["rng"])
        elif str(self.rank) in state.get("rng_ranks", {}):
            prefix = f"rng.rank{self.rank}."
            rng_t = {"rng." + k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            _set_rng_state(rng_t, state["rng_ranks"][str(self.rank)])
        else:  # a checkpoint from before per-rank RNG states: resumes, but not bit-exactly
            _seed_rank(self.cfg.seed + state["step"], self.rank)
        self.step, self.samples_seen = state["step"], state["samples_seen"]
        log.info("resumed %s from %s (step %d)", self.name, ckpt, self.step)
        return True

    # -- one step ------------------------------------------------------------------------------

    def _autocast(self):
        enabled = self.cfg.precision == "bf16"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def _fork_rng(self):
        return torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else [])

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
            # Own generator (it seeds the workers): creating the iterator must not consume the
            # global RNG, or a resumed run would draw different random numbers than an
            # uninterrupted one. Per rank, so worker-side randomness differs between ranks.
            generator=torch.Generator().manual_seed(seed + 1_000_003 * self.rank),
            drop_last=True,
        )

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean losses over ``eval_batches`` fixed batches (every rank must call it; each
        evaluates its share, the means are averaged over ranks)."""
        if self.val_data is None or len(self.val_data) == 0:
            return {}
        self.model.eval()
        totals: dict[str, float] = {}
        counts: dict[str, int] = {}
        # A fixed slice of the validation set, the same every time (comparable curves).
        it = iter(self._loader(self.val_data, 0, seed=12345))
        with self._fork_rng():  # validation must not change the training run's randomness
            torch.manual_seed(12345 + self.rank)
            for _ in range(self.cfg.eval_batches):
                batch = self._to_device(next(it))
                with self._autocast():
                    loss, logs = self.model.training_step(*self.batch_fn(batch))
                for k, v in {"loss": float(loss), **logs}.items():  # a batch may lack a key
                    totals[k] = totals.get(k, 0.0) + float(v)
                    counts[k] = counts.get(k, 0) + 1
        self.model.train()
        return self._all_mean_dict({k: totals[k] / counts[k] for k in totals})

    def _write_samples(self, writer, batch: dict[str, Any]) -> None:
        from playworld.train.pictures import save_pictures

        self.model.eval()
        with self._fork_rng(), torch.no_grad():
            pics = self.sample_fn(self.model, batch)
        self.model.train()
        if self.is_main:
            save_pictures(pics, self.out / "samples", f"step-{self.step:08d}", writer, self.step)

    def _open_metrics(self):
        """Rank 0: ``metrics.jsonl`` cut back to the steps <= the current one (a resumed run
        rewrites the rest; a line cut short by a kill is dropped), opened for appending."""
        path = self.out / METRICS_FILE
        kept = []
        if path.exists():
            for line in path.read_text(errors="replace").splitlines():
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if isinstance(rec, dict) and isinstance(rec.get("step"), int) and rec["step"] <= self.step:
                    kept.append(line + "\n")
        atomic_write_bytes(path, "".join(kept).encode())
        return open(path, "a", buffering=1)  # noqa: SIM115 - closed at the end of fit

    def _save_final_model(self) -> None:
        """The final model at the top of ``out``, so from_pretrained(out) loads it (all ranks call)."""
        model_state = self._full_model_state()
        if not self.is_main:
            return
        tmp_model = self.out / ".final-model"
        if model_state is None:
            self.model.save_pretrained(tmp_model)
        else:
            _save_model_folder(tmp_model, self.model, model_state)
        for f in (CONFIG_NAME, WEIGHTS_NAME):
            os.replace(tmp_model / f, self.out / f)
        shutil.rmtree(tmp_model, ignore_errors=True)

    def fit(self, resume: bool = False) -> Path:
        """Train to ``cfg.steps``; returns the output folder holding the final model."""
        cfg = self.cfg
        problem = None
        if self.is_main:
            if self.out.exists() and not resume and list_checkpoints(self.out):
                problem = (
                    f"{self.out} already holds a training run; pass --resume to continue it or choose another --out."
                )
            else:
                self.out.mkdir(parents=True, exist_ok=True)
                for p in clean_stale_temporaries(self.out):
                    log.warning("removed %s, left by an interrupted run", p)
                atomic_write_json(self.out / "train_config.json", dataclasses.asdict(cfg))
        problem = self._broadcast_object(problem)  # every rank stops, or none does
        if problem:
            raise PlayworldError(problem)
        if resume and not self.load_latest_checkpoint():
            log.info("no checkpoint found in %s; starting from scratch", self.out)
        writer = metrics = None
        if self.is_main:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.out / "tb"), purge_step=self.step if self.step else None)
            metrics = self._open_metrics()
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
        try:
            while self.step < cfg.steps:
                batch = self._to_device(next(it))
                self.samples_seen += cfg.batch_size // self.world
                seen0 += cfg.batch_size
                lr = lr_at(cfg, self.step)
                for g in self.optimizer.param_groups:
                    g["lr"] = lr
                with self._autocast():
                    loss, logs = self.step_module(*self.batch_fn(batch))
                # One small all-reduce per step: the mean loss and logs over ranks, and whether any
                # rank's loss is non-finite (then every rank skips the step, or DDP would hang).
                keys, stats = self._reduce_logs(loss, logs)
                if stats[1] > 0:
                    nan_streak += 1
                    self.optimizer.zero_grad(set_to_none=True)
                    if self.is_main:
                        warnings.warn(f"step {self.step}: non-finite loss; step skipped.", stacklevel=1)
                        metrics.write(json.dumps({"step": self.step + 1, "loss": None, "skipped": "non-finite loss"}) + "\n")
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
                if self.fsdp:
                    self._average_replicated_grads()
                gnorm = self._clip_gradients()
                self.optimizer.step()
                self._sync_after_step()
                self.step += 1
                _fault_point("step", self.step)
                last_logs = {"loss": stats[0], **dict(zip(keys, stats[2:], strict=True))}
                if self.is_main:
                    elapsed = time.perf_counter() - t0
                    bar.update(1)
                    bar.set_postfix(loss=f"{last_logs['loss']:.4f}", clips_s=f"{seen0 / max(elapsed, 1e-9):.1f}")
                    if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                        gn, rate = float(gnorm.full_tensor() if _is_dtensor(gnorm) else gnorm), seen0 / max(elapsed, 1e-9)
                        for k, v in last_logs.items():
                            writer.add_scalar(f"train/{k}", v, self.step)
                        writer.add_scalar("train/lr", lr, self.step)
                        writer.add_scalar("train/grad_norm", gn, self.step)
                        writer.add_scalar("train/clips_per_s", rate, self.step)
                        rec = {"step": self.step, **last_logs, "lr": lr, "grad_norm": gn, "clips_per_s": rate,
                               "time": time.time()}
                        metrics.write(json.dumps(rec) + "\n")
                if cfg.eval_every and (self.step % cfg.eval_every == 0 or self.step == cfg.steps):
                    val = self.validate()
                    if self.is_main:
                        for k, v in val.items():
                            writer.add_scalar(f"val/{k}", v, self.step)
                        if val:
                            metrics.write(json.dumps({"step": self.step, **{f"val_{k}": v for k, v in val.items()}}) + "\n")
                            bar.write(f"[{self.name}] step {self.step}: " + ", ".join(f"val_{k}={v:.4g}" for k, v in val.items()))
                if self.sample_fn and cfg.sample_every and (self.is_main or self.fsdp) and (
                    self.step % cfg.sample_every == 0 or self.step == cfg.steps
                ):
                    self._write_samples(writer, batch)
                if self.step % cfg.ckpt_every == 0 or self.step == cfg.steps:
                    self._check_replicas()
                    self.save_checkpoint()
        finally:
            bar.close()
            if metrics is not None:
                metrics.close()
            if writer is not None:
                writer.flush()
                writer.close()
        self._save_final_model()
        if self.is_main:
            atomic_write_json(self.out / "train_summary.json", {"step": self.step, **last_logs})
        if self.world > 1:
            dist.barrier()
        return self.out
