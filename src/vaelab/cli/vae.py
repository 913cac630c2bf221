"""VAE commands: train, train-together, the figure commands, and the demo (arguments: args/vae.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from vaelab.api import fit_run
from vaelab.data.registry import dataset_for_run
from vaelab.cli.common import dataset_of, divergence_changes
from vaelab.config import load_json
from vaelab.data.images import load
from vaelab.engine import tblog
from vaelab.engine.checkpoint import atomic_write_text
from vaelab.engine.lock import run_lock
from vaelab.engine.runs import CONFIG
from vaelab.errors import RunError, VaelabError
from vaelab.vae import figures
from vaelab.vae.config import VAEModelConfig, VAEConfig, VAETrainConfig
from vaelab.vae.archs import REPORT_CHOICE
from vaelab.nn import count_parameters
from vaelab.vae.run import open_vae
from vaelab.vae.stacked import train_stacked


def config_from_args(args):
    """A validated VAEConfig from train options (report defaults per family)."""
    arch = args.arch or REPORT_CHOICE[args.model][0]
    latent = args.latent_dim if args.latent_dim is not None else REPORT_CHOICE[args.model][1]
    return VAEConfig(dataset=dataset_of(args), model=VAEModelConfig(args.model, arch, latent),
                     train=VAETrainConfig(epochs=args.epochs or 10, batch_size=args.batch_size, lr=args.lr,
                                       beta=args.beta, seed=args.seed, device=args.device,
                                       binarize=args.binarize, precision=args.precision,
                                       likelihood=args.likelihood)).validate()


def cmd_train(args) -> int:
    """Train a VAE into a run folder."""
    out = Path(args.out)
    cfg = None if args.resume else config_from_args(args)
    fit_run("vae", out, cfg, args.epochs if args.resume else None, args.dataset, args.data_dir, args.tensorboard,
            changes=divergence_changes(args))
    print(f"done: {out}/ (config.json, metrics.jsonl, model.safetensors, state.pt)")
    return 0


def cmd_train_together(args) -> int:
    """Train prepared run folders that differ only in beta together (one vmapped step for all)."""
    dirs = [Path(d) for d in args.runs]
    if len(set(dirs)) != len(dirs):
        raise VaelabError("a run folder is named twice")
    for d in dirs:
        if not (d / CONFIG).is_file():
            raise RunError(f"{d} holds no prepared run ({CONFIG} missing); `vaelab sweep` prepares them")
    cfgs = [load_json(d / CONFIG, VAEConfig) for d in dirs]
    dataset = dataset_for_run(cfgs[0].dataset, args.dataset)
    started = [(d / "state.pt").exists() for d in dirs]
    if any(started) and not all(started):
        raise RunError("some of the runs have started and some have not; train them one by one")
    betas = ", ".join(f"{c.train.beta:g}" for c in cfgs)
    print(f"training {len(dirs)} {cfgs[0].model.family} {cfgs[0].model.arch} VAEs (latent "
          f"{cfgs[0].model.latent_dim}, beta {betas}) together for {cfgs[0].train.epochs} epochs", file=sys.stderr)
    if args.tensorboard:
        tblog.require()
    train_stacked(dirs, cfgs, load(dataset, args.data_dir), resume=all(started), tensorboard=args.tensorboard)
    print(f"done: {', '.join(map(str, dirs))}")
    return 0


FIGURES = {  # command -> (function name in figures.py, needs the data)
    "sample": ("samples", False), "reconstruct": ("reconstructions", True),
    "latent": ("latent", True), "interpolate": ("interpolation", True), "figures": ("all_figures", True),
}


def cmd_figure(args) -> int:
    """Write one of the report's figures (or all of them) for a trained run."""
    run = open_vae(args.run, args.device)
    name, needs_data = FIGURES[args.command]
    fn = getattr(figures, name)
    data = load(dataset_for_run(run.cfg.dataset, args.dataset), args.data_dir) if needs_data else None
    with run_lock(run.path):  # the figures go into the run folder
        result = fn(run, data, seed=args.seed) if needs_data else fn(run, seed=args.seed)
    for p in result if isinstance(result, list) else [result]:
        print(p)
    return 0


def cmd_demo(args) -> int:
    """Train the report's final conv VAE briefly, write every figure and a summary."""
    out = Path(args.out)
    cfg = VAEConfig(dataset=dataset_of(args), model=VAEModelConfig("conv", "32-64-128", 10),
                    train=VAETrainConfig(epochs=args.epochs, seed=args.seed, device=args.device)).validate()
    resume = (out / "config.json").exists()
    if resume:
        print(f"{out} already holds the demo run; continuing it", file=sys.stderr)
    fit_run("vae", out, None if resume else cfg, args.epochs if resume else None, data_dir=args.data_dir)
    run = open_vae(out, args.device)
    with run_lock(out):
        paths = figures.all_figures(run, load(run.cfg.dataset, args.data_dir), seed=args.seed)
    last = run.history[-1]
    summary = {"model": figures.describe(run), "parameters": count_parameters(run.model),
               "epochs": last["epoch"], "test_neg_elbo": last["test_neg_elbo"], "test_recon": last["test_recon"],
               "test_kl": last["test_kl"], "train_seconds": last["seconds"], "seed": run.cfg.train.seed,
               "figures": [p.name for p in paths]}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    print(f"\nvaelab demo: {summary['model']}, {summary['parameters']:,} parameters, "
          f"{summary['epochs']} epochs in {summary['train_seconds']:.0f} s")
    print(f"test -ELBO {last['test_neg_elbo']:.2f} nats per image "
          f"(reconstruction {last['test_recon']:.2f} + KL {last['test_kl']:.2f})")
    print("figures:\n" + "\n".join(f"  {p}" for p in paths) + f"\nsummary: {out / 'summary.json'}")
    return 0
