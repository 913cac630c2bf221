"""Sweep throughput: the same configurations one after another (1 process, all cores) against
`vaelab sweep --jobs N` (N processes, cores/N threads each), through the real runner.

Usage: python benchmarks/bench_sweep.py [--study dense|beta] [--epochs 1] [--limit 6] [--jobs 2]
Needs MNIST ($VAELAB_DATA or the cache). Writes benchmarks/results/sweep.{json,md}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

from vaelab.studies.sweep import configs, load_spec, run_sweep


def timed_sweep(spec, jobs: int, data_dir, overrides) -> float:
    """Seconds for run_sweep of `spec` into a fresh folder (training only)."""
    with tempfile.TemporaryDirectory(prefix="vaelab-bench-") as tmp:
        t0 = time.perf_counter()
        summary = run_sweep(spec, Path(tmp), jobs, data_dir, None, overrides, log=lambda m: None)
        seconds = time.perf_counter() - t0
    failed = [s for s in summary if s["status"] != "ok"]
    if failed:
        raise SystemExit(f"benchmark runs failed: {failed}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", default="dense")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--limit", type=int, default=6, help="first N configurations of the study")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    spec = load_spec(args.study)
    names = [n for n, _ in configs(spec)][: args.limit]
    # keep the first `limit` grid points: restrict the grid to the values they use
    points = configs(spec)[: args.limit]
    grid = {k: sorted({getattr(getattr(c, k.split(".")[0]), k.split(".")[1]) for _, c in points}, key=str)
            for k in spec.grid}
    spec = dataclasses.replace(spec, grid=grid)
    overrides = {"train.epochs": args.epochs}
    sequential = timed_sweep(spec, 1, args.data_dir, overrides)
    parallel = timed_sweep(spec, args.jobs, args.data_dir, overrides)
    n = len(configs(spec))
    result = {"study": args.study, "runs": n, "epochs": args.epochs, "first_runs": names,
              "sequential_s": round(sequential, 1), f"jobs{args.jobs}_s": round(parallel, 1),
              "speedup": round(sequential / parallel, 2)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps(result, indent=2) + "\n")
    md = (f"| study | runs x epochs | one after another (1 process) | --jobs {args.jobs} | speed-up |\n|---|---|---|---|---|\n"
          f"| {args.study} | {n} x {args.epochs} | {sequential:.1f} s | {parallel:.1f} s | {sequential / parallel:.2f} |\n")
    (out / "sweep.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
