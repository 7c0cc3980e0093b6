#!/usr/bin/python3
"""Writes the corpus of tests/trainers/orchestration_test.cpp with Debian's anndata.

Two files, counts (float32 CSR) in X. obs: sample_id (the group column), cell_type (4 labels,
each with its own marker genes), is_primary_data. Training groups s0..s6 have 3, 5, 9, ..., 129
cells (2^(i+1) + 1), so the number of cells a step trains on names the groups it took; group
"held" (20 cells) is the held-out split.
The cells are shuffled before they are cut into the two files, so every group is stored in many
runs of consecutive cells, most of them in both files. Every cell has 30..50 non-zero genes (the
median about 40, so Exceiver's n_mask = int(0.15 x median) = 5 or 6 and no cell has fewer than
2 n_mask: every cell of a batch is trained on).
Prints {"groups": {name: cells}, "held": cells, "cells": total, "min_nnz": .., "files": [..]}.
Usage: write_group_corpus.py OUTDIR
"""
import json
import sys

import anndata
import numpy as np
import pandas as pd
import scipy.sparse as sp

out = sys.argv[1]
rng = np.random.default_rng(12)
genes = [f"G{g:04d}" for g in range(120)]
sizes = {f"s{i}": 2 ** (i + 1) + 1 for i in range(7)}
groups = [name for name, n in sizes.items() for _ in range(n)] + ["held"] * 20
order = rng.permutation(len(groups))
groups = [groups[i] for i in order]
cut = len(groups) // 2
names = ["a.h5ad", "b.h5ad"]
min_nnz = 1 << 30
for index, (name, part) in enumerate(zip(names, (groups[:cut], groups[cut:]))):
    rows, cols, values = [], [], []
    types = rng.integers(0, 4, len(part))
    for row in range(len(part)):
        # 12 of the cell's genes from its type's 25 marker genes (high counts), the rest anywhere
        # else (low counts): the type is plain to a classifier.
        nnz = int(rng.integers(30, 51))
        min_nnz = min(min_nnz, nnz)
        markers = rng.choice(np.arange(25 * types[row], 25 * types[row] + 25), 12, replace=False)
        others = np.setdiff1d(np.arange(len(genes)), markers)
        chosen = np.concatenate([markers, rng.choice(others, size=nnz - 12, replace=False)])
        counts = np.concatenate([rng.integers(10, 31, 12), rng.integers(1, 6, nnz - 12)])
        order = np.argsort(chosen)
        rows += [row] * nnz
        cols += chosen[order].tolist()
        values += counts[order].astype(np.float32).tolist()
    matrix = sp.csr_matrix((np.array(values, dtype=np.float32), (rows, cols)),
                           shape=(len(part), len(genes)))
    obs = pd.DataFrame(
        {
            "sample_id": pd.Categorical(part),
            "cell_type": pd.Categorical([f"type{int(t)}" for t in types]),
            "is_primary_data": np.ones(len(part), dtype=bool),
        },
        index=[f"{name[0]}{r}" for r in range(len(part))],
    )
    anndata.AnnData(X=matrix, obs=obs, var=pd.DataFrame(index=genes)).write_h5ad(f"{out}/{name}")

print(json.dumps({"groups": sizes, "held": 20, "cells": len(groups), "min_nnz": min_nnz,
                  "files": [f"{out}/{n}" for n in names]}))
