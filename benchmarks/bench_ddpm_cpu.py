"""Sample quality against training minutes of DDPM runs on the CPU: the old quick profile against the cpu one.

Training writes one checkpoint per epoch into its run folder; `--snapshot` (run beside the training, or the
`train` subcommand, which does both) keeps a copy of each epoch's weights. `score` then draws N images of
every kept epoch with DDIM-50 (the cheap sampler; the final epoch also with DDPM-1000 where --final-ddpm is
given) and scores them with the pinned classifier, so the table reads FD-LeNet and classifier score
against the minutes the run had trained (its metrics.jsonl). Not a test: timings come from the runs.

    python benchmarks/bench_ddpm_cpu.py train --profile quick --epochs 6 --out /tmp/ddpm-bench/quick
    python benchmarks/bench_ddpm_cpu.py train --profile cpu --out /tmp/ddpm-bench/cpu
    python benchmarks/bench_ddpm_cpu.py score /tmp/ddpm-bench/quick /tmp/ddpm-bench/cpu --n 500 --etas 0 1
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from vaelab.data.images import load
from vaelab.diffusion.sample import generate
from vaelab.diffusion.run import open_ddpm
from vaelab.metrics.reference import resolve
from vaelab.metrics.score import score_images

RESULTS = Path(__file__).resolve().parent / "results"
SNAPSHOTS = "epochs"  # RUN/epochs/eN: a copy of the run folder's files after epoch N


def keep_epochs(run: Path, proc: subprocess.Popen | None = None, every: float = 2.0) -> None:
    """Copy the run's config, weights, state and history into RUN/epochs/eN after each new epoch, until the
    training process ends (or forever without one). Checkpoints are written by rename: a copy is whole."""
    def copy_new() -> None:
        lines = (run / "metrics.jsonl").read_text().splitlines() if (run / "metrics.jsonl").exists() else []
        dest = run / SNAPSHOTS / f"e{len(lines)}"
        if lines and not dest.exists():
            tmp = dest.with_suffix(".tmp")
            tmp.mkdir(parents=True, exist_ok=True)
            for name in ("config.json", "model.safetensors", "state.pt", "metrics.jsonl"):
                shutil.copy2(run / name, tmp / name)
            tmp.rename(dest)
    while proc is None or proc.poll() is None:
        copy_new()
        time.sleep(every)
    copy_new()


def cmd_train(args) -> int:
    """Train a DDPM with `vaelab ddpm train` and keep every epoch's weights."""
    argv = [sys.executable, "-m", "vaelab.cli", "ddpm", "train", "--profile", args.profile, "--out", str(args.out),
            "--device", "cpu", *(["--epochs", str(args.epochs)] if args.epochs else []), *args.extra]
    proc = subprocess.Popen(argv)
    keep_epochs(Path(args.out), proc)
    return proc.returncode


def trained_minutes(folder: Path) -> tuple[int, float]:
    """(epochs, training minutes) of a run folder, from its metrics.jsonl."""
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return rows[-1]["epoch"], rows[-1]["seconds"] / 60


def score_folder(folder: Path, data, clf, n: int, sampler: str, steps: int | None, eta: float | None = None) -> dict:
    """FD-LeNet, classifier score and precision/recall of n images of `sampler` from the run in `folder`."""
    run = open_ddpm(folder, "cpu")
    images, rate = generate(run, n, sampler, steps, eta, seed=0)
    sq = score_images(images, data, "cpu", clf=clf, resamples=200, log=lambda m: None)
    epoch, minutes = trained_minutes(folder)
    return {"run": str(folder), "profile": run.cfg.profile, "epoch": epoch, "train_minutes": round(minutes, 2),
            "sampler": f"{sampler.upper()}-{steps or run.schedule.T}" + (f" eta {eta:g}" if eta else ""), "n": n,
            "fd_lenet": sq["fd_lenet"],
            "fd_lenet_ci": sq.get("fd_lenet_ci"), "classifier_score": sq["classifier_score"],
            "precision": sq["precision"], "recall": sq["recall"], "ms_per_image": 1000 / rate}


def cmd_score(args) -> int:
    """Score every kept epoch of each run (DDIM-50), and its last epoch with DDPM-1000 if asked."""
    data = load("mnist", args.data_dir)
    clf = resolve(data, "cpu")
    rows = []
    for run in map(Path, args.runs):
        kept = sorted((run / SNAPSHOTS).glob("e*"), key=lambda p: int(p.name[1:])) or [run]
        chosen = [p for p in kept if not args.epochs or int(p.name[1:]) in args.epochs] or kept[-1:]
        for folder in chosen:
            for eta in args.etas:
                rows.append(score_folder(folder, data, clf, args.n, "ddim", 50, eta))
                print(json.dumps(rows[-1]), flush=True)
        if args.final_ddpm:
            rows.append(score_folder(chosen[-1], data, clf, args.n, "ddpm", None))
            print(json.dumps(rows[-1]), flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps({"threads": torch.get_num_threads(), "rows": rows}, indent=2))
    lines = [f"N = {args.n} images per row, pinned MNIST classifier; training minutes from each run's metrics.jsonl",
             "", "| profile | epoch | training minutes | sampler | FD-LeNet [95%] | classifier score | precision / "
             "recall | ms per image |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        ci = r["fd_lenet_ci"]
        band = f" [{ci[0]:.1f}, {ci[1]:.1f}]" if ci else ""
        lines.append(f"| {r['profile']} | {r['epoch']} | {r['train_minutes']:.1f} | {r['sampler']} | "
                     f"{r['fd_lenet']:.1f}{band} | {r['classifier_score']:.2f} | {r['precision']:.3f} / "
                     f"{r['recall']:.3f} | {r['ms_per_image']:.1f} |")
    (RESULTS / f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train with vaelab ddpm train, keeping each epoch's weights")
    t.add_argument("--profile", required=True)
    t.add_argument("--epochs", type=int, default=None)
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("extra", nargs="*", help="more options for vaelab ddpm train (after --)")
    t.set_defaults(func=cmd_train)
    s = sub.add_parser("score", help="FD-LeNet of each kept epoch against its training minutes")
    s.add_argument("runs", nargs="+")
    s.add_argument("--n", type=int, default=500)
    s.add_argument("--epochs", type=int, nargs="*", default=None, help="only these epochs (default: all kept)")
    s.add_argument("--etas", type=float, nargs="+", default=[0.0],
                   help="DDIM noise scales to score each epoch with (default 0; 1 adds DDPM-like noise per step)")
    s.add_argument("--out", default="ddpm_cpu", help="results file stem under benchmarks/results (default ddpm_cpu)")
    s.add_argument("--final-ddpm", action="store_true", help="also score the last chosen epoch with DDPM-1000")
    s.add_argument("--data-dir", default=None)
    s.set_defaults(func=cmd_score)
    args = p.parse_args()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
