"""Arguments of `vaelab represent VAE_RUN DDPM_RUN`."""

from __future__ import annotations

import argparse

from vaelab.cli.common import add_command, add_dataset

HELP = """Measure how a VAE and a DDPM of one dataset represent its images, with one protocol for both: linear and
k-NN probes on the VAE's mu and z and on the DDPM's UNet blocks at several noise steps t; DDIM inversion x0 -> x_T
and back; interpolations between test digits of different classes, in the reference classifier's features.
Writes representations.json, representations.md, probes.png and interpolation.png into --out.

Example: vaelab represent runs/conv runs/ddpm --out runs/rep"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `represent` command."""
    p = add_command(sub, "represent", "how a VAE and a DDPM represent digits: probes, DDIM inversion, interpolation",
                    HELP, "vaelab.cli.represent:cmd_represent")
    p.add_argument("vae", help="a trained VAE run folder")
    p.add_argument("ddpm", help="a trained DDPM run folder (same dataset)")
    p.add_argument("--out", required=True, help="folder for representations.json/.md, probes.png, interpolation.png")
    p.add_argument("--quick", action="store_true",
                   help="smoke-test budget: seconds, numbers noisy (the cost of each: "
                        "docs/commands.md#what-the-commands-cost)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    add_dataset(p, of_run=True)
