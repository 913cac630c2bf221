"""Arguments of `vaelab data fetch|info`."""

from __future__ import annotations

import argparse

from vaelab.cli.common import add_command, add_dataset
from vaelab.data.registry import DATASETS


def sources_help() -> str:
    """One line per registered dataset: where its files come from, in order."""
    return "\n".join(f"  {d.name:<14} --data-dir / ${d.env_var}, the cache, then {', '.join(d.sources)}"
                     for d in DATASETS.values())


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `data` command group."""
    p = add_command(sub, "data", "fetch or inspect a dataset's files (MNIST, Fashion-MNIST)",
                    "Where each dataset comes from, in order (the cache is $VAELAB_CACHE/NAME, default "
                    "~/.cache/vaelab/NAME; every fetched file is checked against the md5 of its uncompressed "
                    "bytes before it is cached):\n\n" + sources_help() + "\n\nExample: vaelab data info")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    f = add_command(dsub, "fetch", "download and verify the dataset into the cache (if not already there)",
                    "Download and verify a dataset into the cache, unless it is already there, and say where it is. "
                    "\n\nExample: vaelab data fetch --dataset fashion-mnist", "vaelab.cli.data:cmd_fetch", "data")
    add_dataset(f)
    i = add_command(dsub, "info", "show where the dataset is read from and whether each file verifies",
                    "One line per IDX file of the dataset: its path, items and md5 check; exit code 3 unless all "
                    "four verify.\n\nExample: vaelab data info", "vaelab.cli.data:cmd_info", "data")
    add_dataset(i)
