"""`vaelab data fetch|info`: where a dataset comes from and whether it verifies (arguments: args/data.py)."""

from __future__ import annotations

from vaelab.cli.common import dataset_of
from vaelab.data.registry import get
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
