"""How fast the command line answers: `vaelab --help`, `--version` and `train --help` against a bare Python.

Each command is a fresh process, as a user types it (the `vaelab` console script beside this Python, else
`python -m vaelab.cli`); the commands are interleaved, round after round, so that a busy machine slows them
all alike, and each gets its median wall time and its ratio to `python -c pass` measured in the same run.
`python -c "import torch"` is timed too: what every command paid before parsing became torch-free.

Usage: python benchmarks/bench_cli.py [--repeats 15] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET_SECONDS = 0.5  # `vaelab --help` should answer within this on a 2-core machine


def vaelab_command() -> list[str]:
    """The `vaelab` console script installed beside this interpreter, else `python -m vaelab.cli`."""
    script = Path(sys.executable).parent / "vaelab"
    return [str(script)] if script.exists() else [sys.executable, "-m", "vaelab.cli"]


def commands() -> dict[str, list[str]]:
    """Label -> command line, the baseline first."""
    vaelab = vaelab_command()
    return {"python -c pass": [sys.executable, "-c", "pass"],
            "vaelab --help": [*vaelab, "--help"],
            "vaelab --version": [*vaelab, "--version"],
            "vaelab train --help": [*vaelab, "train", "--help"],
            "python -c 'import torch'": [sys.executable, "-c", "import torch"]}


def wall(cmd: list[str], env: dict) -> float:
    """Seconds from start to exit of one fresh process; it must succeed."""
    t0 = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=True)
    return time.perf_counter() - t0


def measure(repeats: int) -> dict[str, list[float]]:
    """Each command `repeats` times, interleaved (one of each per round, the order rotated every round)."""
    env = {**os.environ, "VAELAB_THREADS": "1", "OMP_NUM_THREADS": "1"}
    cmds = commands()
    times: dict[str, list[float]] = {label: [] for label in cmds}
    for label, cmd in cmds.items():  # warm the file cache once; not counted
        wall(cmd, env)
    labels = list(cmds)
    for r in range(repeats):
        for label in labels[r % len(labels):] + labels[:r % len(labels)]:
            times[label].append(wall(cmds[label], env))
    return times


def summary(times: dict[str, list[float]]) -> list[dict]:
    """Median, min, max and the median's ratio to the bare interpreter's, per command."""
    base = statistics.median(times["python -c pass"])
    return [{"command": label, "median_s": round(statistics.median(t), 4), "min_s": round(min(t), 4),
             "max_s": round(max(t), 4), "ratio_to_python": round(statistics.median(t) / base, 2)}
            for label, t in times.items()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15, help="rounds; each runs every command once (default 15)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"), help="folder for cli_startup.json")
    args = ap.parse_args()
    rows = summary(measure(args.repeats))
    print(f"{'command':<28} {'median s':>9} {'min s':>7} {'max s':>7} {'x python':>9}")
    for r in rows:
        print(f"{r['command']:<28} {r['median_s']:>9.3f} {r['min_s']:>7.3f} {r['max_s']:>7.3f} "
              f"{r['ratio_to_python']:>9.2f}")
    help_s = next(r["median_s"] for r in rows if r["command"] == "vaelab --help")
    print(f"vaelab --help: {help_s:.3f} s, target < {TARGET_SECONDS} s: {'met' if help_s < TARGET_SECONDS else 'MISSED'}")
    result = {"benchmark": "cli_startup", "repeats": args.repeats, "interleaved": True, "rows": rows,
              "target_help_seconds": TARGET_SECONDS, "cpus": os.cpu_count(), "load_average": os.getloadavg(),
              "python": platform.python_version(), "machine": platform.machine(),
              "vaelab_command": vaelab_command()[0] if len(vaelab_command()) == 1 else "python -m vaelab.cli"}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cli_startup.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"written: {out / 'cli_startup.json'}")


if __name__ == "__main__":
    main()
