"""`vaelab data fetch|info`: where a dataset comes from and whether it verifies."""

from __future__ import annotations

import argparse

from vaelab.cli.common import add_dataset, dataset_of
from vaelab.data.registry import DATASETS, get
from vaelab.data.images import info, load


def cmd_fetch(args) -> int:
    """Make sure the dataset is available (fetching into the cache if needed) and say where."""
    data = load(dataset_of(args), args.data_dir)
    print(f"{data.dataset.title} ready in {data.source}: {len(data.train_x)} training and {len(data.test_x)} "
          "test images")
    return 0


def cmd_info(args) -> int:
    """Print one line per IDX file of the dataset: path, items, md5 verification."""
    dataset = get(dataset_of(args))
    rows = info(dataset.name, args.data_dir)
    for r in rows:
        mark = "ok " if r["verified"] else "-- "
        print(f"{mark} {r['file']:<26} {r['path'] or '(missing)'}\n    {r['detail']}")
    ok = all(r["verified"] for r in rows)
    print(f"all four files match the official md5 of {dataset.title}" if ok
          else f"not verified: run `vaelab data fetch --dataset {dataset.name}`")
    return 0 if ok else 3


def sources_help() -> str:
    """One line per registered dataset: where its files come from, in order."""
    return "\n".join(f"  {d.name:<14} --data-dir / ${d.env_var}, the cache, then {', '.join(d.sources)}"
                     for d in DATASETS.values())


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `data` command group."""
    p = sub.add_parser("data", help="fetch or inspect a dataset's files (MNIST, Fashion-MNIST)",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Where each dataset comes from, in order (the cache is $VAELAB_CACHE/NAME, "
                                   "default ~/.cache/vaelab/NAME; every fetched file is checked against the md5 "
                                   "of its uncompressed bytes before it is cached):\n" + sources_help())
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    f = dsub.add_parser("fetch", help="download and verify the dataset into the cache (if not already there)")
    add_dataset(f)
    f.set_defaults(func=cmd_fetch)
    i = dsub.add_parser("info", help="show where the dataset is read from and whether each file verifies")
    add_dataset(i)
    i.set_defaults(func=cmd_info)
