#!/usr/bin/env bash
# One lent-GPU session, everything the device checks need in a single prepared run (under 8 minutes):
#   1. the card and software versions; 2. the gpu-marked kernel tests at real shapes and bf16;
#   3. bench/gpu.py (calibration, kernel microbenchmarks, full-size sweep), then again at 12 layers with the
#      transformers reference for the ratio.
# (The small model no longer trains here: it ships from a CPU run, model/assets/dgbatch-small/README.md.)
# Optional carried input: .whl/*.whl (e.g. the transformers version the tests pin). Results land in $OUT.
# Usage: OUT=/tmp/out bash bench/gpu_session.sh [TOTAL_SECONDS]
# DGBATCH_DRY=1 rehearses the script on a CPU box (tiny bench) to check its plumbing.
set -u
if [ "${DGBATCH_DRY:-0}" = 1 ]; then BENCH_ARGS="--tiny"; else BENCH_ARGS=""; fi
RESERVE=60  # the 30 s grace of each bench timeout below, so the worst case still ends by TOTAL
TOTAL=${1:-450}
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
  # 30 tests, most compiling their own kernel specialisations (session 2: 6 tests, 36 s); the bench's budget
  # is whatever time is left, so a slower compile shortens the sweep, not the total. -v names each result as
  # it lands, so a run the timeout cuts still shows which passed.
  timeout 150 python3 -m pytest -v -m gpu tests/kernels -p no:cacheprovider -rs 2>&1 | grep -E "PASSED|FAILED|ERROR|SKIPPED|passed|failed|Error" | tail -45
} > "$OUT/env_and_tests.txt" 2>&1
cat "$OUT/env_and_tests.txt"

BENCH=$(( $(left) - RESERVE ))
echo "== bench/gpu.py (budget ${BENCH}s)"
# The full-size transformers reference does not fit an 80 GB card (its constructor peaks above 77.5 GB), so
# the full-size run skips it and a second run compares both implementations on the first 12 layers; that run
# is --ratio-only (calibration, our rows at the reference's settings, the reference), since the kernel
# microbenchmarks and tile sweeps do not depend on the layer count.
REF=$(( BENCH / 4 ))
timeout $(( BENCH - REF + 30 )) python3 bench/gpu.py $BENCH_ARGS --skip-hf --budget-s "$(( BENCH - REF ))" \
  --out "$OUT/bench_gpu.json" > "$OUT/bench_gpu.log" 2>&1
echo "bench exit $?"
timeout $(( REF + 30 )) python3 bench/gpu.py $BENCH_ARGS --layers 12 --ratio-only --budget-s "$REF" \
  --out "$OUT/bench_gpu_l12.json" >> "$OUT/bench_gpu.log" 2>&1
echo "bench (12 layers, with the reference) exit $?"

echo "== summary (total $(( $(date +%s) - T0 ))s)"
grep -v '^{' "$OUT/bench_gpu.log" | tail -60
