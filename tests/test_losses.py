"""Losses against the sentence-transformers loss classes themselves (fp32, 1e-5).

Cross-encoder ST losses score text pairs through a model; `_TableCE` is a stub CrossEncoder
whose "model" looks a (query, doc) pair up in a fixed score table, so the real ST forward (its
padding, sorting, masking and reductions) runs on exactly the logits we feed our functions.
Bi-encoder ST losses expose `compute_loss_from_embeddings`, called directly.
Where ST cannot express a mask (holes in a fixed layout, one missing hard negative), the
reference is ST on the compacted data or a direct torch transcription of the ST formula.
"""
from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rax
import torch
from sentence_transformers.cross_encoder import CrossEncoder
from sentence_transformers.cross_encoder import losses as ce_losses
from sentence_transformers.sentence_transformer import losses as st_losses
from sentence_transformers.sentence_transformer.losses.matryoshka import shrink

from forced_devices import run_on_devices
from xenc_jax.train import losses as L

TOL = {"rtol": 1e-5, "atol": 1e-5}


class _TableCE(CrossEncoder):
    """CrossEncoder stand-in: pair (str(q), str(d)) -> table[q, d] (a [NQ, ND] or [NQ, ND, C])."""

    def __init__(self, table: np.ndarray):
        torch.nn.Module.__init__(self)
        self.table = torch.tensor(table, dtype=torch.float32)

    @property
    def num_labels(self):
        return 1 if self.table.ndim == 2 else self.table.shape[-1]

    @property
    def device(self):
        return torch.device("cpu")

    def preprocess(self, pairs, prompt=None, task=None):
        return {"q": torch.tensor([int(q) for q, _ in pairs]),
                "d": torch.tensor([int(d) for _, d in pairs])}

    def forward(self, inputs):
        out = self.table[inputs["q"], inputs["d"]]
        return {"scores": out.reshape(len(out), -1)}


def _rng(seed=0):
    return np.random.default_rng(seed)


def _ids(n):
    return [str(i) for i in range(n)]


def _st(loss, inputs, labels):
    with torch.no_grad():
        return float(loss(inputs, labels))


# ------------------------------------------------------------------- pointwise losses
@pytest.mark.parametrize("pos_weight", [None, 3.0])
@pytest.mark.parametrize("act", [None, "sigmoid"])
def test_bce_matches_st(pos_weight, act):
    rng = _rng(1)
    b = 12
    logits = rng.normal(size=b).astype(np.float32) * 3
    labels = rng.integers(0, 2, b).astype(np.float32)
    labels[:3] = rng.uniform(size=3)  # soft targets too
    mask = rng.uniform(size=b) > 0.3
    kw = {"pos_weight": None if pos_weight is None else torch.tensor(pos_weight),
          "activation_fn": torch.nn.Sigmoid() if act else torch.nn.Identity()}
    jact = jax.nn.sigmoid if act else None
    for m in (None, mask):
        keep = np.ones(b, bool) if m is None else m
        st = _st(ce_losses.BinaryCrossEntropyLoss(_TableCE(logits[keep][None]), **kw),
                 [["0"] * keep.sum(), _ids(keep.sum())], torch.tensor(labels[keep]))
        ours = L.binary_cross_entropy_loss(logits, labels, m, pos_weight=pos_weight,
                                           activation_fn=jact)
        np.testing.assert_allclose(ours, st, **TOL)


def test_softmax_ce_matches_st():
    rng = _rng(2)
    b, c = 10, 4
    logits = rng.normal(size=(b, c)).astype(np.float32) * 2
    labels = rng.integers(0, c, b)
    mask = rng.uniform(size=b) > 0.3
    for m in (None, mask):
        keep = np.ones(b, bool) if m is None else m
        st = _st(ce_losses.CrossEntropyLoss(_TableCE(logits[keep][None])),
                 [["0"] * keep.sum(), _ids(keep.sum())], torch.tensor(labels[keep]))
        np.testing.assert_allclose(L.softmax_cross_entropy_loss(logits, labels, m), st, **TOL)


@pytest.mark.parametrize("act", [None, "sigmoid"])
def test_mse_matches_st(act):
    rng = _rng(3)
    b = 9
    logits = rng.normal(size=b).astype(np.float32)
    labels = rng.uniform(size=b).astype(np.float32)
    mask = rng.uniform(size=b) > 0.3
    for m in (None, mask):
        keep = np.ones(b, bool) if m is None else m
        loss = ce_losses.MSELoss(_TableCE(logits[keep][None]),
                                 activation_fn=torch.nn.Sigmoid() if act else torch.nn.Identity())
        st = _st(loss, [["0"] * keep.sum(), _ids(keep.sum())], torch.tensor(labels[keep]))
        ours = L.mse_loss(logits, labels, m, activation_fn=jax.nn.sigmoid if act else None)
        np.testing.assert_allclose(ours, st, **TOL)


@pytest.mark.parametrize("n_neg", [1, 3])
@pytest.mark.parametrize("raw_teacher", [False, True])
def test_margin_mse_matches_st(n_neg, raw_teacher):
    rng = _rng(4)
    b = 7
    scores = rng.normal(size=(b, 1 + n_neg)).astype(np.float32)
    teacher = rng.normal(size=(b, 1 + n_neg)).astype(np.float32)
    labels = teacher if raw_teacher else teacher[:, :1] - teacher[:, 1:]
    row_mask = rng.uniform(size=b) > 0.3
    for m in (None, row_mask):
        keep = np.ones(b, bool) if m is None else m
        nk = int(keep.sum())
        # doc id = column * nk + row: each column of ST inputs hits its own block of the table
        table = scores[keep].T.reshape(1, -1)
        inputs = [["0"] * nk] + [[str(c * nk + r) for r in range(nk)] for c in range(1 + n_neg)]
        st = _st(ce_losses.MarginMSELoss(_TableCE(table)), inputs, torch.tensor(labels[keep]))
        np.testing.assert_allclose(L.margin_mse_loss(scores, labels, m), st, **TOL)
    # A slot mask (one missing negative) has no ST form: mean over the remaining margins.
    slot = np.ones((b, 1 + n_neg), bool)
    slot[0, -1] = False
    margins = teacher[:, :1] - teacher[:, 1:]
    sq = ((scores[:, :1] - scores[:, 1:]) - margins) ** 2
    np.testing.assert_allclose(L.margin_mse_loss(scores, labels, slot), sq[slot[:, 1:]].mean(),
                               **TOL)


# ------------------------------------------------------------------- cross-encoder MNRL
def test_cross_encoder_mnrl_matches_st():
    rng = _rng(5)
    b, n_hard = 4, 2
    # table[q, d]: docs 0..b-1 are positives, then hard negatives column by column.
    table = rng.normal(size=(b, b * (1 + n_hard))).astype(np.float32) * 2
    inputs = [_ids(b)] + [[str(c * b + r) for r in range(b)] for c in range(1 + n_hard)]
    loss = ce_losses.MultipleNegativesRankingLoss(_TableCE(table), num_negatives=None)
    st = _st(loss, inputs, None)
    # Our layout: row i = [own positive, every other candidate] (order is irrelevant).
    rows = [[table[i, i]] + [table[i, d] for d in range(table.shape[1]) if d != i]
            for i in range(b)]
    np.testing.assert_allclose(L.cross_encoder_mnrl_loss(np.array(rows)), st, **TOL)

    # Mask: missing negatives leave the softmax. Reference: ST per row with only its valid
    # negatives as hard negatives (a batch of one has no in-batch negatives).
    scores = np.array(rows)
    mask = rng.uniform(size=scores.shape) > 0.4
    mask[:, 0] = True
    mask[2, 0] = False  # a padded row
    per_row = []
    for i in np.flatnonzero(mask[:, 0]):
        cols = scores[i][mask[i]]
        single = ce_losses.MultipleNegativesRankingLoss(_TableCE(cols[None]), num_negatives=None)
        per_row.append(_st(single, [["0"]] + [[str(j)] for j in range(len(cols))], None))
    np.testing.assert_allclose(L.cross_encoder_mnrl_loss(scores, mask), np.mean(per_row), **TOL)


# ------------------------------------------------------------------- listwise losses
def _list_batch(seed, q=5, size=6, graded=True, distinct=False):
    """Random [Q, L] logits/labels and a prefix mask with varying list lengths (ST's layout)."""
    rng = _rng(seed)
    scores = rng.normal(size=(q, size)).astype(np.float32) * 2
    if distinct:
        labels = np.stack([rng.permutation(size) for _ in range(q)]).astype(np.float32)
    else:
        labels = rng.integers(0, 4 if graded else 2, (q, size)).astype(np.float32)
    lengths = rng.integers(1, size + 1, q)
    lengths[0] = size
    mask = np.arange(size)[None] < lengths[:, None]
    return scores, labels, mask


def _st_listwise(loss_cls, scores, labels, mask, **kw):
    """Run an ST listwise loss on the valid prefix of every row of a [Q, L] layout."""
    q, size = scores.shape
    docs = [[str(i * size + j) for j in range(size) if mask[i, j]] for i in range(q)]
    lbls = [torch.tensor(labels[i][mask[i]]) for i in range(q)]
    model = _TableCE(scores.reshape(1, -1))
    return _st(loss_cls(model, **kw), [["0"] * q, docs], lbls)


def test_list_net_matches_st():
    s, y, m = _list_batch(6)
    st = _st_listwise(ce_losses.ListNetLoss, s, y, m)
    np.testing.assert_allclose(L.list_net_loss(s, y, m), st, **TOL)
    st_full = _st_listwise(ce_losses.ListNetLoss, s, y, np.ones_like(m))
    np.testing.assert_allclose(L.list_net_loss(s, y), st_full, **TOL)


def test_list_net_negative_teacher_logits_match_st_loss_and_grad():
    """Teacher scores distilled by ListNet are raw logits (xenc mine's n-tuple-scores), often all
    negative. ST's ListNetLoss softmaxes the labels as they are (padding -inf), so a negative or
    all-negative list is a valid target: loss and gradient equal ST's, and check_labels lets
    them through for listnet (it refused them before)."""
    from xenc_jax.train.data import Examples, check_labels
    s, _, m = _list_batch(11)
    y = (_rng(12).normal(size=s.shape) * 4 - 6).astype(np.float32)  # raw logits, mostly < 0
    y[1] = -np.abs(y[1]) - 1.0  # one list entirely negative
    q, size = s.shape
    table = torch.tensor(s.reshape(1, -1), requires_grad=True)
    model = _TableCE(s.reshape(1, -1))
    model.table = table
    docs = [[str(i * size + j) for j in range(size) if m[i, j]] for i in range(q)]
    st_loss = ce_losses.ListNetLoss(model)([["0"] * q, docs], [torch.tensor(y[i][m[i]]) for i in range(q)])
    st_loss.backward()
    ours, grad = jax.value_and_grad(L.list_net_loss)(jnp.asarray(s), y, m)
    np.testing.assert_allclose(ours, st_loss.item(), **TOL)
    np.testing.assert_allclose(np.where(m, grad, 0.0), table.grad.numpy().reshape(s.shape), **TOL)
    assert np.all(np.asarray(grad)[~m] == 0)  # masked slots get no gradient, as ST's padding
    ex = Examples("lists", [("q", ["d"] * size)] * q, [list(map(float, r)) for r in y], "teacher.jsonl")
    check_labels(ex, "listnet", 1)  # accepted, as ST does
    with pytest.raises(ValueError, match="negative relevance label"):
        check_labels(ex, "lambda", 1)  # graded relevance losses still refuse them


@pytest.mark.parametrize("respect_input_order", [True, False])
def test_list_mle_matches_st(respect_input_order):
    # Distinct labels: ST sorts them with an unstable torch sort, so ties would be arbitrary.
    s, y, m = _list_batch(7, distinct=True)
    st = _st_listwise(ce_losses.ListMLELoss, s, y, m, respect_input_order=respect_input_order)
    ours = L.list_mle_loss(s, y, m, respect_input_order=respect_input_order)
    np.testing.assert_allclose(ours, st, **TOL)


SCHEMES = {
    "ndcg2pp": ce_losses.NDCGLoss2PPScheme, "ndcg2": ce_losses.NDCGLoss2Scheme,
    "ndcg1": ce_losses.NDCGLoss1Scheme, "lambdarank": ce_losses.LambdaRankScheme,
    "none": ce_losses.NoWeightingScheme,
}


@pytest.mark.parametrize("scheme", list(SCHEMES))
@pytest.mark.parametrize("k", [None, 2])
def test_lambda_loss_matches_st(scheme, k):
    s, y, m = _list_batch(8)
    st = _st_listwise(ce_losses.LambdaLoss, s, y, m, weighting_scheme=SCHEMES[scheme](), k=k)
    np.testing.assert_allclose(L.lambda_loss(s, y, m, weighting_scheme=scheme, k=k), st, **TOL)


def test_lambda_loss_options_match_st():
    s, y, m = _list_batch(9)
    kw = {"sigma": 0.5, "reduction_log": "natural"}
    st = _st_listwise(ce_losses.LambdaLoss, s, y, m,
                      weighting_scheme=ce_losses.NDCGLoss2PPScheme(mu=3.0), **kw)
    np.testing.assert_allclose(L.lambda_loss(s, y, m, mu=3.0, **kw), st, **TOL)
    # ST reads k=0 as "no cutoff" (`self.k or max_docs`).
    np.testing.assert_allclose(L.lambda_loss(s, y, m, k=0), L.lambda_loss(s, y, m), **TOL)


@pytest.mark.parametrize("k", [None, 3])
def test_rank_net_matches_st_and_rax(k):
    s, y, m = _list_batch(10, graded=False)
    st = _st_listwise(ce_losses.RankNetLoss, s, y, m, k=k)
    np.testing.assert_allclose(L.rank_net_loss(s, y, m, k=k), st, **TOL)
    if k is None:  # independent cross-check: rax's pairwise logistic loss, natural log
        ref = rax.pairwise_logistic_loss(jnp.asarray(s), jnp.asarray(y), where=jnp.asarray(m))
        np.testing.assert_allclose(L.rank_net_loss(s, y, m, reduction_log="natural"), ref, **TOL)


# ------------------------------------------------------------------- mask / jit / grad properties
LIST_LOSSES = {
    "list_net": L.list_net_loss,
    "list_mle": L.list_mle_loss,
    "list_mle_by_label": functools.partial(L.list_mle_loss, respect_input_order=False),
    "lambda": L.lambda_loss,
    "lambda_k2": functools.partial(L.lambda_loss, k=2),
    "rank_net": L.rank_net_loss,
}


@pytest.mark.parametrize("name", list(LIST_LOSSES))
def test_listwise_masked_slots_are_inert(name):
    fn = LIST_LOSSES[name]
    s, y, m = _list_batch(11, distinct=True)
    # Holes in the middle plus one fully padded query.
    m = m.copy()
    m[0, 2] = False
    m[-1] = False
    base = fn(s, y, m)
    s2, y2 = s.copy(), y.copy()
    s2[~m] = np.array([np.nan, np.inf, -np.inf, 1e30])[np.arange((~m).sum()) % 4]
    y2[~m] = 99.0
    np.testing.assert_allclose(fn(s2, y2, m), base, **TOL)
    # Equal to the same lists with the holes compacted away (ST's layout).
    cs, cy = np.zeros_like(s), np.zeros_like(y)
    cm = np.zeros_like(m)
    for i in range(len(s)):
        n = m[i].sum()
        cs[i, :n], cy[i, :n], cm[i, :n] = s[i][m[i]], y[i][m[i]], True
    keep = cm.any(1)
    np.testing.assert_allclose(fn(cs[keep], cy[keep], cm[keep]), base, **TOL)
    g = jax.jit(jax.grad(fn))(jnp.asarray(s2), jnp.asarray(y2), jnp.asarray(m))
    assert np.all(np.isfinite(g)) and np.all(np.asarray(g)[~m] == 0)
    assert np.any(np.asarray(g)[m] != 0)


POINTWISE = {
    "bce": lambda x, m: L.binary_cross_entropy_loss(x[:, 0], (x[:, 1] > 0) * 1.0, m,
                                                    pos_weight=2.0),
    "ce": lambda x, m: L.softmax_cross_entropy_loss(x, jnp.arange(x.shape[0]) % 3, m),
    "mse": lambda x, m: L.mse_loss(x[:, 0], x[:, 1] * 0 + 0.5, m, activation_fn=jax.nn.sigmoid),
    "margin": lambda x, m: L.margin_mse_loss(x, jnp.ones((x.shape[0], 2)), m),
    "mnrl_ce": lambda x, m: L.cross_encoder_mnrl_loss(x, m),
}


@pytest.mark.parametrize("name", list(POINTWISE))
def test_pointwise_masked_rows_inert_jit_grad(name):
    fn = POINTWISE[name]
    x = _rng(12).normal(size=(6, 3)).astype(np.float32)
    m = np.array([1, 1, 0, 1, 0, 1], bool)
    base = jax.jit(fn)(x, m)
    x2 = x.copy()
    x2[~m] = np.nan
    np.testing.assert_allclose(jax.jit(fn)(x2, m), base, **TOL)
    g = jax.grad(fn)(jnp.asarray(x2), jnp.asarray(m))
    assert np.all(np.isfinite(g)) and np.all(np.asarray(g)[~m] == 0)
    # No valid row at all: 0, not NaN.
    assert float(fn(x, np.zeros_like(m))) == 0.0


def test_bf16_logits_upcast():
    s, y, m = _list_batch(13)
    sb = jnp.asarray(s, jnp.bfloat16)
    for fn in (L.lambda_loss, L.list_net_loss, L.list_mle_loss):
        out = fn(sb, y, m)
        assert out.dtype == jnp.float32
        np.testing.assert_allclose(out, fn(np.asarray(sb.astype(jnp.float32)), y, m), **TOL)


# ------------------------------------------------------------------- bi-encoder losses
def _emb(seed, b=6, d=16, k=2):
    rng = _rng(seed)
    return tuple(rng.normal(size=shape).astype(np.float32) for shape in ((b, d), (b, d), (b, k, d)))


def _st_mnrl(a, p, n=None, symmetric=False, scale=20.0):
    cls = st_losses.MultipleNegativesSymmetricRankingLoss if symmetric \
        else st_losses.MultipleNegativesRankingLoss
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loss = cls(model=None, scale=scale)
    embs = [torch.tensor(a), torch.tensor(p)]
    if n is not None:
        embs += [torch.tensor(n[:, j]) for j in range(n.shape[1])]
    with torch.no_grad():
        return float(loss.compute_loss_from_embeddings(embs, None))


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("with_negs", [False, True])
def test_mnrl_matches_st(symmetric, with_negs):
    a, p, n = _emb(20)
    n = n if with_negs else None
    ours = L.multiple_negatives_ranking_loss(a, p, n, symmetric=symmetric)
    np.testing.assert_allclose(ours, _st_mnrl(a, p, n, symmetric), **TOL)
    # Row mask == ST on the real rows only.
    m = np.array([1, 0, 1, 1, 0, 1], bool)
    a2, p2 = a.copy(), p.copy()
    a2[~m] = np.nan
    p2[~m] = np.inf
    fn = jax.jit(functools.partial(L.multiple_negatives_ranking_loss, mask=m,
                                   symmetric=symmetric))
    ref = _st_mnrl(a[m], p[m], None if n is None else n[m], symmetric)
    np.testing.assert_allclose(fn(a2, p2, n), ref, **TOL)
    ga, gp = jax.grad(fn, argnums=(0, 1))(jnp.asarray(a2), jnp.asarray(p2), n)
    for g in (ga, gp):
        assert np.all(np.isfinite(g)) and np.all(np.asarray(g)[~m] == 0)


def test_mnrl_hard_negative_mask_and_grads():
    a, p, n = _emb(21)
    nm = np.ones(n.shape[:2], bool)
    nm[1, 0] = nm[4, 1] = False
    # Reference: ST's candidate matrix in torch, the missing negatives' columns removed.
    ta, tp, tn = (torch.nn.functional.normalize(torch.tensor(x), dim=-1) for x in (a, p, n))
    cands = torch.cat([tp] + [tn[:, j] for j in range(n.shape[1])])
    keep = torch.cat([torch.ones(len(a), dtype=torch.bool), torch.tensor(nm.T.reshape(-1))])
    logits = 20.0 * ta @ cands[keep].T
    ref = torch.nn.functional.cross_entropy(logits, torch.arange(len(a)))
    fn = jax.jit(functools.partial(L.multiple_negatives_ranking_loss, negatives_mask=nm))
    n2 = n.copy()
    n2[~nm] = np.nan
    np.testing.assert_allclose(fn(a, p, n2), float(ref), **TOL)
    grads = jax.grad(fn, argnums=(0, 1, 2))(jnp.asarray(a), jnp.asarray(p), jnp.asarray(n2))
    assert all(np.all(np.isfinite(g)) for g in grads)
    assert np.all(np.asarray(grads[2])[~nm] == 0)


def test_cosent_matches_st():
    a, p, _ = _emb(22, b=10)
    labels = _rng(22).integers(0, 4, 10).astype(np.float32)  # ties on purpose
    loss = st_losses.CoSENTLoss(model=None)
    with torch.no_grad():
        st = float(loss.compute_loss_from_embeddings([torch.tensor(a), torch.tensor(p)],
                                                     torch.tensor(labels)))
    np.testing.assert_allclose(L.cosent_loss(a, p, labels), st, **TOL)
    m = _rng(23).uniform(size=10) > 0.3
    with torch.no_grad():
        st_m = float(loss.compute_loss_from_embeddings(
            [torch.tensor(a[m]), torch.tensor(p[m])], torch.tensor(labels[m])))
    a2 = a.copy()
    a2[~m] = np.nan
    fn = jax.jit(L.cosent_loss)
    np.testing.assert_allclose(fn(a2, p, labels, m), st_m, **TOL)
    g = jax.grad(fn)(jnp.asarray(a2), jnp.asarray(p), jnp.asarray(labels), jnp.asarray(m))
    assert np.all(np.isfinite(g)) and np.all(np.asarray(g)[~m] == 0)
    assert float(L.cosent_loss(a, p, np.ones(10))) == 0.0  # no ordered pair


def test_matryoshka_matches_st_formula():
    a, p, n = _emb(24, d=32)
    dims, weights = (32, 16, 8), (1.0, 0.5, 0.25)
    ref = sum(w * _st_mnrl(*(shrink(torch.tensor(x), d).numpy() for x in (a, p, n)))
              for d, w in zip(dims, weights, strict=True))
    fn = jax.jit(functools.partial(L.matryoshka_loss, L.multiple_negatives_ranking_loss,
                                   dims=dims, weights=weights))
    np.testing.assert_allclose(fn((a, p, n)), ref, **TOL)
    g = jax.grad(lambda e: fn(e))((jnp.asarray(a), jnp.asarray(p), jnp.asarray(n)))
    assert all(np.all(np.isfinite(x)) for x in g)
    # Labels/masks pass through untouched (CoSENT with labels as a keyword).
    labels = np.arange(6, dtype=np.float32)
    out = L.matryoshka_loss(L.cosent_loss, (a, p), dims=(16,), labels=labels)
    np.testing.assert_allclose(out, L.cosent_loss(a[:, :16], p[:, :16], labels), **TOL)
    with pytest.raises(ValueError):
        L.matryoshka_loss(L.cosent_loss, (a, p), dims=(64,), labels=labels)


_SHARDED_SCRIPT = """
import jax, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from xenc_jax.train import losses as L
assert len(jax.devices()) == 4
sh = NamedSharding(Mesh(np.array(jax.devices()), ("data",)), P("data"))
rng = np.random.default_rng(0)
a, p, n = (rng.normal(size=s).astype(np.float32) for s in ((8, 16), (8, 16), (8, 2, 16)))
ref = L.multiple_negatives_ranking_loss(a, p, n)
out = jax.jit(L.multiple_negatives_ranking_loss)(*(jax.device_put(x, sh) for x in (a, p, n)))
np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
print("ALL OK")
"""


def test_mnrl_negatives_are_global_when_sharded():
    """Batch sharded over 4 CPU devices: jit on global arrays gives the unsharded loss, i.e.
    every device's anchors see the whole batch's candidates (no explicit all-gather)."""
    run_on_devices(["-c", _SHARDED_SCRIPT], devices=4, timeout=300)
