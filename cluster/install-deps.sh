#!/usr/bin/env bash
# Installs the Debian bookworm packages cellfm builds, tests and runs with.
# Idempotent: calls apt-get only when a package is missing. Works as root or through sudo.
set -euo pipefail

packages=(
  build-essential cmake ninja-build ccache pkg-config git shellcheck
  libtorch-dev
  # OpenBLAS (OpenMP build) as the system BLAS: LibTorch's matrix products otherwise run on the
  # reference BLAS (Fortran loops), ~2x slower end to end for scCello's quickstart model here.
  libopenblas0-openmp
  openmpi-bin libopenmpi-dev
  libhdf5-openmpi-dev hdf5-tools
  libyaml-cpp-dev
  libboost-program-options-dev
  libgtest-dev libgmock-dev nlohmann-json3-dev
  libdeflate-dev libssl-dev
  python3 python3-numpy python3-h5py python3-anndata python3-yaml
)

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-deps: all ${#packages[@]} Debian packages present"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
if [[ $(id -u) -eq 0 ]]; then
  sudo=()
elif command -v sudo >/dev/null; then
  sudo=(sudo)
else
  echo "install-deps: missing packages (${missing[*]}) and not root and no sudo; ask an administrator to install them" >&2
  exit 2
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
