"""Arguments of `vaelab reproduce` (the report's studies, then the report) and `vaelab report` (write it again)."""

from __future__ import annotations

import argparse

from vaelab.cli.args.sweep import SHARED, add_executor
from vaelab.cli.common import add_command, add_data_dir, add_dataset, add_together, positive_int
from vaelab.diffusion.config import PROFILES as DDPM_PROFILES

PROFILE_NAMES = ("quick", "full")  # cli/report.py PROFILES (tests/test_startup.py checks them)
STUDIES = ("dense", "conv", "beta", "ddpm")


def register_reproduce(sub: argparse._SubParsersAction) -> None:
    """Add reproduce."""
    p = add_command(sub, "reproduce", "run the report's three studies and write a report (resumable)",
                    "Train and evaluate the dense study (18 runs), the conv study (18 runs) and the beta study "
                    "(5 betas x 3 seeds), train the DDPM, compare it with the best VAE and measure how each "
                    "represents digits, then write DIR/REPORT.md and DIR/report.html (tables, curves, "
                    "rate-distortion, the report's figures rebuilt, a verdict per study). --profile quick trains "
                    "briefly (rankings, not final numbers); full uses the report's 10 epochs and is meant for a GPU. "
                    "Run the same command again to finish an interrupted reproduction. "
                    "\n\nExample: vaelab reproduce --out runs/repro", "vaelab.cli.report:cmd_reproduce")
    p.add_argument("--profile", choices=list(PROFILE_NAMES), default="quick", help="quick (default) or full")
    p.add_argument("--out", required=True,
                   help=f"folder for the studies and the report (with --executor ray: {SHARED})")
    p.add_argument("--seeds", type=positive_int, default=None,
                   help="replicate seeds per configuration (default: the profile's, 3 for the beta study, else 1)")
    p.add_argument("--jobs", type=positive_int, default=2,
                   help="runs trained at once (default 2, the CPU's threads shared among them)")
    p.add_argument("--studies", nargs="+", choices=list(STUDIES),
                   help="only these studies (ddpm: train the DDPM and compare it with the best VAE found)")
    p.add_argument("--ddpm-profile", choices=["auto", *DDPM_PROFILES], default=None,
                   help="the DDPM's profile (`vaelab ddpm train --profile`): default quick with --profile quick; with "
                        "full, auto: the annex's (full, 40 epochs) on a GPU, the cpu one (25 epochs) without")
    p.add_argument("--versus-n", type=positive_int, default=None,
                   help="images per generator in the VAE-vs-DDPM comparison (default 500, 5,000 for the full DDPM)")
    add_together(p)
    add_dataset(p)
    add_executor(p)


def register(sub: argparse._SubParsersAction) -> None:
    """Add reproduce and report."""
    register_reproduce(sub)
    r = add_command(sub, "report", "write the report of a reproduction folder again from saved results",
                    "Write DIR/REPORT.md and DIR/report.html again from the saved results of `vaelab reproduce` "
                    "(nothing is trained), or with --export copy the report and its images elsewhere. "
                    "\n\nExample: vaelab report runs/repro --export docs/repro", "vaelab.cli.report:cmd_report")
    r.add_argument("dir", help="a folder made by `vaelab reproduce`")
    r.add_argument("--note", default=None, help="a sentence to put in the report's introduction")
    r.add_argument("--no-figures", action="store_true", help="skip the figures drawn from model weights")
    r.add_argument("--export", metavar="DEST", default=None,
                   help="do not rewrite: copy REPORT.md and the images it shows (no weights) into DEST, keeping "
                        "their relative paths, to share or commit the report alone")
    r.add_argument("--html", action="store_true", help="with --export: copy report.html (images inside) too")
    add_data_dir(r)
