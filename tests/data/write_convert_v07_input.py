#!/usr/bin/python3
"""Writes a `cellfm prep convert` input in the anndata 0.7 layout from a reference file written by
anndata 0.7 (tests/data/h5ad/anndata_v0.7.*.h5ad): a byte copy in which X (CSR there) becomes a
dense array and raw/X a CSC group; obs, var, raw/var, obsm, ... keep their categorical codes
whose `categories` attributes reference <dataframe>/__categories/<column>. With
--root-reference the root group also gets an attribute `obs_ref` referencing obs (which the
converter must refuse: it copies root attributes one by one).
Usage: write_convert_v07_input.py REFERENCE.h5ad OUT.h5ad [--root-reference]
"""
import shutil
import sys

import h5py
import numpy as np
import scipy.sparse as sp

reference, out = sys.argv[1], sys.argv[2]
root_reference = sys.argv[3:] == ["--root-reference"]
shutil.copyfile(reference, out)  # an h5py object copy would not keep the references valid
with h5py.File(out, "r+") as f:

    def read_csr(path):
        group = f[path]
        if group.attrs["encoding-type"] != "csr_matrix":
            sys.exit(f"{reference}: {path} is {group.attrs['encoding-type']}, expected csr_matrix")
        return sp.csr_matrix((group["data"][()], group["indices"][()], group["indptr"][()]),
                             shape=tuple(group.attrs["shape"]))

    dense = read_csr("X").toarray()
    del f["X"]
    f.create_dataset("X", data=dense)
    if "raw/X" in f:
        csc = read_csr("raw/X").tocsc()
        del f["raw/X"]
        group = f.create_group("raw/X")
        group.attrs["encoding-type"] = "csc_matrix"
        group.attrs["encoding-version"] = "0.1.0"
        group.attrs["shape"] = np.array(csc.shape, dtype=np.int64)
        for name in ("data", "indices", "indptr"):
            group.create_dataset(name, data=getattr(csc, name))
    if not any(isinstance(value, h5py.Reference) for value in f["obs"]["obs_cat"].attrs.values()):
        sys.exit(f"{reference}: obs/obs_cat is not an anndata 0.7 categorical")
    if root_reference:
        f.attrs["obs_ref"] = f["obs"].ref
