#!/usr/bin/env python3
# Independent checks for sccello_export_test.cpp (Debian's python3 + numpy + h5py; safetensors
# read and written by hand from the published format, not by cellfm or the safetensors library).
"""Usage:
  sccello_export_fixture.py names FILE
      prints {"metadata": {...}, "tensors": {name: [dtype, shape]}} of a safetensors file.
  sccello_export_fixture.py bert-embedding HF_DIR PROBE_JSON TOKEN...
      BertModel's embedding output for one cell of TOKEN ids at positions 0..n-1, in float64 from
      HF_DIR's tensors: LayerNorm(word[t] + token_type[0] + position[p]) with config.json's eps;
      compared with PROBE_JSON (the model's own output, cellfm_sccello_embedding_probe).
  sccello_export_fixture.py reference WEIGHTS OUT_DIR
      from a cellfm weights file, what a user has for the reference scCello: OUT_DIR/
      reference.safetensors (the reference's state-dict names only, no cellfm metadata; the head
      biases under predictions.bias only, no position_ids), vocabulary.tsv (id, token, symbol,
      median) and labels.txt (Cell Ontology ids in ontology-matrix row order).
  sccello_export_fixture.py vocabulary CORPUS.h5ad OUT.tsv
      a vocabulary.tsv of the corpus's genes with made-up positive medians, so that every gene has
      a median (as in the released vocabulary) and the trained model ranks them all.
  sccello_export_fixture.py same-embedding A.h5ad B.h5ad
      obsm/X_sccello of both files bit-equal.
"""
import json
import struct
import sys

import numpy as np

DTYPES = {"F64": "<f8", "F32": "<f4", "I64": "<i8", "I32": "<i4", "U8": "u1", "BOOL": "u1"}
NAMES = {np.dtype("<f8"): "F64", np.dtype("<f4"): "F32", np.dtype("<i8"): "I64",
         np.dtype("<i4"): "I32", np.dtype("u1"): "U8"}


def read(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    metadata = header.pop("__metadata__", {})
    tensors = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        data = np.frombuffer(blob[8 + n + begin:8 + n + end], dtype=DTYPES[info["dtype"]])
        tensors[name] = (info["dtype"], data.reshape(info["shape"]))
    return metadata, tensors


def write(path, tensors, metadata):
    header, offset, chunks = {}, 0, []
    if metadata:
        header["__metadata__"] = metadata
    for name, array in tensors:
        array = np.ascontiguousarray(array)
        raw = array.tobytes()
        header[name] = {"dtype": NAMES[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        chunks.append(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(chunks))


def names(path):
    metadata, tensors = read(path)
    print(json.dumps({"metadata": metadata,
                      "tensors": {k: [d, list(a.shape)] for k, (d, a) in tensors.items()}}))


def bert_embedding(directory, probe_path, tokens):
    _, t = read(directory + "/model.safetensors")
    with open(directory + "/config.json") as f:
        eps = json.load(f)["layer_norm_eps"]
    w = {k: a.astype(np.float64) for k, (_, a) in t.items()}
    ids = [int(x) for x in tokens]
    x = (w["embeddings.word_embeddings.weight"][ids]
         + w["embeddings.token_type_embeddings.weight"][0]
         + w["embeddings.position_embeddings.weight"][:len(ids)])
    mean = x.mean(axis=1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=1, keepdims=True)
    expected = ((x - mean) / np.sqrt(var + eps) * w["embeddings.LayerNorm.weight"]
                + w["embeddings.LayerNorm.bias"])
    with open(probe_path) as f:
        actual = np.array(json.load(f), dtype=np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert np.abs(w["embeddings.token_type_embeddings.weight"][0]).max() > 1e-3, \
        "the constant row is ~0: the check would not see it"
    error = np.abs(actual - expected).max()
    scale = np.abs(expected).max()
    print(json.dumps({"max_abs_error": error, "scale": scale}))
    if error > 1e-5 * max(scale, 1.0):
        sys.exit(f"embedding output differs from BertModel's float64 sum by {error}")


def reference(weights, out):
    metadata, tensors = read(weights)
    state = {k[len("cellfm_state."):]: a for k, (_, a) in tensors.items()
             if k.startswith("cellfm_state.")}
    kept = [(k, a) for k, (_, a) in tensors.items()
            if not k.startswith("cellfm_state.") and k != "bert.embeddings.position_ids"
            and not k.endswith("predictions.dense_2.bias")]
    write(out + "/reference.safetensors", kept, {"format": "pt"})
    genes = json.loads(metadata["genes"])
    if not state["gene_ranked"].all():
        sys.exit("a gene has no median in this corpus; vocabulary.tsv cannot express it")
    write_vocabulary(out + "/vocabulary.tsv", genes, state["gene_median"])
    labels = json.loads(metadata["labels"])
    rows = state["label_rows"]
    by_row = sorted((int(r), l) for l, r in zip(labels, rows) if r >= 0)
    assert [r for r, _ in by_row] == list(range(len(by_row))), by_row
    with open(out + "/labels.txt", "w") as f:
        f.write("".join(l + "\n" for _, l in by_row))


def write_vocabulary(path, genes, medians):
    with open(path, "w") as f:
        f.write("# written by sccello_export_fixture.py\nid\ttoken\tsymbol\tmedian\n")
        f.write("0\t<pad>\t\t\n1\t<mask>\t\t\n")
        for i, (gene, median) in enumerate(zip(genes, medians)):
            f.write(f"{i + 2}\t{gene}\t\t{float(median)!r}\n")


def vocabulary(corpus, out):
    import h5py
    with h5py.File(corpus, "r") as f:
        var = f["raw/var"] if "raw" in f else f["var"]
        index = var.attrs["_index"]
        genes = [g.decode() if isinstance(g, bytes) else g for g in var[index][...]]
    assert genes == sorted(genes), "the corpus's genes are not sorted"
    write_vocabulary(out, genes, [0.5 + (i % 7) * 0.75 for i in range(len(genes))])


def same_embedding(a, b):
    import h5py
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        x, y = fa["obsm/X_sccello"][...], fb["obsm/X_sccello"][...]
    assert x.shape == y.shape, (x.shape, y.shape)
    assert np.abs(x).max() > 0
    if not np.array_equal(x, y):
        sys.exit(f"X_sccello differs: max {np.abs(x - y).max()}")
    print(json.dumps({"cells": x.shape[0], "dim": x.shape[1]}))


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    {"names": lambda: names(*args),
     "bert-embedding": lambda: bert_embedding(args[0], args[1], args[2:]),
     "reference": lambda: reference(*args),
     "vocabulary": lambda: vocabulary(*args),
     "same-embedding": lambda: same_embedding(*args)}[command]()
