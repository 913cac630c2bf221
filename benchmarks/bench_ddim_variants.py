"""Which 50-step sampler is closest to DDPM-1000 for one trained DDPM: DDIM's eta, step count, spacing, x0 clipping.

Every variant starts from the same noise (seed 0, batches of 500) and its N images are scored with the pinned
MNIST classifier (FD-LeNet with its 95% bootstrap interval, classifier score). The variants that vaelab does
not ship (clipped x0, other spacings) are registered here as extra samplers of the sampler registry
(vaelab.diffusion.schedule.SAMPLERS); the library's own rules are untouched. Not a test.

    python benchmarks/bench_ddim_variants.py RUN --n 500
    python benchmarks/bench_ddim_variants.py RUN --n 500 --variants ddim:50:0 ddim-clip:50:1 ddpm:1000:0
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from vaelab.data.images import load
from vaelab.diffusion import schedule as S
from vaelab.diffusion.sample import generate
from vaelab.diffusion.run import open_ddpm
from vaelab.metrics.reference import resolve
from vaelab.metrics.score import score_images

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT = ["ddim:50:0", "ddim:50:0.5", "ddim:50:0.75", "ddim:50:1", "ddim-clip:50:0", "ddim-clip:50:1",
           "ddim-trailing:50:0", "ddim-quadratic:50:0", "ddim:100:0", "ddim:200:0"]


def clipped_step(s: S.NoiseSchedule, eps, t, t_prev, x_t, eta: float = 0.0, generator=None):
    """A DDIM step on the x0 estimate clipped to [-1, 1], with eps recomputed from it (diffusers' clip_sample)."""
    ab = s.alpha_bar[t]
    x0_hat = s.predict_x0(x_t, torch.full((len(x_t),), t, dtype=torch.long, device=x_t.device), eps).clamp(-1, 1)
    eps = (x_t - ab.sqrt() * x0_hat) / (1 - ab).sqrt()  # the noise that the clipped x0 implies
    return S.ddim_step(s, eps, t, t_prev, x_t, eta, generator)


def trailing_steps(T: int, steps: int | None) -> list[int]:
    """'trailing' spacing (Lin et al. 2024): T-1, T-1-T/n, ...; the last visited step is T/n - 1, not 0."""
    n = steps or T
    return [round(T - 1 - i * T / n) for i in range(n)]


def quadratic_steps(T: int, steps: int | None) -> list[int]:
    """Song et al.'s quadratic spacing: t_i = (i / (n-1))^2 (T-1), dense near t = 0 (duplicates merged)."""
    n = steps or T
    return sorted({round((i / (n - 1)) ** 2 * (T - 1)) for i in range(n)}, reverse=True)


EXTRA = {"ddim-clip": S.Sampler(S.spaced_steps, clipped_step, 50, 0.0),
         "ddim-trailing": S.Sampler(trailing_steps, S.ddim_step, 50, 0.0),
         "ddim-quadratic": S.Sampler(quadratic_steps, S.ddim_step, 50, 0.0)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a trained DDPM run folder")
    p.add_argument("--n", type=int, default=500, help="images per variant (default 500)")
    p.add_argument("--variants", nargs="+", default=DEFAULT, help="SAMPLER:STEPS:ETA (ddpm takes all T; eta unused)")
    p.add_argument("--out", default="ddim_variants", help="results file stem under benchmarks/results")
    p.add_argument("--data-dir", default=None)
    args = p.parse_args()
    S.SAMPLERS.update(EXTRA)
    run = open_ddpm(args.run, "cpu")
    data = load("mnist", args.data_dir)
    clf = resolve(data, "cpu")
    rows = []
    for variant in args.variants:
        sampler, steps, eta = variant.split(":")
        steps = None if sampler == "ddpm" else int(steps)
        images, rate = generate(run, args.n, sampler, steps, None if sampler == "ddpm" else float(eta), seed=0)
        sq = score_images(images, data, "cpu", clf=clf, resamples=200, log=lambda m: None)
        rows.append({"variant": variant, "n": args.n, "fd_lenet": sq["fd_lenet"], "fd_lenet_ci": sq["fd_lenet_ci"],
                     "classifier_score": sq["classifier_score"], "precision": sq["precision"],
                     "recall": sq["recall"], "ms_per_image": 1000 / rate})
        print(json.dumps(rows[-1]), flush=True)
    RESULTS.mkdir(exist_ok=True)
    meta = {"run": str(args.run), "epochs": run.cfg.train.epochs, "profile": run.cfg.profile,
            "threads": torch.get_num_threads()}
    (RESULTS / f"{args.out}.json").write_text(json.dumps({**meta, "rows": rows}, indent=2))
    lines = [f"{meta['profile']}-profile DDPM ({meta['epochs']} epochs), N = {args.n} images per variant from the "
             "same noise, pinned MNIST classifier; SAMPLER:STEPS:ETA", "",
             "| variant | FD-LeNet [95%] | classifier score | precision / recall | ms per image |",
             "| --- | --- | --- | --- | --- |"]
    for r in rows:
        lo, hi = r["fd_lenet_ci"]
        lines.append(f"| {r['variant']} | {r['fd_lenet']:.1f} [{lo:.1f}, {hi:.1f}] | {r['classifier_score']:.2f} | "
                     f"{r['precision']:.3f} / {r['recall']:.3f} | {r['ms_per_image']:.1f} |")
    (RESULTS / f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
