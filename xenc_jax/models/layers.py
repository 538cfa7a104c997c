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


def dense(features, axes: tuple, name: str, dtype: Dtype, param_dtype: Dtype, in_axis=-1, std=0.02):
    """DenseGeneral with logically named kernel/bias (HF init: N(0, 0.02), zero bias)."""
    n_out = 1 if isinstance(features, int) else len(features)
    return nn.DenseGeneral(
        features=features, axis=in_axis, dtype=dtype, param_dtype=param_dtype, name=name,
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


def attention_mask_4d(attention_mask: jax.Array) -> jax.Array:
    """[B, L] int -> [B, 1, L, L] bool.

    0 means padding. Query i may attend key j iff mask[j] != 0 and (mask[i] == mask[j] or
    mask[i] == 0): a plain 0/1 padding mask gives exactly HF's attention (padding queries too),
    and segment numbers 1..P (packed pairs) give block-diagonal attention.
    """
    q, k = attention_mask[:, None, :, None], attention_mask[:, None, None, :]
    return (k != 0) & ((q == k) | (q == 0))


def _chunked_attention(q, k, v, mask4, tokens_per_chunk: int = 512):
    """dot_product_attention over groups of rows, one group after another (lax.map).

    On XLA:CPU the whole-batch form materialises [B, heads, L, L] scores and runs its fused
    softmax on one core, memory-bound; groups of ~512 tokens keep the scores in cache and were
    1.2-2x faster (scripts/bench_cross_encoder.py, docs/benchmarks.md). Same math per row.
    The group size is a divisor of B, so shapes stay static.
    """
    rows, length = q.shape[0], q.shape[1]
    group = max(d for d in range(1, max(1, tokens_per_chunk // length) + 1) if rows % d == 0)
    split = lambda x: x.reshape((rows // group, group) + x.shape[1:])
    out = jax.lax.map(lambda t: jax.nn.dot_product_attention(t[0], t[1], t[2], mask=t[3]),
                      (split(q), split(k), split(v), split(mask4)))
    return out.reshape(q.shape)


def default_attention_impl(mesh=None) -> str | None:
    """'xla_chunked' for unsharded inference on CPU, else jax's default choice."""
    return "xla_chunked" if mesh is None and jax.default_backend() == "cpu" else None


class SelfAttention(nn.Module):
    num_heads: int
    head_dim: int
    dropout: float
    dtype: Dtype
    param_dtype: Dtype
    # None/'xla'/'cudnn': jax.nn.dot_product_attention over the whole batch.
    # 'xla_chunked': the same, one small group of rows at a time (see _chunked_attention).
    implementation: str | None = None

    @nn.compact
    def __call__(self, x, mask4, deterministic: bool):
        qkv_axes = ("embed", "heads", "kv")
        shape = (self.num_heads, self.head_dim)
        q = dense(shape, qkv_axes, "query", self.dtype, self.param_dtype)(x)
        k = dense(shape, qkv_axes, "key", self.dtype, self.param_dtype)(x)
        v = dense(shape, qkv_axes, "value", self.dtype, self.param_dtype)(x)
        q, k, v = (constrain(t, ("batch", "length", "heads", "kv")) for t in (q, k, v))
        if self.implementation == "xla_chunked" and (deterministic or self.dropout == 0.0):
            out = _chunked_attention(q, k, v, mask4)
        elif deterministic or self.dropout == 0.0:
            # Fused softmax(QK^T/sqrt(d))V; picks cuDNN flash attention on GPU when asked.
            out = jax.nn.dot_product_attention(q, k, v, mask=mask4, implementation=self.implementation)
        else:
            # Dropout on attention probabilities (HF applies it there) needs the explicit form.
            logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) / jnp.sqrt(self.head_dim)
            logits = jnp.where(mask4, logits, jnp.finfo(jnp.float32).min)
            probs = jax.nn.softmax(logits, axis=-1)
            probs = nn.Dropout(self.dropout)(probs, deterministic=False).astype(self.dtype)
            out = jnp.einsum("bhqk,bkhd->bqhd", probs, v)
        return dense(x.shape[-1], ("heads", "kv", "embed"), "out", self.dtype, self.param_dtype,
                     in_axis=(-2, -1))(out)


class TransformerLayer(nn.Module):
    """Post-LayerNorm transformer layer (BERT, RoBERTa, ELECTRA and DistilBERT share this math)."""
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
    def __call__(self, x, mask4, deterministic: bool):
        h = SelfAttention(self.num_heads, self.head_dim, self.attention_dropout, self.dtype,
                          self.param_dtype, self.attention_impl, name="attention")(x, mask4, deterministic)
        h = nn.Dropout(self.hidden_dropout)(h, deterministic=deterministic)
        x = layer_norm(self.eps, "attention_norm", self.param_dtype)(x + h).astype(self.dtype)
        x = constrain(x, ("batch", "length", "embed"))
        h = dense(self.intermediate_size, ("embed", "mlp"), "mlp_in", self.dtype, self.param_dtype)(x)
        h = constrain(ACTIVATIONS[self.act](h), ("batch", "length", "mlp"))
        h = dense(x.shape[-1], ("mlp", "embed"), "mlp_out", self.dtype, self.param_dtype)(h)
        h = nn.Dropout(self.hidden_dropout)(h, deterministic=deterministic)
        x = layer_norm(self.eps, "mlp_norm", self.param_dtype)(x + h).astype(self.dtype)
        return constrain(x, ("batch", "length", "embed"))
