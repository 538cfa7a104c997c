"""Silver pairs: more training pairs for a pair-regression cross-encoder, scored by a bi-encoder.

Each distinct text of the training pairs is paired with its nearest other training texts by the
teacher's cosine (at most `per_text` partners among its `max_rank` nearest), skipping gold pairs
(either order), case-insensitive duplicates and pairs already taken. A pair's label is its cosine
mapped by the least-squares line fitted on the gold pairs (cosine -> label), clipped to the gold
labels' range. Only the training texts and the teacher are used: no dev or test text.

This is AugSBERT (Thakur et al., 2021) turned around: there a cross-encoder labels pairs for a
bi-encoder. Here the bi-encoder the cross-encoder starts from is the teacher, because it still
scores the sources a small training split lacks (STS-B: docs/benchmarks.md, fourth and fifth
sessions). sentence-transformers has no such step (its AugSBERT examples are scripts), so it is
written here; the top-k search is `xenc_jax.search.semantic_search`.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SilverConfig:
    """per_text: silver partners per distinct training text (0 = no silver pairs).
    max_rank: look only at this many nearest texts (a text may get fewer partners).
    teacher: bi-encoder that scores the pairs (ST folder, HF folder or hub id); "" = the model
      being trained, with its sentence-transformers pooling (mean for a plain HF folder).
    batch_size: teacher encoding batch size."""
    per_text: int = 0
    max_rank: int = 3
    teacher: str = ""
    batch_size: int = 64


def check(cfg: SilverConfig) -> str | None:
    """None, or what is wrong with the silver settings themselves."""
    for name in ("per_text", "max_rank", "batch_size"):
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "per_text" else 1):
            return f"silver.{name} must be a {'non-negative' if name == 'per_text' else 'positive'} int, got {v!r}"
    if cfg.per_text > cfg.max_rank:
        return f"silver.per_text={cfg.per_text} exceeds silver.max_rank={cfg.max_rank} (the texts it looks at)"
    return None


@dataclasses.dataclass
class SilverPairs:
    texts: list            # [(text1, text2)]
    labels: list           # floats, in the gold labels' units (after label_scale)
    slope: float
    intercept: float

    def __len__(self):
        return len(self.texts)


def mine(texts: Sequence[tuple[str, str]], labels: Sequence[float],
         embed: Callable[[list[str]], np.ndarray], per_text: int, max_rank: int) -> SilverPairs:
    """Silver pairs for gold `texts`/`labels`; `embed(list of str) -> [n, dim]` is the teacher."""
    from ..search import pairwise_similarity, semantic_search
    if len(texts) < 2:
        raise ValueError(f"silver pairs need at least 2 gold pairs to fit the label line, got {len(texts)}")
    sents = sorted({t for pair in texts for t in pair})
    index = {s: i for i, s in enumerate(sents)}
    emb = np.asarray(embed(sents), np.float32)
    a = np.array([index[p[0]] for p in texts])
    b = np.array([index[p[1]] for p in texts])
    # The same cosine as the search scores below, so the line maps like for like.
    gold_cos = np.asarray(pairwise_similarity(emb[a], emb[b], "cosine"), np.float64)
    y = np.asarray(labels, np.float64)
    if np.ptp(gold_cos) == 0 or np.ptp(y) == 0:
        raise ValueError("silver pairs: the gold pairs' cosines or labels are all equal, so no line maps "
                         "cosine to label; silver pairs need graded labels (a regression task)")
    slope, intercept = np.polyfit(gold_cos, y, 1)
    lo, hi = float(y.min()), float(y.max())
    gold = set(zip(a.tolist(), b.tolist())) | set(zip(b.tolist(), a.tolist()))
    # One extra hit: the text itself (score 1) comes back among its own nearest.
    hits = semantic_search(emb, emb, top_k=min(max_rank + 1, len(sents)), score_function="cosine")
    out_texts, out_labels, seen = [], [], set()
    for i, row in enumerate(hits):
        taken = 0
        for h in [h for h in row if h["corpus_id"] != i][:max_rank]:
            if taken == per_text:
                break
            j = h["corpus_id"]
            key = (min(i, j), max(i, j))
            if (i, j) in gold or key in seen or sents[i].lower() == sents[j].lower():
                continue
            seen.add(key)
            out_texts.append((sents[i], sents[j]))
            out_labels.append(float(np.clip(slope * h["score"] + intercept, lo, hi)))
            taken += 1
    return SilverPairs(out_texts, out_labels, float(slope), float(intercept))


def for_config(cfg, gold) -> SilverPairs:
    """Silver pairs for a TrainConfig `cfg` and its whole gold training split `gold` (Examples).
    The teacher runs on this process's devices; every process gets the same pairs."""
    from ..bi_encoder import BiEncoder
    from ..hf.hub import resolve_packaged
    enc = BiEncoder(resolve_packaged(cfg.silver.teacher or cfg.model))
    enc.max_seq_length = min(enc.max_seq_length, cfg.max_length)
    pairs = mine(gold.texts, gold.labels, lambda s: enc.encode(list(s), batch_size=cfg.silver.batch_size),
                 cfg.silver.per_text, cfg.silver.max_rank)
    log.info("%d silver pairs from %d gold pairs (label = %.4f * cosine + %.4f, clipped to the gold range)",
             len(pairs), len(gold), pairs.slope, pairs.intercept)
    return pairs


def shard(pairs: SilverPairs, n_gold: int, process_index: int, process_count: int):
    """(texts, labels) of this process: the rows it would read from a file holding the n_gold gold
    rows and then the silver rows (row i -> process i % process_count, as `read_examples`)."""
    start = (process_index - n_gold) % process_count
    return pairs.texts[start::process_count], pairs.labels[start::process_count]


def write_jsonl(path, pairs: SilverPairs, meta: dict) -> None:
    """First line {"meta": ...}, then {"text1", "text2", "label"} per pair (JSON: texts may hold
    tabs). Written to a temporary name, then renamed: a killed process leaves no partial file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps({"meta": meta}) + "\n")
        for (t1, t2), y in zip(pairs.texts, pairs.labels):
            f.write(json.dumps({"text1": t1, "text2": t2, "label": y}) + "\n")
    os.replace(tmp, path)


def read_jsonl(path, meta: dict) -> SilverPairs | None:
    """The pairs saved by `write_jsonl` for the same `meta`; None when there is no such file (or an
    empty one) or it was written for other settings. A damaged or edited file is a DataError naming
    the line (never pairs that differ from the file, never a bare JSON or type error)."""
    from .rows import DataError, check_text, get_column, json_lines, number
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return None
    fix = "; delete it to mine the silver pairs again"
    lines = json_lines(path)
    n, head = next(lines, (1, {}))
    if isinstance(head, DataError):
        raise DataError(f"{head}{fix}")
    if not isinstance(head, dict):
        raise DataError(f"{path}:{n}: the first line is not {{\"meta\": ...}}{fix}")
    if head.get("meta") != json.loads(json.dumps(meta)):
        return None
    texts, labels = [], []
    for n, row in lines:
        try:
            if isinstance(row, DataError):
                raise row
            where = f"{path}:{n}"
            if not isinstance(row, dict):
                raise DataError(f"{where}: a silver pair is a JSON object, got {type(row).__name__}")
            texts.append(tuple(check_text(get_column(row, k, where), k, where) for k in ("text1", "text2")))
            labels.append(number(get_column(row, "label", where), where))
        except DataError as e:
            raise DataError(f"{e}{fix}") from None
    return SilverPairs(texts, labels, float("nan"), float("nan"))


def meta_for(cfg, n_gold: int) -> dict:
    """What the pairs depend on: a saved file is reused on resume only when all of it matches.
    train.extra_columns is left out: a check that never changes the rows read (see digest.py)."""
    train = {k: v for k, v in dataclasses.asdict(cfg.train).items() if k != "extra_columns"}
    return {"silver": dataclasses.asdict(cfg.silver), "model": cfg.model, "max_length": cfg.max_length,
            "train": train, "gold_pairs": n_gold}
