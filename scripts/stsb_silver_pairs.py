"""Experiment (not yet part of a preset): the STS-B train split plus silver pairs scored by the
starting model itself, for the STS-B cross-encoder (docs/benchmarks.md, fourth session).

    python scripts/stsb_silver_pairs.py --out /tmp/exp/sts-train-silver.csv
    xenc -v train --config configs/stsb_cross_encoder.py --set train.path=/tmp/exp/sts-train-silver.csv \
        --set output_dir=/tmp/xt/silver

Each train sentence is paired with its nearest other train sentence by all-MiniLM-L6-v2's
cosine, skipping its gold partners and case-insensitive duplicates (looking at the 3 nearest). The pair is scored by that
cosine, mapped to 0-5 by a least-squares line fitted on the gold train pairs. AugSBERT (Thakur
et al., 2021) does the same with a cross-encoder as teacher. Here the teacher is the bi-encoder
that the cross-encoder starts from, because it still knows the sources the train split lacks.
Only train-split text is used. The output has the train file's 7 columns (genre "silver"), gold
rows first, so the preset's reader takes it unchanged.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    from xenc_jax.bi_encoder import BiEncoder
    from xenc_jax.train.config import resolve_model

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--data", default=os.environ.get("XENC_DATA_DIR", str(REPO.parent / "shared" / "data")))
    ap.add_argument("--neighbours", type=int, default=1, help="silver partners per sentence")
    ap.add_argument("--max-rank", type=int, default=3,
                    help="look only at this many nearest sentences (a sentence may get fewer partners)")
    args = ap.parse_args()
    with open(Path(args.data) / "stsbenchmark" / "sts-train.csv", encoding="utf-8") as f:
        rows = [c[:7] for c in (line.rstrip("\n").split("\t") for line in f) if len(c) >= 7]
    sents = sorted({c[5] for c in rows} | {c[6] for c in rows})
    index = {s: i for i, s in enumerate(sents)}
    emb = np.asarray(BiEncoder(resolve_model("all-MiniLM-L6-v2")).encode(sents))  # float32, as measured
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    a = np.array([index[c[5]] for c in rows])
    b = np.array([index[c[6]] for c in rows])
    slope, intercept = np.polyfit(np.sum(emb[a] * emb[b], 1), [float(c[4]) for c in rows], 1)
    partners = set(zip(a.tolist(), b.tolist())) | set(zip(b.tolist(), a.tolist()))
    sim = emb @ emb.T
    np.fill_diagonal(sim, -2.0)
    silver, seen = [], set()
    for i in range(len(sents)):
        taken = 0
        for j in np.argsort(-sim[i])[:args.max_rank]:
            if taken == args.neighbours:
                break
            j = int(j)
            key = (min(i, j), max(i, j))
            if (i, j) in partners or key in seen or sents[i].lower() == sents[j].lower():
                continue
            seen.add(key)
            silver.append((i, j, float(np.clip(slope * sim[i, j] + intercept, 0.0, 5.0))))
            taken += 1
    with open(args.out, "w", encoding="utf-8") as f:
        for c in rows:
            f.write("\t".join(c) + "\n")
        for i, j, score in silver:
            f.write("\t".join(["silver", "nn", "0", "0", f"{score:.4f}", sents[i], sents[j]]) + "\n")
    print(f"{len(rows)} gold + {len(silver)} silver pairs -> {args.out} "
          f"(score = {slope:.3f} * cosine + {intercept:.3f}, clipped to 0-5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
