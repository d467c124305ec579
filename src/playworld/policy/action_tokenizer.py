"""RT-2's action tokenizer: continuous robot actions <-> 256 bins <-> a string of integers.

RT-2 writes each action as text, e.g. ``"1 128 91 241 5 101 127 217"`` (terminate, dx, dy, dz,
droll, dpitch, dyaw, gripper), one integer in [0, 255] per dimension, so a language model can
emit it. Following OpenVLA, each dimension is first normalised with its 1st/99th percentiles
(``q01`` -> -1, ``q99`` -> +1), clipped to [-1, 1], then cut into ``num_bins`` uniform bins::

    x   = clip(2 (a - q01) / (q99 - q01) - 1, -1, 1)
    bin = min(floor((x + 1) / 2 * num_bins), num_bins - 1)
    a'  = q01 + (bin + 0.5) / num_bins * (q99 - q01)          # decode: the bin's centre

So decoding is exact at bin centres and off by at most half a bin inside [q01, q99];
outliers beyond the percentiles are clipped to the edge bins (that is the point of q01/q99:
a few extreme values do not stretch every bin).

The terminate and gripper dimensions are (nearly) binary. They still get ``num_bins`` bins, as
in RT-2, so every dimension is one token; with ``from_stats`` their range is the data's
min..max, so 0 and 1 land in the edge bins (0 and 255) and decode to the edge bins' centres
(1/512 and 511/512: threshold at 0.5). A constant dimension (e.g. roll when the data never
rolls) gets a tiny range around its value and decodes back to it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from playworld.errors import PlayworldError
from playworld.utils import atomic_write_json

#: Dimensions that ``from_stats`` scales by min/max instead of q01/q99 (RT-2's order:
#: terminate = 0, gripper = 7), so rare "1"s are never clipped away.
BINARY_DIMS = (0, 7)
_MIN_SPAN = 1e-6


class ActionDecodeError(PlayworldError):
    """A model's action text is not ``D`` integers in [0, num_bins - 1]; policies can catch it
    and retry, or fall back to a safe action."""


class ActionTokenizer:
    """Maps float actions (..., D) to integer bins (..., D) and back, and bins to/from text."""

    def __init__(
        self,
        q01: Sequence[float],
        q99: Sequence[float],
        num_bins: int = 256,
        names: Sequence[str] | None = None,
    ):
        """Args:
        q01, q99: per-dimension low/high ends of the binned range (1st/99th percentiles).
        num_bins: bins per dimension (RT-2: 256).
        names: optional dimension names, kept in the saved JSON for readers.
        """
        lo = np.asarray(q01, dtype=np.float64).reshape(-1)
        hi = np.asarray(q99, dtype=np.float64).reshape(-1)
        if lo.shape != hi.shape or lo.size == 0:
            raise PlayworldError(
                f"q01 and q99 must be equal-length, non-empty lists; got {lo.shape} and {hi.shape}."
            )
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
            raise PlayworldError("q01 and q99 must be finite numbers; recompute the dataset statistics.")
        if np.any(hi < lo):
            bad = int(np.argmax(hi < lo))
            raise PlayworldError(
                f"q99 < q01 in dimension {bad} ({hi[bad]} < {lo[bad]}); swap them or recompute the stats."
            )
        if not isinstance(num_bins, (int, np.integer)) or num_bins < 2:
            raise PlayworldError(f"num_bins must be an integer >= 2, got {num_bins!r}.")
        if names is not None and len(names) != lo.size:
            raise PlayworldError(f"got {len(names)} names for {lo.size} action dimensions.")
        # A constant dimension gets a tiny range centred on its value, so it round-trips.
        mid = (lo + hi) / 2
        narrow = (hi - lo) < _MIN_SPAN
        self.low = np.where(narrow, mid - _MIN_SPAN / 2, lo)
        self.high = np.where(narrow, mid + _MIN_SPAN / 2, hi)
        self.num_bins = int(num_bins)
        self.names = list(names) if names is not None else None

    @property
    def dim(self) -> int:
        return int(self.low.size)

    @property
    def bin_width(self) -> np.ndarray:
        """Width of one bin in action units, per dimension (D,)."""
        return (self.high - self.low) / self.num_bins

    def __repr__(self) -> str:
        return f"ActionTokenizer(dim={self.dim}, num_bins={self.num_bins})"

    @classmethod
    def from_stats(
        cls,
        stats: dict,
        key: str = "action",
        num_bins: int = 256,
        binary_dims: Sequence[int] = BINARY_DIMS,
        names: Sequence[str] | None = None,
    ) -> ActionTokenizer:
        """From a LeRobot ``meta/stats.json`` dict: q01/q99 of ``stats[key]`` (min/max for
        ``binary_dims``, which must hold 0/1-like values such as terminate and gripper)."""
        if key not in stats:
            raise PlayworldError(f"stats have no {key!r} entry (have: {', '.join(stats) or 'nothing'}).")
        s = stats[key]
        missing = [k for k in ("q01", "q99") if k not in s]
        if missing:
            raise PlayworldError(
                f"stats[{key!r}] has no {' or '.join(missing)}; record the dataset with a playworld that "
                "writes quantiles (LeRobot v3 stats.json), or pass q01/q99 to ActionTokenizer yourself."
            )
        lo = np.asarray(s["q01"], dtype=np.float64).reshape(-1).copy()
        hi = np.asarray(s["q99"], dtype=np.float64).reshape(-1).copy()
        if binary_dims:
            if "min" not in s or "max" not in s:
                raise PlayworldError(
                    f"stats[{key!r}] needs min and max for the binary dimensions {tuple(binary_dims)}."
                )
            mn = np.asarray(s["min"], dtype=np.float64).reshape(-1)
            mx = np.asarray(s["max"], dtype=np.float64).reshape(-1)
            for d in binary_dims:
                if not -lo.size <= d < lo.size:
                    raise PlayworldError(f"binary dimension {d} is out of range for {lo.size}-d actions.")
                lo[d], hi[d] = mn[d], mx[d]
        return cls(lo, hi, num_bins=num_bins, names=names)

    # -- numbers <-> bins --------------------------------------------------------------------

    def encode(self, action) -> np.ndarray:
        """Float actions (..., D) -> int64 bins (..., D) in [0, num_bins - 1]."""
        a = np.asarray(action, dtype=np.float64)
        if a.shape[-1:] != (self.dim,):
            raise ValueError(f"actions must end in dimension {self.dim}, got shape {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError("cannot tokenize NaN or inf actions")
        x = np.clip(2.0 * (a - self.low) / (self.high - self.low) - 1.0, -1.0, 1.0)
        return np.minimum(np.floor((x + 1.0) / 2.0 * self.num_bins), self.num_bins - 1).astype(np.int64)

    def decode(self, bins) -> np.ndarray:
        """Int bins (..., D) -> float32 actions (..., D) at the bins' centres."""
        b = np.asarray(bins)
        if b.shape[-1:] != (self.dim,):
            raise ValueError(f"bins must end in dimension {self.dim}, got shape {b.shape}")
        if not np.issubdtype(b.dtype, np.integer):
            raise ValueError(f"bins must be integers, got {b.dtype}")
        if b.size and (b.min() < 0 or b.max() >= self.num_bins):
            raise ValueError(f"bins must lie in [0, {self.num_bins - 1}], got [{b.min()}, {b.max()}]")
        centre = (b.astype(np.float64) + 0.5) / self.num_bins
        return (self.low + centre * (self.high - self.low)).astype(np.float32)

    # -- bins <-> text -----------------------------------------------------------------------

    def to_text(self, bins) -> str:
        """One action's bins (D,) -> ``"1 128 91 241 5 101 127 217"``."""
        b = np.asarray(bins)
        if b.shape != (self.dim,):
            raise ValueError(f"to_text takes one action of {self.dim} bins, got shape {b.shape}")
        return " ".join(str(int(v)) for v in b)

    def from_text(self, text: str) -> np.ndarray:
        """``"1 128 91 ..."`` -> int64 bins (D,); raises :class:`ActionDecodeError` unless the
        text is exactly D integers in [0, num_bins - 1] separated by whitespace."""
        if not isinstance(text, str):
            raise ActionDecodeError(f"action text must be a string, got {type(text).__name__}.")
        parts = text.split()
        if len(parts) != self.dim:
            raise ActionDecodeError(
                f"expected {self.dim} integers in the action text, got {len(parts)}: {text[:80]!r}."
            )
        values = []
        for p in parts:
            if not (p.isascii() and p.isdigit()):  # only 0-9: no signs, decimals or "²"
                raise ActionDecodeError(f"{p!r} in action text {text[:80]!r} is not a non-negative integer.")
            v = int(p)
            if v >= self.num_bins:
                raise ActionDecodeError(
                    f"bin {v} in action text {text[:80]!r} is outside [0, {self.num_bins - 1}]."
                )
            values.append(v)
        return np.array(values, dtype=np.int64)

    def action_to_text(self, action) -> str:
        return self.to_text(self.encode(action))

    def text_to_action(self, text: str) -> np.ndarray:
        return self.decode(self.from_text(text))

    # -- files -------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {
            "type": "rt2_action_tokenizer",
            "num_bins": self.num_bins,
            "q01": self.low.tolist(),
            "q99": self.high.tolist(),
            "names": self.names,
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the tokenizer as JSON (atomically)."""
        path = Path(path)
        atomic_write_json(path, self.to_dict())
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> ActionTokenizer:
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise PlayworldError(
                f"{path} does not exist; pass the JSON written by ActionTokenizer.save()."
            ) from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise PlayworldError(f"{path} is not valid JSON ({e}); save the tokenizer again.") from None
        if not isinstance(d, dict) or d.get("type") != "rt2_action_tokenizer":
            raise PlayworldError(
                f'{path} is not an action tokenizer file (no "type": "rt2_action_tokenizer").'
            )
        try:
            return cls(d["q01"], d["q99"], num_bins=d["num_bins"], names=d.get("names"))
        except KeyError as e:
            raise PlayworldError(f"{path} is missing {e}; save the tokenizer again.") from None
