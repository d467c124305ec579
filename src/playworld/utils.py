"""Small helpers shared across playworld: atomic writes, seeding, logging, devices."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("playworld")


def get_logger(name: str) -> logging.Logger:
    """A child of the ``playworld`` logger (configured once by the CLI)."""
    return logging.getLogger(f"playworld.{name}")


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) for reproducible runs."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``final``; rename it to ``final`` only on success.

    An interrupted writer (exception, Ctrl-C, kill) never leaves a folder at ``final`` that
    looks complete: the temporary ``.<name>.tmp-*`` folder is removed on error (and is
    ignored by readers if a kill -9 leaves it behind).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists() and not overwrite:
        from playworld.errors import PlayworldError

        raise PlayworldError(f"{final} already exists; choose another --out or delete it first.")
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    tmp.chmod(0o755)  # mkdtemp makes 0700; the result is a normal, shareable folder
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def default_device() -> str:
    """``cuda`` when a GPU is visible, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def machine_info() -> dict[str, Any]:
    """Where a result was produced: CPU model, cores, torch version and threads, GPU, load.
    Float kernels differ between CPU models, so bit-identical retraining needs the same one."""
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


#: Every trained folder's record of the commands that made it (``playworld.cli.record_command``).
COMMAND_NAME = "command.json"


def append_command_run(folder: str | os.PathLike, run: dict[str, Any]) -> None:
    """Add one command's record to ``folder/command.json`` (a resumed run adds a second entry)."""
    path = Path(folder) / COMMAND_NAME
    runs = json.loads(path.read_text())["runs"] if path.exists() else []
    atomic_write_json(path, {"runs": [*runs, run]})


def last_command_options(folder: str | os.PathLike) -> dict[str, Any] | None:
    """Every option (defaults included) of the last command recorded in ``folder/command.json``;
    None when the folder has no record."""
    path = Path(folder) / COMMAND_NAME
    runs = json.loads(path.read_text())["runs"] if path.exists() else []
    return runs[-1]["options"] if runs else None
