#!/usr/bin/python3
"""Writes the fixtures of tests/trainers/prep_test.cpp with Debian's anndata, and the float64
reference statistics (numpy, no scanpy) of the stats corpus in expected.json.

Stats corpus: a.h5ad (CSR), b.h5ad (CSC, other gene order), c.h5ad (held out as a validation
file); cells of assay C are filtered out; some cells are empty (dropped by the corpus).
Convert inputs: csc.h5ad (X and raw/X CSC, unsorted row indices, obsm/layers/uns), dense.h5ad
(dense float64 X), big_csc.h5ad (enough entries for several passes with --buffer-mb 1), csr.h5ad.
Usage: write_prep_fixture.py OUTDIR
"""
import json
import sys

import anndata
import numpy as np
import pandas as pd
import scipy.sparse as sp

out = sys.argv[1]
rng = np.random.default_rng(7)


def counts(n, genes, density):
    rates = np.exp(rng.normal(0.5, 1.5, size=genes))
    m = rng.poisson(rates, size=(n, genes)).astype(np.float64)
    m *= rng.random((n, genes)) < density
    return m


def obs_frame(name, n):
    assay = rng.choice(["A", "B", "C"], size=n, p=[0.5, 0.3, 0.2])
    frame = pd.DataFrame({"assay": pd.Categorical(assay)}, index=[f"{name}-{i}" for i in range(n)])
    return frame


# ---- the stats corpus --------------------------------------------------------------------------
genes_a = [f"ENSG{g:02d}" for g in range(30)]
genes_b = [f"ENSG{g:02d}" for g in rng.permutation(np.arange(10, 35))]
genes_c = [f"ENSG{g:02d}" for g in range(0, 35, 2)]
corpus = []
for name, genes, n, layout in (("a", genes_a, 400, "csr"), ("b", genes_b, 250, "csc"),
                               ("c", genes_c, 100, "csr")):
    m = counts(n, len(genes), 0.35)
    if name == "a":
        m[:, genes.index("ENSG05")] = 0  # a vocabulary gene never expressed
        m[7] = 0
        m[100] = 0  # empty cells
        m[3, :] = 0
        m[3, 0] = 1  # one non-zero gene
    if name == "b":
        m[11] = 0
    obs = obs_frame(name, n)
    matrix = sp.csr_matrix(m.astype(np.float32)) if layout == "csr" else sp.csc_matrix(
        m.astype(np.float32))
    anndata.AnnData(X=matrix, obs=obs, var=pd.DataFrame(index=genes)).write_h5ad(
        f"{out}/{name}.h5ad")
    corpus.append((name, genes, m, obs))

vocabulary = sorted(set(genes_a) | set(genes_b) | set(genes_c))
rows = []
for name, genes, m, obs in corpus:
    if name == "c":
        continue
    dense = np.zeros((m.shape[0], len(vocabulary)))
    for j, gene in enumerate(genes):
        dense[:, vocabulary.index(gene)] = m[:, j]
    keep = (obs["assay"].to_numpy() != "C") & ((m != 0).sum(axis=1) > 0)
    rows.append(dense[keep])
x = np.concatenate(rows)
total = x.sum(axis=1, keepdims=True)
v = x / total * 1e4
logged = np.log1p(v)
medians = []
for g in range(len(vocabulary)):
    nz = v[:, g][v[:, g] > 0]
    medians.append(float(np.median(nz)) if nz.size else None)
nnz = (x > 0).sum(axis=1)
expected = {
    "cells": int(x.shape[0]),
    "genes": vocabulary,
    "mean": logged.mean(axis=0).tolist(),
    "std": logged.std(axis=0).tolist(),
    "nonzero_cells": (x > 0).sum(axis=0).tolist(),
    "nonzero_median": medians,
    "nnz_per_cell": {"min": float(nnz.min()), "p10": float(np.quantile(nnz, 0.1)),
                     "median": float(np.median(nnz)), "mean": float(nnz.mean()),
                     "p90": float(np.quantile(nnz, 0.9)), "max": float(nnz.max())},
}
with open(f"{out}/expected.json", "w") as f:
    json.dump(expected, f)
with open(f"{out}/stats.yaml", "w") as f:
    f.write(f"run:\n  dir: {out}/run\n  seed: 3\n"
            f"data:\n  files: ['{out}/a.h5ad', '{out}/b.h5ad', '{out}/c.h5ad']\n"
            f"  filters:\n    assay: [A, B]\n"
            f"  validation:\n    files: ['{out}/c.h5ad']\n")

# ---- convert inputs ----------------------------------------------------------------------------
n, g = 60, 12
raw_counts = counts(n, g, 0.4).astype(np.int32)
csc = sp.csc_matrix(raw_counts)
# Unsorted row indices within columns: reverse each column's entries.
for c in range(g):
    lo, hi = csc.indptr[c], csc.indptr[c + 1]
    csc.indices[lo:hi] = csc.indices[lo:hi][::-1].copy()
    csc.data[lo:hi] = csc.data[lo:hi][::-1].copy()
csc.has_sorted_indices = False
var = pd.DataFrame({"symbol": [f"S{i}" for i in range(g)]}, index=[f"G{i}" for i in range(g)])
adata = anndata.AnnData(X=sp.csc_matrix(np.log1p(raw_counts).astype(np.float32)),
                        obs=obs_frame("csc", n), var=var)
adata.raw = anndata.AnnData(X=csc, obs=adata.obs, var=var, dtype=csc.dtype)
adata.obsm["spatial"] = rng.random((n, 2))
adata.layers["counts"] = sp.csr_matrix(raw_counts)
adata.uns["note"] = "kept"
adata.uns["nested"] = {"k": np.arange(3)}
adata.write_h5ad(f"{out}/csc.h5ad")

dense = counts(40, 9, 0.3)
anndata.AnnData(X=dense, obs=obs_frame("dense", 40), dtype=dense.dtype,
                var=pd.DataFrame(index=[f"D{i}" for i in range(9)])).write_h5ad(
                    f"{out}/dense.h5ad")

big = sp.random(3000, 500, density=0.2, format="csc", dtype=np.float32, random_state=5)
big.data = np.ceil(big.data * 20)
anndata.AnnData(X=big, obs=pd.DataFrame(index=[f"c{i}" for i in range(3000)]),
                var=pd.DataFrame(index=[f"g{i}" for i in range(500)])).write_h5ad(
                    f"{out}/big_csc.h5ad", compression="gzip")

anndata.AnnData(X=sp.csr_matrix(dense), obs=obs_frame("csr", 40), dtype=dense.dtype,
                var=pd.DataFrame(index=[f"D{i}" for i in range(9)])).write_h5ad(
                    f"{out}/csr.h5ad")
with open(f"{out}/not_h5ad.h5ad", "w") as f:
    f.write("not an HDF5 file\n")
