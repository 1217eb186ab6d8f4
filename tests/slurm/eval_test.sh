#!/usr/bin/env bash
# `dape launch slurm --submit` and slurm/eval.sbatch against the real one-node cluster of slurm/ci/up.sh:
#   1. two short training runs (Kerple, DAPE-Kerple; 2 CPU ranks each) written and submitted by dape launch;
#   2. the evaluation job array over both checkpoints x two lengths, then the merge job that waits for it;
#      the merged table must equal one `dape eval` of both checkpoints at both lengths, number for number;
#   3. a merge whose array failed (a missing checkpoint) is cancelled and writes nothing.
# usage: eval_test.sh BUILD_DIR SOURCE_DIR   (SLURM_CONF set by ctest)
set -euo pipefail
[[ -e ${SLURM_CONF:-} ]] || { echo "no test cluster (SLURM_CONF=${SLURM_CONF:-unset}); slurm/ci/up.sh skipped"; exit 77; }
build=$1
src=$2
dape=$build/dape
export DAPE=$dape
work=$build/tests/slurm-eval
rm -rf "$work"
mkdir -p "$work"
cd "$work"
config=$src/configs/tiny.yaml
data=$src/data/corpus/cfi-en.val.txt

field() { scontrol show job "$1" -o | grep -o "$2=[^ ]*" | cut -d= -f2; }
wait_done() {  # JOB: until it leaves the queue's active states; then its state must be COMPLETED
  for _ in $(seq 1200); do
    case $(field "$1" JobState) in COMPLETED) return 0 ;; FAILED | CANCELLED | TIMEOUT | NODE_FAIL) break ;; esac
    sleep 0.1
  done
  echo "job $1 ended $(field "$1" JobState)" >&2
  return 1
}

echo "== 1. dape launch slurm --submit"
jobs=()
for pe in kerple dape-kerple; do
  out=$("$dape" launch slurm "$config" --run-dir "$work/$pe" --tasks-per-node 2 --cpus-per-task 1 --time 10 \
    --set model.pe=$pe --set train.steps=40 --set train.seq_len=16 --submit)
  echo "$out"
  jobs+=("$(grep -o "Submitted batch job [0-9]*" <<< "$out" | grep -o "[0-9]*$")")
  grep -q "^#SBATCH --ntasks-per-node=2" "$work/$pe/job.sbatch"
done
for j in "${jobs[@]}"; do wait_done "$j"; done
for pe in kerple dape-kerple; do [[ -e $work/$pe/model.h5 ]] || { echo "$pe: no model.h5" >&2; exit 1; }; done

echo "== 2. evaluation array and merge"
array=$(sbatch --parsable --array=0-3 --cpus-per-task=1 "$src/slurm/eval.sbatch" task out "$data" \
  "$work/kerple,$work/dape-kerple" 32,64 --batches 4 --last 16 --device cpu)
sbatch --wait --cpus-per-task=1 --dependency=afterok:"$array" --kill-on-invalid-dep=yes --output=merge.out \
  "$src/slurm/eval.sbatch" merge out > /dev/null
[[ -e out/eval.json ]] || { echo "the merge wrote no eval.json" >&2; exit 1; }
cat merge.out
OMP_NUM_THREADS=1 "$dape" eval --checkpoint "$work/kerple" --checkpoint "$work/dape-kerple" --data "$data" --lengths 32,64 \
  --batches 4 --last 16 --device cpu --json direct.json > direct.txt
# Equal tables and numbers (one thread each, as the tasks); the JSON differs only in the seconds.
table() { sed -n '/^| model/,/^$/p' "$1"; }
diff <(table direct.txt) <(table merge.out)
strip_seconds() { grep -v '"seconds"' "$1"; }
diff <(strip_seconds direct.json) <(strip_seconds out/eval.json)
echo "merged array results equal one dape eval of everything"

echo "== 3. a failed array cancels its merge"
bad=$(sbatch --parsable --array=0-1 --cpus-per-task=1 "$src/slurm/eval.sbatch" task bad "$data" \
  "$work/kerple,$work/missing" 32 --batches 4 --last 16 --device cpu)
# A merge cancelled before it starts still makes `sbatch --wait` return 0, so ask SLURM for its state.
merge=$(sbatch --parsable --cpus-per-task=1 --dependency=afterok:"$bad" --kill-on-invalid-dep=yes \
  "$src/slurm/eval.sbatch" merge bad)
for _ in $(seq 600); do
  state=$(field "$merge" JobState)
  [[ $state == PENDING || $state == RUNNING ]] || break
  sleep 0.1
done
[[ $state == CANCELLED && ! -e bad/eval.json ]] || { echo "the merge after a failed task is $state" >&2; exit 1; }
echo "the merge after a failed task was cancelled ($(field "$merge" Dependency))"
cd "$build" && rm -rf "$work"
echo "slurm eval test passed"
