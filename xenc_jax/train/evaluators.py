"""Evaluators run during and after training: score their data with the current params through
the jitted eval step (fixed-shape buckets, as scoring), then call the metric functions of
evaluation.py on the host.

  CorrelationEvaluator      pairs + gold scores  -> pearson, spearman   (ST CrossEncoderCorrelationEvaluator)
  ClassificationEvaluator   pairs + class labels -> accuracy, f1, average_precision
  RerankingEvaluator        query + candidates + grades -> mrr@10, ndcg@10, map
  EmbeddingSimilarityEvaluator (bi-encoder)      -> cosine pearson, spearman

A NaN or inf model output is an error (runner.check_outputs, as in predict / encode), never a NaN
metric: the training loop stops there without saving that step (loop.Run.run_eval).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import numpy as np

from ..batching import BucketConfig, make_batches, scatter_results, tokenize_pairs, tokenize_texts
from ..runner import InputError, NonFiniteOutput, check_outputs
from . import evaluation as M
from .data import DataError, Examples, read_examples


@dataclasses.dataclass
class Scorer:
    """Runs `eval_step(params, batch)` over bucketed batches and restores input order.

    eval_step: step.make_eval_step of a score_fn / embed_fn (model_fns.py), the functions
    inference and training run, over batching.Batch.arrays() (0-based positions, the model's
    offset added inside): outputs [B, P, ...], as scatter_results takes them."""
    eval_step: Callable
    plan: object                 # sharding.ShardingPlan
    tokenizer: object
    max_length: int
    batch_size: int = 64
    bucket_lengths: tuple = (32, 64, 128, 256)
    do_lower_case: bool = False  # texts (bi-encoder): the model's sentence_bert_config setting
    encode_pairs: Callable | None = None   # pairs -> Encodings (chat_format.pair_encoder); None: text pairs
    encode_texts: Callable | None = None   # texts -> Encodings (bi_head.BiHead.text_encoder); None: plain texts
    dtype: object = np.float32   # the compute dtype, named when an output is not finite

    def _run(self, params, encodings, what: str) -> np.ndarray:
        """Outputs in input order; NonFiniteOutput naming `what`[i] for a NaN / inf one."""
        if not encodings:
            return np.zeros((0, 1), np.float32)
        dp = getattr(self.plan, "data_parallel_size", 1)
        rows = -(-self.batch_size // dp) * dp
        cfg = BucketConfig(lengths=self.bucket_lengths, batch_size=rows, tokens_per_batch=None)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        pi, pc = jax.process_index(), jax.process_count()
        outs = []
        for b in make_batches(encodings, cfg, self.max_length, pad):
            n = b.input_ids.shape[0] // pc  # each process supplies its slice of the rows
            arrays = {k: v[pi * n:(pi + 1) * n] for k, v in b.arrays().items()}
            outs.append((b, np.asarray(jax.device_get(self.eval_step(params, self.plan.place_batch(arrays))))))
        return check_outputs(scatter_results(outs, len(encodings)), 0, what, self.dtype)

    def logits(self, params, pairs) -> np.ndarray:
        encs = (tokenize_pairs(self.tokenizer, pairs, self.max_length) if self.encode_pairs is None
                else self.encode_pairs(pairs))
        return self._run(params, encs, "pairs")

    def embed(self, params, texts) -> np.ndarray:
        encs = (tokenize_texts(self.tokenizer, texts, self.max_length, self.do_lower_case) if self.encode_texts is None
                else self.encode_texts(texts))
        return self._run(params, encs, "texts")


class NonFiniteEvaluation(NonFiniteOutput):
    """An evaluator got a NaN / inf model output during or after training (the message says the
    step and which checkpoint is kept)."""


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


class CorrelationEvaluator:
    default_metric = "spearman"

    def __init__(self, examples: Examples, name: str = "correlation"):
        if examples.labels is None:
            raise DataError(f"{examples.source}: a correlation evaluator needs gold scores (label_column)")
        self.pairs = [tuple(t[:2]) for t in examples.texts]
        self.gold = np.asarray(examples.labels, np.float64)
        self.name = name

    def __call__(self, scorer: Scorer, params) -> dict[str, float]:
        scores = _sigmoid(scorer.logits(params, self.pairs)[:, 0].astype(np.float64))
        return {"pearson": M.pearson(scores, self.gold), "spearman": M.spearman(scores, self.gold)}


class ClassificationEvaluator:
    default_metric = "accuracy"

    def __init__(self, examples: Examples, num_labels: int, name: str = "classification"):
        if examples.labels is None:
            raise DataError(f"{examples.source}: a classification evaluator needs labels")
        self.pairs = [tuple(t[:2]) for t in examples.texts]
        self.labels = np.asarray(examples.labels).astype(np.int64)
        self.num_labels = num_labels
        self.name = name

    def __call__(self, scorer: Scorer, params) -> dict[str, float]:
        logits = scorer.logits(params, self.pairs).astype(np.float64)
        if self.num_labels == 1:
            s = _sigmoid(logits[:, 0])
            acc, acc_thr = M.best_accuracy_and_threshold(s, self.labels)
            f1, prec, rec, f1_thr = M.best_f1_and_threshold(s, self.labels)
            return {"accuracy": acc, "accuracy_threshold": acc_thr, "f1": f1, "precision": prec,
                    "recall": rec, "f1_threshold": f1_thr,
                    "average_precision": M.average_precision(self.labels, s)}
        pred = logits.argmax(-1)
        return {"accuracy": M.accuracy(self.labels, pred),
                "f1_macro": M.f1_score(self.labels, pred, average="macro",
                                       labels=list(range(self.num_labels)))}


class RerankingEvaluator:
    default_metric = "ndcg@10"

    def __init__(self, examples: Examples, k: int = 10, name: str = "reranking"):
        if examples.kind != "lists" or examples.labels is None:
            raise DataError(f"{examples.source}: a reranking evaluator needs lists data with labels")
        self.samples = [(q, docs, np.asarray(y, np.float64)) for (q, docs), y in zip(examples.texts, examples.labels)]
        self.k, self.name = k, name

    def __call__(self, scorer: Scorer, params) -> dict[str, float]:
        pairs = [(q, d) for q, docs, _ in self.samples for d in docs]
        try:
            scores = scorer.logits(params, pairs)[:, 0]
        except InputError as e:   # pairs[k] counts every list's documents: name the list and the document
            if e.index is None:
                raise
            qi = int(np.searchsorted(np.cumsum([len(docs) for _, docs, _ in self.samples]), e.index, side="right"))
            di = e.index - sum(len(docs) for _, docs, _ in self.samples[:qi])
            raise e.relabeled(f"(the query of list {qi}, its documents[{di}])") from None
        out, start = [], 0
        for _, docs, _ in self.samples:
            out.append(scores[start:start + len(docs)])
            start += len(docs)
        return M.reranking_metrics([y for *_, y in self.samples], out, k=self.k)


class EmbeddingSimilarityEvaluator:
    default_metric = "spearman"

    def __init__(self, examples: Examples, name: str = "embedding_similarity"):
        if examples.labels is None:
            raise DataError(f"{examples.source}: an embedding-similarity evaluator needs gold scores")
        self.a = [t[0] for t in examples.texts]
        self.b = [t[1] for t in examples.texts]
        self.gold = np.asarray(examples.labels, np.float64)
        self.name = name

    def __call__(self, scorer: Scorer, params) -> dict[str, float]:
        ea, eb = (self._embed(scorer, params, texts, side) for side, texts in enumerate((self.a, self.b)))
        ea /= np.maximum(np.linalg.norm(ea, axis=-1, keepdims=True), 1e-12)
        eb /= np.maximum(np.linalg.norm(eb, axis=-1, keepdims=True), 1e-12)
        cos = np.sum(ea * eb, axis=-1)
        return {"pearson_cosine": M.pearson(cos, self.gold), "spearman_cosine": M.spearman(cos, self.gold)}

    @staticmethod
    def _embed(scorer: Scorer, params, texts: list, side: int) -> np.ndarray:
        try:
            return scorer.embed(params, texts).astype(np.float64)
        except InputError as e:   # texts[i] of either side: name the pair and its text
            if e.index is None:
                raise
            raise e.relabeled(f"pairs[{e.index}][{side}]") from None


def build_evaluator(kind: str, data, num_labels: int, name: str = ""):
    """From an EvalConfig's kind and DataSource (read fully on every process)."""
    ex = read_examples(data)
    name = name or kind
    if kind == "correlation":
        return CorrelationEvaluator(ex, name)
    if kind == "classification":
        return ClassificationEvaluator(ex, num_labels, name)
    if kind == "reranking":
        return RerankingEvaluator(ex, name=name)
    if kind == "embedding_similarity":
        ev = EmbeddingSimilarityEvaluator(ex, name)
        ev.default_metric = "spearman_cosine"
        return ev
    raise DataError(f"unknown evaluator kind {kind!r}")
