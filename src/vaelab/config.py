"""Typed, frozen run configurations, saved as JSON in every run folder.

`from_dict` is strict: unknown keys, wrong types and impossible values raise a VaelabError that
names the key, so a hand-edited or foreign config.json is refused with one clear line.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from vaelab.errors import VaelabError


@dataclass(frozen=True)
class ModelConfig:
    """Which VAE: family (dense or conv), architecture name, latent size."""

    family: Literal["dense", "conv"] = "conv"
    arch: str = "32-64-128"
    latent_dim: int = 10

    def validate(self) -> None:
        """Raise VaelabError when the architecture or latent size is impossible."""
        from vaelab.vae.models import check_arch  # local: config must stay importable without torch

        if self.latent_dim < 1:
            raise VaelabError(f"latent_dim must be >= 1 (got {self.latent_dim})")
        check_arch(self.family, self.arch)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and data settings of a VAE run."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    beta: float = 1.0
    seed: int = 0
    device: str = "auto"
    binarize: bool = False  # dynamic binarisation (Burda et al. 2015): x ~ Bernoulli(intensity) each epoch
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16: autocast forward (weights, loss, Adam stay fp32)

    def validate(self) -> None:
        """Raise VaelabError when an option is out of range."""
        if self.epochs < 1:
            raise VaelabError(f"epochs must be >= 1 (got {self.epochs})")
        if self.batch_size < 1:
            raise VaelabError(f"batch_size must be >= 1 (got {self.batch_size})")
        if not self.lr > 0 or self.lr != self.lr or self.lr == float("inf"):
            raise VaelabError(f"lr must be a positive finite number (got {self.lr})")
        if not self.beta >= 0 or self.beta == float("inf"):
            raise VaelabError(f"beta must be a finite number >= 0 (got {self.beta})")
        if self.seed < 0:
            raise VaelabError(f"seed must be >= 0 (got {self.seed})")
        if self.device not in ("auto", "cpu") and not self.device.startswith(("cuda", "mps")):
            raise VaelabError(f"device must be auto, cpu, cuda[:N] or mps (got {self.device!r})")


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a VAE run; saved as config.json."""

    kind: Literal["vae"] = "vae"
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> "RunConfig":
        """Validate every part; return self so calls chain."""
        self.model.validate()
        self.train.validate()
        return self


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


def load_json(path, cls: type = RunConfig) -> Any:
    """Read and validate a config.json; any problem is one VaelabError naming the file."""
    try:
        text = open(path, encoding="utf-8").read()
    except OSError as e:
        raise VaelabError(f"cannot read {path}: {e.strerror}") from None
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
