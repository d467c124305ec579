"""Data: recorders (Atari, tabletop), video ingest, the on-disk dataset format, clip datasets.

The names below are imported lazily, so ``playworld --help`` and the CLI stay fast (ClipDataset
pulls in torch).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DatasetWriter": "playworld.data.format",
    "VideoDataset": "playworld.data.format",
    "load_dataset": "playworld.data.format",
    "ClipDataset": "playworld.data.clips",
    "record_atari": "playworld.data.atari",
    "ingest_videos": "playworld.data.ingest",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'playworld.data' has no attribute {name!r}")
