"""Train step, optimizer and losses wiring on a tiny model."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from test_train_utils import GRAD_RTOL, make_tiny_model, max_abs, max_abs_diff, write_pairs
from xenc_jax.hf.pretrained import build_module, load_pretrained
from xenc_jax.train import data as D
from xenc_jax.train import optim as O
from xenc_jax.train import step as S


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    model = make_tiny_model(root / "model", dropout=False)
    pt = load_pretrained(model, head=True)
    data = write_pairs(root / "pairs.tsv", n=32)
    groups = D.make_groups(D.read_examples(D.DataSource(path=str(data))), pt.tokenizer, 64)
    stream = D.BatchStream(groups, D.StreamConfig(batch_size=8, bucket_lengths=(32,), max_length=64, seed=1))
    return pt, stream


def _setup(pt, ocfg, total=20, strategy="dp", ema_decay=0.0, tx=None):
    tx = O.make_optimizer(ocfg, total, pt.params) if tx is None else tx
    plan = S.make_plan(strategy)
    sh = S.state_shardings(plan, tx, pt.params, S.param_shardings(plan, pt.module()), ema=ema_decay > 0)
    state = S.create_state(plan, tx, pt.params, sh)
    step = S.make_train_step(S.cross_encoder_apply(pt.module()), S.cross_encoder_loss("bce"), tx, plan, sh,
                             lr_schedule=O.make_schedule(ocfg, total), grad_accum_steps=ocfg.grad_accum_steps,
                             ema_decay=ema_decay)
    return plan, state, step


def _eval_loss(pt, params, batch):
    logits = S.cross_encoder_apply(pt.module())(params, batch)
    return float(S.cross_encoder_loss("bce")(logits, batch))


def test_train_step_lowers_the_loss(tiny):
    pt, stream = tiny
    stream.start_at({"epoch": 0, "index": 0})
    batch = next(stream).arrays()
    plan, state, step = _setup(pt, O.OptimConfig(learning_rate=1e-3, warmup_steps=0))
    before = _eval_loss(pt, pt.params, batch)
    rng = jax.random.key(0)
    for _ in range(8):
        state, metrics = step(state, plan.place_batch(batch), rng)
    after = _eval_loss(pt, state.params, batch)
    assert int(state.step) == 8
    assert np.isfinite(float(metrics["loss"]))
    assert after < 0.7 * before, (before, after)


def test_grad_accumulation_equals_one_big_batch(tiny):
    """Two micro-batches of 4 with grad_accum_steps=2 == one batch of 8 (no dropout): no update
    after the first micro-batch (AdamW as configured), and the same params after the update.
    Params are compared after SGD inside the same optax.MultiSteps that make_optimizer uses:
    after AdamW they are ill-conditioned in the gradient (see GRAD_RTOL in test_train_utils)."""
    pt, stream = tiny
    stream.start_at({"epoch": 0, "index": 0})
    batch = next(stream).arrays()
    halves = [{k: v[:4] for k, v in batch.items()}, {k: v[4:] for k, v in batch.items()}]
    rng = jax.random.key(0)
    plan, s2, step2 = _setup(pt, O.OptimConfig(learning_rate=1e-3, warmup_steps=0, grad_accum_steps=2))
    s2, _ = step2(s2, plan.place_batch(halves[0]), rng)
    assert max_abs_diff(s2.params, pt.params) == 0.0  # no update after the first micro-batch
    assert isinstance(O.make_optimizer(O.OptimConfig(grad_accum_steps=2), 10), optax.MultiSteps)  # as below

    lr = 0.05
    gmax = max_abs(jax.grad(lambda p: S.cross_encoder_loss("bce")(S.cross_encoder_apply(pt.module())(p, batch),
                                                                  batch))(pt.params))
    plan, s1, step1 = _setup(pt, O.OptimConfig(), tx=optax.sgd(lr))
    s1, _ = step1(s1, plan.place_batch(batch), rng)
    plan, s2, step2 = _setup(pt, O.OptimConfig(grad_accum_steps=2), tx=optax.MultiSteps(optax.sgd(lr), 2))
    for half in halves:
        s2, _ = step2(s2, plan.place_batch(half), rng)
    assert max_abs_diff(s1.params, pt.params) > 1e-4  # the update moved the params
    assert max_abs_diff(s1.params, s2.params) <= lr * GRAD_RTOL * gmax + 1e-6, max_abs_diff(s1.params, s2.params)


def test_schedule_matches_hf_linear_warmup():
    import torch
    from transformers import get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup
    for kind, hf in (("linear", get_linear_schedule_with_warmup), ("cosine", get_cosine_schedule_with_warmup)):
        cfg = O.OptimConfig(learning_rate=2e-5, warmup_ratio=0.1, schedule=kind)
        total = 37
        opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=2e-5)
        sched = hf(opt, cfg.num_warmup(total), total)
        want = []
        for _ in range(total):
            want.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        got = [float(O.make_schedule(cfg, total)(i)) for i in range(total)]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-12)


def test_layer_decay_and_head_lr_match_torch_param_groups():
    """AdamW with layer-wise lr decay and a head multiplier == torch AdamW with one param group
    per lr (decay groups as HF: none on bias/LayerNorm), over a few steps of random grads."""
    import torch
    rng = np.random.default_rng(0)
    shapes = {"encoder": {"embeddings": {"word": {"embedding": (11, 4)}, "norm": {"scale": (4,), "bias": (4,)}},
                          "embeddings_project": {"kernel": (4, 4)},
                          **{f"layer_{i}": {"mlp_in": {"kernel": (4, 5), "bias": (5,)}} for i in range(3)}},
              "head": {"out": {"kernel": (4, 1), "bias": (1,)}}}
    params = jax.tree.map(lambda s: rng.standard_normal(s).astype(np.float32), shapes,
                          is_leaf=lambda x: isinstance(x, tuple))
    cfg = O.OptimConfig(learning_rate=1e-2, weight_decay=0.1, eps=1e-8, warmup_steps=0, schedule="constant",
                        max_grad_norm=0.0, layer_decay=0.5, head_lr_scale=4.0)
    depths = O.Depths(num_layers=3, inputs=("embeddings", "embeddings_project"))
    scales = O.lr_scales(params, depths, cfg.layer_decay, cfg.head_lr_scale)
    flat = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_leaves_with_path(scales)}
    assert flat["['head']['out']['kernel']"] == 4.0
    assert flat["['encoder']['layer_2']['mlp_in']['kernel']"] == 0.5
    assert flat["['encoder']['layer_0']['mlp_in']['bias']"] == 0.125
    assert flat["['encoder']['embeddings']['word']['embedding']"] == 0.0625
    assert flat["['encoder']['embeddings_project']['kernel']"] == 0.0625

    leaves, treedef = jax.tree.flatten(params)
    decays = jax.tree.leaves(O.decay_mask(params))
    tparams = [torch.nn.Parameter(torch.tensor(x)) for x in leaves]
    groups = [{"params": [p], "lr": cfg.learning_rate * f, "weight_decay": cfg.weight_decay if d else 0.0}
              for p, f, d in zip(tparams, jax.tree.leaves(scales), decays)]
    opt = torch.optim.AdamW(groups, lr=cfg.learning_rate, eps=cfg.eps)
    tx = O.make_optimizer(cfg, 10, params, depths)
    state, p = tx.init(params), params
    for _ in range(4):
        grads = [rng.standard_normal(x.shape).astype(np.float32) for x in leaves]
        for tp, g in zip(tparams, grads):
            tp.grad = torch.tensor(g)
        opt.step()
        updates, state = tx.update(jax.tree.unflatten(treedef, grads), state, p)
        p = jax.tree.map(lambda a, u: a + u, p, updates)
    for got, want in zip(jax.tree.leaves(p), tparams):
        np.testing.assert_allclose(np.asarray(got), want.detach().numpy(), rtol=0, atol=1e-5)  # fp32 rounding: ~1e-6


def test_scaled_groups_need_params():
    with pytest.raises(ValueError, match="need the params"):
        O.make_optimizer(O.OptimConfig(layer_decay=0.9), 10)
    with pytest.raises(ValueError, match="layer_decay"):
        O.OptimConfig(layer_decay=1.5)


@pytest.mark.parametrize("accum", [1, 2])
def test_ema_follows_the_params(tiny, accum):
    """The EMA after each optimizer update n is d_n * ema + (1 - d_n) * params, with
    d_n = min(decay, (1 + n) / (10 + n)); micro-steps inside an accumulation leave it alone."""
    pt, stream = tiny
    stream.start_at({"epoch": 0, "index": 0})
    batches = [next(stream).arrays() for _ in range(3 * accum)]
    ocfg = O.OptimConfig(learning_rate=1e-3, warmup_steps=0, grad_accum_steps=accum)
    rng = jax.random.key(0)
    plan, plain, step = _setup(pt, ocfg)
    plan, with_ema, step_ema = _setup(pt, ocfg, ema_decay=0.6)
    want = jax.tree.map(np.asarray, pt.params)
    for i, b in enumerate(batches):
        plain, _ = step(plain, plan.place_batch(b), rng)
        with_ema, _ = step_ema(with_ema, plan.place_batch(b), rng)
        if (i + 1) % accum == 0:
            n = (i + 1) // accum
            d = min(0.6, (1 + n) / (10 + n))
            want = jax.tree.map(lambda e, q: d * e + (1 - d) * np.asarray(q), want, plain.params)
        got = jax.tree.map(np.asarray, with_ema.ema)
        assert max(jax.tree.leaves(jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), got, want))) < 1e-6
        # the EMA does not feed back into training
        assert max(jax.tree.leaves(jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))),
                                                with_ema.params, plain.params))) == 0.0
    assert with_ema.eval_params() is with_ema.ema and plain.eval_params() is plain.params


def test_dropout_override_changes_training_dropout_only(tmp_path):
    """TrainConfig.dropout goes through loop.with_dropout: 0 makes the training forward
    deterministic; the model's own rate (0.1 here) draws masks from the key."""
    from xenc_jax.train.loop import with_dropout
    pt = load_pretrained(make_tiny_model(tmp_path / "m", dropout=True), head=True)
    rng = np.random.default_rng(0)
    R, Lx = 4, 12
    batch = {"input_ids": rng.integers(1000, 2000, (R, Lx)).astype(np.int32),
             "attention_mask": np.ones((R, Lx), np.int32), "token_type_ids": np.zeros((R, Lx), np.int32),
             "position_ids": np.tile(np.arange(Lx, dtype=np.int32), (R, 1)), "cls_positions": np.zeros((R, 1), np.int32)}

    def train_logits(p, seed):
        return np.asarray(S.cross_encoder_apply(p.module())(p.params, batch, jax.random.key(seed), deterministic=False))
    assert pt.config.hidden_dropout > 0
    assert np.max(np.abs(train_logits(pt, 0) - train_logits(pt, 1))) > 1e-4
    off = with_dropout(pt, 0.0)
    assert off.config.hidden_dropout == off.config.attention_dropout == off.config.classifier_dropout == 0.0
    np.testing.assert_array_equal(train_logits(off, 0), train_logits(off, 1))
    np.testing.assert_allclose(train_logits(off, 0), np.asarray(S.cross_encoder_apply(pt.module())(pt.params, batch)),
                               rtol=0, atol=1e-6)


def test_weight_decay_mask_skips_bias_and_layernorm(tiny):
    pt, _ = tiny
    mask = O.decay_mask(pt.params)
    flat = {"/".join(str(getattr(k, "key", k)) for k in path): v
            for path, v in jax.tree_util.tree_leaves_with_path(mask)}
    assert flat["encoder/layer_0/attention/query/kernel"] if "encoder/layer_0/attention/query/kernel" in flat else True
    assert all(v for k, v in flat.items() if k.endswith(("kernel", "embedding")))
    assert not any(v for k, v in flat.items() if k.endswith(("bias", "scale")))
    assert any(k.endswith("scale") for k in flat) and any(k.endswith("embedding") for k in flat)


@pytest.mark.parametrize("loss,kw,G", [("mnrl", {}, 3), ("listnet", {}, 3), ("margin_mse", {}, 3),
                                       ("lambda", {}, 3), ("mse", {"activation_fn": "sigmoid"}, 1)])
def test_grouped_losses_run_and_are_finite(tiny, loss, kw, G):
    pt, _ = tiny
    rng = np.random.default_rng(0)
    Q, Lx = 4, 16
    batch = {"input_ids": rng.integers(1000, 2000, (Q * G, Lx)).astype(np.int32),
             "attention_mask": np.ones((Q * G, Lx), np.int32), "token_type_ids": np.zeros((Q * G, Lx), np.int32),
             "position_ids": np.tile(np.arange(Lx, dtype=np.int32), (Q * G, 1)),
             "cls_positions": np.zeros((Q * G, 1), np.int32),
             "labels": rng.integers(0, 3, (Q, G)).astype(np.float32) / (2.0 if loss == "mse" else 1.0),
             "valid": np.ones(Q * G, bool)}
    batch["valid"][-1] = False
    logits = S.cross_encoder_apply(pt.module())(pt.params, batch)
    value = S.cross_encoder_loss(loss, **kw)(logits, batch)
    assert np.isfinite(float(value))


@pytest.mark.parametrize("task", ["bi_encoder", "cross_encoder"])
def test_gradcache_equals_the_one_pass_step(tiny, task):
    """cached_apply (GradCache) in 4 mini-batches: the same loss and gradients as one pass (no
    dropout), and the same params after SGD steps. The MNRL loss uses all in-batch negatives, so
    the mini-batches must not change what it sees. Bounds: see GRAD_RTOL in test_train_utils."""
    pt, _ = tiny
    rng = np.random.default_rng(2)
    Q, G, Lx = 8, 2, 24
    lens = rng.integers(5, Lx + 1, Q * G)
    mask = (np.arange(Lx)[None, :] < lens[:, None]).astype(np.int32)
    batch = {"input_ids": np.where(mask, rng.integers(1000, 2000, (Q * G, Lx)), 0).astype(np.int32),
             "attention_mask": mask, "token_type_ids": np.zeros((Q * G, Lx), np.int32),
             "position_ids": np.tile(np.arange(Lx, dtype=np.int32), (Q * G, 1)),
             "cls_positions": np.zeros((Q * G, 1), np.int32),
             "labels": np.tile(np.asarray([[1.0, 0.0]], np.float32), (Q, 1)), "valid": np.ones(Q * G, bool)}
    if task == "bi_encoder":
        apply = S.bi_encoder_apply(build_module(pt.config, head=False))
        loss, params = S.bi_encoder_loss("mnrl"), {"encoder": pt.params["encoder"]}
    else:
        apply, loss, params = S.cross_encoder_apply(pt.module()), S.cross_encoder_loss("mnrl"), pt.params

    # 1. loss and gradients, relative to the largest gradient entry
    (l1, g1), (l4, g4) = (jax.jit(jax.value_and_grad(
        lambda p, c=c: loss(S.cached_apply(apply, c)(p, batch), batch)))(params) for c in (1, 4))
    gmax = max_abs(g1)
    assert gmax > 1e-3  # a real gradient, not a dead loss
    assert abs(float(l1) - float(l4)) <= GRAD_RTOL * max(1.0, abs(float(l1))), (l1, l4)
    assert max_abs_diff(g1, g4) <= GRAD_RTOL * gmax, (max_abs_diff(g1, g4), gmax)

    # 2. through the jitted train step: params after two SGD steps (update = lr * g, so the params
    # differ by lr times the gradient differences above, plus an ulp of rounding); with AdamW one
    # step's loss and grad norm, which are computed before the update
    plan = S.make_plan("dp")

    def run(chunks, tx, steps):
        p_sh = jax.tree.map(lambda _: plan.replicated, params)
        sh = S.state_shardings(plan, tx, params, p_sh)
        state = S.create_state(plan, tx, params, sh)
        step = S.make_train_step(S.cached_apply(apply, chunks), loss, tx, plan, sh)
        for _ in range(steps):
            state, metrics = step(state, plan.place_batch(batch), jax.random.key(0))
        return float(metrics["loss"]), float(metrics["grad_norm"]), jax.device_get(state.params)

    lr = 0.05
    (_, _, p1), (_, _, p4) = run(1, optax.sgd(lr), 2), run(4, optax.sgd(lr), 2)
    assert max_abs_diff(p1, params) > 1e-4  # the steps moved the params
    assert max_abs_diff(p1, p4) <= 2 * lr * GRAD_RTOL * gmax + 1e-6, max_abs_diff(p1, p4)
    adamw = O.make_optimizer(O.OptimConfig(learning_rate=1e-3, warmup_steps=0), 10)
    (la1, gn1, _), (la4, gn4, _) = run(1, adamw, 1), run(4, adamw, 1)
    assert abs(la1 - la4) <= GRAD_RTOL * max(1.0, abs(la1)) and abs(gn1 - gn4) <= GRAD_RTOL * gn1, (la1, la4, gn1, gn4)

    with pytest.raises(ValueError, match="does not split into 3"):
        S.cached_apply(apply, 3)(params, batch)
    with pytest.raises(ValueError, match="positive int"):
        S.cached_apply(apply, 0)


def test_gradcache_bounds_activation_memory(tiny):
    """What GradCache is for: XLA's temp memory for the gradient shrinks with the mini-batch
    (compiled memory analysis; measured 339 -> 37 MB for 8 chunks at 128 rows x 128 tokens)."""
    pt, _ = tiny
    apply, loss = S.bi_encoder_apply(build_module(pt.config, head=False)), S.bi_encoder_loss("mnrl")
    params = {"encoder": pt.params["encoder"]}
    Q, G, Lx = 32, 2, 64
    ones = jnp.ones((Q * G, Lx), jnp.int32)
    batch = {"input_ids": ones, "attention_mask": ones, "token_type_ids": ones * 0,
             "position_ids": jnp.tile(jnp.arange(Lx, dtype=jnp.int32), (Q * G, 1)),
             "cls_positions": jnp.zeros((Q * G, 1), jnp.int32),
             "labels": jnp.zeros((Q, G)), "valid": jnp.ones(Q * G, bool)}
    temp = {}
    for chunks in (1, 8):
        grad = jax.jit(jax.grad(lambda p: loss(S.cached_apply(apply, chunks)(p, batch), batch)))
        temp[chunks] = grad.lower(params).compile().memory_analysis().temp_size_in_bytes
    assert temp[8] < temp[1] / 4, temp
