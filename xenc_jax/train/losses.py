"""Training losses: pure, jit-safe, fixed-shape; each mirrors one sentence-transformers (ST) loss.

Conventions shared by every function here:

* Inputs are arrays of a fixed shape (the batch is padded to a known size); an optional validity
  ``mask`` (bool or 0/1) marks the real items. A masked item contributes nothing to the value or
  to the gradient, whatever numbers sit in its slot (NaN/inf included): masked inputs are replaced
  *before* any arithmetic, because ``jnp.where`` after the fact still lets NaN into the gradient.
* Every loss reduces to a scalar mean over valid items (or the ST-specific reduction noted in
  its docstring). With no valid item at all the loss is 0, never NaN.
* All math is in float32, whatever the input dtype (bf16 logits are upcast first: softmax and
  log-sigmoid in bf16 lose the small differences ranking losses live on).
* Options that change the traced computation (k, scheme, activation_fn, ...) are Python values:
  bind them with ``functools.partial`` before ``jax.jit``.

Cross-encoder losses take model logits; bi-encoder losses take embeddings. Under ``jax.jit``
with globally sharded arrays, the bi-encoder similarity matrix spans the global batch, so
in-batch negatives are global without any explicit all-gather.

ListNet and ListMLE call ``rax`` (0.4.0): its ``softmax_loss`` / ``listmle_loss`` are exactly
ST's formulas with the masking we need and are tested against ST here. LambdaLoss/RankNet are
written directly: rax's lambdaweights scale by the padded list size and handle top-k
differently from ST, so they would not match ST's LambdaLoss. rax's ``*_t12n`` transforms are
not used (they call ``jax.util``, removed in current JAX).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import jax
import jax.numpy as jnp
import rax

Array = jax.Array
ActivationFn = Callable[[Array], Array] | None

__all__ = [
    "binary_cross_entropy_loss",
    "cos_normalize",
    "cosent_loss",
    "cross_encoder_mnrl_loss",
    "lambda_loss",
    "list_mle_loss",
    "list_net_loss",
    "margin_mse_loss",
    "matryoshka_loss",
    "mse_loss",
    "multiple_negatives_ranking_loss",
    "rank_net_loss",
    "softmax_cross_entropy_loss",
]


# --------------------------------------------------------------------------- helpers
def _f32(x) -> Array:
    return jnp.asarray(x).astype(jnp.float32)


def _valid(mask, shape) -> Array:
    """Bool mask of `shape`; None means all valid."""
    if mask is None:
        return jnp.ones(shape, dtype=bool)
    return jnp.broadcast_to(jnp.asarray(mask).astype(bool), shape)


def _activate(x: Array, valid: Array, activation_fn: ActivationFn) -> Array:
    """Upcast, zero masked slots (so NaN/inf there cannot leak), then apply the activation."""
    x = jnp.where(valid, _f32(x), 0.0)
    return x if activation_fn is None else activation_fn(x)


def _masked_mean(values: Array, valid: Array) -> Array:
    total = jnp.sum(jnp.where(valid, values, 0.0))
    return total / jnp.maximum(jnp.sum(valid), 1).astype(jnp.float32)


def cos_normalize(x: Array) -> Array:
    """L2-normalize the last axis like torch ``F.normalize`` (eps 1e-12), in float32."""
    x = _f32(x)
    norm = jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True))
    return x / jnp.maximum(norm, 1e-12)


def _sim(a: Array, b: Array) -> Array:
    # HIGHEST: on TPU the default fp32 matmul uses bf16 passes, which would move a scale-20
    # softmax by more than the parity tolerance.
    return jnp.einsum("id,jd->ij", a, b, precision=jax.lax.Precision.HIGHEST)


# --------------------------------------------------------------------------- pointwise
def binary_cross_entropy_loss(logits, labels, mask=None, *, pos_weight=None,
                              activation_fn: ActivationFn = None) -> Array:
    """ST ``BinaryCrossEntropyLoss`` = torch ``BCEWithLogitsLoss(pos_weight)``, mean over valid.

    logits/labels/mask: any shape with the same number of elements ([B] or [B, 1]); labels are
    0/1 or soft targets in [0, 1]. ``activation_fn`` is applied to the logits first, as in ST
    (its default is identity).
    """
    labels = _f32(labels).reshape(-1)
    valid = _valid(None if mask is None else jnp.asarray(mask).reshape(-1), labels.shape)
    x = _activate(jnp.asarray(logits).reshape(-1), valid, activation_fn)
    y = jnp.where(valid, labels, 0.0)
    pw = 1.0 if pos_weight is None else _f32(pos_weight)
    # torch's stable form: (1 - y) x + (1 + (pw - 1) y) softplus(-x)
    per_item = (1.0 - y) * x + (1.0 + (pw - 1.0) * y) * jax.nn.softplus(-x)
    return _masked_mean(per_item, valid)


def softmax_cross_entropy_loss(logits, labels, mask=None, *,
                               activation_fn: ActivationFn = None) -> Array:
    """ST ``CrossEntropyLoss`` (num_labels > 1): logits [B, C], integer labels [B], mask [B]."""
    logits = jnp.asarray(logits)
    labels = jnp.asarray(labels).reshape(-1).astype(jnp.int32)
    valid = _valid(mask, labels.shape)
    x = _activate(logits, valid[:, None], activation_fn)
    logp = jax.nn.log_softmax(x, axis=-1)
    safe_labels = jnp.where(valid, labels, 0)
    per_item = -jnp.take_along_axis(logp, safe_labels[:, None], axis=-1)[:, 0]
    return _masked_mean(per_item, valid)


def mse_loss(logits, labels, mask=None, *, activation_fn: ActivationFn = None) -> Array:
    """ST cross-encoder ``MSELoss``: mean((act(logit) - label)^2); ST's activation default is
    identity (pass ``jax.nn.sigmoid`` to regress sigmoid scores onto [0, 1] targets)."""
    labels = _f32(labels).reshape(-1)
    valid = _valid(None if mask is None else jnp.asarray(mask).reshape(-1), labels.shape)
    x = _activate(jnp.asarray(logits).reshape(-1), valid, activation_fn)
    return _masked_mean((x - jnp.where(valid, labels, 0.0)) ** 2, valid)


def margin_mse_loss(scores, labels, mask=None, *, activation_fn: ActivationFn = None) -> Array:
    """ST cross-encoder ``MarginMSELoss``: MSE between student and teacher margins.

    scores: [B, 1+N] student logits, positive in column 0, negatives after it.
    labels: either teacher margins [B, N] (``gold(q,pos) - gold(q,neg_n)``; [B] when N == 1) or
        raw teacher scores [B, 1+N] (turned into margins like ST). Told apart by static shape.
    mask: None, [B] (rows) or [B, 1+N] (slots; a margin counts when both its positive and its
        negative are valid). The activation is applied to logits before the margin, as in ST.
    Mean over all valid (row, negative) margins, as torch ``MSELoss`` over the [B, N] matrix.
    """
    scores = jnp.asarray(scores)
    b, n1 = scores.shape
    labels = _f32(labels)
    if labels.shape == (b, n1):  # raw teacher scores -> margins (N vs N+1 columns: no ambiguity)
        labels = labels[:, :1] - labels[:, 1:]
    labels = labels.reshape(b, n1 - 1)
    if mask is not None and jnp.ndim(mask) == 1:
        mask = jnp.asarray(mask)[:, None]
    slot_valid = _valid(mask, (b, n1))
    s = _activate(scores, slot_valid, activation_fn)
    margin_valid = slot_valid[:, :1] & slot_valid[:, 1:]
    margins = s[:, :1] - s[:, 1:]
    return _masked_mean((margins - jnp.where(margin_valid, labels, 0.0)) ** 2, margin_valid)


def cross_encoder_mnrl_loss(scores, mask=None, *, scale: float | None = 10.0,
                            activation_fn: ActivationFn = jax.nn.sigmoid) -> Array:
    """ST cross-encoder ``MultipleNegativesRankingLoss`` on an already-scored candidate matrix.

    scores: [Q, 1+N] logits of (query, candidate) pairs, positive in column 0; the data pipeline
        decides which in-batch/hard negatives fill columns 1..N (ST samples ``num_negatives``
        in-batch negatives, then appends hard negatives; the order does not matter here).
    mask: None, [Q] or [Q, 1+N]; masked negatives leave the softmax, rows whose positive is
        masked leave the mean. Like ST: ``act(logits) * scale``, then CE with target 0.
    """
    scores = jnp.asarray(scores)
    if mask is not None and jnp.ndim(mask) == 1:
        mask = jnp.asarray(mask)[:, None]
    valid = _valid(mask, scores.shape)
    s = _activate(scores, valid, activation_fn)
    if scale:
        s = s * scale
    row_valid = valid[:, 0]
    # -inf drops masked negatives; whole invalid rows are zeroed so their logsumexp (and its
    # gradient) stays finite before the row is dropped from the mean.
    logits = jnp.where(valid, s, -jnp.inf)
    logits = jnp.where(row_valid[:, None], logits, 0.0)
    per_row = jax.nn.logsumexp(logits, axis=-1) - logits[:, 0]
    return _masked_mean(per_row, row_valid)


# --------------------------------------------------------------------------- listwise
# Layout: scores/labels [Q, L] (L = fixed list size), mask [Q, L]. A query with no valid slot
# is padding and leaves the mean (ST never builds such a row: it has no fixed list size).
def list_net_loss(scores, labels, mask=None, *, activation_fn: ActivationFn = None) -> Array:
    """ST ``ListNetLoss``: CE between softmax(labels) and softmax(scores) over valid slots,
    mean over queries. Computed by ``rax.softmax_loss`` with a softmax label_fn."""
    scores = jnp.asarray(scores)
    valid = _valid(mask, scores.shape)
    s = _activate(scores, valid, activation_fn)
    y = jnp.where(valid, _f32(labels), 0.0)
    return rax.softmax_loss(
        s, y, where=valid,
        label_fn=lambda a, where: jax.nn.softmax(a, axis=-1, where=where))


def list_mle_loss(scores, labels, mask=None, *, respect_input_order: bool = True,
                  activation_fn: ActivationFn = None) -> Array:
    """ST ``ListMLELoss``: Plackett-Luce negative log-likelihood of the target permutation.

    respect_input_order=True (ST's default): the target order is the slot order, labels are
    ignored (the data pipeline must put documents in relevance order). False: the order is by
    labels, descending; ties keep slot order (ST uses an unstable torch sort there, so ties
    are where the two can differ). Masked slots leave every normalizer. Via ``rax.listmle_loss``.
    """
    scores = jnp.asarray(scores)
    valid = _valid(mask, scores.shape)
    s = _activate(scores, valid, activation_fn)
    if respect_input_order:
        sort_key = jnp.broadcast_to(-jnp.arange(s.shape[-1], dtype=jnp.float32), s.shape)
    else:
        sort_key = jnp.where(valid, _f32(labels), 0.0)
    return rax.listmle_loss(s, sort_key, where=valid)


WeightingScheme = Literal["ndcg2pp", "ndcg2", "ndcg1", "lambdarank", "none"]


def _lambda_weights(scheme: str, gain: Array, discount: Array, mu: float) -> Array | float:
    """ST's weighting schemes (lambda_loss.py); gain [Q, L] in predicted order, discount [L]."""
    if scheme == "none":
        return 1.0
    if scheme == "ndcg1":
        return (gain / discount)[:, :, None]
    gain_diff = jnp.abs(gain[:, :, None] - gain[:, None, :])
    lambdarank = jnp.abs(1.0 / discount[:, None] - 1.0 / discount[None, :])[None] * gain_diff
    if scheme == "lambdarank":
        return lambdarank
    # NDCG-Loss2: |1/log2(d+1) - 1/log2(d+2)| for rank distance d = |i - j| >= 1, 0 on the diagonal.
    pos = jnp.arange(gain.shape[1])
    d = jnp.abs(pos[:, None] - pos[None, :]).astype(jnp.float32)
    delta = jnp.abs(1.0 / jnp.log2(jnp.maximum(d, 1.0) + 1.0) - 1.0 / jnp.log2(d + 2.0))
    ndcg2 = jnp.where(d > 0, delta, 0.0)[None] * gain_diff
    if scheme == "ndcg2":
        return ndcg2
    if scheme == "ndcg2pp":
        return mu * ndcg2 + lambdarank
    raise ValueError(f"unknown weighting scheme {scheme!r}")


def lambda_loss(scores, labels, mask=None, *, weighting_scheme: WeightingScheme = "ndcg2pp",
                mu: float = 10.0, k: int | None = None, sigma: float = 1.0, eps: float = 1e-10,
                reduction_log: Literal["natural", "binary"] = "binary",
                activation_fn: ActivationFn = None) -> Array:
    """ST ``LambdaLoss`` (default ``NDCGLoss2PPScheme(mu=10)``), same pairs, weights, reduction.

    Documents are sorted by predicted score (masked slots last); every pair (i, j) of valid
    documents with label_i > label_j (any valid pair for "ndcg1") and i or j in the top ``k``
    positions contributes ``-w_ij * log_sigmoid(sigma * (s_i - s_j))`` (divided by ln 2 for
    "binary"). Gains ``(2^max(label,0) - 1) / maxDCG@k``, discounts ``log2(1 + rank)``.
    Reduction as ST: the sum over contributing pairs of the whole batch divided by their count
    (pairs, not queries, are averaged). Ties in scores are ordered by slot (stable sort).
    """
    scores = jnp.asarray(scores)
    size = scores.shape[-1]  # list size L
    valid = _valid(mask, scores.shape)
    s = _activate(scores, valid, activation_fn)
    y = jnp.where(valid, _f32(labels), 0.0)

    order = jnp.argsort(jnp.where(valid, -s, jnp.inf), axis=-1, stable=True)
    s_sorted = jnp.take_along_axis(s, order, axis=-1)
    y_sorted = jnp.take_along_axis(y, order, axis=-1)
    v_sorted = jnp.take_along_axis(valid, order, axis=-1)

    pair_mask = v_sorted[:, :, None] & v_sorted[:, None, :]
    if weighting_scheme != "ndcg1":
        pair_mask &= (y_sorted[:, :, None] - y_sorted[:, None, :]) > 0
    k_eff = size if not k else min(k, size)  # ST: `self.k or max_docs` (k=0 means all)
    in_top = jnp.arange(size) < k_eff
    pair_mask &= (in_top[:, None] | in_top[None, :])[None]

    # Masked labels count as 0 gain, like ST's padding (-inf clamped to 0).
    y_gain = jnp.where(v_sorted, jnp.maximum(y_sorted, 0.0), 0.0)
    y_ideal = -jnp.sort(-jnp.where(valid, jnp.maximum(y, 0.0), 0.0), axis=-1)
    discount = jnp.log2(2.0 + jnp.arange(size, dtype=jnp.float32))
    max_dcg = jnp.sum(((2.0 ** y_ideal - 1.0) / discount)[:, :k_eff], axis=-1)
    gain = (2.0 ** y_gain - 1.0) / jnp.maximum(max_dcg, eps)[:, None]
    weights = _lambda_weights(weighting_scheme, gain, discount, mu)

    diffs = jnp.clip(s_sorted[:, :, None] - s_sorted[:, None, :], -1e8, 1e8)
    losses = weights * jax.nn.log_sigmoid(sigma * diffs)
    if reduction_log == "binary":
        losses = losses / math.log(2.0)
    total = jnp.sum(jnp.where(pair_mask, losses, 0.0))
    return -total / jnp.maximum(jnp.sum(pair_mask), 1).astype(jnp.float32)


def rank_net_loss(scores, labels, mask=None, *, k: int | None = None, sigma: float = 1.0,
                  eps: float = 1e-10, reduction_log: Literal["natural", "binary"] = "binary",
                  activation_fn: ActivationFn = None) -> Array:
    """ST ``RankNetLoss``: LambdaLoss with no weighting (pairwise logistic loss over pairs with
    label_i > label_j, mean over pairs of the batch)."""
    return lambda_loss(scores, labels, mask, weighting_scheme="none", k=k, sigma=sigma, eps=eps,
                       reduction_log=reduction_log, activation_fn=activation_fn)


# --------------------------------------------------------------------------- bi-encoder
def multiple_negatives_ranking_loss(anchors, positives, negatives=None, *, mask=None,
                                    negatives_mask=None, scale: float = 20.0,
                                    symmetric: bool = False) -> Array:
    """ST ``MultipleNegativesRankingLoss`` (InfoNCE with cosine similarity).

    anchors, positives: [B, D]; negatives: optional hard negatives [B, K, D].
    Candidates for every anchor are *all* positives of the batch plus *all* hard negatives of
    the batch (ST concatenates the document columns), so row i scores B * (1 + K) candidates
    with its own positive as target. mask [B] marks real rows (a padded row is neither an
    anchor nor anyone's candidate); negatives_mask [B, K] marks real hard negatives.
    symmetric=True: ST ``MultipleNegativesSymmetricRankingLoss`` (directions query_to_doc and
    doc_to_query, per-direction partition): the mean of the anchor->candidates CE and the
    positive->anchors CE (the reverse direction uses positives only, as ST).
    """
    b = anchors.shape[0]
    row_valid = _valid(mask, (b,))
    # Zero masked vectors *before* normalizing so NaN/inf in padded rows cannot reach the
    # gradient (a zero vector normalizes to zero: the eps keeps it finite).
    a = cos_normalize(jnp.where(row_valid[:, None], _f32(anchors), 0.0))
    p = cos_normalize(jnp.where(row_valid[:, None], _f32(positives), 0.0))
    cands, cand_valid = p, row_valid
    if negatives is not None:
        kneg = negatives.shape[1]
        neg_valid = row_valid[:, None] & _valid(negatives_mask, (b, kneg))
        n = cos_normalize(jnp.where(neg_valid[..., None], _f32(negatives), 0.0))
        # Column-major like ST's torch.cat(docs): all first negatives, then all second, ...
        n = jnp.swapaxes(n, 0, 1).reshape(kneg * b, -1)
        cands = jnp.concatenate([p, n], axis=0)
        cand_valid = jnp.concatenate([row_valid, neg_valid.T.reshape(-1)])

    def ce(sim: Array, col_valid: Array) -> Array:
        logits = jnp.where(col_valid[None, :], sim * scale, -jnp.inf)
        logits = jnp.where(row_valid[:, None], logits, 0.0)
        return jax.nn.logsumexp(logits, axis=-1)

    sim_q2d = _sim(a, cands)
    positive = jnp.diagonal(sim_q2d[:, :b]) * scale
    log_z = ce(sim_q2d, cand_valid)
    if symmetric:
        log_z = 0.5 * (log_z + ce(_sim(cands[:b], a), row_valid))
    return _masked_mean(log_z - positive, row_valid)


def cosent_loss(embeddings1, embeddings2, labels, mask=None, *, scale: float = 20.0) -> Array:
    """ST ``CoSENTLoss``: log(1 + sum_{label_i < label_j} exp(scale * (cos_i - cos_j))).

    embeddings1, embeddings2: [B, D]; labels [B] (any ordinal similarity); mask [B]. One sum
    over all pairs of the batch (not a mean), as ST; 0 when no pair has different labels.
    """
    labels = _f32(labels).reshape(-1)
    valid = _valid(mask, labels.shape)
    e1 = cos_normalize(jnp.where(valid[:, None], _f32(embeddings1), 0.0))
    e2 = cos_normalize(jnp.where(valid[:, None], _f32(embeddings2), 0.0))
    s = jnp.sum(e1 * e2, axis=-1) * scale
    y = jnp.where(valid, labels, 0.0)
    pair = (y[:, None] < y[None, :]) & valid[:, None] & valid[None, :]
    diffs = jnp.where(pair, s[:, None] - s[None, :], -jnp.inf).reshape(-1)
    return jax.nn.logsumexp(jnp.concatenate([jnp.zeros((1,), jnp.float32), diffs]))


def matryoshka_loss(loss_fn: Callable[..., Array], embeddings: Sequence[Array], *,
                    dims: Sequence[int], weights: Sequence[float] | None = None,
                    **loss_kwargs) -> Array:
    """ST ``MatryoshkaLoss``: sum_d weight_d * loss_fn(*[normalize(e[..., :d]) for e in
    embeddings], **loss_kwargs).

    Every array in ``embeddings`` (e.g. anchors, positives, hard negatives) is truncated on its
    last axis and L2-renormalized; labels and masks go in ``loss_kwargs`` and are passed
    through unchanged. ``dims`` are static; ST's random ``n_dims_per_step`` subset is not
    implemented (all dims every step, ST's default).
    """
    dims = tuple(int(d) for d in dims)
    weights = (1.0,) * len(dims) if weights is None else tuple(weights)
    if not dims or len(weights) != len(dims):
        raise ValueError("matryoshka: need >= 1 dim and one weight per dim")
    full = min(e.shape[-1] for e in embeddings)
    if any(d <= 0 or d > full for d in dims):
        raise ValueError(f"matryoshka dims {dims} must be in 1..{full}")
    total = jnp.zeros((), jnp.float32)
    for d, w in zip(dims, weights, strict=True):
        total = total + w * loss_fn(*[cos_normalize(e[..., :d]) for e in embeddings],
                                    **loss_kwargs)
    return total
