"""The rows `mining.mine_hard_negatives` returns, in sentence-transformers' output formats
(triplet, n-tuple, labeled-pair, labeled-list; scores or labels), and its printed summary.

Inputs are per unique query: its positives' corpus ids, the selected negatives' ids and scores
[Q, W] (-inf where no negative was found); positive scores are flat over (query, positive) pairs
in that order. Every format is built as ST 6.3 builds it, row for row.
"""
from __future__ import annotations

from collections import Counter

import numpy as np


def build(fmt: str, output_scores: bool, anchor_col: str, positive_col: str, queries: list, corpus: list,
          positive_ids: list, pos_scores: np.ndarray, neg_ids: np.ndarray, neg_scores: np.ndarray,
          n_rows: int) -> tuple[dict, dict]:
    """-> (columns {name: list}, summary for print_summary)."""
    n_pos = np.array([len(p) for p in positive_ids], np.int64)
    pair_q = np.repeat(np.arange(len(queries)), n_pos)
    flat_pos = [p for row in positive_ids for p in row]
    kept = neg_scores != -np.inf
    pair_kept = kept[pair_q]  # each query's negatives, once per positive
    if fmt == "triplet":
        j, c = np.nonzero(pair_kept)  # row-major: each pair's negatives in rank order
        q, negs = pair_q[j], neg_scores[pair_q[j], c]
        cols = {anchor_col: [queries[i] for i in q.tolist()],
                positive_col: [corpus[flat_pos[i]] for i in j.tolist()],
                "negative": [corpus[i] for i in neg_ids[q, c].tolist()]}
        if output_scores:
            cols["scores"] = np.stack([pos_scores[j], negs], 1).tolist()
        summary = (negs, pos_scores[j] - negs, pair_kept.size)
    elif fmt == "n-tuple":
        j = np.flatnonzero(pair_kept.all(1))
        q = pair_q[j]
        cols = {anchor_col: [queries[i] for i in q.tolist()],
                positive_col: [corpus[flat_pos[i]] for i in j.tolist()],
                **{f"negative_{k + 1}": [corpus[i] for i in neg_ids[q, k].tolist()] for k in range(neg_ids.shape[1])}}
        if output_scores:
            cols["scores"] = np.concatenate([pos_scores[j, None], neg_scores[q]], 1).tolist()
        negs = neg_scores[q]
        summary = (negs.ravel(), (pos_scores[j, None] - negs).ravel(), len(pair_q))
    elif fmt == "labeled-list":
        j = np.flatnonzero(pair_kept.any(1))
        q = pair_q[j]
        cols = {anchor_col: [queries[i] for i in q.tolist()],
                positive_col: [[corpus[flat_pos[p]]] + [corpus[i] for i in neg_ids[i_q][kept[i_q]].tolist()]
                               for p, i_q in zip(j.tolist(), q.tolist())]}
        if output_scores:
            cols["scores"] = [[float(pos_scores[p])] + neg_scores[i_q][kept[i_q]].tolist()
                              for p, i_q in zip(j.tolist(), q.tolist())]
        else:
            cols["labels"] = [[1] + [0] * int(kept[i_q].sum()) for i_q in q.tolist()]
        summary = _pair_summary(pos_scores, neg_scores, pair_q, pair_kept, len(pair_q))
    else:
        cols = _labeled_pairs(output_scores, anchor_col, positive_col, queries, corpus, positive_ids, pos_scores,
                              neg_ids, neg_scores, kept)
        summary = _pair_summary(pos_scores, neg_scores, pair_q, pair_kept,
                                len(queries) * neg_ids.shape[1] + n_rows)
    return cols, {"positive": pos_scores, "negative": summary[0], "difference": summary[1],
                  "possible": summary[2], "rows": len(next(iter(cols.values())))}


def _pair_summary(pos_scores, neg_scores, pair_q, pair_kept, possible):
    negs = neg_scores[pair_q][pair_kept]
    return negs, np.repeat(pos_scores, pair_kept.sum(1)) - negs, possible


def _labeled_pairs(output_scores, anchor_col, positive_col, queries, corpus, positive_ids, pos_scores,
                   neg_ids, neg_scores, kept) -> dict:
    """Per query: its positives (label 1), then its negatives (label 0); or the scores."""
    cols = {anchor_col: [], positive_col: [], "score" if output_scores else "label": []}
    anchors, docs, last = cols[anchor_col], cols[positive_col], list(cols.values())[2]
    p = 0
    for qi, query in enumerate(queries):
        for pid in positive_ids[qi]:
            anchors.append(query)
            docs.append(corpus[pid])
            last.append(float(pos_scores[p]) if output_scores else 1)
            p += 1
        for nid, score in zip(neg_ids[qi][kept[qi]].tolist(), neg_scores[qi][kept[qi]].tolist()):
            anchors.append(query)
            docs.append(corpus[nid])
            last.append(score if output_scores else 0)
    return cols


def print_summary(summary: dict, skipped: Counter, ranks: np.ndarray, o, n_corpus: int) -> None:
    """ST's table (positive / negative / difference scores), what each filter skipped, how many
    rows lack negatives; and where each anchor's hardest positive ranks over the whole corpus."""
    fmt = "{:<6} {:>14} {:>14} {:>14}"
    print(fmt.format("Metric", "Positive", "Negative", "Difference"))
    print(fmt.format("Count", f"{len(summary['positive']):,}", f"{len(summary['negative']):,}", ""))
    stats = [("Mean", np.mean), ("Median", np.median), ("Std", lambda x: np.std(x, ddof=1) if len(x) > 1 else np.nan),
             ("Min", np.min), ("25%", lambda x: np.quantile(x, 0.25)), ("50%", lambda x: np.quantile(x, 0.5)),
             ("75%", lambda x: np.quantile(x, 0.75)), ("Max", np.max)]
    for name, f in stats:
        cells = [f"{f(summary[k]):.4f}" if len(summary[k]) else "-" for k in ("positive", "negative", "difference")]
        print(fmt.format(name, *cells))
    left = skipped["candidates"]
    for name in ("absolute_margin", "relative_margin", "max_score", "min_score"):
        if skipped[name]:
            print(f"Skipped {skipped[name]:,} potential negatives ({skipped[name] / max(left, 1):.2%}) due to the "
                  f"{name} of {getattr(o, name)}.")
        if name in ("absolute_margin", "relative_margin"):
            left -= skipped[name]  # ST's ratios: margins first, then the score bounds of what is left
    missing = summary["possible"] - summary["rows"]
    if missing > 0:
        print(f"Could not find enough negatives for {missing} samples ({missing / summary['possible']:.2%}). "
              "Consider adjusting range_max, range_min, the margins or max_score to find more valid negatives.")
        print(shortfall_hint(skipped, o))
    print(f"Hardest positive's rank over the {n_corpus:,} corpus texts: median {np.median(ranks):.0f}, "
          f"mean {np.mean(ranks):.1f}, ranked first for {np.mean(ranks == 1):.1%} of the anchors.")


# How to loosen each filter of mining_core.select (name -> advice given its current value)
_LOOSEN = {
    "absolute_margin": "lower {flag} (now {v}) or leave it out: a negative must score at least {v} below the "
                       "anchor's hardest positive",
    "relative_margin": "lower {flag} (now {v}) or leave it out: a negative must score below (1 - {v}) x the "
                       "anchor's hardest positive (a model that scores positives and negatives alike keeps none)",
    "max_score": "raise {flag} (now {v}) or leave it out",
    "min_score": "lower {flag} (now {v}) or leave it out",
}


def shortfall_hint(skipped: Counter, o, flag=lambda name: name) -> str:
    """Why anchors got fewer negatives than asked: each filter that removed candidates (what share
    of the candidates it saw, the margins first as select applies them) with how to loosen it; when
    none removed any, the range_min..range_max window held too few candidates. `flag` names an
    option as the caller's user spells it (the CLI: --relative-margin)."""
    left, parts = skipped["candidates"], []
    for name in ("absolute_margin", "relative_margin", "max_score", "min_score"):
        if skipped[name]:
            v = getattr(o, name)
            parts.append(f"{name} removed {skipped[name]:,} of {left:,} candidates ({skipped[name] / max(left, 1):.0%}): "
                         + _LOOSEN[name].format(flag=flag(name), v=v))
            left -= skipped[name]
    if not parts:
        return (f"No filter removed candidates: the range {flag('range_min')}={o.range_min}..{flag('range_max')}="
                f"{o.range_max} (after the anchor itself and its positives are set aside) held fewer than "
                f"num_negatives={o.num_negatives}; raise {flag('range_max')} or lower {flag('range_min')}.")
    return "Too few negatives left because " + "; ".join(parts) + "."
