"""`vaelab sweep`: run a grid of configurations (built-in studies or a TOML spec), resumably
(arguments: args/sweep.py)."""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import nullcontext
from pathlib import Path

from vaelab.engine import tblog
from vaelab.errors import VaelabError
from vaelab.studies.ray_executor import RayExecutor
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
