#!/usr/bin/python3
# Writes small .h5ad fixtures with Debian's anndata 0.8 (and h5py where anndata 0.8 cannot) into
# OUTDIR, each with <name>.json holding what anndata itself reads back, computed in float64; and
# bad-input fixtures (bad_*.h5ad) whose defects sit at the rows named in BAD_ROWS below.
#
# Usage: /usr/bin/python3 tests/data/write_fixtures.py OUTDIR   (run by h5ad_fixtures_test.cpp)
import json
import os
import shutil
import sys
import warnings

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

warnings.simplefilter("ignore")  # anndata 0.8 warns about implicit conversions we rely on

N_OBS = 120
N_VARS = 40
# Rows (0-based) where the bad fixtures carry their defect; the C++ test names the same rows.
BAD_N_OBS = 1300
BAD_N_VARS = 20
BAD_ROWS = {
    "indptr_decreases": 1234,
    "index_out_of_range": 1100,
    "negative": 7,
    "tiny_negative": 1201,
    "nan": 42,
    "inf": 43,
    "dense_negative": 3,
    "csc_column": 5,
}


# --- building blocks ---------------------------------------------------------------------------


def counts_matrix(rng, n_obs, n_vars, empty_rows=(), explicit_zero=False, min_per_row=0):
    """CSR float32 integer counts; `empty_rows` hold nothing; an optional stored zero."""
    rows, cols, vals = [], [], []
    for r in range(n_obs):
        if r in empty_rows:
            continue
        k = int(rng.integers(min_per_row, max(min_per_row, n_vars // 4) + 1))
        genes = np.sort(rng.choice(n_vars, size=k, replace=False))
        rows += [r] * k
        cols += genes.tolist()
        vals += rng.integers(1, 30, size=k).tolist()
    m = sp.csr_matrix(
        (np.array(vals, np.float32), (np.array(rows), np.array(cols))), shape=(n_obs, n_vars)
    )
    m.sort_indices()
    if explicit_zero:
        m.data[1] = 0.0  # stored but zero: anndata keeps it, so must the reader
    return m


def make_obs(rng, n):
    cell_types = ["B cell", "T cell", "NK cell", "monocyte"]
    codes = rng.integers(0, len(cell_types), size=n)
    codes[[2, 5]] = -1  # missing labels
    obs = pd.DataFrame(index=[f"cell_{i:04d}" for i in range(n)])
    obs["cell_type"] = pd.Categorical.from_codes(codes, categories=cell_types)
    obs["batch"] = pd.Categorical(rng.choice([10, 20, 30], size=n))  # integer categories
    obs["donor_offset"] = np.arange(n, dtype=np.int64) * 3 - 7
    obs["n_genes"] = rng.integers(100, 5000, size=n).astype(np.int32)
    score = rng.normal(size=n).astype(np.float32)
    score[4] = np.nan
    obs["score"] = score
    obs["is_primary_data"] = rng.random(n) < 0.7
    age = pd.array(rng.integers(20, 90, size=n), dtype="Int64")
    age[[1, 6]] = pd.NA
    obs["age"] = age
    flag = pd.array(rng.random(n) < 0.5, dtype="boolean")
    flag[[0, 9]] = pd.NA
    obs["flag"] = flag
    obs["description"] = [f"cell {i} of donor {i % 7}" for i in range(n)]  # unique: no categorical
    return obs


def make_var(n):
    ids = [f"ENSG{100000 + 37 * g:011d}.{g % 9 + 1}" for g in range(n)]  # versioned Ensembl ids
    names = [f"GENE{g}" for g in range(n)]
    names[5] = names[4]  # a repeated symbol: anndata stores feature_name as a categorical
    var = pd.DataFrame(index=ids)
    var["feature_name"] = names
    var["feature_length"] = np.arange(n, dtype=np.int64) * 100 + 500
    return var


def numpy_name(dataset):
    return "bool" if dataset.dtype == np.bool_ else str(dataset.dtype)


def layout(f, path):
    """What is on disk: format, dtypes, compression, chunking (h5py's view, not anndata's)."""
    node = f[path]
    if isinstance(node, h5py.Dataset):
        return {
            "format": "dense",
            "dtype": numpy_name(node),
            "index_dtype": "",
            "indptr_dtype": "",
            "compression": node.compression or "none",
            "chunk": node.chunks[0] if node.chunks else 0,
        }
    encoding = node.attrs["encoding-type"]
    data = node["data"]
    return {
        "format": {"csr_matrix": "csr", "csc_matrix": "csc"}[encoding],
        "dtype": numpy_name(data),
        "index_dtype": numpy_name(node["indices"]),
        "indptr_dtype": numpy_name(node["indptr"]),
        "compression": data.compression or "none",
        "chunk": data.chunks[0] if data.chunks else 0,
    }


def matrix_expectation(f, path, matrix, var_names, feature_names):
    """float64 statistics of a matrix as anndata read it."""
    info = layout(f, path)
    if sp.issparse(matrix):
        stored = int(matrix.nnz)
        csr = matrix.tocsr()
        row_stored = np.diff(csr.indptr)
        m64 = csr.astype(np.float64)
        nonzero = int(np.count_nonzero(m64.data))
    else:
        m64 = np.asarray(matrix, dtype=np.float64)
        stored = int(m64.size)
        row_stored = np.count_nonzero(m64, axis=1)  # the reader drops a dense matrix's zeros
        nonzero = int(np.count_nonzero(m64))
    weights = np.arange(1, m64.shape[1] + 1, dtype=np.float64)
    info.update(
        {
            "shape": list(m64.shape),
            "stored": stored,
            "nonzero": nonzero,
            "sum": float(m64.sum()),
            "abs_sum": float(abs(m64).sum()),
            "row_sums": np.asarray(m64.sum(axis=1)).ravel().tolist(),
            # sum over a row of (gene + 1) * value: a wrong gene index changes it
            "row_weighted": np.asarray(m64 @ weights).ravel().tolist(),
            "row_stored": [int(x) for x in row_stored],
            "var_names": [str(x) for x in var_names],
            "feature_name": [str(x) for x in feature_names],
        }
    )
    return info


def column_expectation(series):
    dtype = str(series.dtype)
    out = {"dtype": dtype}
    if dtype == "category":
        out["kind"] = "categorical"
        out["categories"] = [str(c) for c in series.cat.categories]
        out["values"] = [None if pd.isna(v) else str(v) for v in series]
    elif dtype in ("object", "string"):
        out["kind"] = "string"
        out["values"] = [None if pd.isna(v) else str(v) for v in series]
    elif dtype in ("bool", "boolean"):
        out["kind"] = "boolean"
        out["values"] = [None if pd.isna(v) else bool(v) for v in series]
    else:
        out["kind"] = "numeric"
        out["values"] = [None if pd.isna(v) else float(v) for v in series]
    return out


def expectation(path):
    """Everything the C++ test compares, from anndata's own read of the file."""
    adata = ad.read_h5ad(path)
    result = {
        "anndata": ad.__version__,
        "n_obs": int(adata.n_obs),
        "obs_names": [str(x) for x in adata.obs_names],
        "obs_columns": {name: column_expectation(adata.obs[name]) for name in adata.obs.columns},
        "obs_column_order": [str(c) for c in adata.obs.columns],
        "matrices": {},
    }
    with h5py.File(path, "r") as f:
        if adata.X is not None:
            result["matrices"]["X"] = matrix_expectation(
                f, "X", adata.X, adata.var_names, adata.var["feature_name"]
            )
        if adata.raw is not None:
            result["matrices"]["raw/X"] = matrix_expectation(
                f, "raw/X", adata.raw.X, adata.raw.var_names, adata.raw.var["feature_name"]
            )
    return result


def write_json(path, value):
    with open(path, "w") as out:
        json.dump(value, out, indent=1)


def replace_dataset(f, path, data):
    """Rewrites dataset `path` with new contents/dtype, keeping its attributes and chunking."""
    old = f[path]
    attrs = dict(old.attrs)
    chunks = old.chunks is not None
    del f[path]
    new = f.create_dataset(path, data=data, maxshape=(None,) if chunks else None)
    for key, value in attrs.items():
        new.attrs[key] = value


# --- good fixtures -----------------------------------------------------------------------------


def write_good(out):
    rng = np.random.default_rng(20240611)
    obs = make_obs(rng, N_OBS)
    var = make_var(N_VARS)
    counts = counts_matrix(rng, N_OBS, N_VARS, empty_rows=(3, N_OBS - 1), explicit_zero=True)
    names = []

    def save(name, adata, **kwargs):
        path = os.path.join(out, name + ".h5ad")
        adata.write_h5ad(path, **kwargs)
        names.append(name)
        return path

    # CSR with 64-bit indptr (anndata writes indptr in the in-memory dtype).
    csr64 = counts.copy()
    csr64.indptr = csr64.indptr.astype(np.int64)
    save("csr_int64_indptr", ad.AnnData(X=csr64, obs=obs, var=var))

    # The same counts stored by column.
    save("csc", ad.AnnData(X=counts.tocsc(), obs=obs, var=var))

    # gzip-compressed CSR large enough for several chunks per array.
    big_obs = make_obs(rng, 700)
    big_var = make_var(200)
    big = counts_matrix(rng, 700, 200, min_per_row=20)
    save("csr_gzip", ad.AnnData(X=big, obs=big_obs, var=big_var), compression="gzip")

    # CELLxGENE layout: counts in raw/X (all genes), log-normalised X over a gene subset.
    library = np.asarray(counts.sum(axis=1)).ravel()
    scale = np.divide(1e4, library, out=np.zeros_like(library), where=library > 0)
    lognorm = sp.csr_matrix(sp.diags(scale) @ counts)
    lognorm.data = np.log1p(lognorm.data)
    lognorm = lognorm.astype(np.float32)
    subset = np.arange(0, N_VARS, 3)
    adata = ad.AnnData(X=lognorm[:, subset], obs=obs, var=var.iloc[subset])
    adata.raw = ad.AnnData(X=counts, obs=obs, var=var)
    save("raw_counts", adata)

    # Integer data arrays: int32 in X, int64 in raw/X (different matrices).
    other = counts_matrix(rng, N_OBS, N_VARS)
    # (anndata 0.8 casts X to float32 unless given a dtype.)
    adata = ad.AnnData(X=other.astype(np.int32), obs=obs, var=var, dtype=np.int32)
    adata.raw = ad.AnnData(X=counts.astype(np.int64), obs=obs, var=var, dtype=np.int64)
    save("int_counts", adata)

    # Narrow indices, written by anndata then retyped with h5py: uint16 in X, int16 in raw/X.
    adata = ad.AnnData(X=other.copy(), obs=obs, var=var)
    adata.raw = ad.AnnData(X=counts, obs=obs, var=var)
    path = save("small_indices", adata)
    with h5py.File(path, "r+") as f:
        replace_dataset(f, "X/indices", f["X/indices"][:].astype(np.uint16))
        replace_dataset(f, "raw/X/indices", f["raw/X/indices"][:].astype(np.int16))

    # Dense float64 X with zeros and values float32 cannot hold exactly.
    dense = counts.toarray().astype(np.float64)
    dense[dense == 7] = 7.1
    dense[0, 1] = 0.3333333333333333
    save("dense_float64", ad.AnnData(X=dense, obs=obs, var=var, dtype=np.float64))

    expected = {name: expectation(os.path.join(out, name + ".h5ad")) for name in names}

    # anndata 0.8 cannot write pandas' "string" dtype (no writer for StringArray; it appeared in
    # anndata 0.11), so the nullable-string-array encoding is written by hand with h5py as 0.11
    # does: group attrs encoding-type/-version and na-value, children `values` (UTF-8 strings,
    # "" where missing) and `mask` (bool). anndata 0.8 cannot read it back either, so the
    # expectation for that column is the pandas array written.
    assay = pd.array(
        [None if i % 11 == 4 else f"10x 3' v{i % 3 + 1}" for i in range(N_OBS)], dtype="string"
    )
    path = os.path.join(out, "nullable_string.h5ad")
    shutil.copy(os.path.join(out, "csr_int64_indptr.h5ad"), path)
    with h5py.File(path, "r+") as f:
        group = f["obs"].create_group("assay")
        group.attrs["encoding-type"] = "nullable-string-array"
        group.attrs["encoding-version"] = "0.1.0"
        group.attrs["na-value"] = "NA"
        mask = np.asarray(assay.isna(), dtype=bool)
        values = np.array(["" if m else str(v) for v, m in zip(assay, mask)], dtype=object)
        group.create_dataset("values", data=values, dtype=h5py.string_dtype("utf-8"))
        group.create_dataset("mask", data=mask)
        order = [str(c) for c in f["obs"].attrs["column-order"]] + ["assay"]
        f["obs"].attrs["column-order"] = np.array(order, dtype=object)
    nullable = json.loads(json.dumps(expected["csr_int64_indptr"]))
    nullable["obs_columns"]["assay"] = column_expectation(pd.Series(assay))
    nullable["obs_column_order"].append("assay")
    expected["nullable_string"] = nullable

    for name, value in expected.items():
        write_json(os.path.join(out, name + ".json"), value)


# --- bad fixtures ------------------------------------------------------------------------------


def write_bad(out):
    rng = np.random.default_rng(7)
    base = os.path.join(out, "bad_base.h5ad")
    counts = counts_matrix(rng, BAD_N_OBS, BAD_N_VARS, min_per_row=1)  # every row non-empty
    ad.AnnData(X=counts, obs=make_obs(rng, BAD_N_OBS), var=make_var(BAD_N_VARS)).write_h5ad(base)
    indptr = counts.indptr

    def variant(name, source=base):
        path = os.path.join(out, "bad_" + name + ".h5ad")
        shutil.copy(source, path)
        return h5py.File(path, "r+")

    with variant("indptr_decreases") as f:
        row = BAD_ROWS["indptr_decreases"]
        f["X/indptr"][row] = indptr[row - 1] - 1
    with variant("index_out_of_range") as f:
        f["X/indices"][indptr[BAD_ROWS["index_out_of_range"]]] = BAD_N_VARS + 5
    for name, value in (
        ("negative", -3.0),
        ("tiny_negative", -2.5e-08),
        ("nan", np.nan),
        ("inf", np.inf),
    ):
        with variant(name) as f:
            f["X/data"][indptr[BAD_ROWS[name]] + 0] = value
    with variant("indptr_not_zero") as f:
        f["X/indptr"][0] = 1
    with variant("indptr_beyond_data") as f:
        f["X/indptr"][BAD_N_OBS] = counts.nnz + 10
    with variant("indices_short") as f:
        replace_dataset(f, "X/indices", f["X/indices"][:-1])
    with variant("indptr_short") as f:
        replace_dataset(f, "X/indptr", f["X/indptr"][:-1])
    with variant("rows_differ") as f:
        f["X"].attrs["shape"] = np.array([BAD_N_OBS - 1, BAD_N_VARS])
        replace_dataset(f, "X/indptr", f["X/indptr"][:-1])
    with variant("no_shape") as f:
        del f["X"].attrs["shape"]
    with variant("coo") as f:
        f["X"].attrs["encoding-type"] = "coo_matrix"
    with variant("no_data") as f:
        del f["X/data"]
    with variant("dense_3d") as f:
        del f["X"]
        f.create_dataset("X", data=np.zeros((BAD_N_OBS, 2, 2), np.float32))
    with variant("obs_no_index") as f:
        del f["obs/_index"]
    with variant("obs_awkward") as f:
        group = f["obs"].create_group("shapes")
        group.attrs["encoding-type"] = "awkward-array"
        group.attrs["encoding-version"] = "0.1.0"
        order = [str(c) for c in f["obs"].attrs["column-order"]] + ["shapes"]
        f["obs"].attrs["column-order"] = np.array(order, dtype=object)

    # Value errors in the other two read paths: dense X and CSC converted in memory.
    dense = os.path.join(out, "bad_dense_base.h5ad")
    small = counts[:60].toarray()
    ad.AnnData(X=small, obs=make_obs(rng, 60), var=make_var(BAD_N_VARS)).write_h5ad(dense)
    with variant("dense_negative", dense) as f:
        row = BAD_ROWS["dense_negative"]
        f["X"][row, int(np.flatnonzero(small[row])[0])] = -1.0
    csc = os.path.join(out, "bad_csc_base.h5ad")
    by_column = counts[:60].tocsc()
    ad.AnnData(X=by_column, obs=make_obs(rng, 60), var=make_var(BAD_N_VARS)).write_h5ad(csc)
    with variant("csc_row_out_of_range", csc) as f:
        f["X/indices"][by_column.indptr[BAD_ROWS["csc_column"]]] = 60 + 1

    # No X and no raw: what anndata writes for AnnData(shape=...).
    ad.AnnData(shape=(5, 4)).write_h5ad(os.path.join(out, "bad_no_matrix.h5ad"))

    # HDF5 without obs/var; not HDF5 at all; cut in the middle.
    with h5py.File(os.path.join(out, "bad_not_h5ad.h5ad"), "w") as f:
        f.create_group("X")
    with open(os.path.join(out, "bad_not_hdf5.h5ad"), "w") as text:
        text.write("cell,gene,count\n0,0,1\n")
    for name, size in (("truncated", os.path.getsize(base) // 2), ("truncated_header", 24)):
        truncated = os.path.join(out, "bad_" + name + ".h5ad")
        shutil.copy(base, truncated)
        with open(truncated, "r+b") as f:
            f.truncate(size)

    # A gzip chunk of X/data overwritten in its middle: zlib cannot inflate it. Records the rows
    # whose entries lie in that chunk.
    corrupt = os.path.join(out, "bad_corrupt_chunk.h5ad")
    shutil.copy(os.path.join(out, "csr_gzip.h5ad"), corrupt)
    with h5py.File(corrupt, "r") as f:
        data = f["X/data"]
        chunk = data.id.get_chunk_info(2)
        first, length = chunk.chunk_offset[0], data.chunks[0]
        gzip_indptr = f["X/indptr"][:]
    with open(corrupt, "r+b") as f:
        f.seek(chunk.byte_offset + chunk.size // 2)
        f.write(b"\xff" * 16)
    touching = np.flatnonzero((gzip_indptr[1:] > first) & (gzip_indptr[:-1] < first + length))

    write_json(
        os.path.join(out, "bad.json"),
        {
            "n_obs": BAD_N_OBS,
            "n_vars": BAD_N_VARS,
            "nnz": int(counts.nnz),
            "rows": BAD_ROWS,
            "corrupt_rows": [int(touching[0]), int(touching[-1])],
        },
    )


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: write_fixtures.py OUTDIR")
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    write_good(out)
    write_bad(out)


if __name__ == "__main__":
    main()
