#!/usr/bin/env bash
# The whole reproduction on one GPU, timed by phase (issue 15's goal: `vaelab reproduce --profile full` in
# under 8 minutes on one H200, `--seeds 3` in under 12). One call: the reproduction, then a table of how long
# each phase took (from the "== ..." lines reproduce prints), then the report and its numbers copied to $OUT.
# Usage, from the repository root of a machine with a CUDA build of PyTorch (no install needed):
#   VAELAB_DATA=/path/to/mnist bash benchmarks/gpu_full.sh            (SEEDS=3 for the 3-seed goal)
# SMOKE=1 DEVICE=cpu VAELAB_DATA=/tiny/mnist checks the mechanics on a CPU: the beta study alone, quick profile.
# LIMIT (seconds, default 560) stops the reproduction with Ctrl-C's signal, so the table and the files still
# come back inside one 10-minute call; the same command again resumes it.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-/tmp/vaelab-full}; RUNS=${RUNS:-/tmp/vaelab-full-runs}; PY=${PY:-python3}; DEVICE=${DEVICE:-cuda}
SEEDS=${SEEDS:-}; LIMIT=${LIMIT:-560}; JOBS=${JOBS:-4}
ARGS=(--profile full --studies dense conv beta ddpm --jobs "$JOBS")
[ -n "${SMOKE:-}" ] && ARGS=(--profile quick --studies beta --seeds 1 --jobs 1)
[ -n "$SEEDS" ] && ARGS+=(--seeds "$SEEDS")
mkdir -p "$OUT" "$RUNS"
exec > >(tee -a "$OUT/gpu_full.log") 2>&1

echo "== device ($(date +%T))"
[ "$DEVICE" = cpu ] || nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" -c "import torch; d='$DEVICE'; assert d == 'cpu' or torch.cuda.is_available(), 'no CUDA'
print('torch', torch.__version__, torch.cuda.get_device_name() if d != 'cpu' else 'CPU')" || exit 1
[ "$DEVICE" = cpu ] && export CUDA_VISIBLE_DEVICES=""  # every run picks the CPU under device auto

echo "== reproduce ${ARGS[*]} ($(date +%T))"
# each output line with the seconds since the start, so the phases can be timed afterwards
timeout -s INT -k 30 "$LIMIT" "$PY" -m vaelab.cli reproduce "${ARGS[@]}" --out "$RUNS/repro" 2>&1 \
  | "$PY" -c "
import sys, time
t0 = time.time()
for line in sys.stdin:
    print(f'{time.time() - t0:8.1f} {line}', end='', flush=True)" | tee "$OUT/reproduce_timed.log"
rc=${PIPESTATUS[0]}; echo "(reproduce exit $rc)"

echo "== phases (also in $OUT/phases.md)"
"$PY" - "$OUT/reproduce_timed.log" "$OUT/phases.md" "$rc" <<'EOF'
import re, sys
lines = open(sys.argv[1]).read().splitlines()
marks = [(float(l[:8]), l[9:].strip("= ").strip()) for l in lines if l[9:].startswith("== ")]
end = float(lines[-1][:8]) if lines else 0.0
rows = [(name, (marks[i + 1][0] if i + 1 < len(marks) else end) - t) for i, (t, name) in enumerate(marks)]
first = marks[0][0] if marks else 0.0
table = ["| phase | seconds |", "| --- | --- |", *[f"| {n} | {s:.1f} |" for n, s in rows],
         f"| (before the first phase: start-up) | {first:.1f} |", f"| **total** | **{end:.1f}** |",
         "", f"reproduce exit code {sys.argv[3]} (124: stopped at LIMIT; run again to resume)"]
open(sys.argv[2], "w").write("\n".join(table) + "\n")
print("\n".join(table))
EOF
for f in REPORT.md report.json ddpm/comparison.md ddpm/represent/representations.md; do
  [ -f "$RUNS/repro/$f" ] && cp "$RUNS/repro/$f" "$OUT/$(echo "$f" | tr / _)"
done
ls "$OUT"
