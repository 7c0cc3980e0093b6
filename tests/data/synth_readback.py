#!/usr/bin/env python3
"""Reads a `cellfm synth` corpus back with anndata (the independent reference) and prints what
it finds as one JSON object on stdout; tests compare it with what they asked the writer for.

Usage: synth_readback.py CORPUS_DIR
"""
import json
import os
import sys

import anndata
import h5py
import numpy as np
import scipy.sparse as sp
import yaml


def categorical_summary(series):
    return {
        "dtype": str(series.dtype),
        "categories": [str(c) for c in series.cat.categories],
        "codes_dtype": str(series.cat.codes.dtype),
        "missing": int((series.cat.codes < 0).sum()),
    }


def nearest_centroid_accuracy(matrices, labels):
    """Held-out accuracy of a nearest-centroid classifier on log1p(CP10k): are types learnable?"""
    x = sp.vstack(matrices).tocsr().astype(np.float64)
    totals = np.asarray(x.sum(axis=1)).ravel()
    x = sp.diags(1e4 / totals) @ x
    x.data = np.log1p(x.data)
    y = np.concatenate(labels)
    rng = np.random.default_rng(0)
    train = rng.random(x.shape[0]) < 0.7
    classes = np.unique(y[train])
    centroids = np.stack([np.asarray(x[train & (y == c)].mean(axis=0)).ravel() for c in classes])
    test = ~train
    distance = -2 * np.asarray(x[test] @ centroids.T) + (centroids**2).sum(axis=1)[None, :]
    predicted = classes[distance.argmin(axis=1)]
    return float((predicted == y[test]).mean())


def main(directory):
    with open(os.path.join(directory, "manifest.yaml")) as handle:
        manifest = yaml.safe_load(handle)
    ontology_ids = set()
    ontology_path = manifest["ontology"]
    if not os.path.isabs(ontology_path):
        ontology_path = os.path.join(directory, ontology_path)
    with open(ontology_path) as handle:
        for line in handle:
            if line.startswith("id: "):
                ontology_ids.add(line[4:].strip())

    files = []
    nnz_per_cell = []
    matrices = []
    labels = []
    for entry in manifest["files"]:
        path = os.path.join(directory, entry["path"])
        adata = anndata.read_h5ad(path)
        counts = adata.raw.X if adata.raw is not None else adata.X
        per_cell = np.diff(counts.indptr)
        nnz_per_cell.append(per_cell)
        matrices.append(counts)
        labels.append(adata.obs["cell_type_ontology_term_id"].astype(str).to_numpy())
        spatial = adata.obsm["spatial"] if "spatial" in adata.obsm else None
        info = {
            "path": entry["path"],
            "manifest_cells": entry["cells"],
            "manifest_nnz": entry["nnz"],
            "n_obs": int(adata.n_obs),
            "n_vars": int(adata.n_vars),
            "x_format": type(adata.X).__name__,
            "x_dtype": str(adata.X.dtype),
            "has_raw": adata.raw is not None,
            "counts_format": type(counts).__name__,
            "counts_dtype": str(counts.dtype),
            "counts_nnz": int(counts.nnz),
            "counts_are_integers": bool(np.all(counts.data == np.round(counts.data))),
            "counts_positive": bool(np.all(counts.data > 0)),
            "indices_sorted": bool(counts.has_sorted_indices),
            "indptr_dtype": str(counts.indptr.dtype),
            "indices_dtype": str(counts.indices.dtype),
            "min_nnz_per_cell": int(per_cell.min()),
            "obs_columns": list(adata.obs.columns),
            "obs_names_first": str(adata.obs_names[0]),
            "obs_names_unique": bool(adata.obs_names.is_unique),
            "var_names_first": str(adata.var_names[0]),
            "var_names_last": str(adata.var_names[-1]),
            "var_columns": list(adata.var.columns),
            "feature_name_first": str(adata.var["feature_name"].iloc[0]),
            "is_primary_dtype": str(adata.obs["is_primary_data"].dtype),
            "is_primary_all": bool(adata.obs["is_primary_data"].all()),
            "cell_type": categorical_summary(adata.obs["cell_type"]),
            "cell_type_ontology_term_id": categorical_summary(
                adata.obs["cell_type_ontology_term_id"]),
            "cell_type_ids_in_ontology": bool(
                set(adata.obs["cell_type_ontology_term_id"].astype(str)) <= ontology_ids),
            "samples": int(adata.obs["sample_id"].nunique()),
            "donor_dtype": str(adata.obs["donor_id"].dtype),
            "tissue_dtype": str(adata.obs["tissue"].dtype),
            "assays": sorted(str(a) for a in adata.obs["assay_ontology_term_id"].unique()),
            "spatial_shape": list(spatial.shape) if spatial is not None else None,
            "spatial_dtype": str(spatial.dtype) if spatial is not None else None,
            "spatial_located_cells": int(np.isfinite(spatial[:, 0]).sum())
            if spatial is not None else 0,
            "spatial_in_unit_square": bool(np.all(
                (spatial[np.isfinite(spatial[:, 0])] >= 0) &
                (spatial[np.isfinite(spatial[:, 0])] <= 1))) if spatial is not None else True,
            "visium_cells": int((adata.obs["assay_ontology_term_id"] == "EFO:0010961").sum()),
        }
        with h5py.File(path, "r") as h5:
            counts_group = h5["raw/X"] if "raw" in h5 else h5["X"]
            info["compression"] = counts_group["data"].compression
            info["data_chunks"] = list(counts_group["data"].chunks)
            info["root_encoding"] = [h5.attrs["encoding-type"], h5.attrs["encoding-version"]]
        if adata.raw is not None:
            x = adata.X
            expected = counts.multiply(1.0 / counts.sum(axis=1)).tocsr() * 1e4
            expected.data = np.log1p(expected.data)
            info["x_is_log1p_cp10k"] = bool(
                np.array_equal(x.indices, counts.indices) and
                np.allclose(x.data, expected.data, rtol=1e-5, atol=1e-6))
            info["raw_var_matches"] = bool((adata.raw.var_names == adata.var_names).all())
        files.append(info)

    all_nnz = np.concatenate(nnz_per_cell)
    result = {
        "files": files,
        "manifest_genes": manifest["genes"],
        "manifest_cells": manifest["cells"],
        "cells": int(all_nnz.size),
        "median_nnz_per_cell": float(np.median(all_nnz)),
        "nearest_centroid_accuracy": nearest_centroid_accuracy(matrices, labels),
        "cell_types_seen": int(len(np.unique(np.concatenate(labels)))),
        "anndata_version": anndata.__version__,
    }
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
