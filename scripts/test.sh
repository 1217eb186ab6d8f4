#!/usr/bin/env bash
# The whole check: installs the Debian packages (scripts/setup.sh), builds build/ (CPU); if nvcc is present,
# configures and builds build-cuda with the CUDA backend (no GPU needed) to prove that it compiles and links;
# then runs every test with ctest. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

jobs="$(nproc)"
./scripts/setup.sh

echo "== CPU build (build/)"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build -- -j"$jobs"

nvcc=""
if [[ -x /usr/local/cuda/bin/nvcc ]]; then
  nvcc=/usr/local/cuda/bin/nvcc
elif command -v nvcc >/dev/null 2>&1; then
  nvcc="$(command -v nvcc)"
fi
if [[ -n "$nvcc" ]]; then
  echo "== CUDA build (build-cuda/, $nvcc)"
  cmake -S . -B build-cuda -G Ninja -DCMAKE_BUILD_TYPE=Release -DDAPE_CUDA=ON -DDAPE_BUILD_TESTS=OFF \
    -DCMAKE_CUDA_COMPILER="$nvcc"
  # Only the CUDA backend and the executable that links it: the rest is the CPU build above.
  cmake --build build-cuda --target dape-devices -- -j"$jobs"
  ./build-cuda/dape-devices
else
  echo "== CUDA build skipped: no nvcc in /usr/local/cuda/bin or on PATH"
fi

echo "== tests (ctest in build/)"
ctest --test-dir build --output-on-failure -j2
