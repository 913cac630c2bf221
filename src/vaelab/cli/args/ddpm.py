"""Arguments of `vaelab ddpm train|sample|figures|invert`."""

from __future__ import annotations

import argparse

from vaelab.cli.common import (add_command, add_data_dir, add_dataset, add_divergence, add_tensorboard, finite_float, nonneg_int,
                               positive_int)
from vaelab.diffusion.config import LOSSES, PROFILES, SAMPLER_NAMES, SCHEDULE_KINDS


def add_sampler_options(p: argparse.ArgumentParser, default: str) -> None:
    """--sampler, --steps, --eta, --seed, --raw, --device."""
    p.add_argument("run", help="a trained DDPM run folder")
    p.add_argument("--sampler", choices=list(SAMPLER_NAMES), default=default,
                   help="ddpm: the annex's ancestral sampler, all T steps; ddim: deterministic for eta 0, "
                        f"any number of steps (default {default})")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="sampling steps: ddpm takes all T (1000); ddim any number up to T (default 50)")
    p.add_argument("--eta", type=finite_float, default=None,
                   help="DDIM noise scale: 0 deterministic (default), 1 = ancestral with posterior variance "
                        "(which wins at 50 steps: docs/results.md)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed of the starting noise (default 0)")
    p.add_argument("--raw", action="store_true", help="use the raw weights instead of their moving average")
    p.add_argument("--device", default="auto", help="auto (CUDA if present, else CPU), cpu, cuda, cuda:N")


def add_schedule_options(t: argparse.ArgumentParser) -> None:
    """The options of `ddpm train` that override its profile's network, schedule and optimisation."""
    t.add_argument("--profile", choices=["auto", *PROFILES], default="auto",
                   help="settings to start from (default auto: full with a CUDA GPU, else cpu)")
    t.add_argument("--epochs", type=positive_int, default=None,
                   help="epochs (default from the profile; with --resume, a new target for the run)")
    t.add_argument("--batch-size", type=positive_int, default=None, help="batch size (default from the profile)")
    t.add_argument("--lr", type=finite_float, default=None, help="Adam learning rate (default from the profile)")
    t.add_argument("--ema-decay", type=finite_float, default=None,
                   help="per-step decay of the weights' moving average used for sampling (default from the profile)")
    t.add_argument("--widths", default=None,
                   help="UNet channels, encoder levels then bottleneck (annex: 32-64-128-256)")
    t.add_argument("--schedule", choices=list(SCHEDULE_KINDS), default=None,
                   help="noise schedule: linear beta 1e-4 -> 0.02 as the annex (default), or cosine")
    t.add_argument("--timesteps", type=positive_int, default=None, help="diffusion steps T (default 1000)")
    t.add_argument("--seed", type=nonneg_int, default=None, help="seed of weights, data order and noise (default 0)")
    t.add_argument("--device", default=None, help="auto (CUDA if present, else CPU), cpu, cuda, cuda:N")
    t.add_argument("--warmup-steps", type=nonneg_int, default=None,
                   help="steps over which the lr rises linearly from 0 (default from the profile)")
    t.add_argument("--loss", choices=list(LOSSES), default=None,
                   help="simple: Ho et al.'s unweighted eps loss, as the annex; min_snr: each t weighted by "
                        "min(SNR_t, gamma) / SNR_t (Hang et al. 2023) (default from the profile)")
    t.add_argument("--snr-gamma", type=finite_float, default=None, help="gamma of --loss min_snr (default 5)")
    t.add_argument("--cpu-bf16", action="store_true",
                   help="bfloat16 autocast of the training step on the CPU too (pays on CPUs with native bf16; "
                        "default from the profile)")
    t.add_argument("--no-amp", action="store_true", help="no mixed precision, on CUDA or the CPU (float32 throughout)")


def register_train(dsub: argparse._SubParsersAction) -> None:
    """Add `ddpm train`."""
    t = add_command(dsub, "train", "train a DDPM into a run folder",
                    "Train the noise predictor (MSE between true and predicted noise, images in [-1, 1]) from a "
                    "profile: full = the annex UNet, 40 epochs, batch 128, lr 5e-4, EMA 0.999, bf16 on CUDA (for "
                    "a GPU); quick = UNet 16-32-64-128, 3 epochs, batch 64, lr 2e-3, EMA 0.995 (rough digits); "
                    "cpu (default without a GPU) = the quick UNet, 25 epochs, lr 1e-3, EMA 0.9995, bf16 on the "
                    "CPU, min-SNR-5 weights. A checkpoint and samples.png after every epoch; --resume continues, "
                    "bit-for-bit on CPU.\n\nExample: vaelab ddpm train --profile quick --out runs/ddpm",
                    "vaelab.cli.ddpm:cmd_train", "ddpm")
    t.add_argument("--out", required=True, help="run folder to create (or to continue with --resume)")
    add_schedule_options(t)
    t.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last completed epoch (its saved config is used; "
                        "--epochs may raise the target)")
    t.add_argument("--nproc", type=positive_int, default=1,
                   help="train as N processes on this machine with DDP (torch.distributed, launched as torchrun "
                        "--standalone would): one GPU each on CUDA, gloo on the CPU; the batch size stays the "
                        "config's, split across them. For several machines run `torchrun ... -m vaelab.cli ddpm "
                        "train ...` on each instead (default 1)")
    add_divergence(t)
    add_dataset(t)
    add_tensorboard(t)


def register_invert(dsub: argparse._SubParsersAction) -> None:
    """Add `ddpm invert`."""
    v = add_command(dsub, "invert", "DDIM inversion: images -> the noise x_T that DDIM maps back to them",
                    "Run the deterministic DDIM update forward (Song et al. 2020, section 5.4): images x0 -> x_T, "
                    "saved as .npy; decode x_T back with DDIM (eta 0, the same steps) and print the round-trip "
                    "RMSE (more steps, smaller error). From Python: vaelab.load(RUN).invert(x, steps). "
                    "\n\nExample: vaelab ddpm invert runs/ddpm --steps 50", "vaelab.cli.invert:cmd_invert", "ddpm")
    v.add_argument("run", help="a trained DDPM run folder")
    v.add_argument("--images", default=None, help="a .npy/.npz array or PNG folder (default: the run's test images)")
    v.add_argument("--key", default=None, help="the array of a .npz that holds several")
    v.add_argument("--n", type=positive_int, default=16, help="how many images (default 16)")
    v.add_argument("--steps", type=positive_int, default=50, help="DDIM steps S (default 50)")
    v.add_argument("--out", default=None, help="the .npy to write (default RUN/x_T_ddimS.npy)")
    v.add_argument("--device", default="auto", help="auto (CUDA if present, else CPU), cpu, cuda")
    add_data_dir(v)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `ddpm` command group: train, sample, figures, invert."""
    p = add_command(sub, "ddpm", "the report's DDPM (annex UNet): train, sample, figure 4",
                    "A denoising diffusion model (Ho et al. 2020) with the report's annex UNet (encoder 32-64-128, "
                    "bottleneck 256, sinusoidal time embedding in every block), a linear (or cosine) noise "
                    "schedule over T=1000 steps, an EMA of the weights for sampling, and two samplers: ancestral "
                    "DDPM and DDIM.\n\nExample: vaelab ddpm train --out runs/ddpm")
    dsub = p.add_subparsers(dest="ddpm_command", metavar="ACTION", required=True)
    register_train(dsub)
    s = add_command(dsub, "sample", "a grid of generated images, and the sampling speed",
                    "Generate side x side images with the run's EMA weights and write them as "
                    "samples_<sampler><steps>.png in the run folder (or --out); prints images/s. --sampler ddpm "
                    "takes all T steps, DDIM any number.\n\nExample: vaelab ddpm sample runs/ddpm --eta 1",
                    "vaelab.cli.ddpm:cmd_sample", "ddpm")
    add_sampler_options(s, "ddim")
    s.add_argument("--side", type=positive_int, default=8, help="grid side (default 8: 64 images)")
    s.add_argument("--out", default=None, help="PNG path (default: in the run folder)")
    s.add_argument("--npy", metavar="FILE", default=None, help="also save --n images as a .npy array in [0, 1]")
    s.add_argument("--n", type=positive_int, default=1000, help="number of images for --npy (default 1000)")
    f = add_command(dsub, "figures", "the report's figure 4: noising, noise to image, samples",
                    "Write figure 4a (test digits noised at several t), 4b (chains from noise to digit) and 4c (an "
                    "8x8 grid of samples) into the run folder. The default sampler is the annex's, all T steps; "
                    "--sampler ddim takes fewer.\n\nExample: vaelab ddpm figures runs/ddpm",
                    "vaelab.cli.ddpm:cmd_figures", "ddpm")
    add_sampler_options(f, "ddpm")
    add_dataset(f, of_run=True)
    register_invert(dsub)
