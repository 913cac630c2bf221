"""`vaelab ddpm train|sample|figures`: the report's DDPM (annex) with DDPM and DDIM samplers (arguments:
args/ddpm.py; `ddpm invert` is invert.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vaelab.data.registry import dataset_for_run
from vaelab.cli.common import dataset_of, divergence_changes
from vaelab.api import ddpm_config, fit_run
from vaelab.data.images import load
from vaelab.diffusion.config import DDPMConfig
from vaelab.diffusion.figures import all_figures, samples_grid
from vaelab.diffusion.sample import generate, sampler_label
from vaelab.diffusion.run import open_ddpm
from vaelab.engine import distributed
from vaelab.engine.lock import run_lock
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
            args.nproc, changes=divergence_changes(args))
    if args.nproc == 1 and distributed.from_env().is_main:  # --nproc: rank 0 of the processes says it
        print(f"done: {out}/ (config.json, metrics.jsonl, model.safetensors with ema.* weights, state.pt, "
              "samples.png)")
    return 0


def cmd_sample(args) -> int:
    """Generate a grid of images with the chosen sampler and report the images per second."""
    sampler_args(args)
    run = open_ddpm(args.run, args.device, ema=not args.raw)
    label = sampler_label(args.sampler, args.steps, run.schedule.T, args.eta)
    name = f"samples_{args.sampler}{label.split()[1]}.png"
    with run_lock(*([] if args.out else [run.path])):  # a grid written into the run folder
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
    with run_lock(run.path):
        paths = all_figures(run, data, args.sampler, args.steps, args.eta, args.seed)
    for p in paths:
        print(p)
    return 0


def sampler_args(args) -> None:
    """Refuse --eta with the ancestral sampler, where it would mean nothing."""
    if args.sampler == "ddpm" and args.eta is not None:
        raise VaelabError("--eta applies to --sampler ddim only (ddpm's noise is fixed: sigma_t^2 = beta_t)")
