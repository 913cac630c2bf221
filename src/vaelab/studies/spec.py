"""Sweep specs: a TOML grid over config keys, checked up front, expanded into named, validated run configs.

    name = "mine"
    tensorboard = true      # optional: TensorBoard logs in every run folder (RUN/tb)
    [base]                  # overrides for every run
    model.family = "conv"
    [grid]                  # every combination of these values is one run
    "model.latent_dim" = [2, 10]
    [evaluate]              # options of `vaelab evaluate` (quick, k, samples, iwae_images, probe_train)
    quick = true
"""

from __future__ import annotations

import itertools
import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from vaelab.config import with_overrides
from vaelab.data import registry
from vaelab.errors import VaelabError
from vaelab.vae.config import VAEConfig
from vaelab.vae.archs import REPORT_CHOICE

CORE_KEYS = {"dataset", "model.family", "model.arch", "model.latent_dim", "train.beta", "train.seed"}  # always named
EVALUATE_KEYS = {"quick", "k", "samples", "iwae_images", "probe_train"}
SHORT = {"train.epochs": "ep", "train.lr": "lr", "train.batch_size": "bs"}


@dataclass(frozen=True)
class Spec:
    """A parsed sweep spec: its name, the base overrides, the grid and the evaluation options."""

    name: str
    base: dict
    grid: dict[str, list]
    evaluate: dict
    tensorboard: bool = False  # TensorBoard logs in every run folder


def flatten(d: dict, prefix: str = "") -> dict:
    """{"train": {"beta": 1}} -> {"train.beta": 1} (TOML tables and dotted keys read the same)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def builtin_specs() -> dict[str, str]:
    """Names of the built-in specs (the report's studies) -> their TOML text."""
    folder = resources.files("vaelab.studies") / "specs"
    return {p.name[:-5]: p.read_text(encoding="utf-8") for p in folder.iterdir() if p.name.endswith(".toml")}


def parse_spec(text: str, origin: str = "spec") -> Spec:
    """Parse and check a TOML sweep spec; every problem is one VaelabError naming `origin`."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise VaelabError(f"{origin}: not valid TOML ({e})") from None
    unknown = set(raw) - {"name", "tensorboard", "base", "grid", "evaluate"}
    if unknown:
        raise VaelabError(f"{origin}: unknown section(s) {', '.join(sorted(unknown))} "
                          "(allowed: name, tensorboard, base, grid, evaluate)")
    if not isinstance(raw.get("tensorboard", False), bool):
        raise VaelabError(f"{origin}: tensorboard must be true or false")
    for section in ("base", "grid", "evaluate"):
        if not isinstance(raw.get(section, {}), dict):
            raise VaelabError(f"{origin}: [{section}] must be a table")
    grid = flatten(raw.get("grid", {}))
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise VaelabError(f"{origin}: grid key {key!r} must be a non-empty list")
    bad_eval = set(raw.get("evaluate", {})) - EVALUATE_KEYS
    if bad_eval:
        raise VaelabError(f"{origin}: unknown [evaluate] option(s) {', '.join(sorted(bad_eval))} "
                          f"(allowed: {', '.join(sorted(EVALUATE_KEYS))})")
    name = raw.get("name", "sweep")
    if not isinstance(name, str):
        raise VaelabError(f"{origin}: name must be a string")
    spec = Spec(name, flatten(raw.get("base", {})), grid, dict(raw.get("evaluate", {})), raw.get("tensorboard", False))
    configs(spec)  # check every combination now, before anything runs
    return spec


def load_spec(arg: str) -> Spec:
    """A spec from a built-in name (dense, conv, beta) or a TOML file path."""
    specs = builtin_specs()
    if arg in specs:
        return parse_spec(specs[arg], f"built-in spec {arg!r}")
    path = Path(arg)
    if not path.is_file():
        raise VaelabError(f"no sweep spec {arg!r}: give a TOML file or one of {', '.join(sorted(specs))}")
    try:
        return parse_spec(path.read_text(encoding="utf-8"), str(path))
    except (OSError, UnicodeDecodeError) as e:
        raise VaelabError(f"cannot read {path}: {e}") from None


def run_name(cfg: VAEConfig, point: dict) -> str:
    """A readable, filesystem-safe folder name, e.g. 'conv-32-64-128_z10_beta1_seed0' (+ other grid keys);
    runs of another dataset than the default one start with its name ('fashion-mnist_conv-...')."""
    m, t = cfg.model, cfg.train
    parts = [f"{m.family}-{m.arch}", f"z{m.latent_dim}", f"beta{t.beta:g}", f"seed{t.seed}"]
    if cfg.dataset != registry.DEFAULT:
        parts.insert(0, cfg.dataset)
    for key, value in point.items():
        if key not in CORE_KEYS:
            tag = SHORT.get(key, key.split(".")[-1] + "=")
            parts.append(f"{tag}{value:g}" if isinstance(value, float) else f"{tag}{value}")
    name = re.sub(r"[^A-Za-z0-9._=+-]", "-", "_".join(parts)).strip(".")  # no '/' or '..': stays in --out
    return name[:150] or "run"


def family_defaults(cfg: VAEConfig, given: set[str]) -> dict:
    """The report's architecture and latent size for the config's family, where the spec names neither
    (a spec saying only `model.family = "dense"` means the report's dense model, as `vaelab train` does)."""
    arch, latent = REPORT_CHOICE.get(cfg.model.family, (cfg.model.arch, cfg.model.latent_dim))
    return {k: v for k, v in (("model.arch", arch), ("model.latent_dim", latent)) if k not in given}


def configs(spec: Spec, overrides: dict | None = None) -> list[tuple[str, VAEConfig]]:
    """Every (run name, validated config) of the grid, in a stable order; names are unique."""
    base = with_overrides(VAEConfig(), {**spec.base, **(overrides or {})}) if spec.base or overrides else VAEConfig()
    keys = list(spec.grid)
    given = {*spec.base, *spec.grid, *(overrides or {})}
    out, seen = [], set()
    for values in itertools.product(*(spec.grid[k] for k in keys)):
        point = dict(zip(keys, values))
        try:
            cfg = with_overrides(base, point)
            cfg = with_overrides(cfg, family_defaults(cfg, given)).validate()
        except VaelabError as e:
            raise VaelabError(f"sweep {spec.name!r}, point {point}: {e}") from None
        name = run_name(cfg, point)
        if name in seen:
            raise VaelabError(f"sweep {spec.name!r}: two grid points map to the folder {name!r}")
        seen.add(name)
        out.append((name, cfg))
    return out
