"""`vaelab explore RUN`: write the interactive latent explorer of a VAE run (one self-contained HTML page)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from vaelab.data.registry import dataset_for_run
from vaelab.cli.common import add_dataset, int_at_least, nonneg_int
from vaelab.data.images import load
from vaelab.errors import RunError
from vaelab.vae.explore import DEFAULT_POINTS, MAPS, PAGE, write_explorer
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
    path = write_explorer(run, data, out, args.points, args.map, args.seed)
    print(f"{path} ({path.stat().st_size / 1e6:.2f} MB, written in {time.perf_counter() - t0:.1f} s): open it in "
          "a browser; it needs no server and no network")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add explore."""
    p = sub.add_parser("explore", help=f"an interactive latent explorer of a VAE run  -> {PAGE}",
                       description="Write one self-contained HTML page (works from a file, offline): a map of the "
                                   "test images' posterior means (the latent itself for 2 dimensions, else a t-SNE "
                                   "or PCA), where hovering or dragging decodes the point live; sliders for the "
                                   "latent dimensions; two picked test images interpolated in real time. The "
                                   "decoder runs in the browser in plain JavaScript with the run's weights, giving "
                                   "PyTorch's pixels to 1e-4.")
    p.add_argument("run", help="a trained VAE run folder")
    p.add_argument("--out", default=None, help=f"the HTML file to write (default RUN/{PAGE})")
    p.add_argument("--points", type=int_at_least(2), default=DEFAULT_POINTS,
                   help=f"test images on the map, a seeded random subset (default {DEFAULT_POINTS}; the t-SNE "
                        "of 2,000 takes about 6 s on one core)")
    p.add_argument("--map", choices=MAPS, default="auto",
                   help="auto (default: the latent itself for 1-2 dimensions, else t-SNE), tsne (the latent "
                        "figure's settings; a map point decodes the weighted mean mu of its nearest test images) "
                        "or pca (exactly invertible)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed of the subset and the t-SNE (default 0)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda (for encoding the test images)")
    add_dataset(p, of_run=True)
    p.set_defaults(func=cmd_explore)
