"""VAE commands: train, train-together, the figure commands, and the demo."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vaelab.api import fit_run
from vaelab.data.registry import dataset_for_run
from vaelab.cli.common import add_dataset, add_tensorboard, dataset_of, finite_float, nonneg_int, positive_int
from vaelab.config import load_json
from vaelab.data.images import load
from vaelab.engine import tblog
from vaelab.engine.runs import CONFIG
from vaelab.errors import RunError, VaelabError
from vaelab.vae import figures
from vaelab.vae.config import VAEModelConfig, VAEConfig, VAETrainConfig
from vaelab.vae.archs import PARSERS, REPORT_CHOICE
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
                                       binarize=args.binarize, precision=args.precision)).validate()


def cmd_train(args) -> int:
    """Train a VAE into a run folder."""
    out = Path(args.out)
    cfg = None if args.resume else config_from_args(args)
    fit_run("vae", out, cfg, args.epochs if args.resume else None, args.dataset, args.data_dir, args.tensorboard)
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
    paths = figures.all_figures(run, load(run.cfg.dataset, args.data_dir), seed=args.seed)
    last = run.history[-1]
    summary = {"model": figures.describe(run), "parameters": count_parameters(run.model),
               "epochs": last["epoch"], "test_neg_elbo": last["test_neg_elbo"], "test_recon": last["test_recon"],
               "test_kl": last["test_kl"], "train_seconds": last["seconds"], "seed": run.cfg.train.seed,
               "figures": [p.name for p in paths]}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nvaelab demo: {summary['model']}, {summary['parameters']:,} parameters, "
          f"{summary['epochs']} epochs in {summary['train_seconds']:.0f} s")
    print(f"test -ELBO {last['test_neg_elbo']:.2f} nats per image "
          f"(reconstruction {last['test_recon']:.2f} + KL {last['test_kl']:.2f})")
    print("figures:\n" + "\n".join(f"  {p}" for p in paths) + f"\nsummary: {out / 'summary.json'}")
    return 0


def add_train_options(p: argparse.ArgumentParser) -> None:
    """Model and optimisation options of `vaelab train`."""
    p.add_argument("--model", choices=list(PARSERS), default="conv", help="model family (default conv)")
    p.add_argument("--arch", default=None,
                   help="dense: 128-256 | 256-512 | 512-1024 (decoder hidden sizes; the encoder mirrors them) "
                        "or any sizes like 300-600; conv: 32-64 | 16-32-64 | 32-64-128. "
                        "Default: the report's choice, 256-512 (dense) or 32-64-128 (conv)")
    p.add_argument("--latent-dim", type=positive_int, default=None,
                   help="latent size (default: the report's choice, 5 dense, 10 conv)")
    p.add_argument("--beta", type=finite_float, default=1.0, help="weight of the KL term (default 1)")
    p.add_argument("--epochs", type=positive_int, default=None,
                   help="epochs (default 10; with --resume, a new target for the run)")
    p.add_argument("--batch-size", type=positive_int, default=128, help="batch size (default 128)")
    p.add_argument("--lr", type=finite_float, default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed of weights, data order and noise (default 0)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present, else CPU), cpu, cuda, cuda:N")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="fp32 (default, the report's numerics) or bf16: mixed precision for the forward pass, "
                        "weights, loss and Adam in fp32; about 1.4x faster on CPUs with AVX512-BF16/AMX and on "
                        "recent GPUs (benchmarks/README.md), slower on CPUs without native bf16")
    p.add_argument("--binarize", action="store_true",
                   help="dynamically binarised images (pixels drawn as Bernoulli of their intensity each "
                        "epoch; fixed-seed binarised test set), for comparison with the literature")


def register(sub: argparse._SubParsersAction) -> None:
    """Add train, the figure commands and demo."""
    t = sub.add_parser("train", help="train a dense or convolutional VAE into a run folder",
                       description="Train a VAE on MNIST or Fashion-MNIST (loss: BCE summed over pixels + beta * KL). The run "
                                   "folder gets config.json, metrics.jsonl (per-epoch train/test loss, "
                                   "reconstruction and KL per image), model.safetensors and state.pt. A "
                                   "checkpoint is written after every epoch; Ctrl-C keeps the last one and "
                                   "--resume continues from it, bit-for-bit on CPU.")
    add_train_options(t)
    t.add_argument("--out", required=True, help="run folder to create (or to continue with --resume)")
    t.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last completed epoch (its saved config is used; "
                        "--epochs may raise the target)")
    add_dataset(t)
    add_tensorboard(t)
    t.set_defaults(func=cmd_train)

    g = sub.add_parser("train-together", help="train run folders that differ only in beta in one vmapped step",
                       description="Train (or resume) several prepared run folders (config.json written, e.g. by "
                                   "`vaelab sweep`) whose configs differ only in train.beta, as one stacked model "
                                   "(torch.func.vmap): the same batches, seed and noise as training each alone, "
                                   "one wide step instead of K small ones. Each folder ends as an ordinary run. "
                                   "Pays on a GPU; on CPU, `vaelab sweep --jobs` is as fast (benchmarks/README.md).")
    g.add_argument("runs", nargs="+", metavar="RUN", help="prepared run folders")
    add_dataset(g, of_run=True)
    add_tensorboard(g)
    g.set_defaults(func=cmd_train_together)

    helps = {"sample": "5x5 grid of images decoded from z ~ N(0, I)  -> samples.png",
             "reconstruct": "test images above their reconstructions  -> reconstructions.png",
             "latent": "test-set posterior means by class (t-SNE above 2-D; manifold grid for 2-D)  -> latent.png",
             "interpolate": "10-step interpolations: two random z, and two encoded test images  -> interpolation.png",
             "figures": "all of the above"}
    for name, text in helps.items():
        f = sub.add_parser(name, help=text, description=f"{text}. PNG files go into the run folder.")
        f.add_argument("run", help="a trained VAE run folder")
        f.add_argument("--seed", type=nonneg_int, default=0, help="seed of the figure's random draws (default 0)")
        f.add_argument("--device", default="auto", help="auto, cpu, cuda")
        add_dataset(f, of_run=True)
        f.set_defaults(func=cmd_figure)

    d = sub.add_parser("demo", help="train the report's final model briefly and write every figure",
                       description="Train the report's final model (conv 1->32->64->128, latent 10, beta 1) for a "
                                   "few epochs (about 3 minutes on 2 CPU cores), then write the sample grid, "
                                   "reconstructions, latent space, interpolations and summary.json. Running it "
                                   "again continues the same run folder.")
    d.add_argument("--out", default="runs/demo", help="run folder (default runs/demo)")
    d.add_argument("--epochs", type=positive_int, default=5, help="epochs (default 5)")
    d.add_argument("--seed", type=nonneg_int, default=0, help="seed (default 0)")
    d.add_argument("--device", default="auto", help="auto, cpu, cuda")
    add_dataset(d)
    d.set_defaults(func=cmd_demo)
