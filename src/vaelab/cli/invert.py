"""`vaelab ddpm invert RUN`: DDIM inversion (Song et al. 2020, 5.4), x0 -> x_T, with the round trip measured
(arguments: args/ddpm.py)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from vaelab.data.images import load, to_unit
from vaelab.diffusion.run import open_ddpm
from vaelab.handles import DDPMModel
from vaelab.metrics.score import read_images


def cmd_invert(args) -> int:
    """Invert images to x_T with S DDIM steps, decode x_T back, print the round-trip error and save x_T."""
    ddpm = DDPMModel(open_ddpm(args.run, args.device))
    if args.images:
        x = read_images(args.images, args.key)[:args.n]
        source = args.images
    else:
        x = to_unit(load(ddpm.run.cfg.dataset, args.data_dir).test_x[:args.n])
        source = f"the first {len(x)} test images"
    t0 = time.perf_counter()
    x_T = ddpm.invert(x, args.steps)  # (N, 1, 28, 28)
    seconds = time.perf_counter() - t0
    back = ddpm.decode_latent(x_T, args.steps)
    rmse = float(((back - x) ** 2).mean().sqrt())
    out = Path(args.out) if args.out else ddpm.path / f"x_T_ddim{args.steps}.npy"
    np.save(out, x_T.numpy())
    print(f"{out}: x_T of {source}, {len(x)} images (N, 1, 28, 28), DDIM {args.steps} steps, "
          f"{1000 * seconds / len(x):.1f} ms an image")
    print(f"round trip x0 -> x_T -> x0: RMSE {rmse:.4f} (pixels in [0, 1]); x_T std {float(x_T.std()):.3f} "
          "(1 for Gaussian noise)")
    return 0
