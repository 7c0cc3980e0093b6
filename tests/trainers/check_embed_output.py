"""Reads `cellfm embed` outputs back with anndata and compares them with their input.

usage: check_embed_output.py INPUT OUTPUT [OUTPUT2] --key X_exceiver --dim N [--label-column C]
Prints a JSON summary; exits 1 with a message on any mismatch. With OUTPUT2 (the same input
embedded on another number of ranks), the embeddings must agree within 1e-5.
"""
import argparse
import json
import sys

import anndata
import numpy as np
import scipy.sparse as sp


def fail(message):
    print(message, file=sys.stderr)
    sys.exit(1)


def dense(matrix):
    return matrix.toarray() if sp.issparse(matrix) else np.asarray(matrix)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("input")
    parser.add_argument("outputs", nargs="+")
    parser.add_argument("--key", required=True)
    parser.add_argument("--dim", type=int, required=True)
    parser.add_argument("--label-column", default="")
    args = parser.parse_args()

    source = anndata.read_h5ad(args.input)
    embeddings = []
    summary = {}
    for path in args.outputs:
        out = anndata.read_h5ad(path)
        if out.shape != source.shape:
            fail(f"{path}: shape {out.shape} != input {source.shape}")
        if list(out.obs_names) != list(source.obs_names) or list(out.var_names) != list(source.var_names):
            fail(f"{path}: obs/var names differ from the input")
        if not np.array_equal(dense(out.X), dense(source.X)):
            fail(f"{path}: X differs from the input")
        if source.raw is not None and not np.array_equal(dense(out.raw.X), dense(source.raw.X)):
            fail(f"{path}: raw/X differs from the input")
        for column in source.obs.columns:
            if not out.obs[column].astype(str).equals(source.obs[column].astype(str)):
                fail(f"{path}: obs column {column} differs from the input")
        if args.key not in out.obsm:
            fail(f"{path}: obsm has no {args.key} (has {list(out.obsm.keys())})")
        e = np.asarray(out.obsm[args.key])
        if e.dtype != np.float32 or e.shape != (source.n_obs, args.dim):
            fail(f"{path}: obsm[{args.key}] is {e.dtype} {e.shape}, want float32 ({source.n_obs}, {args.dim})")
        if not np.all(np.isfinite(e)):
            fail(f"{path}: obsm[{args.key}] has non-finite values")
        if np.allclose(e, e[0:1], atol=1e-6):
            fail(f"{path}: every cell has the same embedding")
        if args.label_column:
            column = out.obs[args.label_column]
            if str(column.dtype) != "category":
                fail(f"{path}: obs[{args.label_column}] is {column.dtype}, not categorical")
            summary["predicted_categories"] = [str(c) for c in column.cat.categories]
            summary["predicted_counts"] = {str(k): int(v) for k, v in column.value_counts().items()}
        embeddings.append(e)
    for other in embeddings[1:]:
        difference = float(np.max(np.abs(other - embeddings[0])))
        summary["max_difference"] = difference
        if difference > 1e-5:
            fail(f"embeddings of the same input differ by {difference}")
    summary["cells"] = int(source.n_obs)
    summary["dim"] = int(embeddings[0].shape[1])
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
