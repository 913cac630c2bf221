"""`vaelab represent VAE_RUN DDPM_RUN`: how a VAE and a DDPM represent digits (probes, inversion, interpolation)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from vaelab.data.registry import dataset_for_run
from vaelab.cli.common import add_dataset
from vaelab.data.images import load
from vaelab.studies.represent import DEFAULT, QUICK, markdown, measure, write

HELP = """Measure how a VAE and a DDPM of one dataset represent its images, with one protocol for both, and write
representations.json, representations.md, probes.png and interpolation.png into --out.

probes      the same linear probe (logistic regression, full-batch L-BFGS from zeros, 100 iterations, on
            standardised features) and k-NN (k=5), each fitted on a train subset drawn by 3 probe seeds and
            scored on the same test images (mean, spread, silhouette), for: the VAE's mu and one z ~ q(z|x);
            the DDPM's UNet blocks (encoder, bottleneck = "h-space", decoder blocks = DDAE's features),
            globally averaged, on the test image noised to step t for each t of a grid.
inversion   DDIM inversion (Song et al. 2021, 5.4) x0 -> x_T and DDIM (eta 0) back, for several S: error, time.
interpolation  pairs of test digits of different classes: VAE lerp and slerp of mu; DDPM slerp of the
            DDIM-inverted x_T decoded with DDIM (eta 0). In the reference classifier's features: path length
            (1 = straight), largest jump, confidence per frame, share of frames of neither endpoint's class.

cost, measured on this project's 2-core CPU machine (1 thread) with the conv VAE and the quick DDPM:
--quick (600 train / 300 test images, t in 1, 51, 201, 2 pairs, S 5 and 10) about 15 s; the default (6,000 /
2,000 images, t in 1, 11, 51, 101, 201, 500, 900, 6 pairs of 10 frames with DDIM-50, S 10..1000 on 16
images) 315 s: probes 242 s, inversion 58 s (S = 1000 alone about 50 s), interpolation 7 s."""


def cmd_represent(args) -> int:
    """Run the measurements and write their files; print the Markdown table."""
    budget = QUICK if args.quick else DEFAULT
    data = lambda trained_on: load(dataset_for_run(trained_on, args.dataset), args.data_dir)  # noqa: E731
    t0 = time.perf_counter()
    result = measure(Path(args.vae), Path(args.ddpm), data, budget, args.device,
                     log=lambda m: print(m, file=sys.stderr))  # progress apart from the table on stdout
    paths = write(result, Path(args.out))
    print(markdown({k: v for k, v in result.items() if k != "frames"}))
    print(f"{time.perf_counter() - t0:.0f} s in all\n" + "\n".join(str(p) for p in paths))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `represent` command."""
    p = sub.add_parser("represent", help="how a VAE and a DDPM represent digits: probes, DDIM inversion, interpolation",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("vae", help="a trained VAE run folder")
    p.add_argument("ddpm", help="a trained DDPM run folder (same dataset)")
    p.add_argument("--out", required=True, help="folder for representations.json/.md, probes.png, interpolation.png")
    p.add_argument("--quick", action="store_true", help="smoke-test budget: seconds, numbers noisy")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    add_dataset(p, of_run=True)
    p.set_defaults(func=cmd_represent)
