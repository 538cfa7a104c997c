"""Gradient checkpointing (cfg.remat, `xenc train remat=true`): every family's layers are
rematerialised, the gradient is the plain one's (dropout included: the recomputed forward must
draw the same masks), the param tree does not change, and the program handed to XLA recomputes
each layer behind an optimization barrier (what keeps XLA from merging the recomputation back).

The memory saving itself is not asserted here: XLA:CPU expands the barriers and CSE merges the
recomputed forward into the first one (measured with jax 0.10.2: the optimized CPU program has the
same dots and the same temp size with and without remat), so only GPU/TPU compilers save memory.

One tiny seeded random model per layer stack (post-norm BERT, as MPNet's and the BERT family's, ModernBERT's
pre-norm rotary layers, DeBERTa's disentangled attention, Qwen3's decoder), padded random rows.
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from tiny_hf import make_tiny, random_batch
from tiny_llm import make_tiny_llm
from xenc_jax.hf.pretrained import load_pretrained
from xenc_jax.train import step as S

# family -> make_tiny overrides (dropout left at the tiny configs' 0.1 where the family has it)
STACKS = {
    "bert": {},
    "modernbert": {"max_position_embeddings": 128, "pad_token_id": 0, "local_attention": 8, "num_hidden_layers": 3},
    "deberta-v2": {"max_position_embeddings": 128, "position_buckets": 8, "max_relative_positions": 16},
    "qwen3": None,   # tests/tiny_llm.py's Qwen3ForCausalLM reranker (yes/no LM columns)
}


def _model(family, path):
    if family == "qwen3":
        make_tiny_llm("qwen3-causal", path, seed=3, attention_dropout=0.1)
    else:
        make_tiny(family, path, num_labels=1, seed=3, vocab_size=128, **STACKS[family])
    return load_pretrained(path, head=True, with_tokenizer=family == "qwen3")


def _batch(family):
    ids, mask, types = random_batch("bert" if family == "qwen3" else family, lengths=(17, 6, 23, 1, 12, 23))
    positions = (np.cumsum(mask, axis=1) - 1) * mask   # the batch contract: 0-based, 0 on padding
    return {"input_ids": jnp.asarray(ids, jnp.int32), "attention_mask": jnp.asarray(mask, jnp.int32),
            "token_type_ids": jnp.asarray(types, jnp.int32), "position_ids": jnp.asarray(positions, jnp.int32),
            "cls_positions": jnp.zeros((ids.shape[0], 1), jnp.int32)}


def _grad_fn(pt, remat: bool):
    cfg = dataclasses.replace(pt.config, remat=remat)
    module = dataclasses.replace(pt, config=cfg).module()
    apply = S.cross_encoder_apply(module)
    weights = jnp.linspace(-1.0, 1.0, 6)[:, None]

    def loss(params, batch, rng):   # training mode: dropout on, so its masks are checked too
        return jnp.sum(apply(params, batch, rng, deterministic=False) * weights)
    return jax.jit(jax.grad(loss)), module


def _remat_count(jaxpr) -> int:
    n = 0
    for eqn in jaxpr.eqns:
        n += eqn.primitive.name in ("checkpoint", "remat", "remat2")
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            n += _remat_count(sub)
    return n


@pytest.mark.parametrize("family", sorted(STACKS))
def test_remat_gradient_equals_plain(family, tmp_path):
    pt = _model(family, tmp_path / family)
    batch, rng = _batch(family), jax.random.key(5)
    plain, _ = _grad_fn(pt, False)
    remat, module = _grad_fn(pt, True)
    want, got = plain(pt.params, batch, rng), remat(pt.params, batch, rng)
    # the same param tree: checkpoints and sharding rules do not see remat
    assert jax.tree.structure(got) == jax.tree.structure(want)
    shapes = jax.eval_shape(module.init, jax.random.key(0), batch["input_ids"], batch["attention_mask"])
    assert jax.tree.structure(nn.unbox(shapes["params"])) == jax.tree.structure(pt.params)
    # one rematerialised call per layer in the traced gradient (and none without remat)
    traced, traced_plain = remat.trace(pt.params, batch, rng), plain.trace(pt.params, batch, rng)
    assert _remat_count(traced.jaxpr.jaxpr) == pt.config.num_layers
    assert _remat_count(traced_plain.jaxpr.jaxpr) == 0
    assert traced.lower().as_text().count("optimization_barrier") >= pt.config.num_layers
    assert "optimization_barrier" not in traced_plain.lower().as_text()
    # The recomputed forward runs the same ops on the same inputs; XLA may fuse it differently,
    # so sums can be reordered: bound relative to the largest entry as GRAD_RTOL (test_train_utils).
    # A different dropout mask in the recomputation, or a lost layer input, changes it by percents.
    scale = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(want))
    worst = max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)))
    assert scale > 1e-4
    print(f"{family}: max |remat - plain| = {worst:.3g}, largest entry {scale:.3g}")
    assert worst <= 1e-5 * scale, (family, worst, scale)
