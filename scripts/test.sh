#!/usr/bin/env bash
# The whole check: installs the Debian packages (scripts/setup.sh), builds the one build directory build/
# (with the CUDA backend, -DDAPE_CUDA=ON, when nvcc is found: no GPU is needed to compile and link), then runs
# every test with ctest. Without a usable GPU the CUDA tests (label cuda) skip and say why; without nvcc the
# build is CPU-only. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

jobs="$(nproc)"
./scripts/setup.sh

nvcc=""
if [[ -x /usr/local/cuda/bin/nvcc ]]; then
  nvcc=/usr/local/cuda/bin/nvcc
elif command -v nvcc >/dev/null 2>&1; then
  nvcc="$(command -v nvcc)"
fi
if [[ -n "$nvcc" ]]; then
  echo "== build (build/, CPU + CUDA backend, $nvcc)"
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DDAPE_CUDA=ON -DCMAKE_CUDA_COMPILER="$nvcc"
else
  echo "== build (build/, CPU only: no nvcc in /usr/local/cuda/bin or on PATH)"
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DDAPE_CUDA=OFF
fi
cmake --build build -- -j"$jobs"
if [[ -n "$nvcc" ]]; then
  ./build/dape-devices
fi

echo "== tests (ctest in build/)"
ctest --test-dir build --output-on-failure -j2
