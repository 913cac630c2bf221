"""Crash-safe checkpoints: weights as safetensors, training state via torch.save (loaded weights_only).

A checkpoint is two files that must agree: `model.safetensors` (weights, epoch in its metadata) and
`state.pt` (optimizer, RNG states, metrics history, epoch). Both are first written in full to
`*.next` files and fsynced; renaming `state.pt.next` over `state.pt` is the commit point; then
`model.safetensors.next` is renamed. A kill at any moment leaves either the old pair, or a new
state.pt whose weights wait in `model.safetensors.next`, which `recover` renames into place.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from vaelab.files import atomic_write_text, fsync_dir, write_failed
from vaelab.errors import RunError

WEIGHTS, STATE = "model.safetensors", "state.pt"


def weights_epoch(path: Path) -> int | None:
    """The epoch stored in a safetensors file's metadata, or None if unreadable."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return int((f.metadata() or {}).get("epoch", -1))
    except (SafetensorError, OSError, ValueError, RuntimeError):
        return None


def save(run_dir: Path, weights: dict[str, torch.Tensor], state: dict[str, Any], epoch: int) -> None:
    """Write the checkpoint of `epoch` crash-safely (see the module docstring); when a write fails (disk
    full, I/O error) the `.next` files are removed, the previous pair stays, and WriteFailed says why."""
    w_next, s_next = run_dir / (WEIGHTS + ".next"), run_dir / (STATE + ".next")
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in weights.items()}
    try:
        # one metadata key: safetensors writes the metadata map in a per-process random order, so with two
        # keys the same weights could give files that differ byte for byte (found by the kill soak test)
        save_file(cpu, str(w_next), metadata={"epoch": str(epoch)})
        torch.save({**state, "epoch": epoch}, s_next)
        for p in (w_next, s_next):
            with open(p, "rb+") as f:
                os.fsync(f.fileno())
    except (OSError, RuntimeError, SafetensorError) as e:  # torch.save and safetensors wrap the OSError
        for p in (w_next, s_next):
            p.unlink(missing_ok=True)
        raise write_failed(run_dir / STATE, as_os_error(e)) from None
    os.replace(s_next, run_dir / STATE)  # commit point
    fsync_dir(run_dir)
    os.replace(w_next, run_dir / WEIGHTS)
    fsync_dir(run_dir)


def as_os_error(e: Exception) -> OSError:
    """The OSError behind a writer's error (safetensors says "... (os error 28)"), for one clear message."""
    if isinstance(e, OSError):
        return e
    code = re.search(r"os error (\d+)", str(e))
    return OSError(int(code[1]), os.strerror(int(code[1]))) if code else OSError(str(e).splitlines()[0][:160])


def load_state(run_dir: Path) -> dict[str, Any]:
    """state.pt, loaded with weights_only=True (no arbitrary unpickling)."""
    path = run_dir / STATE
    try:
        with warnings.catch_warnings():  # a foreign pickle's protocol warning would only add noise
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise RunError(f"{run_dir} has no {STATE}: nothing to resume") from None
    except Exception as e:  # corrupt, truncated or foreign (e.g. a pickle with code in it)
        raise RunError(f"{path} is corrupt or not a vaelab state file ({type(e).__name__}: "
                       f"{str(e).splitlines()[0][:160]})") from None
    if not isinstance(state, dict) or not isinstance(state.get("epoch"), int):
        raise RunError(f"{path} is not a vaelab state file")
    return state


def recover(run_dir: Path) -> None:
    """Finish a checkpoint interrupted between its two renames; drop half-written `.next` files."""
    state_path, w_path, w_next = run_dir / STATE, run_dir / WEIGHTS, run_dir / (WEIGHTS + ".next")
    (run_dir / (STATE + ".next")).unlink(missing_ok=True)  # never committed
    if not state_path.exists():
        w_next.unlink(missing_ok=True)
        return
    epoch = load_state(run_dir)["epoch"]
    if weights_epoch(w_path) != epoch and w_next.exists() and weights_epoch(w_next) == epoch:
        os.replace(w_next, w_path)
        fsync_dir(run_dir)
    w_next.unlink(missing_ok=True)


def load_weights(path: Path, expected: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file; with `expected` (a state_dict), names and shapes must match."""
    try:
        tensors = load_file(str(path))
    except FileNotFoundError:
        raise RunError(f"{path} does not exist") from None
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise RunError(f"{path} is not a readable safetensors file ({str(e)[:160]})") from None
    if expected is not None:
        missing = sorted(set(expected) - set(tensors))
        extra = sorted(set(tensors) - set(expected))
        wrong = sorted(k for k in set(expected) & set(tensors) if expected[k].shape != tensors[k].shape)
        if missing or extra or wrong:
            k = (wrong or missing or extra)[0]
            detail = (f"{k}: shape {tuple(tensors[k].shape)} here, {tuple(expected[k].shape)} expected"
                      if wrong else f"{len(missing)} missing and {len(extra)} unexpected tensors (e.g. {k})")
            raise RunError(f"{path} holds weights of another model than its config.json describes ({detail})")
    return tensors


def write_history(run_dir: Path, history: list[dict]) -> None:
    """metrics.jsonl rewritten atomically from the history kept in state.pt (one line an epoch)."""
    atomic_write_text(run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))
