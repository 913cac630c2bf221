"""Argument types and options shared by several subcommands."""

from __future__ import annotations

import argparse


def int_at_least(low: int):
    """An argparse type: an integer >= low."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low} (got {value})")
        return value
    return parse


positive_int = int_at_least(1)
nonneg_int = int_at_least(0)


def finite_float(text: str) -> float:
    """argparse type: a finite real number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"must be finite (got {text})")
    return value


def add_data_dir(p: argparse.ArgumentParser) -> None:
    """--data-dir: a read-only MNIST folder (else VAELAB_DATA, the cache, or a download)."""
    p.add_argument("--data-dir", metavar="DIR", default=None,
                   help="folder with the four MNIST IDX files, raw or .gz (read only; default: "
                        "$VAELAB_DATA, else the cache ~/.cache/vaelab/mnist, filled on first use)")


def add_together(p: argparse.ArgumentParser) -> None:
    """--together: train runs that differ only in beta as one stacked model (vaelab train-together)."""
    p.add_argument("--together", choices=["auto", "always", "never"], default="auto",
                   help="train runs whose configs differ only in beta in one process, as one stacked model "
                        "(one vmapped step for all): auto (default) does it on CUDA, where it is several times "
                        "faster; on CPU separate processes (--jobs) are as fast (benchmarks/README.md)")
