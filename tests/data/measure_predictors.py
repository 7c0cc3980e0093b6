#!/usr/bin/env python3
"""How much of a corpus's expression is explained by the gene alone, and how much more by the
cell type, beside how separable the types are: three numbers that compare a synthetic corpus
with real cells.

On the non-zero entries of the log-normalised matrix L = log1p(count / cell total * 1e4):
  (a) gene R^2: each entry predicted by the mean of its gene's non-zero values in the other cells
      (leave-one-out);
  (b) gene+type R^2: each entry predicted by the mean of its gene's non-zero values in the other
      cells of the same type (leave-one-out; an entry that is its (gene, type)'s only one falls
      back to the gene's leave-one-out mean, and one that is its gene's only one is left out of
      both);
  R^2 = 1 - SS_residual / SS_total, SS_total about the mean of all those entries.
  Also printed, not checked: the same two R^2 on the per-gene standardised values at those entries
      ((L - gene mean) / gene sd over all cells, zeros included: what a model with z-scored
      targets such as the Exceiver predicts). There the sparsest genes' few entries dominate, so
      the numbers depend mostly on which genes a file keeps (PBMC's file keeps 765 highly variable
      ones) and on sequencing depth; they compare files with the same genes and depth.
  knn: leave-one-out 15-nearest-neighbour accuracy of the label on the first 50 principal
      components of L (genes centred, not scaled; Euclidean distance; majority vote, ties to the
      label whose nearest member is closest).

The log-normalised matrix is found, not assumed: of X and raw/X, a matrix with negative values is
scaled (skipped), one of non-negative integers is counts (normalised here), anything else is
taken as already log-normalised, which is preferred (real files often hold it with the counts
gone, and their totals then need not be 1e4 over the kept genes).

Usage: measure_predictors.py [--label COLUMN] [--check-a LOW HIGH] [--check-gain MIN]
                             [--check-knn MIN] (PATH... | --cellfm BINARY)
  PATH: .h5ad files, or a directory (every *.h5ad in it, in name order), concatenated by cells.
  --cellfm: write the quickstart's synthetic corpus (QUICKSTART_SYNTH below) with this binary
      into a temporary directory and measure it.
Prints one JSON object; with --check-* exits 1 naming each number outside its band.
Needs numpy, scipy and anndata (Debian's python3 packages).
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import warnings

import anndata
import numpy as np
import scipy.sparse as sp

NORMALISED_TOTAL = 1e4
NEIGHBOURS = 15
COMPONENTS = 50
# cluster/quickstart.sh's corpus.
QUICKSTART_SYNTH = ["--cells", "4000", "--files", "2", "--genes", "2000", "--cell-types", "12",
                    "--matrix", "raw", "--seed", "0"]


def classify(matrix):
    data = matrix.data if sp.issparse(matrix) else np.asarray(matrix).ravel()
    data = np.asarray(data, dtype=np.float64)
    if data.size and data.min() < 0:
        return "scaled"
    if np.all(data == np.round(data)):
        return "counts"
    return "log-normalised"


def log_normalised(adata):
    """The cells x genes CSR float64 log-normalised matrix and where it came from."""
    candidates = [("X", adata.X)]
    if adata.raw is not None:
        candidates.append(("raw/X", adata.raw.X))
    kinds = [(name, matrix, classify(matrix)) for name, matrix in candidates]
    for name, matrix, kind in kinds:
        if kind == "log-normalised":
            return sp.csr_matrix(matrix, dtype=np.float64), name
    for name, matrix, kind in kinds:
        if kind == "counts":
            x = sp.csr_matrix(matrix, dtype=np.float64)
            totals = np.asarray(x.sum(axis=1)).ravel()
            x = sp.diags(NORMALISED_TOTAL / np.where(totals > 0, totals, 1.0)) @ x
            x = sp.csr_matrix(x)
            x.data = np.log1p(x.data)
            return x, "log1p(normalize_total(%s, 1e4))" % name
    raise SystemExit("no counts or log-normalised matrix in X or raw/X (found %s)" %
                     ", ".join("%s: %s" % (name, kind) for name, _, kind in kinds))


def load(paths, label):
    files = []
    for path in paths:
        if os.path.isdir(path):
            files.extend(sorted(glob.glob(os.path.join(path, "*.h5ad"))))
        else:
            files.append(path)
    if not files:
        raise SystemExit("no .h5ad files in " + " ".join(paths))
    matrices, labels, sources = [], [], set()
    for path in files:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            adata = anndata.read_h5ad(path)
        if label not in adata.obs.columns:
            raise SystemExit("%s: no obs column %r (has %s)" %
                             (path, label, ", ".join(adata.obs.columns)))
        matrix, source = log_normalised(adata)
        matrices.append(matrix)
        labels.append(adata.obs[label].astype(str).to_numpy())
        sources.add(source)
    return sp.vstack(matrices).tocsr(), np.concatenate(labels), sorted(sources), files


def r_squared(values, predicted):
    residual = ((values - predicted) ** 2).sum()
    total = ((values - values.mean()) ** 2).sum()
    return float(1.0 - residual / total)


def predictor_r2(x, labels):
    """(a) gene and (b) gene+type leave-one-out R^2 over the non-zero entries of x."""
    coo = x.tocoo()
    keep = coo.data != 0
    rows, genes, values = coo.row[keep], coo.col[keep], coo.data[keep]
    _, type_of_cell = np.unique(labels, return_inverse=True)
    types = type_of_cell.max() + 1
    gene_n = np.bincount(genes, minlength=x.shape[1]).astype(np.float64)
    gene_sum = np.bincount(genes, weights=values, minlength=x.shape[1])
    key = genes.astype(np.int64) * types + type_of_cell[rows]
    pair_n = np.bincount(key, minlength=x.shape[1] * types).astype(np.float64)
    pair_sum = np.bincount(key, weights=values, minlength=x.shape[1] * types)

    usable = gene_n[genes] >= 2
    values, genes, key = values[usable], genes[usable], key[usable]
    gene_loo = (gene_sum[genes] - values) / (gene_n[genes] - 1)
    n = pair_n[key]
    pair_loo = np.where(n >= 2, (pair_sum[key] - values) / np.maximum(n - 1, 1), gene_loo)
    return r_squared(values, gene_loo), r_squared(values, pair_loo), int(values.size)


def standardised(x):
    """Per-gene z-scores (population sd over all cells) at the non-zero entries of x, as CSR."""
    coo = x.tocoo()
    mean = np.asarray(x.mean(axis=0)).ravel()
    squares = x.copy()
    squares.data = squares.data**2
    sd = np.sqrt(np.maximum(np.asarray(squares.mean(axis=0)).ravel() - mean**2, 0.0))
    sd[sd == 0] = 1.0
    z = (coo.data - mean[coo.col]) / sd[coo.col]
    # A z-score of exactly 0 would drop out of the sparse matrix; nudge it to keep the entry.
    z[z == 0] = np.finfo(np.float64).tiny
    return sp.csr_matrix((z, (coo.row, coo.col)), shape=x.shape)


def pca_knn_accuracy(x, labels):
    dense = x.toarray()
    dense -= dense.mean(axis=0)
    components = min(COMPONENTS, min(dense.shape) - 1)
    # Right singular vectors from the genes x genes covariance (cheaper than an SVD of the cells).
    covariance = dense.T @ dense
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    top = eigenvectors[:, np.argsort(eigenvalues)[::-1][:components]]
    scores = dense @ top
    squared = (scores**2).sum(axis=1)
    distance = squared[:, None] + squared[None, :] - 2.0 * scores @ scores.T
    np.fill_diagonal(distance, np.inf)
    nearest = np.argsort(distance, axis=1, kind="stable")[:, :NEIGHBOURS]
    classes, code = np.unique(labels, return_inverse=True)
    neighbour_code = code[nearest]
    correct = 0
    for i in range(len(labels)):
        votes = np.bincount(neighbour_code[i], minlength=len(classes))
        tied = np.flatnonzero(votes == votes.max())
        # Ties go to the label whose first member in the neighbour list comes first.
        winner = min(tied, key=lambda c: np.flatnonzero(neighbour_code[i] == c)[0])
        correct += winner == code[i]
    return float(correct / len(labels))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("paths", nargs="*")
    parser.add_argument("--cellfm", metavar="BINARY")
    parser.add_argument("--label", default="cell_type")
    parser.add_argument("--check-a", nargs=2, type=float, metavar=("LOW", "HIGH"))
    parser.add_argument("--check-gain", type=float, metavar="MIN")
    parser.add_argument("--check-knn", type=float, metavar="MIN")
    args = parser.parse_args()
    if bool(args.paths) == bool(args.cellfm):
        parser.error("give either PATHs or --cellfm")

    if args.cellfm:
        with tempfile.TemporaryDirectory(prefix="measure_predictors.") as scratch:
            corpus = os.path.join(scratch, "corpus")
            subprocess.run([args.cellfm, "synth", "--out", corpus] + QUICKSTART_SYNTH,
                           check=True, stdout=subprocess.DEVNULL)
            x, labels, sources, files = load([corpus], args.label)
        files = ["cellfm synth " + " ".join(QUICKSTART_SYNTH)]
    else:
        x, labels, sources, files = load(args.paths, args.label)
    a, b, entries = predictor_r2(x, labels)
    a_z, b_z, _ = predictor_r2(standardised(x), labels)
    knn = pca_knn_accuracy(x, labels)
    result = {
        "files": files,
        "matrix": sources,
        "cells": int(x.shape[0]),
        "genes": int(x.shape[1]),
        "labels": int(len(np.unique(labels))),
        "nonzero_entries": entries,
        "gene_r2": a,
        "gene_type_r2": b,
        "type_gain": b - a,
        "standardised_gene_r2": a_z,
        "standardised_gene_type_r2": b_z,
        "pca_knn_accuracy": knn,
    }
    json.dump(result, sys.stdout, indent=1)
    print()

    failures = []
    if args.check_a and not args.check_a[0] <= a <= args.check_a[1]:
        failures.append("(a) gene R^2 %.4f outside [%g, %g]" % (a, *args.check_a))
    if args.check_gain is not None and not b - a >= args.check_gain:
        failures.append("(b) - (a) = %.4f below %g" % (b - a, args.check_gain))
    if args.check_knn is not None and not knn >= args.check_knn:
        failures.append("PCA %d-NN accuracy %.4f below %g" % (NEIGHBOURS, knn, args.check_knn))
    for failure in failures:
        print("FAIL: " + failure, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
