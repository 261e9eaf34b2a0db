#!/usr/bin/env bash
# Mutation testing (mutmut 3) of the statistics, target, loss, sampling and evaluation modules
# against a focused, fast test subset. Not run in CI: it takes a long time on a small CPU.
#
#   bench/mutation.sh [stats|target|loss|generate|evaluate ...]   (default: all five)
#
# Works in a scratch copy of the working tree per module (mutmut writes mutants/ and setup.cfg
# there) and prints, per module, killed / total and the surviving mutants' names; `mutmut show
# NAME` in that module's scratch folder shows a mutant's diff. Set MUTMUT_JOBS (default 2)
# for the number of mutmut's test processes.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
py="$root/.venv/bin/python"
modules=("$@")
[ ${#modules[@]} -eq 0 ] && modules=(stats target loss generate evaluate)
declare -A tests=(
  [stats]="tests/test_stats.py"
  [target]="tests/test_target.py"
  [loss]="tests/test_loss.py"
  [generate]="tests/test_generate.py"
  [evaluate]="tests/test_evaluate.py tests/test_side_effects.py"
)
work=$(mktemp -d /tmp/likex-mutation.XXXXXX)
echo "scratch copies: $work/MODULE"
for m in "${modules[@]}"; do
  [ -n "${tests[$m]:-}" ] || { echo "unknown module $m" >&2; exit 2; }
  mkdir "$work/$m"
  src="likex/$m.py"
  [ -d "$root/likex/$m" ] && src="likex/$m/*.py"  # a package: every module of it
  (cd "$root" && git ls-files -co --exclude-standard | grep -v '^\.venv' | tar -cf - -T -) \
    | tar -xf - -C "$work/$m"
  cd "$work/$m"
  # setup.cfg lists are one item a line
  cat > setup.cfg <<CFG
[mutmut]
source_paths=likex
only_mutate=$src
pytest_add_cli_args_test_selection=
$(printf '    %s\n' ${tests[$m]})
pytest_add_cli_args=-p no:cacheprovider
CFG
  OMP_NUM_THREADS=1 "$py" -m mutmut run --max-children "${MUTMUT_JOBS:-2}" > "mutmut_$m.log" 2>&1 || true
  "$py" -m mutmut results --all true > "results_$m.txt" 2>&1 || true
  total=$(grep -c ': ' "results_$m.txt" || true)
  killed=$(grep -c ': killed' "results_$m.txt" || true)
  timeout=$(grep -c ': timeout' "results_$m.txt" || true)
  unchecked=$(grep -c ': not checked' "results_$m.txt" || true)
  echo "== $src: $killed killed (+ $timeout timeouts) of $total mutants (tests: ${tests[$m]})"
  if [ "$unchecked" -gt 0 ]; then
    echo "   $unchecked mutants not checked (the run stopped); its log: $work/$m/mutmut_$m.log"
  fi
  grep -v -e ': killed' -e ': not checked' "results_$m.txt" || true
done
