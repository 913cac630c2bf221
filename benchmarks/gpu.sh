#!/usr/bin/env bash
# One-call GPU check: the benchmarks of benchmarks/README.md on one CUDA GPU, each section time-boxed so
# that the whole call ends in about 6 minutes even if a section hangs. Prints each section's tables, then
# one table of the GPU targets (benchmarks/gpu_summary.py); keeps gpu.log and the tables in $OUT.
# Usage, from the repository root of a machine with a CUDA build of PyTorch:
#   VAELAB_DATA=/path/to/mnist bash benchmarks/gpu.sh        (no install needed: runs from src/)
# SMOKE=1 DEVICE=cpu checks the script's mechanics in a minute (tiny steps; use a tiny MNIST).
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-/tmp/vaelab-gpu}; RUNS=${RUNS:-/tmp/vaelab-gpu-runs}; PY=${PY:-python3}; DEVICE=${DEVICE:-cuda}
STEPS=100; REPS=5; EPOCHS=3; DDPM_EPOCHS=4; N=1000
[ -n "${SMOKE:-}" ] && { STEPS=3; REPS=1; EPOCHS=1; DDPM_EPOCHS=1; N=20; }
mkdir -p "$OUT" "$RUNS"
exec > >(tee -a "$OUT/gpu.log") 2>&1
V="$PY -m vaelab.cli"
section() { echo; echo "== $1 ($(date +%T))"; }
boxed() { local s=$1; shift; timeout -s INT -k 10 "$s" "$@"; local rc=$?; [ $rc -eq 0 ] || echo "(exit $rc)"; }
since() { "$PY" -c "print(f'{$EPOCHREALTIME - $1:.1f}')"; }

section "device"
[ "$DEVICE" = cpu ] || nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
"$PY" -c "import torch; d='$DEVICE'; assert d == 'cpu' or torch.cuda.is_available(), 'no CUDA'
print('torch', torch.__version__, torch.cuda.get_device_name() if d != 'cpu' else 'CPU')" || exit 1

section "0. the CUDA-only tests (graph replay vs eager, resume on CPU, stacked on CUDA)"
[ "$DEVICE" = cpu ] || boxed 90 "$PY" -m pytest -q -p no:cacheprovider tests/test_steps.py tests/test_stacked.py 2>&1 | tail -4

section "1. training throughput vs the report's loop, share of the fp32 matmul peak"
boxed 100 "$PY" benchmarks/bench_train.py --device "$DEVICE" --steps $STEPS --repeats $REPS --out "$OUT"

section "2. epoch times of vaelab train ($EPOCHS epochs; the first includes CUDA warm-up and graph capture)"
for spec in "dense 256-512 5" "conv 32-64-128 10"; do
  set -- $spec
  for prec in fp32 bf16; do
    echo "-- $1 $prec"
    boxed 45 $V train --model "$1" --arch "$2" --latent-dim "$3" --epochs $EPOCHS --precision $prec \
      --device "$DEVICE" --out "$RUNS/$1-$prec" 2>&1 | grep -E "^epoch|error|exit"
  done
done

section "3. the beta study's five models: one after another vs stacked in one vmapped step"
boxed 60 "$PY" benchmarks/bench_stacked.py --device "$DEVICE" --steps $((STEPS / 2)) --repeats $REPS --out "$OUT"

section "4. DDPM (full profile: the annex's UNet, bf16 autocast): epoch time, then samplers with FD-LeNet"
boxed 110 $V ddpm train --profile full --epochs $DDPM_EPOCHS --device "$DEVICE" --out "$RUNS/ddpm" 2>&1 \
  | grep -E "^epoch|error|exit"
boxed 110 $V versus "$RUNS/conv-fp32" "$RUNS/ddpm" --n $N --out "$RUNS/versus" --device "$DEVICE" 2>&1 \
  | grep -v "^sampling"
cp "$RUNS/versus/comparison.md" "$OUT/" 2>/dev/null

section "5. the beta sweep through the real runner, 1 epoch, no evaluation: --together never vs always"
times="{"
for mode in never always; do
  start=$EPOCHREALTIME
  boxed 75 $V sweep beta --set train.epochs=1 --set train.device="$DEVICE" --no-evaluate --together $mode \
    --out "$RUNS/sweep-$mode" 2>&1 | tail -3
  took=$(since "$start"); echo "--together $mode: $took s"
  times="$times\"$mode\": $took,"
done
echo "${times%,}}" > "$OUT/sweep_times.json"

section "the targets (also in $OUT/summary.md)"
"$PY" benchmarks/gpu_summary.py "$OUT" "$RUNS"
