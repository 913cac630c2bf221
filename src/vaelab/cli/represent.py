"""`vaelab represent VAE_RUN DDPM_RUN`: how a VAE and a DDPM represent digits (probes, inversion, interpolation)
(arguments: args/represent.py)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from vaelab.data.registry import dataset_for_run
from vaelab.data.images import load
from vaelab.studies.represent import DEFAULT, QUICK, markdown, measure, write


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
