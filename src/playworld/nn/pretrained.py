"""One artifact format for every playworld model: a folder with ``config.json`` + ``model.safetensors``.

Every model config subclasses :class:`ModelConfig` (a dataclass, validated in
``__post_init__``), and every model subclasses :class:`PretrainedModel`, which gives it
``save_pretrained(path)`` / ``from_pretrained(path)`` in the spirit of huggingface_hub's
``PyTorchModelHubMixin`` (never pickle). ``config.json`` carries a ``model_type`` so a folder
holding another kind of model is rejected with a clear message.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import numbers
import os
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from playworld.errors import PlayworldError
from playworld.utils import atomic_dir

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

C = TypeVar("C", bound="ModelConfig")
M = TypeVar("M", bound="PretrainedModel")


@dataclasses.dataclass
class ModelConfig:
    """Base for model configs: JSON round-trip and named presets.

    Subclasses set ``model_type`` (a ClassVar) and may define ``PRESETS``: a dict from preset
    name to keyword overrides.
    """

    model_type: ClassVar[str] = "base"
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Every config checks its fields' types first (see _check_field_types), then runs its own
        # __post_init__, so a wrong type or a NaN is a PlayworldError, never a TypeError deep inside.
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("__post_init__")
        if own is None or getattr(own, "_checks_types", False):
            return

        @functools.wraps(own)
        def __post_init__(self) -> None:
            self._check_field_types()
            own(self)

        __post_init__._checks_types = True
        cls.__post_init__ = __post_init__

    def __post_init__(self) -> None:
        self._check_field_types()

    def _check_field_types(self) -> None:
        """Each field must match its annotation (bool, int, float, str, Literal, tuple, optional);
        numbers must be finite and, being sizes, counts, weights or temperatures, not negative.
        Lists become tuples and numpy scalars Python numbers."""
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            if f.name in hints:
                value = getattr(self, f.name)
                ok, fixed = _conform(value, hints[f.name])
                if not ok:
                    raise PlayworldError(
                        f"{type(self).__name__}.{f.name} must be {_describe(hints[f.name])}, got {value!r}."
                    )
                object.__setattr__(self, f.name, fixed)

    def to_dict(self) -> dict[str, Any]:
        return {"model_type": self.model_type, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls: type[C], d: dict[str, Any]) -> C:
        if not isinstance(d, dict):
            raise PlayworldError(f"a {cls.__name__} must be a JSON object of its fields, got {type(d).__name__}.")
        d = dict(d)
        mt = d.pop("model_type", cls.model_type)
        if mt != cls.model_type:
            raise PlayworldError(
                f"this config is for a '{mt}' model, not a '{cls.model_type}'; "
                f"point at a folder saved by a {cls.model_type} model."
            )
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise PlayworldError(
                f"{cls.__name__} has no field(s) {unknown}; the folder was written by another "
                "playworld version or is not a playworld model."
            )
        # JSON turns tuples into lists; give tuple fields their tuples back.
        for f in dataclasses.fields(cls):
            if f.name in d and isinstance(d[f.name], list) and "tuple" in str(f.type):
                d[f.name] = tuple(d[f.name])
        return cls(**d)

    @classmethod
    def preset(cls: type[C], name: str, **overrides: Any) -> C:
        """The named preset (e.g. ``tiny``), with optional field overrides."""
        if name not in cls.PRESETS:
            raise PlayworldError(
                f"unknown preset '{name}' for {cls.__name__}; valid presets: {sorted(cls.PRESETS)}"
            )
        return cls(**{**cls.PRESETS[name], **overrides})

    def replace(self: C, **changes: Any) -> C:
        return dataclasses.replace(self, **changes)


def _conform(value: Any, t: Any) -> tuple[bool, Any]:
    """(value matches annotation t, the value in canonical form)."""
    origin, args = typing.get_origin(t), typing.get_args(t)
    if t is Any:
        return True, value
    if t is bool:
        return isinstance(value, bool), value
    if t is int:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 0
        return ok, int(value) if ok else value
    if t is float:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
        return ok, float(value) if ok else value
    if t is str:
        return isinstance(value, str), value
    if origin is Literal:
        return any(type(value) is type(a) and value == a for a in args), value
    if origin in (typing.Union, types.UnionType):
        for a in args:
            ok, fixed = (value is None, None) if a is type(None) else _conform(value, a)
            if ok:
                return True, fixed
        return False, value
    if origin is tuple:
        if not isinstance(value, (tuple, list)):
            return False, value
        items = args[:1] * len(value) if len(args) == 2 and args[1] is Ellipsis else args
        if len(items) != len(value):
            return False, value
        done = [_conform(v, a) for v, a in zip(value, items, strict=True)]
        return all(ok for ok, _ in done), tuple(v for _, v in done)
    if origin is dict or t is dict:
        return isinstance(value, dict), value
    return True, value  # anything else is the config's own business


def _describe(t: Any) -> str:
    origin, args = typing.get_origin(t), typing.get_args(t)
    if t is bool:
        return "true or false"
    if t is int:
        return "an integer >= 0"
    if t is float:
        return "a finite number >= 0"
    if t is str:
        return "a string"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of ({_describe(args[0])})"
        return f"a list of {len(args)} values ({', '.join(_describe(a) for a in args)})"
    return getattr(t, "__name__", str(t))


def read_config_json(path: str | os.PathLike) -> dict[str, Any]:
    """Read ``config.json`` from a model folder, with clear errors."""
    p = Path(path)
    cfg_path = p / CONFIG_NAME if p.is_dir() else p
    if not cfg_path.exists():
        raise PlayworldError(f"{p} is not a playworld model folder: {CONFIG_NAME} is missing.")
    try:
        d = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PlayworldError(f"{cfg_path} is not valid JSON ({e}); the model folder is corrupt.") from e
    if not isinstance(d, dict):
        raise PlayworldError(f"{cfg_path} does not hold a JSON object; the model folder is corrupt.")
    return d


class PretrainedModel(nn.Module):
    """A module with ``config`` and folder save/load (config.json + model.safetensors)."""

    config_class: ClassVar[type[ModelConfig]] = ModelConfig

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save_pretrained(self, path: str | os.PathLike, dtype: torch.dtype | None = None) -> Path:
        """Write the folder atomically. ``dtype`` (e.g. bf16) shrinks float weights on disk."""
        path = Path(path)
        state = {}
        for k, v in self.state_dict().items():
            if not self._saves_weight(k):
                continue
            v = v.detach().cpu()
            if dtype is not None and v.is_floating_point():
                v = v.to(dtype)
            state[k] = v.contiguous()
        with atomic_dir(path, overwrite=True) as tmp:
            (tmp / CONFIG_NAME).write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")
            # Shared tensors (tied weights) must be cloned for safetensors.
            seen: dict[int, str] = {}
            for k, v in list(state.items()):
                ptr = v.untyped_storage().data_ptr()
                if ptr in seen:
                    state[k] = v.clone()
                seen[ptr] = k
            save_file(state, str(tmp / WEIGHTS_NAME), metadata={"model_type": self.config.model_type})
            self._save_extra_files(tmp)
        return path

    def _saves_weight(self, key: str) -> bool:
        """Whether :meth:`save_pretrained` writes the state-dict entry ``key`` (all, by default;
        models with frozen base weights loaded from elsewhere skip those)."""
        return True

    def _save_extra_files(self, folder: Path) -> None:
        """Write files besides config.json and the weights into the folder being saved (none)."""

    @classmethod
    def from_pretrained(cls: type[M], path: str | os.PathLike, map_location: str = "cpu") -> M:
        """Load a folder written by :meth:`save_pretrained`; rejects other models clearly."""
        model = cls(read_model_config(path, cls.config_class))
        load_weights(model, path, map_location)
        return model.to(map_location)


def read_model_config(path: str | os.PathLike, config_class: type[C], kind: str | None = None) -> C:
    """The config of the saved model folder ``path``, which must hold a ``config_class`` model.

    ``kind`` names the model in errors (default: its ``model_type``).
    """
    path = Path(path)
    if not path.is_dir():
        raise PlayworldError(
            f"{path} does not exist or is not a folder; expected a saved {kind or 'model'} folder."
        )
    d = read_config_json(path)
    mt = d.get("model_type")
    if mt != config_class.model_type:
        raise PlayworldError(
            f"{path} holds a '{mt}' model, not a {kind or repr(config_class.model_type)}; "
            "check which folder you passed."
        )
    return config_class.from_dict(d)


def load_weights(
    model: nn.Module,
    path: str | os.PathLike,
    map_location: str = "cpu",
    allow_missing: Callable[[str], bool] | None = None,
    name: str | None = None,
) -> None:
    """Load ``path/model.safetensors`` into ``model`` (cast to the model's dtypes).

    Every saved weight must be one of the model's, of its shape, and every weight of the model
    must be saved, except those ``allow_missing(key)`` accepts (e.g. frozen base weights that
    are not saved). ``name`` names the model in errors (default: ``ClassName(config)``).
    """
    path = Path(path)
    wpath = path / WEIGHTS_NAME
    if not wpath.exists():
        raise PlayworldError(f"{path} has no {WEIGHTS_NAME}; the model folder is incomplete.")
    try:
        state = load_file(str(wpath), device=map_location)
    except Exception as e:  # safetensors raises several types on corrupt files
        raise PlayworldError(f"{wpath} could not be read ({e}); the file is corrupt or truncated.") from e
    own = model.state_dict()
    unexpected = sorted(k for k in state if k not in own)
    missing = sorted(k for k in own if k not in state and not (allow_missing and allow_missing(k)))
    name = name or f"{type(model).__name__}(config)"
    if missing or unexpected:
        raise PlayworldError(
            f"{wpath} does not match {name}: missing {missing[:5]}, unexpected {unexpected[:5]}."
        )
    wrong = [
        f"{k} {tuple(v.shape)} != {tuple(own[k].shape)}" for k, v in state.items() if v.shape != own[k].shape
    ]
    if wrong:
        raise PlayworldError(f"{wpath} does not match {name}: wrong shapes {wrong[:5]}.")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=False)
