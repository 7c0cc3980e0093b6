# The peers of `cellfm bench data`: h5py and anndata (backed mode) reading the same files.
"""Prints one JSON object with the cells/s of two Python readers over the same .h5ad files:

- h5py: per file the indptr in memory, then shuffled B-cell blocks, each read as one slice of
  data/indices (the counts matrix: raw/X when present, else X) and turned into a CSR block
  (indptr rebased); what a plain h5py data loader does.
- anndata: each file opened with anndata.read_h5ad(backed="r"), the same shuffled blocks read as
  row slices of the same matrix (adata.raw.X when raw/X is present, else adata.X).

Both read --batches blocks (cycling over the blocks when there are fewer) after a warm-up of a few
blocks; run with Debian's Python (/usr/bin/python3 with python3-h5py and python3-anndata).
"""
import argparse
import json
import random
import sys
import time


def counts_path(f):
    return "raw/X" if "raw" in f and "X" in f["raw"] else "X"


def block_order(rows_per_file, block_cells, count, seed):
    blocks = []
    for i, rows in enumerate(rows_per_file):
        blocks += [(i, b, min(b + block_cells, rows)) for b in range(0, rows, block_cells)]
    rng = random.Random(seed)
    rng.shuffle(blocks)
    order = []
    while len(order) < count and blocks:
        order += blocks[: count - len(order)]
    return order


def bench_h5py(paths, order, warmup):
    import h5py
    import numpy as np

    files = [h5py.File(p, "r") for p in paths]
    matrices = [f[counts_path(f)] for f in files]
    indptrs = [m["indptr"][:] for m in matrices]

    def read(block):
        i, b, e = block
        s, t = int(indptrs[i][b]), int(indptrs[i][e])
        data = matrices[i]["data"][s:t]
        indices = matrices[i]["indices"][s:t]
        indptr = (indptrs[i][b : e + 1] - s).astype(np.int64)
        return e - b, data.nbytes + indices.nbytes + indptr.nbytes

    cells, nbytes, seconds = time_blocks(read, order, warmup)
    matrix = counts_path(files[0])
    for f in files:
        f.close()
    return {"cells_per_s": cells / seconds, "mb_per_s": nbytes / seconds / 1e6, "cells": cells,
            "seconds": seconds, "matrix": matrix}


def time_blocks(read, order, warmup):
    """Reads the first `warmup` blocks untimed, then times all of them: (cells, bytes, seconds)."""
    for block in order[:warmup]:
        read(block)
    cells = nbytes = 0
    start = time.perf_counter()
    for block in order:
        c, n = read(block)
        cells += c
        nbytes += n
    return cells, nbytes, time.perf_counter() - start


def bench_anndata(paths, order, warmup):
    import anndata

    adatas = [anndata.read_h5ad(p, backed="r") for p in paths]
    matrices = []
    for a in adatas:
        use_raw = a.raw is not None
        matrices.append(a.raw.X if use_raw else a.X)

    def read(block):
        i, b, e = block
        x = matrices[i][b:e]
        return e - b, x.data.nbytes + x.indices.nbytes + x.indptr.nbytes

    cells, nbytes, seconds = time_blocks(read, order, warmup)
    for a in adatas:
        a.file.close()
    return {"cells_per_s": cells / seconds, "mb_per_s": nbytes / seconds / 1e6, "cells": cells,
            "seconds": seconds, "version": anndata.__version__}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--block-cells", type=int, default=256)
    parser.add_argument("--batches", type=int, default=200, help="blocks to read")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import h5py

    rows = []
    for p in args.files:
        with h5py.File(p, "r") as f:
            rows.append(int(f[counts_path(f)]["indptr"].shape[0]) - 1)
    order = block_order(rows, args.block_cells, args.batches, args.seed)
    warmup = min(len(order), 8)
    result = {"block_cells": args.block_cells, "blocks": len(order)}
    for name, bench in (("h5py", bench_h5py), ("anndata", bench_anndata)):
        try:
            result[name] = bench(args.files, order, warmup)
        except Exception as error:  # report the failure, keep the other peer's figure
            result[name] = {"error": f"{type(error).__name__}: {error}"}
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
