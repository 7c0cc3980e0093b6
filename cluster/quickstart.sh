#!/usr/bin/env bash
# The README's first command: installs the Debian dependencies, builds, and runs the main job on
# its embedded default data with 2 MPI ranks. Today the most complete real pipeline is
# `cellfm check`: on both ranks it resolves experiments/quickstart.yaml, checks the rank grid,
# opens every data file of tests/data/h5ad with parallel HDF5, and checks the run directory.
set -euo pipefail
cd "$(dirname "$0")/.."

cluster/install-deps.sh
cluster/build.sh

mpi_flags=(-n 2 --oversubscribe)
[[ $(id -u) -eq 0 ]] && mpi_flags+=(--allow-run-as-root)
echo "quickstart: mpirun ${mpi_flags[*]} build/cellfm check experiments/quickstart.yaml"
mpirun "${mpi_flags[@]}" build/cellfm check experiments/quickstart.yaml
