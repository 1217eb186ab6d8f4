#!/usr/bin/env bash
# Fresh machine to a trained tiny model: installs the Debian packages (scripts/setup.sh), builds dape into
# build/ (CPU, Release) and trains configs/tiny.yaml on the CPU into runs/quickstart-<timestamp>. dape prints
# the loss curve at the end; the run directory holds config.yaml, metrics.jsonl and model.h5.
# Extra arguments go to `dape train`, e.g. ./scripts/quickstart.sh --set train.steps=100
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build --target dape -- -j"$(nproc)"

run_dir="runs/quickstart-$(date +%Y%m%d-%H%M%S)"
# One OpenMP thread per core. OpenBLAS's own threads would compete with them (on a machine with many cores
# but few free ones that costs 10x), and the tiny model's matrices are too small to gain from them.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(nproc)}"
export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}"
./build/dape train configs/tiny.yaml --run-dir "$run_dir" "$@"
echo
echo "quickstart: outputs in $run_dir (config.yaml, metrics.jsonl, model.h5); plot again with: build/dape plot $run_dir"
