"""`vaelab explore RUN`: write the interactive latent explorer of a VAE run (one self-contained HTML page)
(arguments: args/explore.py)."""

from __future__ import annotations

import time
from pathlib import Path

from vaelab.data.registry import dataset_for_run
from vaelab.data.images import load
from vaelab.engine.lock import run_lock
from vaelab.errors import RunError
from vaelab.vae.explore import write_explorer
from vaelab.vae.run import open_vae


def cmd_explore(args) -> int:
    """Encode the test points, map them, embed the decoder and write the page."""
    out = Path(args.out) if args.out else None
    if out is not None and out.is_dir():
        raise RunError(f"--out {out} is a folder; name the HTML file to write")
    run = open_vae(args.run, args.device)
    data = load(dataset_for_run(run.cfg.dataset, args.dataset), args.data_dir)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with run_lock(*([] if out is not None else [run.path])):  # the page goes into the run folder by default
        path = write_explorer(run, data, out, args.points, args.map, args.seed)
    print(f"{path} ({path.stat().st_size / 1e6:.2f} MB, written in {time.perf_counter() - t0:.1f} s): open it in "
          "a browser; it needs no server and no network")
    return 0
