"""`vaelab sweep`: run a grid of configurations (built-in studies or a TOML spec), resumably."""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import nullcontext
from pathlib import Path

from vaelab.cli.common import add_dataset, add_tensorboard, add_together, finite_float, positive_int
from vaelab.engine import tblog
from vaelab.errors import VaelabError
from vaelab.studies.ray_executor import INSTALL, RayExecutor
from vaelab.studies.sweep import configs, load_spec, run_sweep

SHARED = "an absolute path on a filesystem every node sees (NFS, a cluster filesystem)"


def parse_set(items: list[str]) -> dict:
    """--set key=value pairs; values read as JSON where they parse (2, 0.5, true), else as text."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise VaelabError(f"--set expects key=value (got {item!r})")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def cmd_sweep(args) -> int:
    """Run (or resume) a sweep and print its summary; exit 1 if any run failed."""
    spec = load_spec(args.spec)
    overrides = parse_set(args.set)
    if args.dataset is not None:  # the spec's runs on another dataset (a spec may also set `dataset` itself)
        overrides["dataset"] = args.dataset
    if args.list:
        for name, cfg in configs(spec, overrides):
            print(f"{name:<40} {cfg.dataset} {cfg.model.family} {cfg.model.arch} z={cfg.model.latent_dim} "
                  f"beta={cfg.train.beta:g} epochs={cfg.train.epochs} seed={cfg.train.seed}")
        return 0
    if args.out is None:
        raise VaelabError("--out is required (the folder that will hold one run folder per configuration)")
    evaluate = None if args.no_evaluate else {**spec.evaluate, **({"quick": True} if args.quick_eval else {})}
    if args.tensorboard or spec.tensorboard:
        tblog.require()  # before any run starts: say how to install it
    with open_executor(args, Path(args.out)) as executor:
        summary = run_sweep(spec, Path(args.out), args.jobs, args.data_dir, evaluate, overrides,
                            together=args.together, executor=executor, tensorboard=args.tensorboard)
    failed = [s for s in summary if s["status"].startswith("failed")]
    for s in summary:
        again = f"  (retried {s['retries']}x: its worker died)" if s.get("retries") else ""
        print(f"{s['status']:<16} {s['seconds']:>8.1f} s  {s['run']}{again}")
    print(f"{len(summary) - len(failed)} of {len(summary)} runs done; summary in {Path(args.out) / 'sweep.json'}")
    retried = [s["run"] for s in summary if s.get("retries")]
    if retried:
        print(f"{len(retried)} run(s) retried after their worker died: {', '.join(retried)}", file=sys.stderr)
    if failed:
        print(f"{len(failed)} run(s) failed: {', '.join(s['run'] for s in failed)}", file=sys.stderr)
    return 1 if failed else 0


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
                        "default: start a local Ray with this machine's cores")
    g.add_argument("--cpus-per-run", type=positive_int, default=None, metavar="N",
                   help="with ray: CPUs each run asks for, and its threads (default 1)")
    g.add_argument("--gpus-per-run", type=nonneg_float, default=None, metavar="F",
                   help="with ray: GPUs each run asks for; a fraction shares one GPU (0.25: four runs per GPU); "
                        "default 0: runs see no GPU")


def open_executor(args: argparse.Namespace, out: Path):
    """The executor the options ask for, as a context manager (None: run_sweep's own local executor)."""
    ray_only = [flag for flag, value in (("--ray-address", args.ray_address), ("--cpus-per-run", args.cpus_per_run),
                                         ("--gpus-per-run", args.gpus_per_run)) if value is not None]
    if args.executor != "ray":
        if ray_only:
            raise VaelabError(f"{', '.join(ray_only)}: only with --executor ray (the local executor runs --jobs "
                              "processes here)")
        return nullcontext(None)
    if not out.is_absolute():  # each node would resolve it against its own working directory
        raise VaelabError(f"--out must be an absolute path with --executor ray, on a filesystem every node sees "
                          f"(got {str(out)!r}; e.g. {str(Path.cwd() / out)!r} if that folder is shared)")
    return RayExecutor(args.ray_address, args.cpus_per_run or 1, args.gpus_per_run or 0.0)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `sweep` command."""
    p = sub.add_parser(
        "sweep", help="train and evaluate a grid of configurations (resumable)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run every configuration of a sweep spec into its own run folder under --out.\n"
                    "Built-in specs: dense (latent 2..100 x hidden 128-256/256-512/512-1024), conv (latent\n"
                    "2..100 x conv 32-64/16-32-64/32-64-128), beta (conv 32-64-128, latent 10, beta 0.2..5).\n"
                    "Run the same command again to finish an interrupted sweep: finished runs are skipped,\n"
                    "partial ones resume from their last epoch. A failed run does not stop the others; the\n"
                    "exit code is 1 if any failed. With --jobs N, each process gets cores/N threads.\n"
                    "With --executor ray the runs are Ray tasks on a cluster (or a local Ray); a task whose\n"
                    "worker dies is retried from the run's last checkpoint, and the summary names those runs.",
        epilog="spec format (TOML):\n  name = \"mine\"\n  [base]\n  dataset = \"fashion-mnist\"   # default mnist\n  model.family = \"conv\"\n  train.epochs = 5\n"
               "  [grid]\n  \"model.latent_dim\" = [2, 10]\n  \"train.seed\" = [0, 1, 2]\n"
               "  [evaluate]            # options of `vaelab evaluate` (quick, k, samples, iwae_images)\n  quick = true")
    p.add_argument("spec", help="a built-in spec name (dense, conv, beta) or a TOML file")
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
    p.set_defaults(func=cmd_sweep)
