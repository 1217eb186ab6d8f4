#!/usr/bin/env bash
# slurm/train.sbatch against the real one-node cluster of slurm/ci/up.sh (a ctest fixture):
#   1. an uninterrupted 2-rank CPU training job;
#   2. the same job preempted mid-run: USR1 to its ranks (what --signal sends before the time limit), which
#      checkpoint and stop; the script requeues the job; the requeued job resumes from the checkpoint. Its
#      metrics (every logged loss, grad norm, the validation loss) must equal the uninterrupted run's bit
#      for bit, and SLURM must count one restart;
#   3. a job whose dape fails (a bad config) must fail `sbatch --wait`.
# usage: requeue_test.sh BUILD_DIR SOURCE_DIR   (SLURM_CONF set by ctest)
set -euo pipefail
[[ -e ${SLURM_CONF:-} ]] || { echo "no test cluster (SLURM_CONF=${SLURM_CONF:-unset}); slurm/ci/up.sh skipped"; exit 77; }
build=$1
src=$2
export DAPE=$build/dape
work=$build/tests/slurm-requeue
rm -rf "$work"
mkdir -p "$work"
cd "$work"
config=$src/configs/tiny.yaml
train=(--set train.steps=300 --set train.seq_len=16 --set train.log_every=10)
submit=(--ntasks-per-node=2 --cpus-per-task=1)

field() { scontrol show job "$1" -o | grep -o "$2=[^ ]*" | cut -d= -f2; }
wait_for_state() {  # JOB STATE [seconds]
  for _ in $(seq $((${3:-60} * 10))); do
    [[ $(field "$1" JobState) == "$2" ]] && return 0
    sleep 0.1
  done
  echo "job $1 did not reach $2 (it is $(field "$1" JobState)); its output:" >&2
  cat ./*.out >&2 || true
  return 1
}
without_timing() { sed -E 's/,"(tokens_per_s|elapsed_s)":[^,}]*//g' "$1"; }

echo "== 1. uninterrupted"
sbatch --wait "${submit[@]}" --job-name=full "$src/slurm/train.sbatch" full "$config" "${train[@]}" > /dev/null
[[ -e full/model.h5 ]] || { echo "the uninterrupted run wrote no model.h5" >&2; exit 1; }

echo "== 2. preempted, requeued, resumed"
job=$(sbatch --parsable "${submit[@]}" --job-name=preempted "$src/slurm/train.sbatch" preempted "$config" "${train[@]}")
wait_for_state "$job" RUNNING
for _ in $(seq 600); do  # until it has logged step 20, so the signal lands mid-run
  [[ -e preempted/metrics.jsonl && $(wc -l < preempted/metrics.jsonl) -ge 3 ]] && break
  sleep 0.05
done
scancel --signal=USR1 "$job"
wait_for_state "$job" PENDING 120
echo "job $job requeued ($(field "$job" Reason)); releasing it now instead of after SLURM's delay"
scontrol update JobId="$job" StartTime=now
wait_for_state "$job" COMPLETED 120
[[ $(field "$job" Restarts) == 1 ]] || { echo "expected one restart, SLURM counts $(field "$job" Restarts)" >&2; exit 1; }
[[ $(field "$job" ExitCode) == 0:0 ]] || { echo "exit code $(field "$job" ExitCode)" >&2; exit 1; }
echo "-- transcript (preempted-$job.out):"
grep -E "^dape-train:|received|resum|starting from|checkpoint step|wrote preempted/model.h5" "preempted-$job.out"
if ! diff <(without_timing full/metrics.jsonl) <(without_timing preempted/metrics.jsonl); then
  echo "the resumed run's metrics differ from the uninterrupted run's" >&2
  exit 1
fi
stopped=$(grep -o "stopped after step [0-9]*" "preempted-$job.out" | head -1)
[[ -n $stopped ]] || { echo "the job was not stopped by the signal (it finished before?)" >&2; exit 1; }
grep -q "resuming from preempted/checkpoints/step_0*${stopped##* } " "preempted-$job.out" ||
  { echo "the requeued job did not resume from the checkpoint of ${stopped##* }" >&2; exit 1; }
echo "resumed run equals the uninterrupted one: $(grep -c loss full/metrics.jsonl) metrics records, $stopped"

echo "== 3. a failing job fails sbatch --wait"
if sbatch --wait "${submit[@]}" --job-name=failing "$src/slurm/train.sbatch" failing "$config" \
  --set model.n_heads=5 > /dev/null 2>&1; then
  echo "sbatch --wait succeeded for a job whose dape failed" >&2
  exit 1
fi
grep -q "model.n_heads = 5" failing-*.out || { echo "the failing job's output does not name the bad key" >&2; exit 1; }
echo "failing job: sbatch --wait failed, the output names the key"
cd "$build" && rm -rf "$work"
echo "slurm requeue test passed"
