#!/usr/bin/env bash
# One lent-GPU session, everything the device checks need in a single prepared run (about 9 minutes):
#   1. the card and software versions; 2. the gpu-marked kernel tests at real shapes and bf16;
#   3. bench/gpu.py (calibration, kernel microbenchmarks, full-size sweep), then again at 12 layers with the
#      transformers reference for the ratio;
#   4. with the time left, the small model's training continued on the GPU (jobs/train.py --device cuda).
# Optional carried inputs: .whl/*.whl (e.g. the transformers version the tests pin) and .devcarry/init/
# (training weights to start from). Results land in $OUT (at most 8 files come back).
# Usage: OUT=/tmp/out bash bench/gpu_session.sh [TOTAL_SECONDS]
# DGBATCH_DRY=1 rehearses the script on a CPU box (tiny bench, CPU training) to check its plumbing.
set -u
if [ "${DGBATCH_DRY:-0}" = 1 ]; then
  BENCH_ARGS="--tiny"; TRAIN_ARGS="--device cpu --data-workers 2 --batch-size 8"; RESERVE=60
else
  BENCH_ARGS=""; TRAIN_ARGS="--device cuda --data-workers 12 --batch-size 128"; RESERVE=200
fi
TOTAL=${1:-540}
OUT=${OUT:-/tmp/dgbatch_gpu_out}
mkdir -p "$OUT"
T0=$(date +%s)
left() { echo $(( TOTAL - ($(date +%s) - T0) )); }
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl && export PYTHONPATH=/tmp/site
fi
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
  python3 -c "import sys, torch, triton, transformers; print(sys.version.split()[0], 'torch', torch.__version__,
'triton', triton.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name())"
  echo "== gpu-marked tests"
  timeout 120 python3 -m pytest -q -m gpu tests/kernels -p no:cacheprovider -rs 2>&1 | tail -30
} > "$OUT/env_and_tests.txt" 2>&1
cat "$OUT/env_and_tests.txt"

BENCH=$(( $(left) - RESERVE ))
[ "$BENCH" -gt 330 ] && BENCH=330
echo "== bench/gpu.py (budget ${BENCH}s)"
# The full-size transformers reference does not fit an 80 GB card (its constructor peaks above 77.5 GB), so
# the full-size run skips it and a second run compares both implementations on the first 12 layers.
REF=$(( BENCH / 3 ))
timeout $(( BENCH - REF + 30 )) python3 bench/gpu.py $BENCH_ARGS --skip-hf --budget-s "$(( BENCH - REF ))" \
  --out "$OUT/bench_gpu.json" > "$OUT/bench_gpu.log" 2>&1
echo "bench exit $?"
timeout $(( REF + 30 )) python3 bench/gpu.py $BENCH_ARGS --layers 12 --budget-s "$REF" \
  --out "$OUT/bench_gpu_l12.json" >> "$OUT/bench_gpu.log" 2>&1
echo "bench (12 layers, with the reference) exit $?"

TRAIN=$(( $(left) - 45 ))
if [ "$TRAIN" -ge 60 ]; then
  INIT=""
  [ -f .devcarry/init/weights.safetensors ] && INIT="--init-from .devcarry/init"
  rm -rf /tmp/train_gpu
  echo "== training for ${TRAIN}s $INIT"
  # The budget leaves 40 s of the timeout for start-up (CUDA, spawned data workers) and the last checkpoint:
  # with the whole of it, the first H100 run was stopped at 3,058 of 3,252 planned steps.
  timeout $(( TRAIN + 30 )) python3 -m jobs.train --out /tmp/train_gpu $TRAIN_ARGS --lr 0.003 --warmup 100 --self-cond-frac 0.4 --eval-every 0 --steps 1000000 \
    --time-budget-s "$(( TRAIN - 40 ))" --ckpt-every-s 45 --no-progress $INIT > "$OUT/train.log" 2>&1
  echo "train exit $?"
  for f in weights.safetensors state.json loss_curve.png; do
    [ -f /tmp/train_gpu/$f ] && cp /tmp/train_gpu/$f "$OUT/train_$f"
  done
  tail -5 "$OUT/train.log"
fi
echo "== summary (total $(( $(date +%s) - T0 ))s)"
grep -v '^{' "$OUT/bench_gpu.log" | tail -60
