"""Arguments of `vaelab score PATH`."""

from __future__ import annotations

import argparse

from vaelab.cli.common import add_command, add_dataset, nonneg_int, positive_int

# metrics/score.py's MIN_IMAGES and PROTOCOL_N (it imports torch); tests/test_startup.py checks them
MIN_IMAGES = 500
PROTOCOL_N = 10000

SCORE_HELP = f"""Score any generator's images with vaelab's pinned reference classifier of the dataset: the same
images give the same numbers on any machine. Input: a .npy/.npz array (N, 28, 28) or (N, 1, 28, 28), uint8 or
float in [0, 1], or a folder of 28x28 grayscale PNGs. Output: FD-LeNet, precision/recall, density/coverage,
classifier score and class histogram, each with its 95% bootstrap interval and floor/ceiling anchors, printed and
written as JSON. Protocol: N = {PROTOCOL_N:,} images against the full test set; numbers at different N do not
compare; fewer than {MIN_IMAGES} images are refused.\n\nExample: vaelab score samples.npy"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add `score`."""
    s = add_command(sub, "score", "sample quality of any generator's images (.npy/.npz/PNG folder)", SCORE_HELP,
                    "vaelab.cli.score:cmd_score")
    s.add_argument("path", help="a .npy/.npz array of images or a folder of PNGs")
    s.add_argument("--key", default=None, help="the array of a .npz that holds several")
    s.add_argument("--n-ref", type=positive_int, default=10000, help="first test images as reference (default all)")
    s.add_argument("--resamples", type=nonneg_int, default=200, help="bootstrap resamples for the intervals (0: none)")
    s.add_argument("--seed", type=nonneg_int, default=0, help="seed of the bootstrap (default 0)")
    s.add_argument("--min-images", type=positive_int, default=MIN_IMAGES, help=argparse.SUPPRESS)
    s.add_argument("--classifier", default=None, metavar="PATH",
                   help="a classifier folder of your own (`vaelab classifier train --out`) instead of the pinned one")
    s.add_argument("--out", default=None, help="the JSON file to write (default: PATH.score.json)")
    s.add_argument("--device", default="auto", help="auto (CUDA if present, else CPU), cpu, cuda, cuda:N")
    s.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    add_dataset(s)  # --dataset: the dataset the images imitate
