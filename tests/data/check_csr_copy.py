#!/usr/bin/python3
"""Checks a `cellfm prep convert` output against its input with Debian's anndata: X (and raw.X)
are CSR and equal the input's .tocsr() in shape, dtype and values; obs, var, raw.var, obsm, varm,
obsp, varp, layers and uns are unchanged, every categorical column (anndata 0.7's codes +
__categories included) with the same categories, order flag and codes. With h5py: every object
reference in the output resolves to a linked object of the output, and a 0.7 categorical's
`categories` reference names its own <dataframe>/__categories/<column>. Exits 1 with the
difference on stderr.
Usage: check_csr_copy.py IN.h5ad OUT.h5ad
"""
import sys

import anndata
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp


def fail(message):
    print(message, file=sys.stderr)
    sys.exit(1)


def check_references(path):
    """Every object-reference attribute of `path` names a linked object of `path`."""
    problems = []

    def visit(name, obj):
        for key, value in obj.attrs.items():
            if not isinstance(value, h5py.Reference):
                continue
            if not value:
                problems.append(f"{name}@{key}: null reference")
                continue
            try:
                target = obj.file[value].name
            except Exception as error:  # h5py raises ValueError for a dangling reference
                problems.append(f"{name}@{key}: invalid reference ({error})")
                continue
            if target is None:
                problems.append(f"{name}@{key}: references an unlinked object")
            elif key == "categories":
                parent, column = name.rsplit("/", 1) if "/" in name else ("", name)
                expected = f"/{parent}/__categories/{column}".replace("//", "/")
                if target != expected:
                    problems.append(f"{name}@{key}: references {target}, not {expected}")

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    if problems:
        fail(f"{path}: " + "; ".join(problems))


check_references(sys.argv[2])
source = anndata.read_h5ad(sys.argv[1])
copy = anndata.read_h5ad(sys.argv[2])


def same_matrix(name, a, b):
    if not sp.isspmatrix_csr(b):
        fail(f"{name}: output is {type(b).__name__}, not csr_matrix")
    expected = sp.csr_matrix(a) if not sp.issparse(a) else a.tocsr()
    if expected.shape != b.shape:
        fail(f"{name}: shape {b.shape} != {expected.shape}")
    if expected.dtype != b.dtype:
        fail(f"{name}: dtype {b.dtype} != {expected.dtype}")
    if not b.has_sorted_indices:
        b2 = b.copy()
        b2.sort_indices()
        if not np.array_equal(b2.indices, b.indices):
            fail(f"{name}: column indices not ascending within rows")
    if (expected != b).nnz != 0:
        fail(f"{name}: values differ")
    if b.nnz != expected.nnz:
        fail(f"{name}: {b.nnz} stored entries, expected {expected.nnz}")


def same_frame(name, a, b):
    if not a.equals(b) or not a.index.equals(b.index):
        fail(f"{name} differs")
    for column in a.columns:
        if isinstance(a[column].dtype, pd.CategoricalDtype):
            x, y = a[column], b[column]
            if not isinstance(y.dtype, pd.CategoricalDtype):
                fail(f"{name}[{column}]: {y.dtype}, not categorical")
            if list(x.cat.categories) != list(y.cat.categories):
                fail(f"{name}[{column}]: categories differ")
            if x.cat.ordered != y.cat.ordered:
                fail(f"{name}[{column}]: ordered {y.cat.ordered} != {x.cat.ordered}")
            if not np.array_equal(x.cat.codes.to_numpy(), y.cat.codes.to_numpy()):
                fail(f"{name}[{column}]: codes differ")


def same_value(name, a, b):
    if isinstance(a, pd.DataFrame):
        if not isinstance(b, pd.DataFrame):
            fail(f"{name}: output is {type(b).__name__}, not a DataFrame")
        same_frame(name, a, b)
    elif sp.issparse(a):
        if not sp.issparse(b) or a.shape != b.shape or (sp.csr_matrix(a) != sp.csr_matrix(b)).nnz:
            fail(f"{name} differs")
    elif not np.array_equal(np.asarray(a), np.asarray(b)):
        fail(f"{name} differs")


def same_mapping(name, a, b):
    if sorted(a.keys()) != sorted(b.keys()):
        fail(f"{name} keys differ: {sorted(b.keys())} vs {sorted(a.keys())}")
    for key in a.keys():
        same_value(f"{name}[{key}]", a[key], b[key])


same_matrix("X", source.X, copy.X)
if (source.raw is None) != (copy.raw is None):
    fail("raw present in one file only")
if source.raw is not None:
    same_matrix("raw.X", source.raw.X, copy.raw.X)
    same_frame("raw.var", source.raw.var, copy.raw.var)
    same_mapping("raw.varm", source.raw.varm, copy.raw.varm)
same_frame("obs", source.obs, copy.obs)
same_frame("var", source.var, copy.var)
for name in ("obsm", "varm", "obsp", "varp"):
    same_mapping(name, getattr(source, name), getattr(copy, name))
for key in source.layers.keys():
    if (sp.csr_matrix(source.layers[key]) != sp.csr_matrix(copy.layers[key])).nnz:
        fail(f"layers[{key}] differs")
if repr(source.uns) != repr(copy.uns):
    fail(f"uns differs: {source.uns} vs {copy.uns}")
print("ok")
