#!/usr/bin/env bash
# Trains and evaluates CHE runs for every (task, pe, seed), JOBS at a time on one core each, then writes the
# tasks x PEs table (docs/che.md).
#
#   scripts/che_sweep.sh BUDGET OUT_DIR [PE...]        (default PEs: kerple dape-kerple)
#
# Environment: TASKS (default: all 15), SEEDS (default: 1 2 3), JOBS (default: the number of cores),
# DAPE (default: build/dape). Each run goes to OUT_DIR/TASK/PE/seedS with its log beside it (seedS.log).
# A run whose che_eval.json exists is skipped, so an interrupted sweep continues where it stopped; a
# half-trained run directory is resumed from its last checkpoint. OUT_DIR/table.md and OUT_DIR/times.tsv
# (seconds per run) are written at the end.
set -euo pipefail

if [[ $# -lt 2 ]]; then
  sed -n '2,11p' "$0" >&2
  exit 2
fi
budget=$1
out=$2
shift 2
pes=("$@")
[[ ${#pes[@]} -gt 0 ]] || pes=(kerple dape-kerple)
dape=${DAPE:-build/dape}
[[ -x $dape ]] || { echo "che_sweep: $dape is not an executable; build it or set DAPE" >&2; exit 2; }
# Longest sequences first, so that the last jobs to start are short ones.
all_tasks="duplicate_string stack_manipulation binary_addition reverse_string odds_first bucket_sort
  binary_multiplication compute_sqrt even_pairs modular_arithmetic parity_check cycle_navigation
  modular_arithmetic_brackets solve_equation missing_duplicate_string"
tasks=${TASKS:-$all_tasks}
seeds=${SEEDS:-1 2 3}
jobs=${JOBS:-$(nproc)}
mkdir -p "$out"

# One run: train (resuming a checkpointed run directory), evaluate, record the wall time.
run_one() {
  local task=$1 pe=$2 seed=$3
  local dir=$out/$task/$pe/seed$seed
  [[ -f $dir/che_eval.json ]] && return 0
  mkdir -p "$out/$task/$pe"
  local start=$SECONDS
  if OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 "$dape" che train --task "$task" --pe "$pe" --budget "$budget" \
       --seed "$seed" --set train.ckpt_every=500 --run-dir "$dir" > "$dir.log" 2>&1 &&
     OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 "$dape" che eval --run-dir "$dir" >> "$dir.log" 2>&1; then
    printf '%s\t%s\t%s\t%s\n' "$task" "$pe" "$seed" $((SECONDS - start)) >> "$out/times.tsv"
    grep -h "beyond training" "$dir.log" | tail -n 1
  else
    echo "che_sweep: $task $pe seed $seed failed; see $dir.log" >&2
    return 1
  fi
}
export -f run_one
export out budget dape

for task in $tasks; do
  for pe in "${pes[@]}"; do
    for seed in $seeds; do echo "$task $pe $seed"; done
  done
done | xargs -P "$jobs" -L 1 bash -c 'run_one "$@"' _ || status=$?
"$dape" che table "$out" > "$out/table.md"
cat "$out/table.md"
exit "${status:-0}"
