"""Arguments of `vaelab versus VAE_RUN DDPM_RUN`."""

from __future__ import annotations

import argparse

from vaelab.cli.common import add_command, add_dataset, nonneg_int, positive_int

# studies/versus.py's DDPM_SAMPLERS (it imports torch); tests/test_startup.py checks them
SAMPLERS = ("DDPM-1000", "DDIM-100", "DDIM-50", "DDIM-50-eta1")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `versus` command."""
    p = add_command(sub, "versus", "compare a VAE run and a DDPM run: sample quality, speed, size",
                    "Generate N images with the VAE and with each DDPM sampler (DDPM-1000, DDIM-100, DDIM-50 with "
                    "eta 0 and with eta 1), score them with the same metrics against the test set of the dataset "
                    "both runs were trained on, time the sampling, and write comparison.json, comparison.md and "
                    "comparison.png. DDPM-1000 is by far the slowest. "
                    "\n\nExample: vaelab versus runs/conv runs/ddpm --out runs/versus", "vaelab.cli.versus:cmd_versus")
    p.add_argument("vae", help="a trained VAE run folder")
    p.add_argument("ddpm", help="a trained DDPM run folder")
    p.add_argument("--out", required=True, help="folder for comparison.json/.md/.png")
    p.add_argument("--n", type=positive_int, default=1000, help="images per generator (default 1000)")
    p.add_argument("--samplers", nargs="+", metavar="NAME", help=f"{' '.join(SAMPLERS)} (default: all)")
    p.add_argument("--likelihood-images", type=nonneg_int, default=1000,
                   help="test images of the likelihood table on the 8-bit footing (VAE -ELBO and IWAE with a "
                        "discretized decoder, the DDPM's bound; default 1000, 0: no table)")
    p.add_argument("--iwae-k", type=positive_int, default=100, help="IWAE samples per image in that table (default 100)")
    p.add_argument("--bound-k", type=nonneg_int, default=10,
                   help="sampled steps t per image of the DDPM's bound (default 10; 0: all T, exact)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    add_dataset(p, of_run=True)
