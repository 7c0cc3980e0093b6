#!/usr/bin/env bash
# Measures the resident memory of the corpus index: `cellfm check` (which builds the training and
# validation corpora of a spec) on a 50k-cell and a 2M-cell synthetic corpus; the two peaks should
# differ by < 10% since the index holds one record per file plus one bit per cell of files with
# dropped cells. Usage: cluster/measure_corpus_memory.sh [WORKDIR]  (needs ~1 GB of disk)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/cellfm-corpus-memory}
mkdir -p "$work"
mpi=(mpirun -n 2 --oversubscribe)
[[ $(id -u) -eq 0 ]] && mpi+=(--allow-run-as-root)
declare -A files=([50k]=1 [2m]=40)
declare -A cells=([50k]=50000 [2m]=2000000)
for size in 50k 2m; do
  corpus=$work/corpus-$size
  [[ -f $corpus/manifest.yaml ]] || "${mpi[@]}" build/cellfm synth --out "$corpus" \
    --cells "${cells[$size]}" --files "${files[$size]}" --genes 500 --nnz-median 50 --seed 1
  printf 'run:\n  dir: %s/run-%s\ndata:\n  files: [%s/*.h5ad]\n  filters:\n    is_primary_data: true\n  label_column: cell_type\n  validation:\n    fraction: 0.05\n' \
    "$work" "$size" "$corpus" > "$work/$size.yaml"
  /usr/bin/time -f "$size cells=${cells[$size]} files=${files[$size]} max_rss_kb=%M wall_s=%e" \
    build/cellfm --log-level warn check "$work/$size.yaml"
done
