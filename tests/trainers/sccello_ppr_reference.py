#!/usr/bin/python3
"""Independent reference for scCello's personalized PageRank (tests/trainers/sccello_data_test.cpp).

Reads an OBO file with its own minimal parser (live [Term] stanzas: id, is_a, is_obsolete), builds
the undirected is_a graph as a dense numpy float64 adjacency matrix and runs, separately for each
source term, the power iteration networkx.pagerank documents, written here from its equations:

    x_0 = 1/N,  p = e_source,
    x_{k+1} = alpha * (x_k @ P + (sum of x_k over dangling nodes) * p) + (1 - alpha) * p,
    P = the adjacency with each non-empty row divided by its sum (dangling rows stay zero),
    stop at the first k+1 <= max_iter with sum |x_{k+1} - x_k| < N * tol, returning x_{k+1}.

Prints JSON: {"terms": [ids in file order], "results": {source: {"scores": [N floats],
"iterations": n, "converged": bool}}}. Needs only numpy (Debian's /usr/bin/python3).

usage: sccello_ppr_reference.py FILE.obo ALPHA TOL MAX_ITER SOURCE...
"""
import json
import sys

import numpy as np


def read_obo(path):
    terms = []  # (id, [is_a ids]) of live terms, in file order
    current = None
    in_term = False

    def close():
        if current is not None and not current["obsolete"]:
            terms.append((current["id"], current["is_a"]))

    with open(path, encoding="utf-8") as handle:
        for raw in handle:
            line = raw.strip()
            if line.startswith("["):
                close()
                in_term = line == "[Term]"
                current = {"id": None, "is_a": [], "obsolete": False} if in_term else None
                continue
            if not in_term or ":" not in line:
                continue
            tag, value = line.split(":", 1)
            value = value.split("!", 1)[0].strip()
            if tag == "id":
                current["id"] = value.split()[0]
            elif tag == "is_a":
                current["is_a"].append(value.split()[0])
            elif tag == "is_obsolete":
                current["obsolete"] = value == "true"
    close()
    return terms


def main():
    path, alpha, tol, max_iter = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    sources = sys.argv[5:]
    terms = read_obo(path)
    ids = [term_id for term_id, _ in terms]
    position = {term_id: i for i, term_id in enumerate(ids)}
    n = len(ids)
    adjacency = np.zeros((n, n))
    for term_id, parents in terms:
        for parent in parents:
            if parent in position and parent != term_id:
                a, b = position[term_id], position[parent]
                adjacency[a, b] = adjacency[b, a] = 1.0  # undirected, one edge per pair
    row_sums = adjacency.sum(axis=1)
    dangling = row_sums == 0
    stochastic = np.zeros_like(adjacency)
    stochastic[~dangling] = adjacency[~dangling] / row_sums[~dangling, None]

    results = {}
    for source in sources:
        p = np.zeros(n)
        p[position[source]] = 1.0
        x = np.full(n, 1.0 / n)
        converged = False
        iterations = 0
        for _ in range(max_iter):
            previous = x
            x = alpha * (previous @ stochastic + previous[dangling].sum() * p) + (1 - alpha) * p
            iterations += 1
            if np.abs(x - previous).sum() < n * tol:
                converged = True
                break
        results[source] = {"scores": x.tolist(), "iterations": iterations, "converged": converged}
    json.dump({"terms": ids, "results": results}, sys.stdout)


if __name__ == "__main__":
    main()
