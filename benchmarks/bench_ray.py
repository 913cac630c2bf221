"""Ray's overhead: the same sweep through `--executor local` (--jobs N, 1 thread each) and through
`--executor ray` (a local Ray with N CPUs, 1 CPU per run), interleaved, side by side in one run.

Usage: python benchmarks/bench_ray.py [--study dense] [--epochs 1] [--limit 6] [--cpus 2] [--repeats 2]
Needs MNIST ($VAELAB_DATA or the cache). Writes benchmarks/results/ray.{json,md}. Ray's start (ray.init,
once per command) is timed apart from the sweeps; the sweeps reuse the started Ray, as one `vaelab
sweep` command does for all its runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from vaelab.studies.executors import LocalExecutor
from vaelab.studies.ray_executor import RayExecutor
from vaelab.studies.sweep import configs, load_spec, run_sweep


def first_points(spec, limit: int):
    """`spec` with its grid cut to the values of its first `limit` configurations (as bench_sweep.py)."""
    points = configs(spec)[:limit]
    grid = {k: sorted({getattr(getattr(c, k.split(".")[0]), k.split(".")[1]) for _, c in points}, key=str)
            for k in spec.grid}
    return dataclasses.replace(spec, grid=grid)


def timed_sweep(spec, executor, data_dir, overrides) -> float:
    """Seconds for run_sweep of `spec` into a fresh folder (training only) through `executor`."""
    with tempfile.TemporaryDirectory(prefix="vaelab-bench-ray-") as tmp:
        t0 = time.perf_counter()
        summary = run_sweep(spec, Path(tmp), data_dir=data_dir, evaluate=None, overrides=overrides,
                            log=lambda m: None, executor=executor)
        seconds = time.perf_counter() - t0
    failed = [s for s in summary if s["status"] != "ok"]
    if failed:
        raise SystemExit(f"benchmark runs failed: {failed}")
    return seconds


def table(r: dict) -> str:
    """The markdown table of one benchmark result."""
    return (f"| study | runs x epochs | local, --jobs {r['cpus']} (1 thread each) | ray, {r['cpus']} CPUs, 1 per run "
            "| Ray overhead | Ray start (once per command) |\n|---|---|---|---|---|---|\n"
            f"| {r['study']} | {r['runs']} x {r['epochs']} | {r['local_s']:.1f} s | {r['ray_s']:.1f} s "
            f"| {r['overhead_pct']:+.1f}% | {r['ray_start_s']:.1f} s |\n\n"
            f"Median of {r['repeats']} interleaved repetitions (local: {r['local_all_s']}, ray: {r['ray_all_s']}); "
            f"load average before/after: {r['load_before']} / {r['load_after']}.\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", default="dense")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--limit", type=int, default=6, help="first N configurations of the study")
    ap.add_argument("--cpus", type=int, default=2, help="runs at once: --jobs of the local executor, Ray's CPUs")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved repetitions of each (median reported)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    os.environ.setdefault("VAELAB_THREADS", "1")
    spec, overrides = first_points(load_spec(args.study), args.limit), {"train.epochs": args.epochs}
    load_before = [round(x, 1) for x in os.getloadavg()]
    t0 = time.perf_counter()
    with RayExecutor(num_cpus=args.cpus) as ray_executor:
        ray_start = time.perf_counter() - t0
        local, ray = [], []
        for _ in range(args.repeats):  # interleaved: a neighbour's load hits both sides alike
            local.append(timed_sweep(spec, LocalExecutor(args.cpus, threads=1), args.data_dir, overrides))
            ray.append(timed_sweep(spec, ray_executor, args.data_dir, overrides))
    lm, rm = statistics.median(local), statistics.median(ray)
    result = {"study": args.study, "runs": len(configs(spec)), "epochs": args.epochs, "cpus": args.cpus,
              "repeats": args.repeats, "local_s": round(lm, 1), "ray_s": round(rm, 1),
              "overhead_pct": round(100 * (rm - lm) / lm, 1), "ray_start_s": round(ray_start, 1),
              "local_all_s": [round(x, 1) for x in local], "ray_all_s": [round(x, 1) for x in ray],
              "load_before": load_before, "load_after": [round(x, 1) for x in os.getloadavg()]}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ray.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "ray.md").write_text(table(result))
    print(table(result))


if __name__ == "__main__":
    main()
