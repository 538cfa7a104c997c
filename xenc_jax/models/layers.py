"""Building blocks shared by every encoder family: dense/embedding/norm with logical axis names,
HF-exact activations, and masked multi-head self-attention.

Logical axis names (resolved onto a device mesh by xenc_jax/sharding.py):
  params:      vocab, embed, heads, kv (head_dim), mlp, labels
  activations: batch, length, embed, heads, kv, mlp
"""
from __future__ import annotations

import functools
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


@functools.cache
def layer_class(cls: type, remat: bool, deterministic_argnum: int) -> type:
    """`cls`, or `cls` rematerialised (cfg.remat): nn.remat keeps the same param scope names,
    so checkpoints and sharding rules do not change. `deterministic_argnum` is the position of
    the layer's `deterministic` bool in __call__ (self is 0): a Python bool must be static.
    Cached: families call it per layer, and nn.remat builds a new class each time."""
    return nn.remat(cls, static_argnums=(deterministic_argnum,)) if remat else cls


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


def dense(features, axes: tuple, name: str, dtype: Dtype, param_dtype: Dtype, in_axis=-1, std=0.02,
          use_bias: bool = True):
    """DenseGeneral with logically named kernel/bias (HF init: N(0, 0.02), zero bias)."""
    n_out = 1 if isinstance(features, int) else len(features)
    low = jnp.dtype(dtype) != jnp.dtype(jnp.float32)
    return nn.DenseGeneral(
        features=features, axis=in_axis, dtype=dtype, param_dtype=param_dtype, name=name, use_bias=use_bias,
        dot_general=_accumulate_fp32(dtype) if low else jax.lax.dot_general,
        kernel_init=_boxed_init(_normal(std), axes),
        bias_init=_boxed_init(nn.initializers.zeros_init(), axes[-n_out:]),
    )


def layer_norm(eps: float, name: str, param_dtype: Dtype, use_bias: bool = True):
    # Statistics in fp32 whatever the compute dtype: bf16 mean/var loses too much.
    return nn.LayerNorm(
        epsilon=eps, dtype=jnp.float32, param_dtype=param_dtype, name=name, use_bias=use_bias,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("embed",)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("embed",)),
    )


def rms_norm(eps: float, name: str, param_dtype: Dtype, axis_name: str = "embed"):
    """RMSNorm over the last axis (HF Qwen2/Qwen3 RMSNorm: x * rsqrt(mean(x^2) + eps) * weight),
    statistics in fp32 like layer_norm. axis_name: the logical name of the normed axis ("kv"
    for Qwen3's per-head q/k norms)."""
    return nn.RMSNorm(epsilon=eps, dtype=jnp.float32, param_dtype=param_dtype, name=name,
                      scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), (axis_name,)))


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


def sliding_window_mask(q_positions: jax.Array, k_positions: jax.Array, half_window: int) -> jax.Array:
    """[B, Lq], [B, L] position ids -> [B, 1, Lq, L] bool: |position(q) - position(k)| <= half_window.

    HF ModernBERT's local layers (masking_utils.sliding_window_bidirectional_overlay with
    config.sliding_window = local_attention // 2): a window of half_window tokens on each side,
    both ends included. AND it with attention_mask_4d: distances are taken on position ids, which
    restart per packed segment, so inside a segment they are token distances and across segments
    the segment mask already says no.
    """
    d = q_positions[:, :, None].astype(jnp.int32) - k_positions[:, None, :].astype(jnp.int32)
    return (jnp.abs(d) <= half_window)[:, None]


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


def attend(q, k, v, mask4, deterministic: bool, dropout: float, implementation: str | None, bias=None):
    """Attention of projected q [B, Lq, H, D], k/v [B, L, H, D] -> [B, Lq, H, D] by the chosen
    implementation (see SelfAttention); call it inside a module's compact method (the
    attention-probability dropout is a submodule of the caller)."""
    if not (deterministic or dropout == 0.0):
        # HF applies dropout to the attention probabilities.
        drop = nn.Dropout(dropout)
        return _attention(q, k, v, mask4, lambda p: drop(p, deterministic=False), bias)
    if implementation == "xla_chunked":
        return _chunked_attention(q, k, v, mask4, bias)
    return jax.nn.dot_product_attention(q, k, v, mask=mask4, implementation=implementation,
                                        bias=None if bias is None else bias.astype(q.dtype))


class SelfAttention(nn.Module):
    num_heads: int
    head_dim: int
    dropout: float
    dtype: Dtype
    param_dtype: Dtype
    # None/'xla'/'cudnn': jax.nn.dot_product_attention over the whole batch (cuDNN flash
    # attention on GPU when asked). 'xla_chunked': _attention one small group of rows at a time.
    implementation: str | None = None
    use_bias: bool = True   # False: q/k/v/out projections without biases (ModernBERT attention_bias)

    @nn.compact
    def __call__(self, x, mask4, deterministic: bool, xq=None, bias=None, rotate=None):
        """xq: the rows that ask (queries), [B, Lq, embed]; None = every row of x.
        bias: additive attention bias [B or 1, heads, Lq, L] (relative positions), or None.
        rotate: None, or (q, k) -> (q, k) applied to the projected [B, L, heads, kv] queries and
        keys before the scores (rotary positions, models/positions.py:RotaryPositions)."""
        qkv_axes = ("embed", "heads", "kv")
        shape = (self.num_heads, self.head_dim)
        b = self.use_bias
        q = dense(shape, qkv_axes, "query", self.dtype, self.param_dtype, use_bias=b)(x if xq is None else xq)
        k = dense(shape, qkv_axes, "key", self.dtype, self.param_dtype, use_bias=b)(x)
        v = dense(shape, qkv_axes, "value", self.dtype, self.param_dtype, use_bias=b)(x)
        if rotate is not None:
            q, k = rotate(q, k)
        q, k, v = (constrain(t, ("batch", "length", "heads", "kv")) for t in (q, k, v))
        out = attend(q, k, v, mask4, deterministic, self.dropout, self.implementation, bias)
        return dense(x.shape[-1], ("heads", "kv", "embed"), "out", self.dtype, self.param_dtype,
                     in_axis=(-2, -1), use_bias=b)(out)


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


class GatedMLP(nn.Module):
    """GLU MLP: out(drop(act(input(x)) * gate(x))) (ModernBERT's GeGLU: HF's fused Wi holds
    input and gate as its first and second halves; the table splits it)."""
    intermediate_size: int
    act: str
    dropout: float
    use_bias: bool
    dtype: Dtype
    param_dtype: Dtype

    @nn.compact
    def __call__(self, x, deterministic: bool):
        mk = lambda n, axes, f: dense(f, axes, n, self.dtype, self.param_dtype, use_bias=self.use_bias)
        h = ACTIVATIONS[self.act](mk("input", ("embed", "mlp"), self.intermediate_size)(x))
        h = constrain(h * mk("gate", ("embed", "mlp"), self.intermediate_size)(x), ("batch", "length", "mlp"))
        h = nn.Dropout(self.dropout)(h, deterministic=deterministic)
        return mk("out", ("mlp", "embed"), x.shape[-1])(h)


class PreNormLayer(nn.Module):
    """Pre-LayerNorm layer (ModernBERT): x + attn(attn_norm(x)), then x + mlp(mlp_norm(x)).

    attn_norm=False: no norm before attention (HF ModernBERT's layer 0 has nn.Identity there,
    the embeddings' norm comes right before it). Dropouts as HF: attention probabilities and
    the attention output both use attention_dropout; the MLP's own dropout is inside GatedMLP.
    """
    num_heads: int
    head_dim: int
    intermediate_size: int
    act: str
    eps: float
    norm_bias: bool
    attention_bias: bool
    mlp_bias: bool
    attn_norm: bool
    mlp_dropout: float
    attention_dropout: float
    dtype: Dtype
    param_dtype: Dtype
    attention_impl: str | None = None

    @nn.compact
    def __call__(self, x, mask4, deterministic: bool, query_positions=None, rotate=None):
        """query_positions [B, P]: only these rows' outputs -> [B, P, embed] (mask4 [B, 1, P, L],
        and `rotate` must rotate the queries at these rows' positions)."""
        norm = lambda name: layer_norm(self.eps, name, self.param_dtype, use_bias=self.norm_bias)
        h = norm("attn_norm")(x).astype(self.dtype) if self.attn_norm else x
        hq = None if query_positions is None else jnp.take_along_axis(
            h, query_positions[..., None].astype(jnp.int32), axis=1)
        if query_positions is not None:
            x = jnp.take_along_axis(x, query_positions[..., None].astype(jnp.int32), axis=1)
        a = SelfAttention(self.num_heads, self.head_dim, self.attention_dropout, self.dtype, self.param_dtype,
                          self.attention_impl, use_bias=self.attention_bias, name="attention")(
                              h, mask4, deterministic, hq, None, rotate)
        x = x + nn.Dropout(self.attention_dropout)(a, deterministic=deterministic)
        x = constrain(x, ("batch", "length", "embed"))
        m = GatedMLP(self.intermediate_size, self.act, self.mlp_dropout, self.mlp_bias, self.dtype,
                     self.param_dtype, name="mlp")(norm("mlp_norm")(x).astype(self.dtype), deterministic)
        return constrain((x + m).astype(self.dtype), ("batch", "length", "embed"))
