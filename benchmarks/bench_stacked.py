"""The beta study's five models: one after another against all five in one stacked (vmapped) step.

Each side trains the same five models (betas 0.2 0.5 1 2 5, same seed) for the same steps on the same
batches, with the exact inner loops of `vaelab train` (engine.loop.train_epoch, one model at a time) and of
`vaelab train-together` (the same loop over stacked.stacked_compute). Data resident on the device; medians of
interleaved repetitions; the ratio is what `vaelab sweep beta --together` gains per step.

Usage: python benchmarks/bench_stacked.py [--device cpu|cuda] [--steps 40] [--repeats 5] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from vaelab.vae.config import VAETrainConfig
from vaelab.vae.networks import build_vae
from vaelab.vae.stacked import StackedVAEs, stacked_compute
from vaelab.engine.steps import graphs_wanted, make_optimizer, step_function
from vaelab.engine.loop import train_epoch
from vaelab.vae.train import vae_compute

BETAS = (0.2, 0.5, 1.0, 2.0, 5.0)
MODELS = {"conv 32-64-128 z10": ("conv", "32-64-128", 10), "dense 256-512 z5": ("dense", "256-512", 5)}


def sync(device):
    """Wait for the device (timings must cover the work, not its launch)."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(step, x, perm, steps, device) -> float:
    """Seconds for `steps` batches of `step` (the inner loop of `vaelab train`)."""
    sync(device)
    t0 = time.perf_counter()
    train_epoch(step, perm, 128, range(steps), check_every=10 ** 9)
    sync(device)
    return time.perf_counter() - t0


def measure(family, arch, latent, device, steps, repeats, precision) -> dict:
    """Median seconds of both ways for one architecture, the calls interleaved; each side's steps are built
    once, as `vaelab train` and `vaelab train-together` build them (CUDA graphs on a GPU)."""
    capturable = graphs_wanted(device)
    x = torch.randint(0, 256, (steps * 128, 1, 28, 28), dtype=torch.uint8, device=device)
    perm = torch.randperm(len(x), device=device)
    alone = []
    for beta in BETAS:
        m = build_vae(family, arch, latent).to(device)
        tc = VAETrainConfig(batch_size=128, beta=beta, precision=precision)
        opt = make_optimizer(m.parameters(), 1e-3, capturable)
        alone.append(step_function(vae_compute(m, x, tc), opt, device, 128))
    stacked = StackedVAEs([build_vae(family, arch, latent) for _ in BETAS]).to(device)
    tc = VAETrainConfig(batch_size=128, precision=precision)
    together = step_function(stacked_compute(stacked, x, tc, torch.tensor(BETAS, device=device)),
                             make_optimizer(stacked.parameters(), 1e-3, capturable), device, 128)
    fns = [lambda: sum(timed(s, x, perm, steps, device) for s in alone),  # the five models one after another
           lambda: timed(together, x, perm, steps, device)]
    for fn in fns:
        fn()  # warm-up (and graph capture)
    times = [[], []]
    for _ in range(repeats):
        for t, fn in zip(times, fns):
            t.append(fn())
    seq, tog = (statistics.median(t) for t in times)
    return {"sequential_ms_per_step": round(1000 * seq / steps, 2),
            "together_ms_per_step": round(1000 * tog / steps, 2), "speedup": round(seq / tog, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    rows = []
    for label, (family, arch, latent) in MODELS.items():
        rows.append({"model": label, "models": len(BETAS), "precision": args.precision,
                     **measure(family, arch, latent, device, args.steps, args.repeats, args.precision)})
        print(rows[-1], file=sys.stderr)
    hw = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    meta = {"device": hw, "torch": torch.__version__, "steps": args.steps, "repeats": args.repeats}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = "stacked" if device.type == "cpu" else f"stacked_{device.type}"
    (out / f"{tag}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    lines = ["| model | 5 betas one after another, ms/step | together (stacked), ms/step | speed-up |",
             "|---|---|---|---|"]
    lines += [f"| {r['model']} ({r['precision']}) | {r['sequential_ms_per_step']} | {r['together_ms_per_step']} | "
              f"{r['speedup']} |" for r in rows]
    (out / f"{tag}.md").write_text(f"{meta}\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
