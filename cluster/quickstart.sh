#!/usr/bin/env bash
# The README's first command: installs the Debian dependencies, builds, and runs the main job on
# its embedded default data with 2 MPI ranks. Until the first model lands, the main job is the
# most complete real pipeline that exists: `cellfm synth` writes a synthetic CELLxGENE-like corpus
# (both ranks writing files), then `cellfm check` validates experiments/quickstart.yaml on both
# ranks and opens every file with parallel HDF5, `cellfm prep stats` computes the per-gene
# statistics the models use (one parallel pass, reduced across ranks), and `cellfm inspect`
# summarises the corpus.
set -euo pipefail
cd "$(dirname "$0")/.."

cluster/install-deps.sh
cluster/build.sh

mpi=(mpirun -n 2 --oversubscribe)
[[ $(id -u) -eq 0 ]] && mpi+=(--allow-run-as-root)
corpus=runs/quickstart-corpus
if [[ ! -f $corpus/manifest.yaml ]]; then
  echo "quickstart: writing a synthetic corpus to $corpus"
  "${mpi[@]}" build/cellfm synth --out "$corpus" --cells 4000 --files 2 --genes 2000 \
    --cell-types 12 --matrix raw --seed 0
fi
echo "quickstart: ${mpi[*]} build/cellfm check experiments/quickstart.yaml"
"${mpi[@]}" build/cellfm check experiments/quickstart.yaml
"${mpi[@]}" build/cellfm prep stats experiments/quickstart.yaml
"${mpi[@]}" build/cellfm inspect experiments/quickstart.yaml
