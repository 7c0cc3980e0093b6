#!/usr/bin/python3
"""Exceiver cell embeddings recomputed in float64 numpy, independently of cellfm.

  embed_reference.py perturb WEIGHTS OUT SEED
      writes OUT: WEIGHTS (a cellfm weights file, safetensors read and written by hand here) with
      N(0, 0.3) noise added to every model tensor except the mask row of gene_emb, so cells get
      clearly different embeddings; metadata and family state (cellfm_state.*) unchanged.
  embed_reference.py check WEIGHTS INPUT OUTPUT
      reads the model options (the weights' resolved spec), genes and gene statistics from
      WEIGHTS and every cell of INPUT with h5py, computes each cell's latent array from the
      released architecture's equations (normalize_total 1e4, log1p, z-score clipped above then
      +1; value x gene embedding, or with value_encoding after_norm value x LayerNorm(embedding);
      the encoder cross-attention over the cell's non-zero genes (zero_genes: drop), the post-norm
      process layers) and compares it with row i of OUTPUT's obsm/X_exceiver for every i. Fails
      (exit 1) when a row differs by more than 1e-4 (relative to the row's largest value, at
      least 1), when a row is closer to another cell's reference than a tenth of the distance
      between the two references (a row order mismatch would pass otherwise), or when obs names
      differ. Prints {"cells", "max_error", "min_separation"} as JSON.
"""
import json
import struct
import sys

import h5py
import numpy as np
import scipy.special
import yaml

DTYPES = {"F64": np.float64, "F32": np.float32, "I64": np.int64, "I32": np.int32}


def fail(message):
    print(message, file=sys.stderr)
    sys.exit(1)


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + length])
    metadata = header.pop("__metadata__", {})
    base = 8 + length
    tensors = {}
    for name, entry in sorted(header.items(), key=lambda item: item[1]["data_offsets"][0]):
        begin, end = entry["data_offsets"]
        array = np.frombuffer(raw[base + begin:base + end], dtype=DTYPES[entry["dtype"]])
        tensors[name] = array.reshape(entry["shape"]).copy()
    return tensors, metadata


def write_safetensors(path, tensors, metadata):
    names = {np.dtype(v): k for k, v in DTYPES.items()}
    header = {"__metadata__": metadata}
    blobs, offset = [], 0
    for name, array in tensors.items():
        blob = np.ascontiguousarray(array).tobytes()
        header[name] = {"dtype": names[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def perturb(weights, out, seed):
    tensors, metadata = read_safetensors(weights)
    rng = np.random.default_rng(int(seed))
    for name, array in tensors.items():
        if name.startswith("cellfm_state.") or array.dtype != np.float32:
            continue
        noisy = array.astype(np.float64) + rng.normal(0.0, 0.3, array.shape)
        if name == "gene_emb.weight":
            noisy[-1] = 0.0  # the mask row stays zero
        tensors[name] = noisy.astype(np.float32)
    write_safetensors(out, tensors, metadata)


def layer_norm(x, w, b):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-5) * w + b


def gelu(x):
    return 0.5 * x * (1.0 + scipy.special.erf(x / np.sqrt(2.0)))


def linear(x, w, prefix):
    return x @ w[prefix + "weight"].T + w[prefix + "bias"]


def attention(w, prefix, q_in, kv_in, heads):
    in_w, in_b = w[prefix + "in_proj_weight"], w[prefix + "in_proj_bias"]
    d = in_w.shape[0] // 3
    q = q_in @ in_w[:d].T + in_b[:d]
    k = kv_in @ in_w[d:2 * d].T + in_b[d:2 * d]
    v = kv_in @ in_w[2 * d:].T + in_b[2 * d:]
    hd = d // heads
    out = []
    for h in range(heads):
        s = slice(h * hd, (h + 1) * hd)
        logits = q[:, s] @ k[:, s].T / np.sqrt(hd)
        logits -= logits.max(-1, keepdims=True)
        p = np.exp(logits)
        out.append((p / p.sum(-1, keepdims=True)) @ v[:, s])
    return linear(np.concatenate(out, 1), w, prefix + "out_proj.")


def cross_attention(w, prefix, query, kv, heads, kv_normalised):
    if not kv_normalised:
        kv = layer_norm(kv, w[prefix + "layernorm_kv.weight"], w[prefix + "layernorm_kv.bias"])
    q = layer_norm(query, w[prefix + "layernorm_q.weight"], w[prefix + "layernorm_q.bias"])
    a = attention(w, prefix + "cross_attn.", q, kv, heads) + query
    m = layer_norm(a, w[prefix + "mlp.0.weight"], w[prefix + "mlp.0.bias"])
    m = gelu(linear(m, w, prefix + "mlp.1."))
    m = layer_norm(m, w[prefix + "mlp.3.weight"], w[prefix + "mlp.3.bias"])
    return a + linear(m, w, prefix + "mlp.4.")


def process_layer(w, prefix, x, heads):
    h = layer_norm(x + attention(w, prefix + "self_attn.", x, x, heads), w[prefix + "norm1.weight"],
                   w[prefix + "norm1.bias"])
    ff = linear(gelu(linear(h, w, prefix + "linear1.")), w, prefix + "linear2.")
    return layer_norm(h + ff, w[prefix + "norm2.weight"], w[prefix + "norm2.bias"])


def read_cells(path, matrix, genes):
    with h5py.File(path, "r") as f:
        group = f["raw/X"] if matrix == "raw" else f["X"]
        var = f["raw/var"] if matrix == "raw" else f["var"]
        names = [n.decode() if isinstance(n, bytes) else n for n in var[var.attrs["_index"]][:]]
        if group.attrs.get("encoding-type") != "csr_matrix":
            fail(f"{path}: the reference reads CSR matrices only")
        data, indices, indptr = group["data"][:], group["indices"][:], group["indptr"][:]
        obs = f["obs"]
        obs_names = [n.decode() if isinstance(n, bytes) else n for n in obs[obs.attrs["_index"]][:]]
    row_of = {g: i for i, g in enumerate(genes)}
    column_gene = np.array([row_of.get(n, -1) for n in names])
    cells = []
    for r in range(len(indptr) - 1):
        cols = indices[indptr[r]:indptr[r + 1]]
        vals = data[indptr[r]:indptr[r + 1]].astype(np.float64)
        ids = column_gene[cols]
        keep = (ids >= 0) & (vals != 0)
        cells.append((ids[keep], vals[keep]))
    return cells, obs_names


def check(weights_path, input_path, output_path):
    tensors, metadata = read_safetensors(weights_path)
    w = {k: v.astype(np.float64) for k, v in tensors.items()}
    spec = yaml.safe_load(metadata["spec"])
    model = spec["model"]["exceiver"]
    if model["zero_genes"] != "drop":
        fail("the reference implements zero_genes: drop only")
    after_norm = model.get("value_encoding", "reference") == "after_norm"
    genes = json.loads(metadata["genes"])
    mean, std = w["cellfm_state.gene_mean"], w["cellfm_state.gene_std"]
    scale = np.where(std == 0, 1.0, std)
    clip_max = float(model["clip_max"])
    matrix = spec["data"]["matrix"]
    if matrix == "auto":
        with h5py.File(input_path, "r") as f:
            matrix = "raw" if "raw" in f else "X"
    cells, obs_names = read_cells(input_path, matrix, genes)
    with h5py.File(output_path, "r") as f:
        out = f["obsm/X_exceiver"][:].astype(np.float64)
        out_names = [n.decode() if isinstance(n, bytes) else n
                     for n in f["obs"][f["obs"].attrs["_index"]][:]]
    if out_names != obs_names:
        fail("obs names of the output differ from the input's")
    if out.shape[0] != len(cells):
        fail(f"obsm/X_exceiver has {out.shape[0]} rows for {len(cells)} cells")
    emb = w["gene_emb.weight"]
    if emb.shape[0] != len(genes) + 1:
        fail(f"gene_emb has {emb.shape[0]} rows for {len(genes)} genes (+1 mask row)")
    references = []
    for ids, counts in cells:
        x = np.log1p(counts / counts.sum() * 1e4) if len(counts) else counts
        z = np.minimum((x - mean[ids]) / scale[ids], clip_max) + 1.0
        if len(ids) == 0:  # an empty cell attends to one mask token (a zero vector)
            tokens = np.zeros((1, emb.shape[1]))
        elif after_norm:
            e = layer_norm(emb[ids], w["encoder_cross_attn.layernorm_kv.weight"],
                           w["encoder_cross_attn.layernorm_kv.bias"])
            tokens = z[:, None] * e
        else:
            tokens = z[:, None] * emb[ids]
        latent = cross_attention(w, "encoder_cross_attn.", w["query_emb"], tokens,
                                 int(model["cross_heads"]), after_norm)
        for layer in range(int(model["layers"])):
            latent = process_layer(w, f"process_self_attn.transformer.layers.{layer}.", latent,
                                   int(model["heads"]))
        references.append(latent.reshape(-1))
    ref = np.stack(references)
    if out.shape != ref.shape:
        fail(f"obsm/X_exceiver is {out.shape}, the reference {ref.shape}")
    errors = np.abs(out - ref).max(1) / np.maximum(np.abs(ref).max(1), 1.0)
    worst = int(errors.argmax())
    if errors[worst] > 1e-4:
        fail(f"row {worst} ({obs_names[worst]}) differs from its reference by {errors[worst]:.3g}")
    # Each row must be far closer to its own reference than the references of other cells are
    # to each other, so that the comparison above pins the row order.
    distances = np.sqrt(((ref[:, None, :] - ref[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(distances, np.inf)
    own = np.sqrt(((out - ref) ** 2).sum(1))
    separation = distances.min(1)
    if np.any(own >= 0.1 * separation):
        i = int(np.argmax(own / separation))
        fail(f"row {i}: distance to its reference {own[i]:.3g} is not small beside the nearest "
             f"other cell's reference ({separation[i]:.3g})")
    print(json.dumps({"cells": len(cells), "max_error": float(errors.max()),
                      "min_separation": float(separation.min())}))


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "perturb":
        perturb(*sys.argv[2:])
    elif len(sys.argv) == 5 and sys.argv[1] == "check":
        check(*sys.argv[2:])
    else:
        fail(__doc__)


if __name__ == "__main__":
    main()
