"""The one table of benchmarks/gpu.sh: each GPU target of the performance issue beside what was measured.

Reads what gpu.sh left in OUT (train.json, stacked*.json, sweep_times.json) and RUNS (the run folders of
`vaelab train`, `vaelab ddpm train`, `vaelab versus`); prints Markdown and writes OUT/summary.md.
Usage: python benchmarks/gpu_summary.py OUT RUNS
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def read_json(path: Path):
    """The JSON at `path`, or None when the section that writes it did not finish."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def warm_epoch(run: Path) -> float | None:
    """Median epoch seconds of a run after its first epoch (which includes warm-up and graph capture)."""
    try:
        secs = [json.loads(line)["epoch_seconds"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    except (OSError, ValueError, KeyError):
        return None
    rest = sorted(secs[1:] or secs)
    return rest[len(rest) // 2]


def verdict(ok: bool | None) -> str:
    """'met', 'missed' or 'not measured'."""
    return "not measured" if ok is None else ("met" if ok else "missed")


def rows(out: Path, runs: Path) -> list[tuple[str, str, str]]:
    """(target, measured, verdict) for every GPU target."""
    table = []
    for family, limit in (("conv", 1.0), ("dense", 0.5)):
        s = warm_epoch(runs / f"{family}-fp32")
        table.append((f"{family} VAE epoch < {limit} s (vaelab train, fp32)",
                      "-" if s is None else f"{s:.2f} s", verdict(None if s is None else s < limit)))
    s = warm_epoch(runs / "ddpm")
    table.append(("DDPM epoch < 15 s (full profile)", "-" if s is None else f"{s:.1f} s",
                  verdict(None if s is None else s < 15)))
    stacked = read_json(out / "stacked_cuda.json") or read_json(out / "stacked.json")
    for r in (stacked or {}).get("rows", []):
        table.append((f"5 betas together >= 3x one after another, per step ({r['model']})", f"{r['speedup']}x",
                      verdict(r["speedup"] >= 3)))
    sweep = read_json(out / "sweep_times.json")
    if sweep and sweep.get("never") and sweep.get("always"):
        ratio = sweep["never"] / sweep["always"]
        table.append(("5 betas together >= 3x, the beta sweep through the runner (1 epoch)",
                      f"{sweep['never']:.1f} s / {sweep['always']:.1f} s = {ratio:.1f}x", verdict(ratio >= 3)))
    cmp = read_json(runs / "versus" / "comparison.json")
    by = {r["generator"]: r for r in (cmp or {}).get("rows", [])}
    if "DDPM-1000" in by and "DDIM-50" in by:
        ddpm = by["DDPM-1000"]
        for name in ("DDIM-50", "DDIM-50-eta1"):
            if name in by:
                d = by[name]
                speed, worse = d["images_per_second"] / ddpm["images_per_second"], d["fd_lenet"] / ddpm["fd_lenet"] - 1
                table.append((f"{name} >= 15x faster than DDPM-1000, FD-LeNet within 15%",
                              f"{speed:.1f}x, FD {d['fd_lenet']:.1f} vs {ddpm['fd_lenet']:.1f} ({worse:+.1%})",
                              verdict(speed >= 15 and worse <= 0.15)))
    train = read_json(out / "train.json")
    for r in (train or {}).get("rows", []):
        if r.get("speedup"):
            table.append((f"{r['model']} training vs the report's loop, batch 128",
                          f"{r['vaelab_img_s']:,} vs {r['report_img_s']:,} img/s = {r['speedup']}x", "(no target)"))
    return table


def main() -> None:
    out, runs = Path(sys.argv[1]), Path(sys.argv[2])
    lines = ["| target | measured | |", "|---|---|---|"] + [f"| {a} | {b} | {c} |" for a, b, c in rows(out, runs)]
    text = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
