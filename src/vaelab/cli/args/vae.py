"""Arguments of the VAE commands: train, train-together, the figure commands, demo."""

from __future__ import annotations

import argparse

from vaelab.cli.common import (add_command, add_dataset, add_divergence, add_tensorboard, finite_float, nonneg_int,
                               positive_int)
from vaelab.vae.archs import PARSERS
from vaelab.vae.config import LIKELIHOOD_NAMES

FIGURE_HELP = {"sample": "5x5 grid of images decoded from z ~ N(0, I)  -> samples.png",
               "reconstruct": "test images above their reconstructions  -> reconstructions.png",
               "latent": "test-set posterior means by class (t-SNE above 2-D; manifold grid for 2-D)  -> latent.png",
               "interpolate": "10-step interpolations: two random z, and two encoded test images  -> interpolation.png",
               "figures": "all of the above"}


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
                        "weights, loss and Adam in fp32; it pays on CPUs with native bf16 (AVX512-BF16/AMX) and "
                        "recent GPUs, not elsewhere (docs/performance.md)")
    p.add_argument("--binarize", action="store_true",
                   help="dynamically binarised images (pixels drawn as Bernoulli of their intensity each "
                        "epoch; fixed-seed binarised test set), for comparison with the literature")
    p.add_argument("--likelihood", choices=LIKELIHOOD_NAMES, default="bernoulli",
                   help="p(x|z): bernoulli on grey levels (default, the report's BCE), binarized (the VAE "
                        "literature's protocol; sets --binarize) or discretized_logistic (8-bit pixels: nats "
                        "comparable with the DDPM's bound); docs/metrics.md#likelihoods-and-their-protocols")


def register_train(sub: argparse._SubParsersAction) -> None:
    """Add train and train-together."""
    t = add_command(sub, "train", "train a dense or convolutional VAE into a run folder",
                    "Train a VAE (loss: BCE summed over pixels + beta * KL) into a run folder: config.json, "
                    "metrics.jsonl, model.safetensors, state.pt. A checkpoint is written after every epoch; "
                    "Ctrl-C keeps the last one and --resume continues it, bit-for-bit on CPU. "
                    "\n\nExample: vaelab train --model conv --epochs 10 --out runs/conv", "vaelab.cli.vae:cmd_train")
    add_train_options(t)
    t.add_argument("--out", required=True, help="run folder to create (or to continue with --resume)")
    t.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last completed epoch (its saved config is used; "
                        "--epochs may raise the target)")
    add_divergence(t)
    add_dataset(t)
    add_tensorboard(t)

    g = add_command(sub, "train-together", "train run folders that differ only in beta in one vmapped step",
                    "Train (or resume) prepared run folders (e.g. by `vaelab sweep`) whose configs differ only in "
                    "train.beta as one stacked model (torch.func.vmap): the same batches, seed and noise as each "
                    "alone; each folder ends as an ordinary run.\n\nExample: vaelab train-together runs/b1 runs/b2",
                    "vaelab.cli.vae:cmd_train_together")
    g.add_argument("runs", nargs="+", metavar="RUN", help="prepared run folders")
    add_dataset(g, of_run=True)
    add_tensorboard(g)


def register(sub: argparse._SubParsersAction) -> None:
    """Add train, train-together, the figure commands and demo."""
    register_train(sub)
    for name, text in FIGURE_HELP.items():
        f = add_command(sub, name, text, f"{text}. PNG files go into the run folder.\n\nExample: vaelab {name} runs/conv",
                        "vaelab.cli.vae:cmd_figure")
        f.add_argument("run", help="a trained VAE run folder")
        f.add_argument("--seed", type=nonneg_int, default=0, help="seed of the figure's random draws (default 0)")
        f.add_argument("--device", default="auto", help="auto, cpu, cuda")
        add_dataset(f, of_run=True)

    d = add_command(sub, "demo", "train the report's final model briefly and write every figure",
                    "Train the report's final model (conv 1->32->64->128, latent 10, beta 1) for a few epochs, "
                    "then write the sample grid, reconstructions, latent space, interpolations and summary.json. "
                    "Running it again continues the same run folder.\n\nExample: vaelab demo --out runs/demo",
                    "vaelab.cli.vae:cmd_demo")
    d.add_argument("--out", default="runs/demo", help="run folder (default runs/demo)")
    d.add_argument("--epochs", type=positive_int, default=5, help="epochs (default 5)")
    d.add_argument("--seed", type=nonneg_int, default=0, help="seed (default 0)")
    d.add_argument("--device", default="auto", help="auto, cpu, cuda")
    add_dataset(d)
