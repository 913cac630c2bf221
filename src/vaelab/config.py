"""Typed, frozen configurations as data: dataclasses to and from JSON, strictly, and dotted overrides.

Each model family defines its own config dataclasses (vae/config.py, diffusion/config.py); this module
only converts them. `from_dict` is strict: unknown keys, wrong types and impossible values raise a
VaelabError that names the key, so a hand-edited or foreign config.json is refused with one clear line.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any, Literal

from vaelab.files import read_text_limited
from vaelab.errors import VaelabError


def to_dict(cfg: Any) -> dict:
    """A plain JSON-ready dict of a config dataclass."""
    return dataclasses.asdict(cfg)


def _check_value(name: str, tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise VaelabError(f"config key {name!r} must be an object")
        return from_dict(tp, value, prefix=name + ".")
    if origin is Literal:
        if value not in typing.get_args(tp):
            choices = ", ".join(map(str, typing.get_args(tp)))
            raise VaelabError(f"config key {name!r} must be one of {choices} (got {value!r})")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise VaelabError(f"config key {name!r} must be true or false (got {value!r})")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise VaelabError(f"config key {name!r} must be an integer (got {value!r})")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise VaelabError(f"config key {name!r} must be a number (got {value!r})")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise VaelabError(f"config key {name!r} must be a string (got {value!r})")
        return value
    raise VaelabError(f"config key {name!r} has an unsupported type")  # pragma: no cover


def from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    """Build dataclass `cls` from `data`, refusing unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise VaelabError("config must be a JSON object")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise VaelabError(f"unknown config key(s): {', '.join(prefix + k for k in unknown)}")
    kwargs = {k: _check_value(prefix + k, hints[k], v) for k, v in data.items()}
    return cls(**kwargs)


def with_overrides(cfg: Any, overrides: dict[str, Any]) -> Any:
    """Return a copy of `cfg` with dotted keys replaced ("train.beta": 2.0), type-checked."""
    data = to_dict(cfg)
    for key, value in overrides.items():
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise VaelabError(f"unknown config key: {key}")
            node = node[part]
        if parts[-1] not in node:
            raise VaelabError(f"unknown config key: {key}")
        node[parts[-1]] = value
    return from_dict(type(cfg), data)


def check_device(device: str) -> None:
    """Raise VaelabError unless `device` is auto, cpu, cuda[:N] or mps."""
    if device not in ("auto", "cpu") and not device.startswith(("cuda", "mps")):
        raise VaelabError(f"device must be auto, cpu, cuda[:N] or mps (got {device!r})")


DIVERGENCE_ACTIONS = ("stop", "rollback")  # what the loop does when an epoch's loss jumps (engine/loop.py)


def check_divergence(factor: float, action: str) -> None:
    """Raise VaelabError unless `factor` is 0 (off) or above 1 and `action` one of DIVERGENCE_ACTIONS."""
    if not (factor == 0 or 1 < factor < float("inf")):
        raise VaelabError(f"divergence_factor must be 0 (off) or a finite number above 1 (got {factor})")
    if action not in DIVERGENCE_ACTIONS:
        raise VaelabError(f"on_divergence must be one of {', '.join(DIVERGENCE_ACTIONS)} (got {action!r})")


def load_json(path, cls: type) -> Any:
    """Read and validate a config.json; any problem is one VaelabError naming the file."""
    try:
        text = read_text_limited(path)
    except OSError as e:
        raise VaelabError(f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise VaelabError(f"{path} is not a text file") from None
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise VaelabError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise VaelabError(f"{path} must hold a JSON object")
    data = {k: v for k, v in data.items() if k != "meta"}  # meta: versions, written for people
    try:
        return from_dict(cls, data).validate()
    except VaelabError as e:
        raise VaelabError(f"{path}: {e}") from None
