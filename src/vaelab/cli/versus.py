"""`vaelab versus VAE_RUN DDPM_RUN`: the comparison the report proposes, measured."""

from __future__ import annotations

import argparse
from pathlib import Path

from vaelab.data.registry import dataset_for_run
from vaelab.cli.common import add_dataset, positive_int
from vaelab.data.images import load
from vaelab.errors import VaelabError
from vaelab.studies.versus import DDPM_SAMPLERS, compare, write


def cmd_versus(args) -> int:
    """Score a VAE and a DDPM of one dataset with the same metrics and write comparison.{json,md,png}."""
    samplers = args.samplers or list(DDPM_SAMPLERS)
    unknown = [s for s in samplers if s not in DDPM_SAMPLERS]
    if unknown:
        raise VaelabError(f"unknown sampler(s) {', '.join(unknown)}: choose from {', '.join(DDPM_SAMPLERS)}")
    if args.n < 10:
        raise VaelabError("--n must be at least 10 (precision/recall use k-NN radii)")
    data = lambda trained_on: load(dataset_for_run(trained_on, args.dataset), args.data_dir)  # noqa: E731
    result = compare(Path(args.vae), Path(args.ddpm), data, args.n, samplers, args.device)
    paths = write(result, Path(args.out))
    print(paths[1].read_text())
    print("\n".join(str(p) for p in paths))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `versus` command."""
    p = sub.add_parser("versus", help="compare a VAE run and a DDPM run: sample quality, speed, size",
                       description="Generate N images with the VAE and with each DDPM sampler (DDPM-1000, DDIM-100, "
                                   "DDIM-50 with eta 0, DDIM-50 with eta 1), score them with the same metrics "
                                   "(FD-LeNet, precision/recall, classifier score, class coverage) against the test "
                                   "set of the dataset both runs were trained on (runs of different datasets are "
                                   "refused), time the sampling, and write comparison.json, comparison.md and "
                                   "comparison.png (samples side by side). "
                                   "Cost on 2 CPU cores with the quick DDPM: DDPM-1000 about 2 images/s, so N=1000 "
                                   "takes about 8 minutes; each DDIM-50 is 20x faster.")
    p.add_argument("vae", help="a trained VAE run folder")
    p.add_argument("ddpm", help="a trained DDPM run folder")
    p.add_argument("--out", required=True, help="folder for comparison.json/.md/.png")
    p.add_argument("--n", type=positive_int, default=1000, help="images per generator (default 1000)")
    p.add_argument("--samplers", nargs="+", metavar="NAME",
                   help="DDPM-1000 DDIM-100 DDIM-50 DDIM-50-eta1 (default: all)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    add_dataset(p, of_run=True)
    p.set_defaults(func=cmd_versus)
