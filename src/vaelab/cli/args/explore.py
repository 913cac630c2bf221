"""Arguments of `vaelab explore RUN`."""

from __future__ import annotations

import argparse

from vaelab.cli.common import add_command, add_dataset, int_at_least, nonneg_int

# vae/explore.py's PAGE, DEFAULT_POINTS and MAPS (it imports torch); tests/test_startup.py checks them
PAGE = "explorer.html"
DEFAULT_POINTS = 2000
MAPS = ("auto", "tsne", "pca")


def register(sub: argparse._SubParsersAction) -> None:
    """Add explore."""
    p = add_command(sub, "explore", f"an interactive latent explorer of a VAE run  -> {PAGE}",
                    "Write one self-contained HTML page (works from a file, offline): a map of the test images' "
                    "posterior means (the latent itself for 2 dimensions, else a t-SNE or PCA) where hovering "
                    "decodes the point live, sliders for the latent dimensions, and two picked test images "
                    "interpolated in real time; the decoder runs in the browser with the run's weights. "
                    "\n\nExample: vaelab explore runs/conv", "vaelab.cli.explore:cmd_explore")
    p.add_argument("run", help="a trained VAE run folder")
    p.add_argument("--out", default=None, help=f"the HTML file to write (default RUN/{PAGE})")
    p.add_argument("--points", type=int_at_least(2), default=DEFAULT_POINTS,
                   help=f"test images on the map, a seeded random subset (default {DEFAULT_POINTS})")
    p.add_argument("--map", choices=MAPS, default="auto",
                   help="auto (default: the latent itself for 1-2 dimensions, else t-SNE), tsne (the latent "
                        "figure's settings; a map point decodes the weighted mean mu of its nearest test images) "
                        "or pca (exactly invertible)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed of the subset and the t-SNE (default 0)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda (for encoding the test images)")
    add_dataset(p, of_run=True)
