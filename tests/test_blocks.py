"""The shared blocks that no family here uses yet, checked against PyTorch (transformers' Gemma
code): the (1 + w) RMSNorm, and one Attention with grouped-query k/v, a scale override, a logit
soft-cap and a causal sliding window on a packed row (each segment must equal PyTorch on that
segment alone), through every attention kernel. Plus the two seams' registries.

Tolerance: 1e-5 absolute on O(1) outputs, the module bound of every family's parity test
(DESIGN principle 6); fp32 reorderings stay near 1e-6.
"""
from __future__ import annotations

import types
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from xenc_jax.models import attention_impl  # noqa: E402
from xenc_jax.models.blocks import Attention, AttentionSpec, NormSpec, causal_mask_4d, sliding_window_mask  # noqa: E402
from xenc_jax.models.dense import dot_general  # noqa: E402

MODULE_TOL = 1e-5


def test_one_plus_rms_norm_equals_gemma():
    from transformers.models.gemma.modeling_gemma import GemmaRMSNorm

    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 5, 16)).astype(np.float32) * 3 + 1
    w = rng.standard_normal(16).astype(np.float32) * 0.5
    ref = GemmaRMSNorm(16, eps=1e-6)
    with torch.no_grad():
        ref.weight.copy_(torch.tensor(w))
        want = ref(torch.tensor(x)).numpy()
    norm = NormSpec("rms_one_plus", 1e-6)("norm", jnp.float32)
    params = nn.unbox(norm.init(jax.random.key(0), jnp.asarray(x)))["params"]
    assert set(params) == {"scale"} and np.all(np.asarray(params["scale"]) == 0)   # starts at w = 0
    got = norm.apply({"params": {"scale": jnp.asarray(w)}}, jnp.asarray(x))
    assert np.abs(np.asarray(got) - want).max() <= MODULE_TOL


def _gemma2_alone(x, w, spec, window):
    """PyTorch (transformers Gemma2's eager attention) on one segment alone: causal sliding window."""
    from transformers.models.gemma2.modeling_gemma2 import eager_attention_forward

    n, heads, kv, d = x.shape[0], spec.num_heads, spec.num_kv_heads, spec.head_dim
    t = lambda a: torch.tensor(np.asarray(a))
    proj = lambda kernel, h: (t(x) @ t(kernel).reshape(x.shape[1], h * d)).reshape(1, n, h, d).transpose(1, 2)
    q, k, v = proj(w["query"]["kernel"], heads), proj(w["key"]["kernel"], kv), proj(w["value"]["kernel"], kv)
    i, j = np.arange(n)[:, None], np.arange(n)[None, :]
    allowed = (j <= i) & (i - j < window)
    mask = torch.tensor(np.where(allowed, 0.0, np.finfo(np.float32).min).astype(np.float32))[None, None]
    module = types.SimpleNamespace(num_key_value_groups=heads // kv, training=False, head_dim=d)
    out, _ = eager_attention_forward(module, q, k, v, mask, scaling=spec.scale, softcap=spec.softcap)
    return (out.reshape(n, heads * d) @ t(w["out"]["kernel"]).reshape(heads * d, -1)).numpy()


@pytest.mark.parametrize("impl", ["xla", "query_chunked", "reference", "cudnn"])
def test_attention_gqa_scale_softcap_window_packed_equals_gemma2(impl):
    """impl 'xla'/'cudnn' cannot soft-cap: the seam must run the reference kernel for them."""
    spec = AttentionSpec(num_heads=4, head_dim=8, num_kv_heads=2, qkv_bias=False, out_bias=False,
                         scale=0.3, softcap=4.0)
    lengths, window, hidden = (9, 6), 4, 32
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, sum(lengths) + 3, hidden)).astype(np.float32) * 2
    seg = np.concatenate([np.full(n, s + 1) for s, n in enumerate(lengths)] + [np.zeros(3, int)])[None]
    pos = np.concatenate([np.arange(n) for n in lengths] + [np.zeros(3, int)])[None]
    mask4 = causal_mask_4d(jnp.asarray(seg)) & sliding_window_mask(jnp.asarray(pos), jnp.asarray(pos), window - 1)
    module = Attention(spec, jnp.float32, jnp.float32, impl)
    # q/k weights x20: scores of ~10, past the cap, so the soft-cap changes the result; v and
    # out keep the N(0, 0.02) init, so the outputs are O(0.1) and the 1e-5 bound is meaningful
    params = nn.unbox(module.init(jax.random.key(2), jnp.asarray(x), mask4, True))["params"]
    params = {**params, **{n: jax.tree.map(lambda a: a * 20, params[n]) for n in ("query", "key")}}
    assert params["key"]["kernel"].shape == (hidden, 2, 8)   # grouped-query k/v: [embed, kv_heads, kv]
    got = np.asarray(module.apply({"params": params}, jnp.asarray(x), mask4, True))
    start = 0
    for n in lengths:
        want = _gemma2_alone(x[0, start:start + n], params, spec, window)
        assert np.abs(got[0, start:start + n] - want).max() <= MODULE_TOL, (impl, n)
        start += n
    # the soft-cap and the window are both active here: without either the first segment differs by far more
    first = got[0, :lengths[0]]
    uncapped = _gemma2_alone(x[0, :lengths[0]], params, AttentionSpec(4, 8, 2, scale=0.3), window)
    unwindowed = _gemma2_alone(x[0, :lengths[0]], params, spec, lengths[0])
    assert np.abs(first - uncapped).max() > 100 * MODULE_TOL and np.abs(first - unwindowed).max() > 100 * MODULE_TOL


def test_attention_kernel_registry():
    assert attention_impl.resolve(None) == "xla"
    with pytest.warns(DeprecationWarning, match="query_chunked"):
        assert attention_impl.resolve("xla_chunked") == "query_chunked"
    with pytest.raises(ValueError, match="unknown attention_impl 'flash'.*query_chunked"):
        attention_impl.resolve("flash")
    with pytest.raises(ValueError, match="already registered"):
        attention_impl.register("reference", attention_impl.KERNELS["reference"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert attention_impl.resolve("query_chunked") == "query_chunked"


def test_matmul_policy_accumulates_low_precision_in_fp32():
    """bf16 operands: the dot asks for fp32 results and casts back (more exact, and 2x faster on
    XLA:CPU with AVX512-BF16); fp32 stays the plain dot."""
    assert dot_general(jnp.float32) is jax.lax.dot_general
    a = jnp.ones((4, 8), jnp.bfloat16)
    dims = (((1,), (0,)), ((), ()))
    jaxpr = jax.make_jaxpr(lambda x, y: dot_general(jnp.bfloat16)(x, y, dims))(a, a.T)
    (dot,) = [e for e in jaxpr.eqns if e.primitive.name == "dot_general"]
    assert dot.params["preferred_element_type"] == jnp.float32
    assert jaxpr.out_avals[0].dtype == jnp.bfloat16
    with pytest.raises(ValueError, match="unknown matmul policy 'int4'"):
        dot_general(jnp.float32, "int4")
