#!/usr/bin/python3
"""Small h5ad files with corrupt values and damaged structure, written with anndata and patched
with h5py (tests/data/bad_cells_test.cpp, tests/trainers/bad_cells_train_test.cpp).

usage: write_bad_cells.py OUTDIR [CELLS]

good.h5ad: CELLS cells (default 40) x 12 genes G00..G11, CSR float32; cell i stores the value
i + 1 in 1 + i % 4 genes, so a cell's values name it. Copies of it, each with one defect:

  value defects (a bad cell; data.on_bad_cell: skip leaves it out):
    negative.h5ad  row 5 holds -3         nan.h5ad       row 9 holds NaN
    inf.h5ad       row 13 holds inf       fraction.h5ad  row 17 holds 2.5 (bad for raw counts)
    gene_range.h5ad  row 21 stores gene 40 (of 12)
    gene_twice.h5ad  row 25 stores one gene twice
    many_bad.h5ad  all six defects above, in their rows
  structural damage (an error even with skip):
    indptr_decreases.h5ad  X/indptr decreases at row 11
    indptr_overrun.h5ad    X/indptr ends beyond X/data
    var_short.h5ad         var has 11 rows, X 12 columns
    shape_wide.h5ad        X's shape attribute says 13 columns, var has 12 rows
    truncated.h5ad         the file cut to half its size

bad_cells.json records the rows and the expected cell count of each file.
"""

import json
import os
import shutil
import sys

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

GENES = 12
ROWS = {"negative": 5, "nan": 9, "inf": 13, "fraction": 17, "gene_range": 21, "gene_twice": 25,
        "indptr_decreases": 11}
VALUES = {"negative": -3.0, "nan": np.nan, "inf": np.inf, "fraction": 2.5}


def good_matrix(cells):
    rows, cols, vals = [], [], []
    for i in range(cells):
        genes = sorted({(i + 3 * j) % GENES for j in range(1 + i % 4)})
        for g in genes:
            rows.append(i)
            cols.append(g)
            vals.append(float(i + 1))
    return sp.csr_matrix((np.array(vals, np.float32), (rows, cols)), shape=(cells, GENES))


def main():
    out = sys.argv[1]
    cells = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    os.makedirs(out, exist_ok=True)
    matrix = good_matrix(cells)
    obs = pd.DataFrame({"cell_type": pd.Categorical(["t%d" % (i % 3) for i in range(cells)])},
                       index=["c%d" % i for i in range(cells)])
    var = pd.DataFrame(index=["G%02d" % g for g in range(GENES)])
    good = os.path.join(out, "good.h5ad")
    ad.AnnData(X=matrix, obs=obs, var=var).write_h5ad(good)
    indptr = matrix.indptr

    def variant(name):
        path = os.path.join(out, name + ".h5ad")
        shutil.copy(good, path)
        return h5py.File(path, "r+")

    def value_defect(f, name):
        row = ROWS[name]
        if name in VALUES:
            f["X/data"][indptr[row]] = VALUES[name]
        elif name == "gene_range":
            f["X/indices"][indptr[row]] = GENES + 28
        elif name == "gene_twice":  # the row's two first genes: the second set to the first
            assert indptr[row + 1] - indptr[row] >= 2
            first = f["X/indices"][indptr[row]]
            f["X/indices"][indptr[row] + 1] = first

    defects = ["negative", "nan", "inf", "fraction", "gene_range", "gene_twice"]
    for name in defects:
        with variant(name) as f:
            value_defect(f, name)
    with variant("many_bad") as f:
        for name in defects:
            value_defect(f, name)
    with variant("indptr_decreases") as f:
        row = ROWS["indptr_decreases"]
        f["X/indptr"][row] = indptr[row - 1] - 1
    with variant("indptr_overrun") as f:
        f["X/indptr"][cells] = matrix.nnz + 10
    with variant("var_short") as f:
        index = f["var"].attrs["_index"]
        names = f["var/" + index][:-1]
        del f["var/" + index]
        f["var"].create_dataset(index, data=names)
    with variant("shape_wide") as f:
        f["X"].attrs["shape"] = np.array([cells, GENES + 1])
    with variant("obs_codes_short") as f:  # a categorical column one entry short
        codes = f["obs/cell_type/codes"][:-1]
        del f["obs/cell_type/codes"]
        f["obs/cell_type"].create_dataset("codes", data=codes)
    with variant("obs_code_out_of_range") as f:  # a categorical code past its categories
        codes = f["obs/cell_type/codes"][:]
        codes[7] = len(f["obs/cell_type/categories"])
        f["obs/cell_type/codes"][:] = codes
    truncated = os.path.join(out, "truncated.h5ad")
    shutil.copy(good, truncated)
    with open(truncated, "r+b") as f:
        f.truncate(os.path.getsize(good) // 2)

    with open(os.path.join(out, "bad_cells.json"), "w") as f:
        json.dump({"cells": cells, "genes": GENES,
                   "cell_types": len(obs["cell_type"].cat.categories), "nnz": int(matrix.nnz),
                   "rows": ROWS,
                   "many_bad_rows": sorted(ROWS[d] for d in defects)}, f, indent=1)


if __name__ == "__main__":
    main()
