"""Spearman per STS-B source (genre, file) for a trained cross-encoder, next to the zero-shot
bi-encoder it was trained from (cosine of all-MiniLM-L6-v2's mean-pooled embeddings).

    python scripts/stsb_by_genre.py /tmp/xt/stsb_jax/final [--splits dev,test]

Why: STS-B's dev and test splits hold sources that the train split lacks (answers-forums in dev;
answer-answer in test; track5.en-en in both). This shows where a fine-tuned model gains on the
train sources and loses what the starting model knew about the others.
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def read_split(data_dir: Path, split: str) -> list[tuple]:
    """(source, year, score, sentence1, sentence2) per row; the first 7 tab-separated columns."""
    rows = []
    with open(data_dir / f"sts-{split}.csv", encoding="utf-8") as f:
        for line in f:
            c = line.rstrip("\n").split("\t")
            if len(c) >= 7:
                rows.append((c[1], c[2], float(c[4]), c[5], c[6]))
    return rows


def main() -> int:
    from xenc_jax.bi_encoder import BiEncoder
    from xenc_jax.cross_encoder import CrossEncoder
    from xenc_jax.train import evaluation as M
    from xenc_jax.train.config import resolve_model

    ap = argparse.ArgumentParser()
    ap.add_argument("model", help="a cross-encoder directory (e.g. the `final` export of xenc train)")
    ap.add_argument("--splits", default="dev,test")
    ap.add_argument("--data", default=os.environ.get("XENC_DATA_DIR", str(REPO.parent / "shared" / "data")))
    args = ap.parse_args()
    data = Path(args.data) / "stsbenchmark"
    train_sources = collections.Counter((r[0], r[1]) for r in read_split(data, "train"))
    ce, bi = CrossEncoder(args.model), BiEncoder(resolve_model("all-MiniLM-L6-v2"))
    print(f"{'split':5} {'source':28} {'pairs':>5} {'in train':>8} {'cross':>7} {'bi 0-shot':>9}")
    for split in args.splits.split(","):
        rows = read_split(data, split)
        gold = np.array([r[2] for r in rows])
        cross = np.asarray(ce.predict([(r[3], r[4]) for r in rows], batch_size=64))
        a = np.asarray(bi.encode([r[3] for r in rows]))
        b = np.asarray(bi.encode([r[4] for r in rows]))
        cos = bi.similarity_pairwise(a, b)
        groups = collections.defaultdict(list)
        for i, r in enumerate(rows):
            groups[(r[0], r[1])].append(i)
        for key, idx in [(("all", ""), list(range(len(rows))))] + sorted(groups.items()):
            name = f"{key[0]} {key[1]}".strip()
            seen = "-" if key[0] == "all" else ("yes" if key in train_sources else "no")
            print(f"{split:5} {name:28} {len(idx):5d} {seen:>8} {M.spearman(cross[idx], gold[idx]):7.4f} "
                  f"{M.spearman(cos[idx], gold[idx]):9.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
