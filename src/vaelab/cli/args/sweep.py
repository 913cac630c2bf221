"""Arguments of `vaelab sweep`, and the executor options it shares with `vaelab reproduce`."""

from __future__ import annotations

import argparse

from vaelab.cli.common import add_command, add_dataset, add_tensorboard, add_together, finite_float, positive_int
from vaelab.studies.ray_executor import INSTALL

SHARED = "an absolute path on a filesystem every node sees (NFS, a cluster filesystem)"
BUILTIN = ("beta", "conv", "dense")  # studies/specs/*.toml (tests/test_startup.py checks them)
SPEC_FORMAT = """spec format (TOML):
  name = "mine"
  [base]
  dataset = "fashion-mnist"   # default mnist
  model.family = "conv"
  train.epochs = 5
  [grid]
  "model.latent_dim" = [2, 10]
  "train.seed" = [0, 1, 2]
  [evaluate]            # options of `vaelab evaluate` (quick, k, samples, iwae_images)
  quick = true"""


def nonneg_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (got {text})")
    return value


def add_executor(p: argparse.ArgumentParser) -> None:
    """--executor local|ray and the Ray options (also used by `vaelab reproduce`)."""
    g = p.add_argument_group("executor (where the runs train)")
    g.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="local (default): processes on this machine, --jobs at a time; ray: each run (or stacked "
                        "beta group) is one Ray task on the cluster of --ray-address, or on a local Ray; Ray's "
                        "resources decide how many run at once (--jobs is ignored). --out must then be "
                        f"{SHARED}. Needs Ray: {INSTALL}")
    g.add_argument("--ray-address", metavar="ADDR", default=None,
                   help="auto (the cluster this machine joined with `ray start`) or HOST:PORT of the head node; "
                        "default: start a local Ray with this machine's CPUs")
    g.add_argument("--cpus-per-run", type=positive_int, default=None, metavar="N",
                   help="with ray: CPUs each run asks for, and its threads (default 1)")
    g.add_argument("--gpus-per-run", type=nonneg_float, default=None, metavar="F",
                   help="with ray: GPUs each run asks for; a fraction shares one GPU (0.25: four runs per GPU); "
                        "default 0: runs see no GPU")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `sweep` command."""
    p = add_command(sub, "sweep", "train and evaluate a grid of configurations (resumable)",
                    "Run every configuration of a sweep spec (built-in: dense, conv, beta; or a TOML file) into its "
                    "own run folder under --out. Run the same command again to finish an interrupted sweep: "
                    "finished runs are skipped, partial ones resume. A failed run does not stop the others; the "
                    "exit code is 1 if any failed. --jobs N shares the CPU's threads among N runs; --executor ray "
                    "runs them as Ray tasks, retried from their last checkpoint if a worker dies.\n\n"
                    "Example: vaelab sweep beta --out runs/beta --jobs 2", "vaelab.cli.sweep:cmd_sweep")
    p.epilog = f"{SPEC_FORMAT}\n\n{p.epilog}"
    p.add_argument("spec", help=f"a built-in spec name ({', '.join(reversed(BUILTIN))}) or a TOML file")
    p.add_argument("--out", default=None,
                   help=f"folder for the run folders and sweep.json (with --executor ray: {SHARED})")
    p.add_argument("--jobs", type=positive_int, default=1, help="runs trained at once (default 1; local executor)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config key for every run, e.g. --set train.epochs=2 (repeatable)")
    p.add_argument("--no-evaluate", action="store_true", help="train only; skip `vaelab evaluate`")
    p.add_argument("--quick-eval", action="store_true", help="evaluate with --quick (seconds, rough numbers)")
    p.add_argument("--list", action="store_true", help="print the configurations and exit")
    add_together(p)
    add_tensorboard(p)
    add_dataset(p)
    add_executor(p)
