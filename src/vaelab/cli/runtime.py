"""What runs before every command, once its implementation is wanted: torch's CPU threads."""

from __future__ import annotations

import os

import torch


def set_threads() -> None:
    """Honour VAELAB_THREADS (parallel sweeps and tests give each process its share of the CPU)."""
    n = os.environ.get("VAELAB_THREADS")
    if n:
        try:
            torch.set_num_threads(max(1, int(n)))
        except ValueError:
            raise SystemExit(f"vaelab: error: VAELAB_THREADS must be an integer (got {n!r})") from None
