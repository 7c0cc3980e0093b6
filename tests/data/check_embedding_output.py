#!/usr/bin/env python3
"""Checks an EmbeddingWriter output against its input with anndata (the independent reader):
obsm[key] holds exactly the values the test wrote, obs[label] (when requested) is a Categorical
over the given names with the written codes, and everything else reads back as in the input.
Prints one JSON object on stdout, or exits 1 with the first difference on stderr.

The test writes closed-form values, recomputed here:
  embedding[row, col] = row * 1000 + col            (float32, exact below 2**24)
  label code of row   = row % (len(names) + 1) - 1  (-1: no prediction -> NaN)

Usage: check_embedding_output.py '{"input": ..., "output": ..., "obsm_key": ..., "dim": ...,
                                   "label_column": "" or ..., "label_names": [...]}'
"""
import json
import sys
import warnings
from collections.abc import Mapping

import anndata
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp


class Mismatch(Exception):
    pass


def require(condition, message):
    if not condition:
        raise Mismatch(message)


def same(a, b, where):
    """Deep equality of two values anndata read (dicts, arrays, sparse, frames, scalars)."""
    if isinstance(a, Mapping) or isinstance(b, Mapping):
        require(isinstance(a, Mapping) and isinstance(b, Mapping), f"{where}: mapping vs not")
        require(sorted(a.keys()) == sorted(b.keys()),
                f"{where}: keys {sorted(a.keys())} != {sorted(b.keys())}")
        for key in a.keys():
            same(a[key], b[key], f"{where}/{key}")
        return
    if sp.issparse(a) or sp.issparse(b):
        require(sp.issparse(a) and sp.issparse(b), f"{where}: sparse vs dense")
        require(type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}")
        require(a.dtype == b.dtype and a.shape == b.shape, f"{where}: dtype or shape differs")
        same(a.toarray(), b.toarray(), where)
        return
    if isinstance(a, pd.DataFrame) or isinstance(b, pd.DataFrame):
        try:
            pd.testing.assert_frame_equal(a, b)
        except AssertionError as error:
            raise Mismatch(f"{where}: {error}")
        return
    pandas_arrays = (pd.api.extensions.ExtensionArray, pd.Series, pd.Index)
    if isinstance(a, pandas_arrays) or isinstance(b, pandas_arrays):
        require(type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}")
        same_series(pd.Series(a), pd.Series(b), where)
        return
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        require(type(a) is type(b) and len(a) == len(b), f"{where}: {a!r} != {b!r}")
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{where}[{i}]")
        return
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        require(a.dtype == b.dtype, f"{where}: dtype {a.dtype} != {b.dtype}")
        require(a.shape == b.shape, f"{where}: shape {a.shape} != {b.shape}")
        if a.dtype.names is not None:
            require(a.tolist() == b.tolist(), f"{where}: records differ")
        elif a.dtype.kind in "fc":
            require(np.array_equal(a, b, equal_nan=True), f"{where}: values differ")
        else:
            require(np.array_equal(a, b), f"{where}: values differ")
        return
    if a is None or b is None:
        require(a is None and b is None, f"{where}: None vs {a!r}/{b!r}")
        return
    if isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b):
        return
    require(type(a) is type(b) and bool(a == b), f"{where}: {a!r} != {b!r}")


def same_series(a, b, where):
    try:
        pd.testing.assert_series_equal(a, b)
    except AssertionError as error:
        raise Mismatch(f"{where}: {error}")


def hdf5_form(path, spec):
    """How the additions are stored, and the 0.7 category references' targets."""
    key, column = spec["obsm_key"], spec["label_column"]
    form = {}
    with h5py.File(path, "r") as f:
        obsm = f["obsm"]
        require(isinstance(obsm, h5py.Group), "obsm is not a group")
        embedding = obsm[key]
        form["embedding"] = {
            "dtype": str(embedding.dtype),
            "encoding": embedding.attrs.get("encoding-type", ""),
            "layout": "contiguous" if embedding.chunks is None else "chunked",
        }
        if column:
            obs = f["obs"]
            if isinstance(obs, h5py.Dataset):
                form["label"] = "compound field" if column in obs.dtype.names else "absent"
                form["label_categories_in_uns"] = f"{column}_categories" in f["uns"]
            elif isinstance(obs[column], h5py.Group):
                form["label"] = obs[column].attrs.get("encoding-type", "group")
            else:
                form["label"] = "codes with categories reference"
        # Every object reference (0.7 categoricals) must point at the named copy of its target,
        # not at an unlinked duplicate: dataset d of group g refers to g/__categories/d.
        broken = []

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and "categories" in obj.attrs:
                ref = obj.attrs["categories"]
                if isinstance(ref, h5py.Reference):
                    target = f[ref].name
                    expected = obj.parent.name.rstrip("/") + "/__categories/" + \
                        obj.name.split("/")[-1]
                    if target != expected:
                        broken.append(f"{obj.name} -> {target}")

        f.visititems(visit)
        require(not broken, "category references point elsewhere: " + ", ".join(broken))
        form["root_attrs"] = sorted(f.attrs.keys())
    return form


def main(spec):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        before = anndata.read_h5ad(spec["input"])
        after = anndata.read_h5ad(spec["output"])
    key, dim = spec["obsm_key"], spec["dim"]
    column, names = spec["label_column"], spec["label_names"]
    n = before.n_obs
    require(after.shape == before.shape, f"shape {after.shape} != {before.shape}")

    # The embedding.
    got = after.obsm[key]
    require(isinstance(got, np.ndarray), f"obsm[{key}] is a {type(got).__name__}")
    require(got.dtype == np.float32, f"obsm[{key}] dtype {got.dtype}")
    require(got.shape == (n, dim), f"obsm[{key}] shape {got.shape} != {(n, dim)}")
    rows = np.arange(n, dtype=np.float64)[:, None]
    cols = np.arange(dim, dtype=np.float64)[None, :]
    expected = (rows * 1000 + cols).astype(np.float32)
    wrong = np.argwhere(got != expected)
    require(wrong.size == 0, f"obsm[{key}] differs first at {wrong[:1].tolist()}: "
            f"{got[tuple(wrong[0])] if wrong.size else ''}")
    require(sorted(after.obsm.keys()) == sorted(set(before.obsm.keys()) | {key}),
            f"obsm keys {sorted(after.obsm.keys())}")
    for other in before.obsm.keys():
        if other != key:
            same(before.obsm[other], after.obsm[other], f"obsm/{other}")

    # obs: the input's columns in their order (a replaced column keeps its place), then the label.
    want_columns = list(before.obs.columns)
    if column and column not in want_columns:
        want_columns.append(column)
    require(list(after.obs.columns) == want_columns,
            f"obs columns {list(after.obs.columns)} != {want_columns}")
    require(after.obs_names.equals(before.obs_names), "obs index differs")
    for name in before.obs.columns:
        if name != column:
            same_series(before.obs[name], after.obs[name], f"obs/{name}")
    label = None
    if column:
        series = after.obs[column]
        require(str(series.dtype) == "category", f"obs/{column} dtype {series.dtype}")
        categories = [str(c) for c in series.cat.categories]
        require(categories == names, f"obs/{column} categories {categories} != {names}")
        require(not series.cat.ordered, f"obs/{column} is ordered")
        codes = series.cat.codes.to_numpy().astype(np.int64)
        want = np.arange(n) % (len(names) + 1) - 1
        bad = np.flatnonzero(codes != want)
        require(bad.size == 0, f"obs/{column} codes differ first at row {bad[:1].tolist()}: "
                f"{codes[bad[0]] if bad.size else ''} != {want[bad[0]] if bad.size else ''}")
        require(int(series.isna().sum()) == int((want < 0).sum()), f"obs/{column} NaN count")
        label = {"categories": categories, "missing": int((want < 0).sum()),
                 "codes_dtype": str(series.cat.codes.dtype)}

    # Everything else as in the input.
    same(before.X, after.X, "X")
    same(before.var, after.var, "var")
    same(dict(before.layers), dict(after.layers), "layers")
    same(dict(before.obsp), dict(after.obsp), "obsp")
    same(dict(before.varm), dict(after.varm), "varm")
    same(dict(before.varp), dict(after.varp), "varp")
    same(before.uns, after.uns, "uns")
    require((before.raw is None) == (after.raw is None), "raw present in one only")
    if before.raw is not None:
        same(before.raw.X, after.raw.X, "raw/X")
        same(before.raw.var, after.raw.var, "raw/var")

    form = hdf5_form(spec["output"], spec)
    with h5py.File(spec["input"], "r") as f:
        input_root = sorted(f.attrs.keys())
        input_keys = set(f.keys())
    with h5py.File(spec["output"], "r") as f:
        output_keys = set(f.keys())
    require(form["root_attrs"] == input_root, f"root attributes {form['root_attrs']}")
    require(input_keys | {"obsm"} == output_keys | {"obsm"} and "obsm" in output_keys,
            f"root keys {sorted(output_keys)} != {sorted(input_keys)} (+ obsm)")

    json.dump({
        "n_obs": int(n),
        "obsm_shape": list(got.shape),
        "obsm_dtype": str(got.dtype),
        "obsm_keys": sorted(after.obsm.keys()),
        "obs_columns": list(after.obs.columns),
        "label": label,
        "form": form,
        "anndata_version": anndata.__version__,
    }, sys.stdout)


if __name__ == "__main__":
    try:
        main(json.loads(sys.argv[1]))
    except Mismatch as error:
        print(f"check_embedding_output: {error}", file=sys.stderr)
        sys.exit(1)
