"""Building blocks shared by every encoder family: dense/embedding/norm with logical axis names,
HF-exact activations, and masked multi-head self-attention.

Logical axis names (resolved onto a device mesh by xenc_jax/sharding.py):
  params:      vocab, embed, heads, kv (head_dim), mlp, labels
  activations: batch, length, embed, heads, kv, mlp
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

ACTIVATIONS: dict[str, Callable] = {
    # exact erf GELU: torch.nn.functional.gelu / HF "gelu"
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    # tanh approximation: HF "gelu_new", "gelu_pytorch_tanh" and "gelu_fast" are the same function
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_fast": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "tanh": jnp.tanh,
}


def constrain(x, axes):
    """Sharding hint on an activation; a no-op outside a mesh with logical-axis rules."""
    return nn.with_logical_constraint(x, axes)


def _normal(std: float):
    return nn.initializers.normal(stddev=std)


class _KernelBox(nn.LogicallyPartitioned):
    """LogicallyPartitioned that skips its sharding constraint while its value does not have
    one dimension per name. DenseGeneral calls kernel_init (bias_init) with the FLAT 2-D (1-D)
    shape and unboxes
    that value before reshaping it to [in..., out...]; under a mesh with logical-axis rules
    (sharding.ShardingPlan.context) flax would apply the N names to the 2-D value and fail,
    in init and in apply's shape check. The reshaped N-D kernel is constrained as usual."""

    def unbox(self, apply_constraint=True):
        return super().unbox(apply_constraint and jnp.ndim(self.value) == len(self.names))


def _boxed_init(init, axes: tuple):
    return lambda rng, shape, dtype=jnp.float32: _KernelBox(init(rng, shape, dtype), axes)


def _accumulate_fp32(dtype: Dtype):
    """dot_general with fp32 accumulation and output in `dtype`. For bf16 compute this is both
    more exact and, on XLA:CPU with AVX512-BF16, 2x faster than a bf16-output dot (which XLA
    runs as an fp32 matmul plus converts)."""
    def dot_general(lhs, rhs, dimension_numbers, precision=None, **kwargs):
        kwargs["preferred_element_type"] = jnp.float32
        return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision, **kwargs).astype(dtype)
    return dot_general


def dense(features, axes: tuple, name: str, dtype: Dtype, param_dtype: Dtype, in_axis=-1, std=0.02):
    """DenseGeneral with logically named kernel/bias (HF init: N(0, 0.02), zero bias)."""
    n_out = 1 if isinstance(features, int) else len(features)
    low = jnp.dtype(dtype) != jnp.dtype(jnp.float32)
    return nn.DenseGeneral(
        features=features, axis=in_axis, dtype=dtype, param_dtype=param_dtype, name=name,
        dot_general=_accumulate_fp32(dtype) if low else jax.lax.dot_general,
        kernel_init=_boxed_init(_normal(std), axes),
        bias_init=_boxed_init(nn.initializers.zeros_init(), axes[-n_out:]),
    )


def layer_norm(eps: float, name: str, param_dtype: Dtype):
    # Statistics in fp32 whatever the compute dtype: bf16 mean/var loses too much.
    return nn.LayerNorm(
        epsilon=eps, dtype=jnp.float32, param_dtype=param_dtype, name=name,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("embed",)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("embed",)),
    )


def embed(num: int, features: int, name: str, param_dtype: Dtype, std=0.02):
    return nn.Embed(
        num_embeddings=num, features=features, param_dtype=param_dtype, dtype=param_dtype, name=name,
        embedding_init=nn.with_logical_partitioning(_normal(std), ("vocab", "embed")),
    )


def attention_mask_4d(attention_mask: jax.Array, query_positions: jax.Array | None = None) -> jax.Array:
    """[B, L] int -> [B, 1, Lq, L] bool (Lq = L, or P when query_positions [B, P] is given).

    0 means padding. Query i may attend key j iff mask[j] != 0 and (mask[i] == mask[j] or
    mask[i] == 0): a plain 0/1 padding mask gives exactly HF's attention (padding queries too),
    and segment numbers 1..P (packed pairs) give block-diagonal attention.
    """
    q = attention_mask if query_positions is None else jnp.take_along_axis(
        attention_mask, query_positions.astype(jnp.int32), axis=1)
    q, k = q[:, None, :, None], attention_mask[:, None, None, :]
    return (k != 0) & ((q == k) | (q == 0))


def _attention(q, k, v, mask4, dropout=None, bias=None):
    """softmax(QK^T / sqrt(d) + bias + mask) V with heads as a batch axis: q [B, Lq, H, D],
    k/v [B, L, H, D], mask4 [B, 1, Lq, L] bool, bias None or [B, H, Lq, L] fp32 -> [B, Lq, H, D].

    Written out (not jax.nn.dot_product_attention) because on XLA:CPU this [B, H, Lq, L] layout
    runs as plain batched matmuls: 1.4x faster per group of rows than jax's [B, Lq, H, D]
    einsums and 3x over a whole batch (scripts/bench_cross_encoder.py). Scores and softmax are
    fp32 whatever the compute dtype. A fully masked row (an empty padding row) gets uniform
    weights, never NaN.
    """
    scale = 1.0 / jnp.sqrt(jnp.asarray(q.shape[-1], jnp.float32))
    qt = (q.astype(jnp.float32) * scale).astype(q.dtype).transpose(0, 2, 1, 3)
    s = jnp.matmul(qt, k.transpose(0, 2, 3, 1), preferred_element_type=jnp.float32)
    if bias is not None:
        s = s + bias.astype(jnp.float32)
    s = s + jnp.where(mask4, 0.0, jnp.finfo(jnp.float32).min).astype(jnp.float32)
    p = jax.nn.softmax(s, axis=-1)
    if dropout is not None:
        p = dropout(p)
    out = jnp.matmul(p.astype(v.dtype), v.transpose(0, 2, 1, 3), preferred_element_type=jnp.float32)
    return out.astype(v.dtype).transpose(0, 2, 1, 3)


def _chunked_attention(q, k, v, mask4, bias=None, tokens_per_chunk: int = 512):
    """_attention over groups of rows, one group after another (lax.map).

    On XLA:CPU the whole-batch form materialises [B, heads, Lq, L] scores and runs its softmax
    memory-bound; groups of ~512 key tokens keep the scores in cache (1.2-2x faster,
    docs/benchmarks.md). Same math per row. The group size is a divisor of B, so shapes stay
    static.
    """
    rows, length = q.shape[0], k.shape[1]
    group = max(d for d in range(1, max(1, tokens_per_chunk // length) + 1) if rows % d == 0)
    split = lambda x: x.reshape((rows // group, group) + x.shape[1:])
    if bias is None:
        out = jax.lax.map(lambda t: _attention(*t), (split(q), split(k), split(v), split(mask4)))
    else:
        bias = jnp.broadcast_to(bias, (rows,) + bias.shape[1:])
        out = jax.lax.map(lambda t: _attention(*t[:4], bias=t[4]),
                          (split(q), split(k), split(v), split(mask4), split(bias)))
    return out.reshape(q.shape[:2] + out.shape[-2:])


def default_attention_impl(mesh=None) -> str | None:
    """'xla_chunked' for unsharded inference on CPU, else jax's default choice."""
    return "xla_chunked" if mesh is None and jax.default_backend() == "cpu" else None


class SelfAttention(nn.Module):
    num_heads: int
    head_dim: int
    dropout: float
    dtype: Dtype
    param_dtype: Dtype
    # None/'xla'/'cudnn': jax.nn.dot_product_attention over the whole batch (cuDNN flash
    # attention on GPU when asked). 'xla_chunked': _attention one small group of rows at a time.
    implementation: str | None = None

    @nn.compact
    def __call__(self, x, mask4, deterministic: bool, xq=None, bias=None):
        """xq: the rows that ask (queries), [B, Lq, embed]; None = every row of x.
        bias: additive attention bias [B or 1, heads, Lq, L] (relative positions), or None."""
        qkv_axes = ("embed", "heads", "kv")
        shape = (self.num_heads, self.head_dim)
        q = dense(shape, qkv_axes, "query", self.dtype, self.param_dtype)(x if xq is None else xq)
        k = dense(shape, qkv_axes, "key", self.dtype, self.param_dtype)(x)
        v = dense(shape, qkv_axes, "value", self.dtype, self.param_dtype)(x)
        q, k, v = (constrain(t, ("batch", "length", "heads", "kv")) for t in (q, k, v))
        if not (deterministic or self.dropout == 0.0):
            # HF applies dropout to the attention probabilities.
            drop = nn.Dropout(self.dropout)
            out = _attention(q, k, v, mask4, lambda p: drop(p, deterministic=False), bias)
        elif self.implementation == "xla_chunked":
            out = _chunked_attention(q, k, v, mask4, bias)
        else:
            out = jax.nn.dot_product_attention(
                q, k, v, mask=mask4, implementation=self.implementation,
                bias=None if bias is None else bias.astype(q.dtype))
        return dense(x.shape[-1], ("heads", "kv", "embed"), "out", self.dtype, self.param_dtype,
                     in_axis=(-2, -1))(out)


class TransformerLayer(nn.Module):
    """Post-LayerNorm transformer layer (BERT, RoBERTa, ELECTRA, DistilBERT and MPNet share this math)."""
    num_heads: int
    head_dim: int
    intermediate_size: int
    act: str
    eps: float
    hidden_dropout: float
    attention_dropout: float
    dtype: Dtype
    param_dtype: Dtype
    attention_impl: str | None = None

    @nn.compact
    def __call__(self, x, mask4, deterministic: bool, query_positions=None, bias=None):
        """query_positions [B, P]: compute only these rows' outputs -> [B, P, embed] (keys and
        values still come from every row); mask4 must then be [B, 1, P, L].
        bias: additive attention bias [B or 1, heads, L, L] or None (see SelfAttention)."""
        xq = None if query_positions is None else jnp.take_along_axis(
            x, query_positions[..., None].astype(jnp.int32), axis=1)
        if bias is not None and query_positions is not None:
            bias = jnp.broadcast_to(bias, (x.shape[0],) + bias.shape[1:])
            bias = jnp.take_along_axis(bias, query_positions[:, None, :, None].astype(jnp.int32), axis=2)
        h = SelfAttention(self.num_heads, self.head_dim, self.attention_dropout, self.dtype,
                          self.param_dtype, self.attention_impl, name="attention")(
                              x, mask4, deterministic, xq, bias)
        h = nn.Dropout(self.hidden_dropout)(h, deterministic=deterministic)
        x = x if xq is None else xq
        x = layer_norm(self.eps, "attention_norm", self.param_dtype)(x + h).astype(self.dtype)
        x = constrain(x, ("batch", "length", "embed"))
        h = dense(self.intermediate_size, ("embed", "mlp"), "mlp_in", self.dtype, self.param_dtype)(x)
        h = constrain(ACTIVATIONS[self.act](h), ("batch", "length", "mlp"))
        h = dense(x.shape[-1], ("mlp", "embed"), "mlp_out", self.dtype, self.param_dtype)(h)
        h = nn.Dropout(self.hidden_dropout)(h, deterministic=deterministic)
        x = layer_norm(self.eps, "mlp_norm", self.param_dtype)(x + h).astype(self.dtype)
        return constrain(x, ("batch", "length", "embed"))
