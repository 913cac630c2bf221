"""Run folders, for every model family: start or resume one, read its kind, check it is trained.

Starting and resuming are one path for every family, the API and the CLI alike, on one process or as the
ranks of a DDP run: plan_run (what to train; writes nothing, so every rank can compute it), then
prepare_run (rank 0 creates the folder and writes config.json; every rank loads the data). A family opens
its own trained runs (vae/run.py, diffusion/run.py) with `trained_config`; the engine never imports a family."""

from __future__ import annotations

import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from vaelab.version import __version__
from vaelab.config import load_json, to_dict
from vaelab.data.images import Images, load as load_images
from vaelab.data.registry import dataset_for_run
from vaelab.engine import checkpoint, distributed
from vaelab.engine.distributed import SINGLE, World
from vaelab.files import read_text_limited
from vaelab.errors import RunError, VaelabError

CONFIG = "config.json"
METRICS = "metrics.json"  # written by `vaelab evaluate`
METRICS_FORMAT = "vaelab-metrics-1"  # its "format" field


def versions() -> dict:
    """Versions that a run's numbers depend on, saved beside its config."""
    return {"vaelab": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "platform": platform.platform()}


def pick_device(name: str) -> torch.device:
    """'auto' means CUDA when present, else CPU; an unavailable device is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise VaelabError(f"device {name!r} asked for, but PyTorch sees no CUDA GPU here")
    if name == "mps" and not torch.backends.mps.is_available():
        raise VaelabError("device 'mps' asked for, but it is not available here")
    return torch.device(name)


def write_config(run_dir: Path, cfg, extra_meta: dict | None = None) -> None:
    """config.json: the full config plus a `meta` block (versions, time, command) for people."""
    meta = {**versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": " ".join(sys.argv), **(extra_meta or {})}
    checkpoint.atomic_write_text(run_dir / CONFIG, json.dumps({**to_dict(cfg), "meta": meta}, indent=2) + "\n")


def prepare_new(run_dir: Path) -> None:
    """Create `run_dir` for a new run, refusing to touch a folder that already holds a run."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"{run_dir} exists and is not a folder")
    if (run_dir / CONFIG).exists() or (run_dir / checkpoint.STATE).exists():
        raise RunError(f"{run_dir} already holds a run; use --resume to continue it, or choose another --out")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunError(f"cannot create {run_dir}: {e.strerror or e}") from None


def with_train(cfg, **changes):
    """`cfg` with some train fields changed (resume --epochs, --on-divergence), validated."""
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **changes)).validate()


def with_epochs(cfg, epochs: int):
    """`cfg` with a new epoch target (resume --epochs), validated."""
    return with_train(cfg, epochs=epochs)


def plan_run(out: Path, kind: str, config_cls: type, cfg=None, epochs: int | None = None,
             dataset: str | None = None, changes: dict | None = None) -> tuple[object, bool]:
    """(config, resume) of the run to train in `out`: `cfg` for a new run, else the saved config of the run
    of `kind` to continue (`epochs` a new target, `changes` other train fields that a resume may change,
    `dataset` checked against its own). Writes nothing."""
    if cfg is not None:
        return cfg, False
    if not (out / CONFIG).exists():
        raise RunError(f"{out} holds no run to resume (no {CONFIG})")
    found = read_kind(out)
    if found != kind:
        raise RunError(f"{out} holds a {found.upper()} run, not a {kind.upper()}; resume it with its own command")
    saved = load_json(out / CONFIG, config_cls)
    dataset_for_run(saved.dataset, dataset)
    changes = {**(changes or {}), **({"epochs": epochs} if epochs is not None else {})}
    changed = {k: v for k, v in changes.items() if getattr(saved.train, k) != v}
    if changed:
        saved = with_train(saved, **changed)
    return saved, (out / checkpoint.STATE).exists()


def open_folder(out: Path, cfg, new: bool, config_cls: type) -> None:
    """Create the folder of a new run, or write a resumed run's changed config (a new epoch target)."""
    if new:
        prepare_new(out)
    elif cfg != load_json(out / CONFIG, config_cls):
        write_config(out, cfg)


def prepare_run(out: Path, cfg, new: bool, started: bool, data_dir=None, world: World = SINGLE) -> Images:
    """The run folder and its config written (by rank 0, the others waiting), the data loaded (by every rank).
    `new`: a run to create; `started`: it has a checkpoint to resume from."""
    distributed.main_first(world, lambda: open_folder(out, cfg, new, type(cfg)))
    data = load_images(cfg.dataset, data_dir)
    if not started:
        distributed.main_first(world, lambda: write_config(out, cfg, {"data_source": str(data.source)}))
    return data


def read_kind(run_dir: Path) -> str:
    """The `kind` of the run in `run_dir` (its model family: 'vae', 'ddpm'); RunError if it is no run folder."""
    path = Path(run_dir) / CONFIG
    if not Path(run_dir).is_dir():
        raise RunError(f"{run_dir} is not a folder")
    if not path.is_file():
        raise RunError(f"{run_dir} is not a vaelab run folder (no {CONFIG})")
    try:
        kind = json.loads(read_text_limited(path)).get("kind")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, OSError):
        raise RunError(f"{path} is not valid JSON") from None
    if not isinstance(kind, str) or not kind:
        raise RunError(f"{path} does not describe a vaelab run (kind {kind!r})")
    return kind


def trained_config(run_dir: Path, kind: str, cls: type):
    """The validated config of a trained run of `kind`, its checkpoint recovered; RunError otherwise."""
    found = read_kind(run_dir)
    if found != kind:
        raise RunError(f"{run_dir} holds a {found.upper()} run, not a {kind.upper()}")
    try:
        cfg = load_json(run_dir / CONFIG, cls)
    except VaelabError as e:
        raise RunError(str(e)) from None
    if not (run_dir / checkpoint.WEIGHTS).exists():
        raise RunError(f"{run_dir} has no trained weights yet ({checkpoint.WEIGHTS} missing)")
    checkpoint.recover(run_dir)
    return cfg


def write_metrics(run_dir: Path, metrics: dict) -> Path:
    """metrics.json in the run folder, written atomically."""
    path = Path(run_dir) / METRICS
    checkpoint.atomic_write_text(path, json.dumps(metrics, indent=2) + "\n")
    return path


def read_metrics(run_dir, required: bool = True) -> dict | None:
    """A run's metrics.json (None when it has none and not `required`); RunError if missing or unreadable."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        if not required:
            return None
        raise RunError(f"{run_dir} has no {METRICS}; run `vaelab evaluate {run_dir}` first")
    try:
        metrics = json.loads(read_text_limited(path))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
        raise RunError(f"{path} is not readable JSON ({e})") from None
    if not isinstance(metrics, dict) or metrics.get("format") != METRICS_FORMAT:
        raise RunError(f"{path} is not a vaelab metrics file")
    return metrics
