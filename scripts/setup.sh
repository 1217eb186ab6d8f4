#!/usr/bin/env bash
# Installs everything dape needs to build and test on a Debian 12 (bookworm) machine.
# Idempotent: packages already present are left as they are. Run as root (or with sudo).
set -euo pipefail

packages=(
  g++ cmake ninja-build pkg-config clang-format
  libopenblas-openmp-dev libhdf5-dev libspdlog-dev libgtest-dev
  libyaml-cpp-dev libcli11-dev nlohmann-json3-dev libicu-dev
  libzstd-dev libssl-dev libxml2-dev zlib1g-dev libgmp-dev
  libopenmpi-dev openmpi-bin
  slurmctld slurmd slurm-client munge
  python3 python3-torch python3-h5py python3-numpy python3-matplotlib
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
  echo "setup: all ${#packages[@]} packages already installed"
else
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "setup: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
    SUDO=sudo
  fi
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
"$(dirname "$0")/../tests/data/js/setup.sh"  # the JS GPT-2 encoders for the tokenizer tests; never fails
