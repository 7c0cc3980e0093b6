#!/usr/bin/python3
"""Independent float64 reference for CellPLM's layer functions (tests/trainers/cellplm_layers_test.cpp).

Written from the equations of /work/shared/specs/cellplm.md section 2 and the comments of
trainers/cellplm/cellplm_layers.h, with explicit loops over heads, positions and channels (no
code from the reference repositories, nothing shared with the C++ implementation). Needs only
numpy and the standard library (Debian's /usr/bin/python3).

usage: cellplm_layers_reference.py REQUEST.json
  REQUEST: {"cases": [{"fn": NAME, ARG: {"shape": [...], "data": [flat row-major values,
            null for NaN]}, ...}, ...]}
  prints:  {"results": [{"shape": [...], "data": [...]} or {NAME: value, ...}, ...]}
"""
import json
import math
import sys

import numpy as np


def tensor(arg):
    data = [math.nan if value is None else float(value) for value in arg["data"]]
    return np.array(data, dtype=np.float64).reshape(arg["shape"])


def packed(array):
    array = np.asarray(array, dtype=np.float64)
    return {"shape": list(array.shape), "data": [float(v) for v in array.reshape(-1)]}


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def flow_attention(q, k, v, eps):
    """Flowformer's non-causal Flow-Attention per head, every sum an explicit loop."""
    heads, n, d = q.shape
    dv = v.shape[2]
    result = np.zeros((heads, n, dv))
    for h in range(heads):
        Q = [[sigmoid(q[h, i, c]) for c in range(d)] for i in range(n)]
        K = [[sigmoid(k[h, j, c]) for c in range(d)] for j in range(n)]
        V = [[v[h, j, e] for e in range(dv)] for j in range(n)]
        sum_k = [sum(K[j][c] for j in range(n)) for c in range(d)]
        sum_q = [sum(Q[i][c] for i in range(n)) for c in range(d)]
        # incoming flow of each query, outgoing flow of each key
        inc = [1.0 / sum((Q[i][c] + eps) * (sum_k[c] + eps) for c in range(d)) for i in range(n)]
        out = [1.0 / sum((K[j][c] + eps) * (sum_q[c] + eps) for c in range(d)) for j in range(n)]
        # conserved sink and source
        k_out = [sum(K[j][c] * out[j] for j in range(n)) for c in range(d)]
        sink = [sum((Q[i][c] + eps) * (k_out[c] + eps) for c in range(d)) for i in range(n)]
        q_inc = [sum(Q[i][c] * inc[i] for i in range(n)) for c in range(d)]
        source = []
        for j in range(n):
            s = sum((K[j][c] + eps) * (q_inc[c] + eps) for c in range(d))
            source.append(min(1.0, max(-1.0, s)))
        allocation = [sigmoid(sink[i] * n / n) for i in range(n)]
        top = max(source)
        weights = [math.exp(s - top) for s in source]
        total = sum(weights)
        competition = [w / total * n for w in weights]
        # K^T (V competition): [d, dv]
        kv = [[sum(K[j][c] * V[j][e] * competition[j] for j in range(n)) for e in range(dv)]
              for c in range(d)]
        for i in range(n):
            for e in range(dv):
                row = sum(Q[i][c] * inc[i] * kv[c][e] for c in range(d))
                result[h, i, e] = row * allocation[i]
    return result


def cell_group_norm(x, groups, weight, bias):
    n, channels = x.shape
    width = channels // groups
    y = np.zeros_like(x)
    for cell in range(n):
        for g in range(groups):
            members = range(g * width, (g + 1) * width)
            mean = sum(x[cell, c] for c in members) / width
            var = sum((x[cell, c] - mean) ** 2 for c in members) / width
            for c in members:
                y[cell, c] = (x[cell, c] - mean) / math.sqrt(var + 1e-5) * weight[c] + bias[c]
    return y


def sinusoidal_2d_table(dim):
    half = dim // 2
    table = np.zeros((100 * 100, dim))
    for x in range(100):
        for y in range(100):
            row = x * 100 + y
            for offset, p in ((0, x), (half, y)):
                for i in range(half // 2):
                    angle = p / 10000.0 ** (2.0 * i / half)
                    table[row, offset + 2 * i] = math.sin(angle)
                    table[row, offset + 2 * i + 1] = math.cos(angle)
    return table


def position_rows(coordinates):
    n = coordinates.shape[0]
    present = [i for i in range(n) if not (math.isnan(coordinates[i, 0]) or
                                            math.isnan(coordinates[i, 1]))]
    rows = [-1.0] * n
    if not present:
        return np.array(rows)
    low = [min(coordinates[i, a] for i in present) for a in range(2)]
    high = [max(coordinates[i, a] for i in present) for a in range(2)]
    extent = max(high[0] - low[0], high[1] - low[1])
    for i in present:
        bins = []
        for a in range(2):
            # zero extent (one cell, or all at one point) is left open by the header; unused
            c = (coordinates[i, a] - low[a]) / extent if extent > 0 else 0.0
            b = math.floor((c * 1.02 - 0.01) * 100)
            bins.append(min(99, max(0, b)))
        rows[i] = float(bins[0] * 100 + bins[1])
    return np.array(rows)


def log_normal(z, mean, var):
    return -0.5 * (math.log(2 * math.pi) + math.log(var) + (z - mean) ** 2 / var)


def gmvae_terms(logits, z, mu, var, prior_mu, prior_var):
    n, k = logits.shape
    dims = z.shape[1]
    gauss = 0.0
    categorical = 0.0
    for cell in range(n):
        for d in range(dims):
            gauss += (log_normal(z[cell, d], mu[cell, d], var[cell, d] + 1e-8) -
                      log_normal(z[cell, d], prior_mu[cell, d], prior_var[cell, d] + 1e-8))
        top = max(logits[cell])
        weights = [math.exp(l - top) for l in logits[cell]]
        total = sum(weights)
        p = [w / total for w in weights]
        categorical += math.log(k) + sum(pk * math.log(pk) for pk in p)
    return {"gauss": gauss / n, "categorical": categorical / n}


def vae_kl(mu, logvar):
    n, dims = mu.shape
    total = 0.0
    for cell in range(n):
        for d in range(dims):
            total += 0.5 * (mu[cell, d] ** 2 + math.exp(logvar[cell, d]) - 1 - logvar[cell, d])
    return total / n


def nb_nll(x, mu, theta, eps):
    """-log NB(x; mu, theta); eps = 1e-8 as in the header, eps = 0 the plain pmf."""
    x, mu, theta = np.broadcast_arrays(x, mu, theta)
    out = np.zeros(x.shape)
    for index in np.ndindex(x.shape):
        xi, mi, ti = x[index], mu[index], theta[index]
        log_p = (math.lgamma(xi + ti) - math.lgamma(ti) - math.lgamma(xi + 1) +
                 ti * (math.log(ti + eps) - math.log(ti + mi + eps)) +
                 xi * (math.log(mi + eps) - math.log(ti + mi + eps)))
        out[index] = -log_p
    return out


def run(case):
    fn = case["fn"]
    if fn == "flow_attention":
        return packed(flow_attention(tensor(case["q"]), tensor(case["k"]), tensor(case["v"]),
                                     case.get("eps", 1e-6)))
    if fn == "cell_group_norm":
        return packed(cell_group_norm(tensor(case["x"]), case["groups"], tensor(case["weight"]),
                                      tensor(case["bias"])))
    if fn == "sinusoidal_2d_table":
        return packed(sinusoidal_2d_table(case["dim"]))
    if fn == "position_rows":
        return packed(position_rows(tensor(case["coordinates"])))
    if fn == "gmvae_terms":
        return gmvae_terms(*(tensor(case[name]) for name in
                             ("logits", "z", "mu", "var", "prior_mu", "prior_var")))
    if fn == "vae_kl":
        return {"kl": vae_kl(tensor(case["mu"]), tensor(case["logvar"]))}
    if fn == "nb_nll":
        x, mu, theta = tensor(case["x"]), tensor(case["mu"]), tensor(case["theta"])
        return {"with_eps": packed(nb_nll(x, mu, theta, 1e-8)),
                "pmf": packed(nb_nll(x, mu, theta, 0.0))}
    raise ValueError("unknown function " + fn)


def main():
    with open(sys.argv[1], encoding="utf-8") as handle:
        request = json.load(handle)
    json.dump({"results": [run(case) for case in request["cases"]]}, sys.stdout, allow_nan=False)


if __name__ == "__main__":
    main()
