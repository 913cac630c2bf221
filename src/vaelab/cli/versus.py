"""`vaelab versus VAE_RUN DDPM_RUN`: the comparison the report proposes, measured
(arguments: args/versus.py)."""

from __future__ import annotations

from pathlib import Path

from vaelab.data.registry import dataset_for_run
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
    result = compare(Path(args.vae), Path(args.ddpm), data, args.n, samplers, args.device,
                     likelihood_images=args.likelihood_images, iwae_k=args.iwae_k, bound_k=args.bound_k)
    paths = write(result, Path(args.out))
    print(paths[1].read_text())
    print("\n".join(str(p) for p in paths))
    return 0
