"""`vaelab sweep`: run a grid of configurations (built-in studies or a TOML spec), resumably."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vaelab.cli.common import add_dataset, add_together, positive_int
from vaelab.errors import VaelabError
from vaelab.studies.sweep import configs, load_spec, run_sweep


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
    summary = run_sweep(spec, Path(args.out), args.jobs, args.data_dir, evaluate, overrides, together=args.together)
    failed = [s for s in summary if s["status"].startswith("failed")]
    for s in summary:
        print(f"{s['status']:<16} {s['seconds']:>8.1f} s  {s['run']}")
    print(f"{len(summary) - len(failed)} of {len(summary)} runs done; summary in {Path(args.out) / 'sweep.json'}")
    if failed:
        print(f"{len(failed)} run(s) failed: {', '.join(s['run'] for s in failed)}", file=sys.stderr)
    return 1 if failed else 0


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
                    "exit code is 1 if any failed. With --jobs N, each process gets cores/N threads.",
        epilog="spec format (TOML):\n  name = \"mine\"\n  [base]\n  dataset = \"fashion-mnist\"   # default mnist\n  model.family = \"conv\"\n  train.epochs = 5\n"
               "  [grid]\n  \"model.latent_dim\" = [2, 10]\n  \"train.seed\" = [0, 1, 2]\n"
               "  [evaluate]            # options of `vaelab evaluate` (quick, k, samples, iwae_images)\n  quick = true")
    p.add_argument("spec", help="a built-in spec name (dense, conv, beta) or a TOML file")
    p.add_argument("--out", default=None, help="folder for the run folders and sweep.json")
    p.add_argument("--jobs", type=positive_int, default=1, help="runs trained at once (default 1)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config key for every run, e.g. --set train.epochs=2 (repeatable)")
    p.add_argument("--no-evaluate", action="store_true", help="train only; skip `vaelab evaluate`")
    p.add_argument("--quick-eval", action="store_true", help="evaluate with --quick (seconds, rough numbers)")
    p.add_argument("--list", action="store_true", help="print the configurations and exit")
    add_together(p)
    add_dataset(p)
    p.set_defaults(func=cmd_sweep)
