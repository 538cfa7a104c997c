"""First-call latency: a fresh process loads the cross-encoder and scores 100 pairs, for
sentence-transformers and for xenc_jax with an empty and then a warm compilation cache.

    python scripts/bench_first_call.py                  # MiniLM-L6 + seeded head, 100 MS MARCO pairs
    python scripts/bench_first_call.py --pairs 100 --runs 3

Each measurement is its own subprocess (imports, model load and compiles all count, as for a
user's script). Reported per library: import, load (constructor), first predict, and the
sum. Medians over --runs fresh processes; the empty-cache run gets a new cache directory each
time, the warm-cache run reuses the directory its previous process filled.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
lib, model, pairs_file = sys.argv[1:4]
pairs = [tuple(p) for p in json.load(open(pairs_file))]
if lib == "st":
    import torch
    from sentence_transformers import CrossEncoder
    t1 = time.perf_counter()
    ce = CrossEncoder(model, device="cpu")
else:
    from xenc_jax import CrossEncoder
    t1 = time.perf_counter()
    ce = CrossEncoder(model)
t2 = time.perf_counter()
scores = ce.predict(pairs)
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "first_predict_s": t3 - t2,
                  "compiles": getattr(ce, "compile_count", None), "scores": [float(s) for s in scores]}))
"""


def child(lib: str, model: Path, pairs_file: Path, env: dict) -> dict:
    got = subprocess.run([sys.executable, "-c", CHILD, lib, str(model), str(pairs_file)], env=env,
                         capture_output=True, text=True)
    if got.returncode:
        raise SystemExit(got.stderr[-3000:])
    return json.loads(got.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="cross-encoder directory (default: MiniLM + seeded head)")
    ap.add_argument("--pairs", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--data-dir", default=os.environ.get("XENC_DATA_DIR", str(REPO.parent / "shared" / "data")))
    args = ap.parse_args()
    import numpy as np
    import jax
    import torch
    from bench_cross_encoder import default_model, load_pairs
    from machine import cpu_description
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}  {cpu_description()}  jax {jax.__version__}  torch {torch.__version__}",
          flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = Path(args.model) if args.model else default_model(tmp / "model")
        pairs_file = tmp / "pairs.json"
        pairs_file.write_text(json.dumps(load_pairs(Path(args.data_dir), args.pairs, seed=1)))
        base = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
        for k in ("JAX_COMPILATION_CACHE_DIR",):
            base.pop(k, None)
        rows = {"sentence-transformers": [], "xenc_jax, empty cache": [], "xenc_jax, warm cache": []}
        ref = None
        for run in range(args.runs):
            cache = tmp / f"cache{run}"
            env = {**base, "XENC_COMPILATION_CACHE": str(cache), "XENC_AUTOTUNE_CACHE": str(tmp / f"tune{run}")}
            st = child("st", model, pairs_file, base)
            rows["sentence-transformers"].append(st)
            rows["xenc_jax, empty cache"].append(child("xenc", model, pairs_file, env))
            rows["xenc_jax, warm cache"].append(child("xenc", model, pairs_file, env))
            ref = st["scores"]
        print("| library | import s | load s | first predict s | total s | shapes traced | max abs diff vs ST |")
        print("|---|---|---|---|---|---|---|")
        for name, rs in rows.items():
            med = {k: statistics.median(r[k] for r in rs) for k in ("import_s", "load_s", "first_predict_s")}
            total = statistics.median(r["import_s"] + r["load_s"] + r["first_predict_s"] for r in rs)
            diff = max(float(np.abs(np.asarray(r["scores"]) - np.asarray(ref)).max()) for r in rs)
            print(f"| {name} | {med['import_s']:.2f} | {med['load_s']:.2f} | {med['first_predict_s']:.2f} | "
                  f"{total:.2f} | {rs[0]['compiles'] if rs[0]['compiles'] is not None else '-'} | {diff:.1e} |",
                  flush=True)


if __name__ == "__main__":
    main()
