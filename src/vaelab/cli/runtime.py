"""What runs before every command, once its implementation is wanted: matplotlib's backend, torch's CPU threads."""

from __future__ import annotations

import os

import matplotlib
import torch


def set_threads() -> None:
    """Honour VAELAB_THREADS (parallel sweeps and tests give each process its share of the CPU)."""
    n = os.environ.get("VAELAB_THREADS")
    if n:
        try:
            torch.set_num_threads(max(1, int(n)))
        except ValueError:
            raise SystemExit(f"vaelab: error: VAELAB_THREADS must be an integer (got {n!r})") from None


def prepare() -> None:
    """Before a command runs: figures go to files (Agg, in this process only: a notebook or a child process
    started by a test keeps its own backend) and VAELAB_THREADS caps torch's threads."""
    matplotlib.use("Agg")
    set_threads()
