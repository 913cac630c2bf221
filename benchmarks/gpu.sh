#!/usr/bin/env bash
# One-call GPU check (prepared for the device machine; not yet run: no GPU was lent to the session that
# wrote it). Prints one table: training throughput, epoch times of `vaelab train`, DDPM epoch, samplers.
# Usage on a GPU machine, from the repository root:  bash benchmarks/gpu.sh   (about 6 minutes)
set -euo pipefail
export PYTHONUNBUFFERED=1 OUT=${OUT:-/tmp/vaelab-gpu}
mkdir -p "$OUT"
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA'; print(torch.cuda.get_device_name())"
pip install -q -e . >/dev/null 2>&1 || true
python3 benchmarks/bench_train.py --device cuda --steps 100 --repeats 5 --out "$OUT"
for spec in "dense 256-512 5" "conv 32-64-128 10"; do
  set -- $spec
  for prec in fp32 bf16; do
    vaelab train --model $1 --arch $2 --latent-dim $3 --epochs 2 --precision $prec --device cuda \
      --out "$OUT/$1-$prec" 2>&1 | grep "^epoch"
  done
done
vaelab ddpm train --profile full --epochs 1 --device cuda --out "$OUT/ddpm" 2>&1 | grep "^epoch"
for s in "ddpm 1000" "ddim 100" "ddim 50"; do
  set -- $s
  vaelab ddpm sample "$OUT/ddpm" --sampler $1 --steps $2 --npy "$OUT/$1$2.npy" --n 500 2>&1 | tail -2
done
cat "$OUT/train.md"
