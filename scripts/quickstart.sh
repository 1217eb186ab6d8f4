#!/usr/bin/env bash
# The paper's length-extrapolation experiment in miniature, from a fresh machine: installs the Debian packages
# (scripts/setup.sh), builds dape into build/ (CPU, Release), trains two tiny models on the bundled English
# text at sequence length 32 (configs/tiny.yaml with model.pe = kerple and dape-kerple), then evaluates both at
# 1x to 16x the training length (32 .. 512) and prints the perplexity table (DAPE-SPEC §5.1).
#
# Outputs in runs/quickstart-<timestamp>/: kerple/ and dape-kerple/ (run directories: config.yaml,
# metrics.jsonl, model.h5, checkpoints/; train.log), eval.json and eval.png (perplexity against length).
# Extra arguments go to both `dape train` runs, e.g. ./scripts/quickstart.sh --set train.steps=500
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build --target dape -- -j"$(nproc)"

out="runs/quickstart-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$out"
steps=2000
pes=(kerple dape-kerple)
# OpenBLAS's own threads would compete with OpenMP's (on a machine with many cores but few free ones that costs
# 10x), and the tiny model's matrices are too small to gain from them.
export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}"

train() {  # train PE THREADS EXTRA...: one run, its log in $out/PE/train.log
  local pe=$1 threads=$2
  shift 2
  mkdir -p "$out/$pe"
  OMP_NUM_THREADS=$threads ./build/dape train configs/tiny.yaml --run-dir "$out/$pe" --set model.pe="$pe" \
    --set train.steps=$steps --set train.log_every=250 "$@" >"$out/$pe/train.log" 2>&1
}

# The tiny model gains little from a second thread, so with two or more cores both models train side by
# side on one core each.
start=$(date +%s)
if (($(nproc) >= 2)); then
  echo "quickstart: training ${pes[*]} side by side ($steps steps each, one core each); logs in $out/*/train.log"
  pids=()
  for pe in "${pes[@]}"; do
    train "$pe" 1 "$@" &
    pids+=($!)
  done
  running() {
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && return 0; done
    return 1
  }
  while running; do
    sleep 15
    for pe in "${pes[@]}"; do
      line=$(grep -o 'step [0-9]*/[0-9]* | loss [0-9.]*' "$out/$pe/train.log" | tail -n1 || true)
      echo "  $pe: ${line:-starting}"
    done
  done
  status=0
  for pid in "${pids[@]}"; do wait "$pid" || status=1; done
else
  echo "quickstart: training ${pes[*]} one after the other ($steps steps each); logs in $out/*/train.log"
  status=0
  for pe in "${pes[@]}"; do train "$pe" 1 "$@" || status=1; done
fi
if ((status != 0)); then
  for pe in "${pes[@]}"; do
    echo "--- $out/$pe/train.log (end)" >&2
    tail -n 5 "$out/$pe/train.log" >&2
  done
  exit 1
fi
for pe in "${pes[@]}"; do
  echo "  $pe: $(grep -o 'val_loss .*' "$out/$pe/train.log" | tail -n1)"
done
echo "quickstart: trained in $(($(date +%s) - start)) s"
echo
echo "quickstart: loss curve of dape-kerple (build/dape plot RUN_DIR prints any run's)"
./build/dape plot "$out/dape-kerple"
echo

# Every window of the validation text at each length; the last 64 positions of a window are scored (the
# paper scores the last 256 at a training length of 128: the same ratio, DAPE-SPEC §5.1).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(nproc)}"
./build/dape eval --checkpoint "$out/kerple" --checkpoint "$out/dape-kerple" --data data/corpus/cfi-en.val.txt \
  --lengths 32,64,128,256,512 --batches 0 --last 64 --json "$out/eval.json" --plot "$out/eval.png"
echo
echo "quickstart: outputs in $out (kerple/, dape-kerple/, eval.json, eval.png); $(($(date +%s) - start)) s in all"
echo "  the loss curves: build/dape plot $out/kerple; Figure 1 of the paper: build/dape visualize --checkpoint" \
  "$out/dape-kerple --data data/corpus/cfi-en.val.txt --length 512 --layer 1 --out $out/fig1.png"
