#!/usr/bin/python3
"""Writes a three-file corpus for tests/data/corpus_test.cpp with Debian's anndata.

Cell g (global number across the files, in file order) stores the value g + 1 in every gene it
expresses, so a reader's output can be traced back to its source cell. expected.json lists every
cell with its file, row, obs values and {normalised gene id: summed value}.
Usage: write_corpus_fixture.py OUTDIR
"""
import json
import sys

import anndata
import numpy as np
import pandas as pd
import scipy.sparse as sp

out = sys.argv[1]
# (file, var index, counts in raw/X?, obsm spatial?)
files = [
    ("a.h5ad", ["ENSG01.1", "ENSG02.3", "ENSG03", "ENSG04"], False, False, 10),
    ("b.h5ad", ["ENSG02", "ENSG03.7", "ENSG05", "ENSG02.9"], True, True, 8),
    ("c.h5ad", ["GENE3", "GENE5", "NOPE"], False, False, 6),
]
symbols = {"GENE3": "ENSG03", "GENE5": "ENSG05"}
with open(f"{out}/vocabulary.txt", "w") as f:
    f.write("# the model's genes\nENSG05\nENSG01.2\nENSG02\nENSG03\nENSG04\n")
with open(f"{out}/genes.tsv", "w") as f:
    f.write("symbol\tgene_id\n")
    for symbol, gene in symbols.items():
        f.write(f"{symbol}\t{gene}\n")


def normalise(name):
    base = name.split(".")[0] if name.startswith("ENS") else name
    return symbols.get(base, base)


cells = []
g = 0
for index, (name, genes, in_raw, spatial, n) in enumerate(files):
    rows = []
    obs = {"is_primary_data": [], "assay": [], "cell_type": [], "sample": [], "x": [], "y": []}
    for row in range(n):
        expressed = [j for j in range(len(genes)) if (g + j) % 3 != 0]
        if g == 7:
            expressed = []  # an empty cell
        rows.append([float(g + 1) if j in expressed else 0.0 for j in range(len(genes))])
        values = {}
        for j in expressed:
            gene = normalise(genes[j])
            values[gene] = values.get(gene, 0.0) + float(g + 1)
        cell = {"g": g, "file": name, "row": row, "is_primary_data": g % 5 != 0,
                "assay": "A" if g % 3 == 0 else "B", "cell_type": f"t{g % 4}",
                "sample": f"s{index}", "x": float(g), "y": float(-g), "genes": values}
        cells.append(cell)
        for key in obs:
            obs[key].append(cell[key])
        g += 1
    frame = pd.DataFrame(obs, index=[f"{name}-{r}" for r in range(n)])
    for key in ("assay", "cell_type", "sample"):
        frame[key] = frame[key].astype("category")
    matrix = sp.csr_matrix(np.array(rows, dtype=np.float32))
    var = pd.DataFrame(index=genes)
    if in_raw:
        adata = anndata.AnnData(X=sp.csr_matrix(np.log1p(matrix.toarray())), obs=frame, var=var)
        adata.raw = anndata.AnnData(X=matrix, obs=frame, var=var)
    else:
        adata = anndata.AnnData(X=matrix, obs=frame, var=var)
    if spatial:
        adata.obsm["spatial"] = np.array([[c["x"], c["y"]] for c in cells[-n:]])
    adata.write_h5ad(f"{out}/{name}")

with open(f"{out}/expected.json", "w") as f:
    json.dump({"cells": cells, "files": [f[0] for f in files]}, f)
