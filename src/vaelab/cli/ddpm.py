"""`vaelab ddpm train|sample|figures`: the report's DDPM (annex) with DDPM and DDIM samplers."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from vaelab.data.registry import dataset_for_run
from vaelab.cli.common import (add_dataset, add_tensorboard, dataset_of, finite_float, nonneg_int, positive_int)
from vaelab.api import ddpm_config, fit_run
from vaelab.cli import invert
from vaelab.data.images import load
from vaelab.diffusion.config import LOSSES, PROFILES, DDPMConfig
from vaelab.diffusion.figures import all_figures, samples_grid
from vaelab.diffusion.sample import generate, sampler_label
from vaelab.diffusion.schedule import SAMPLERS, SCHEDULES
from vaelab.diffusion.run import open_ddpm
from vaelab.engine import distributed
from vaelab.errors import VaelabError

# option name -> dotted config key it overrides (only options actually given override the profile)
OVERRIDES = {"epochs": "train.epochs", "batch_size": "train.batch_size", "lr": "train.lr",
             "ema_decay": "train.ema_decay", "seed": "train.seed", "device": "train.device",
             "widths": "model.widths", "schedule": "schedule.kind", "timesteps": "schedule.timesteps",
             "loss": "train.loss", "snr_gamma": "train.snr_gamma", "warmup_steps": "train.warmup_steps"}


def config_from_args(args) -> DDPMConfig:
    """A validated DDPMConfig: the chosen profile, with the options given on the command line."""
    overrides = {key: getattr(args, opt) for opt, key in OVERRIDES.items() if getattr(args, opt) is not None}
    overrides["dataset"] = dataset_of(args)
    if args.no_amp:
        overrides["train.amp"] = overrides["train.amp_cpu"] = False
    if args.cpu_bf16:
        overrides["train.amp_cpu"] = True
    return ddpm_config(None, args.profile, overrides)


def cmd_train(args) -> int:
    """Train (or resume) a DDPM into a run folder; samples.png shows progress after each epoch.
    Under torchrun, as one rank of a DDP run; with --nproc N, start those N ranks here."""
    out = Path(args.out)
    cfg = None if args.resume else config_from_args(args)
    fit_run("ddpm", out, cfg, args.epochs if args.resume else None, args.dataset, args.data_dir, args.tensorboard,
            args.nproc)
    if not distributed.launched() or distributed.from_env().is_main:
        print(f"done: {out}/ (config.json, metrics.jsonl, model.safetensors with ema.* weights, state.pt, "
              "samples.png)")
    return 0


def cmd_sample(args) -> int:
    """Generate a grid of images with the chosen sampler and report the images per second."""
    sampler_args(args)
    run = open_ddpm(args.run, args.device, ema=not args.raw)
    label = sampler_label(args.sampler, args.steps, run.schedule.T, args.eta)
    name = f"samples_{args.sampler}{label.split()[1]}.png"
    path, rate = samples_grid(run, args.side, args.sampler, args.steps, args.eta, args.seed,
                              Path(args.out) if args.out else run.path / name)
    print(f"{path}  ({label}, {rate:.3g} images/s on {run.device})")
    if args.npy:
        images, rate = generate(run, args.n, args.sampler, args.steps, args.eta, args.seed)
        np.save(args.npy, images.numpy()[:, 0])
        print(f"{args.npy}  ({args.n} images (n, 28, 28) float32 in [0, 1], {rate:.3g} images/s)")
    return 0


def cmd_figures(args) -> int:
    """Write the report's figure 4 (a: noising, b: noise to image, c: samples) into the run folder."""
    sampler_args(args)
    run = open_ddpm(args.run, args.device, ema=not args.raw)
    data = load(dataset_for_run(run.cfg.dataset, args.dataset), args.data_dir)
    for p in all_figures(run, data, args.sampler, args.steps, args.eta, args.seed):
        print(p)
    return 0


def add_sampler_options(p: argparse.ArgumentParser, default: str) -> None:
    """--sampler, --steps, --eta, --seed, --raw, --device."""
    p.add_argument("run", help="a trained DDPM run folder")
    p.add_argument("--sampler", choices=list(SAMPLERS), default=default,
                   help="ddpm: the annex's ancestral sampler, all T steps; ddim: deterministic for eta 0, "
                        f"any number of steps (default {default})")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="sampling steps: ddpm takes all T (1000); ddim any number up to T (default 50)")
    p.add_argument("--eta", type=finite_float, default=None,
                   help="DDIM noise scale: 0 deterministic (default), 1 = ancestral with posterior variance. "
                        "On a briefly trained DDPM, eta 1 is the better 50-step sampler (quick profile, N=500: "
                        "FD-LeNet 119-127 against 152-161 for eta 0 and 125 for DDPM-1000)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed of the starting noise (default 0)")
    p.add_argument("--raw", action="store_true", help="use the raw weights instead of their moving average")
    p.add_argument("--device", default="auto", help="auto (CUDA if present, else CPU), cpu, cuda, cuda:N")


def sampler_args(args) -> None:
    """Refuse --eta with the ancestral sampler, where it would mean nothing."""
    if args.sampler == "ddpm" and args.eta is not None:
        raise VaelabError("--eta applies to --sampler ddim only (ddpm's noise is fixed: sigma_t^2 = beta_t)")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `ddpm` command group: train, sample, figures."""
    p = sub.add_parser("ddpm", help="the report's DDPM (annex UNet): train, sample, figure 4",
                       description="A denoising diffusion model (Ho et al. 2020) with the report's annex UNet "
                                   "(encoder 32-64-128, bottleneck 256, sinusoidal time embedding in every "
                                   "block), a linear (or cosine) noise schedule over T=1000 steps, an EMA of "
                                   "the weights for sampling, and two samplers: ancestral DDPM and DDIM.")
    dsub = p.add_subparsers(dest="ddpm_command", metavar="ACTION", required=True)

    t = dsub.add_parser("train", help="train a DDPM into a run folder",
                        description="Train the noise predictor (MSE between true and predicted noise, images "
                                    "in [-1, 1]). Profiles: full = the annex UNet, 40 epochs, batch 128, lr 5e-4, "
                                    "EMA decay 0.999, bfloat16 autocast on CUDA (meant for a GPU; about 9 minutes "
                                    "an epoch on one CPU thread); quick = UNet 16-32-64-128, 3 epochs, batch 64, "
                                    "lr 2e-3, EMA decay 0.995 (10 minutes on one CPU thread, about half on two; "
                                    "rough but recognisable digits); cpu (the default without a GPU) = the quick "
                                    "UNet, 25 epochs, lr 1e-3, EMA decay 0.9995, bfloat16 autocast on the CPU, "
                                    "min-SNR-5 loss weights (about 18 minutes of training on 2 cores; digits). "
                                    "All warm the lr up linearly. A checkpoint and "
                                    "samples.png are written after every epoch; Ctrl-C keeps the last one and "
                                    "--resume continues it, bit-for-bit on CPU.")
    t.add_argument("--out", required=True, help="run folder to create (or to continue with --resume)")
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
    t.add_argument("--schedule", choices=list(SCHEDULES), default=None,
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
                   help="bfloat16 autocast of the training step on the CPU too (1.5-2.3x faster on CPUs with "
                        "native bf16; default from the profile)")
    t.add_argument("--no-amp", action="store_true", help="no mixed precision, on CUDA or the CPU (float32 throughout)")
    t.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last completed epoch (its saved config is used; "
                        "--epochs may raise the target)")
    t.add_argument("--nproc", type=positive_int, default=1,
                   help="train as N processes on this machine with DDP (torch.distributed, launched as torchrun "
                        "--standalone would): one GPU each on CUDA, gloo on the CPU; the batch size stays the "
                        "config's, split across them. For several machines run `torchrun ... -m vaelab.cli ddpm "
                        "train ...` on each instead (default 1)")
    add_dataset(t)
    add_tensorboard(t)
    t.set_defaults(func=cmd_train)

    s = dsub.add_parser("sample", help="a grid of generated images, and the sampling speed",
                        description="Generate side x side digits with the run's EMA weights and write them as "
                                    "samples_<sampler><steps>.png in the run folder (or --out); prints images/s. "
                                    "On a briefly trained net (the quick profile) --sampler ddpm draws clearly "
                                    "better digits than DDIM-50 with eta 0, at 20 times the cost; DDIM-50 with "
                                    "--eta 1 comes as close (FD-LeNet 119-127 against 125, N=500).")
    add_sampler_options(s, "ddim")
    s.add_argument("--side", type=positive_int, default=8, help="grid side (default 8: 64 images)")
    s.add_argument("--out", default=None, help="PNG path (default: in the run folder)")
    s.add_argument("--npy", metavar="FILE", default=None, help="also save --n images as a .npy array in [0, 1]")
    s.add_argument("--n", type=positive_int, default=1000, help="number of images for --npy (default 1000)")
    s.set_defaults(func=cmd_sample)

    f = dsub.add_parser("figures", help="the report's figure 4: noising, noise to image, samples",
                        description="Write figure 4a (test digits noised at several t), 4b (chains from noise "
                                    "to digit) and 4c (an 8x8 grid of samples) into the run folder. The default "
                                    "sampler is the annex's, 1000 steps (about 3 minutes for the full UNet on "
                                    "one CPU thread); --sampler ddim is 20 times faster.")
    add_sampler_options(f, "ddpm")
    add_dataset(f, of_run=True)
    f.set_defaults(func=cmd_figures)
    invert.register(dsub)
