#!/usr/bin/env bash
# The README's first command: installs the Debian dependencies, builds, and runs the main job on
# its embedded default data with 2 MPI ranks: `cellfm synth` writes a synthetic CELLxGENE-like
# corpus (both ranks writing files), `cellfm check` validates experiments/quickstart.yaml on both
# ranks, `cellfm train` trains a small Exceiver on 2 ranks (it computes the training split's
# per-gene statistics in one parallel pass first; progress lines with the held-out metrics beside
# their baselines, then a summary line), and `cellfm embed` writes a copy of one corpus file with
# the cell embeddings in obsm (the weights file alone carries the model, its genes and statistics).
# Only the cellfm target is built here; cluster/test.sh builds the test suites.
set -euo pipefail
cd "$(dirname "$0")/.."

cluster/install-deps.sh
CELLFM_BUILD_TARGETS=cellfm cluster/build.sh

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
"${mpi[@]}" build/cellfm train experiments/quickstart.yaml
corpus_files=("$corpus"/*.h5ad)
first_file=${corpus_files[0]}
"${mpi[@]}" build/cellfm embed --weights runs/quickstart/weights.safetensors \
  --input "$first_file" --output runs/quickstart/embedded.h5ad
