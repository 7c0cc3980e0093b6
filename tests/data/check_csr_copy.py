#!/usr/bin/python3
"""Checks a `cellfm prep convert` output against its input with Debian's anndata: X (and raw.X)
are CSR and equal the input's .tocsr() in shape, dtype and values; obs, var, obsm, layers and uns
are unchanged. Exits 1 with the difference on stderr.
Usage: check_csr_copy.py IN.h5ad OUT.h5ad
"""
import sys

import anndata
import numpy as np
import scipy.sparse as sp

source = anndata.read_h5ad(sys.argv[1])
copy = anndata.read_h5ad(sys.argv[2])


def fail(message):
    print(message, file=sys.stderr)
    sys.exit(1)


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


same_matrix("X", source.X, copy.X)
if (source.raw is None) != (copy.raw is None):
    fail("raw present in one file only")
if source.raw is not None:
    same_matrix("raw.X", source.raw.X, copy.raw.X)
    if not source.raw.var.equals(copy.raw.var):
        fail("raw.var differs")
if not source.obs.equals(copy.obs):
    fail("obs differs")
if not source.var.equals(copy.var):
    fail("var differs")
if sorted(source.obsm.keys()) != sorted(copy.obsm.keys()):
    fail("obsm keys differ")
for key in source.obsm.keys():
    if not np.array_equal(source.obsm[key], copy.obsm[key]):
        fail(f"obsm[{key}] differs")
for key in source.layers.keys():
    if (sp.csr_matrix(source.layers[key]) != sp.csr_matrix(copy.layers[key])).nnz:
        fail(f"layers[{key}] differs")
if repr(source.uns) != repr(copy.uns):
    fail(f"uns differs: {source.uns} vs {copy.uns}")
print("ok")
