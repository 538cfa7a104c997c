"""Sharded semantic_search equals the unsharded one, on 8 forced CPU devices.

XLA_FLAGS must be set before jax is first imported, and the rest of the suite imports jax with
one CPU device, so the checks run in a fresh interpreter: the pytest test re-runs this very file
as a script with XLA_FLAGS set, and the script exits non-zero on any mismatch.
"""
from __future__ import annotations

import sys
from pathlib import Path
from forced_devices import run_on_devices

REPO = Path(__file__).resolve().parents[1]


def test_sharded_search_matches_unsharded():
    run_on_devices([__file__], devices=8)


def _main() -> int:
    sys.path.insert(0, str(REPO))  # run as a script, sys.path[0] is tests/
    import jax
    import numpy as np
    from jax.sharding import Mesh

    from xenc_jax import search

    devices = jax.devices()
    assert len(devices) == 8, f"expected 8 forced CPU devices, got {devices}"
    meshes = {
        "(8,) data": Mesh(np.array(devices), ("data",)),
        "(4,2) data,model": Mesh(np.array(devices).reshape(4, 2), ("data", "model")),
        "(2,4) corpus on model": Mesh(np.array(devices).reshape(2, 4), ("data", "model")),
    }
    rng = np.random.default_rng(0)
    dim = 24
    # Unit-scale rows, like real sentence embeddings. Sharded and unsharded blocks have different
    # matmul shapes, so XLA may round differently (last-ulp); ids must match exactly.
    queries = (rng.normal(size=(11, dim)) / np.sqrt(dim)).astype(np.float32)
    failures = []
    n_cases = 0
    # (corpus size, score function, top_k, corpus_chunk_size); query_chunk_size is 4 throughout.
    cases = [(83, "cosine", 1, 7), (83, "cosine", 10, 1000), (83, "cosine", 200, 13),
             (83, "dot", 10, 1000), (83, "euclidean", 5, 13), (83, "manhattan", 10, 1000)]
    cases += [(5, "cosine", 3, 16), (1, "dot", 4, 100)]  # whole devices hold only padding
    cases += [(61, "dot", 9, 24)]  # integer rows: exact ties, which must break the same way
    for n_corpus, fn, top_k, chunk in cases:  # no corpus size is a multiple of 8
        corpus = (rng.normal(size=(n_corpus, dim)) / np.sqrt(dim)).astype(np.float32)
        q = queries
        if n_corpus == 61:
            corpus = rng.integers(-1, 2, size=(n_corpus, dim)).astype(np.float32)
            q = rng.integers(-1, 2, size=(11, dim)).astype(np.float32)
        kwargs = dict(top_k=top_k, corpus_chunk_size=chunk, query_chunk_size=4,
                      score_function=fn)
        want = search.semantic_search(q, corpus, **kwargs)
        for name, mesh in meshes.items():
            axis = "model" if "corpus on model" in name else "data"
            if axis == "model" and fn not in ("cosine", "dot"):
                continue  # each sharded case costs a compile: keep the suite fast
            got = search.semantic_search(q, corpus, mesh=mesh, corpus_axis=axis,
                                         **kwargs)
            n_cases += 1
            ids_got = [[r["corpus_id"] for r in q] for q in got]
            ids_want = [[r["corpus_id"] for r in q] for q in want]
            diff = max((abs(a["score"] - b["score"]) for qa, qb in zip(got, want)
                        for a, b in zip(qa, qb)), default=0.0)
            if ids_got != ids_want or diff > 1e-6 or len(ids_got[0]) != min(top_k, n_corpus):
                failures.append(f"mesh={name} n={n_corpus} fn={fn} top_k={top_k} "
                                f"chunk={chunk}: ids {ids_got[:2]} vs {ids_want[:2]}, "
                                f"max score diff {diff}")
    if not search.trace_counts["search_step_sharded"]:
        failures.append("the sharded (shard_map) step was never traced")
    print(f"{n_cases} sharded cases compared, {len(failures)} failures")
    for f in failures:
        print("MISMATCH", f)
    if failures:
        return 1
    print("ALL OK")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
