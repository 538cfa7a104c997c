"""The one attention module every family composes.

Attention(spec) projects q/k/v from the input (q from `xq`, the asking rows, when given),
optionally norms q and k per head, rotates them (a rotary hook), repeats grouped-query k/v to
the query heads, and hands them with the mask to the kernel seam (models/attention_impl.py),
then projects the heads back. What a family varies is data (AttentionSpec) or a call argument:

  mask4    [B, 1, Lq, L] bool from blocks/masks.py: bidirectional, causal, sliding window,
           segment-aware for packed rows (block-diagonal)
  bias     additive score bias [B or 1, heads, Lq, L] (MPNet's relative positions)
  rotate   (q, k) -> (q, k) on the projected [B, L, heads, kv] tensors (blocks/positions.py)
  score    a ScorePlugin computing the scaled scores itself (DeBERTa's disentangled attention)

Params: query, key, value, out (DenseGeneral kernels [embed, heads, kv] / [heads, kv, embed];
grouped-query k/v [embed, kv_heads, kv]) and q_norm / k_norm when spec.qk_norm is set.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Protocol

import flax.linen as nn
import jax
import jax.numpy as jnp

from .. import attention_impl
from ..axes import Dtype, constrain
from ..dense import dense
from .norms import NormSpec


@dataclasses.dataclass(frozen=True)
class AttentionSpec:
    num_heads: int
    head_dim: int
    num_kv_heads: int = 0             # 0: multi-head (k/v like q); > 0: grouped-query k/v heads
    qkv_bias: bool = True
    out_bias: bool = True
    qk_norm: NormSpec | None = None   # per-head norm over head_dim on q and k (Qwen3, Gemma 3)
    dropout: float = 0.0              # on the attention probabilities (training)
    scale: float | None = None        # score scale; None: 1 / sqrt(head_dim)
    softcap: float | None = None      # logit soft-cap (Gemma 2)

    def __post_init__(self):
        if self.num_kv_heads and self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_kv_heads={self.num_kv_heads} must divide num_heads={self.num_heads}")

    @property
    def groups(self) -> int:
        """Query heads per k/v head."""
        return self.num_heads // self.num_kv_heads if self.num_kv_heads else 1


class ScorePlugin(Protocol):
    """Computes the scaled attention scores in place of q.k^T * scale (fp32 [B, H, Lq, L]).
    A pytree (flax.struct.dataclass), so the chunked kernel can cut its per-row arrays."""

    def project(self, project: Callable[[str, jax.Array], jax.Array], deterministic: bool) -> "ScorePlugin":
        """Called once inside Attention: `project(name, x)` applies the attention's dense `name`
        ("query", "key", "value", or a new q-shaped one) to x; returns the ready plug-in."""

    def __call__(self, q: jax.Array, k: jax.Array) -> jax.Array: ...

    def rows(self) -> tuple[jax.Array, ...]:
        """Arrays with one entry per batch row (leading axis B or 1)."""

    def with_rows(self, rows: tuple[jax.Array, ...]) -> "ScorePlugin":
        """The plug-in on a group of rows (`rows` cut from rows())."""


class Attention(nn.Module):
    spec: AttentionSpec
    dtype: Dtype
    param_dtype: Dtype
    implementation: str | None = None   # an attention_impl kernel name; None: XLA's

    @nn.compact
    def __call__(self, x, mask4, deterministic: bool, xq=None, bias=None, rotate=None, score=None):
        """x [B, L, embed] (keys/values and, unless xq [B, Lq, embed] is given, queries) ->
        [B, Lq, embed]."""
        s = self.spec
        q_shape, q_axes = (s.num_heads, s.head_dim), ("embed", "heads", "kv")
        kv_shape, kv_axes = ((s.num_kv_heads, s.head_dim), ("embed", "kv_heads", "kv")) if s.num_kv_heads \
            else (q_shape, q_axes)
        mk = lambda name, shape, axes: dense(shape, axes, name, self.dtype, self.param_dtype, use_bias=s.qkv_bias)
        denses = {"query": mk("query", q_shape, q_axes), "key": mk("key", kv_shape, kv_axes)}
        q = denses["query"](x if xq is None else xq)
        k = denses["key"](x)
        v = mk("value", kv_shape, kv_axes)(x)
        if s.qk_norm is not None:
            q = s.qk_norm("q_norm", self.param_dtype, "kv")(q).astype(self.dtype)
            k = s.qk_norm("k_norm", self.param_dtype, "kv")(k).astype(self.dtype)
        if rotate is not None:
            q, k = rotate(q, k)
        if s.groups > 1:   # HF repeat_kv: kv head j serves query heads j * groups ... (j + 1) * groups - 1
            k, v = jnp.repeat(k, s.groups, axis=2), jnp.repeat(v, s.groups, axis=2)
        q, k, v = (constrain(t, ("batch", "length", "heads", "kv")) for t in (q, k, v))
        if score is not None:
            def project(name, t):
                if name not in denses:
                    denses[name] = mk(name, q_shape, q_axes)
                return denses[name](t)
            score = score.project(project, deterministic)
        dropout = None
        if not (deterministic or s.dropout == 0.0):   # HF drops attention probabilities
            drop = nn.Dropout(s.dropout)
            dropout = lambda p: drop(p, deterministic=False)
        out = attention_impl.attention(q, k, v, mask4, self.implementation, bias=bias, scale=s.scale,
                                       softcap=s.softcap, score=score, dropout=dropout)
        return dense(x.shape[-1], ("heads", "kv", "embed"), "out", self.dtype, self.param_dtype,
                     in_axis=(-2, -1), use_bias=s.out_bias)(out)
