"""Transformer layers as data (LayerSpec) and the two layer shapes every family here uses:

  post-norm (BERT family, MPNet, DeBERTa): x = norm(x + drop(attn(x))); x = norm(x + drop(mlp(x)))
  pre-norm  (ModernBERT, Qwen; Llama/Mistral/Gemma/T5 are this shape): x = x + drop(attn(norm(x)));
            x = x + drop(mlp(norm(x))) (only T5 drops there)

query_positions [B, P]: the layer computes only these rows' outputs -> [B, P, embed] (keys and
values still come from every row, so the rows computed are exactly the full layer's); the mask
(and a rotary hook) must then be for these query rows. A head reads one token per segment, so
the last layer needs only those rows.
"""
from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax.numpy as jnp

from ..axes import Dtype, constrain
from .attention import Attention, AttentionSpec
from .masks import attention_mask_4d
from .mlp import GatedMLP, plain_mlp
from .norms import NormSpec


@functools.cache
def layer_class(cls: type, remat: bool, deterministic_argnum: int) -> type:
    """`cls`, or `cls` rematerialised (cfg.remat): nn.remat keeps the same param scope names,
    so checkpoints and sharding rules do not change. `deterministic_argnum` is the position of
    the layer's `deterministic` bool in __call__ (self is 0): a Python bool must be static.
    Cached: families call it per layer, and nn.remat builds a new class each time."""
    return nn.remat(cls, static_argnums=(deterministic_argnum,)) if remat else cls


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    attention: AttentionSpec
    intermediate_size: int
    act: str                        # blocks/mlp.py ACTIVATIONS
    norm: NormSpec
    gated_mlp: bool = False         # GatedMLP (params under "mlp") instead of mlp_in / mlp_out
    mlp_bias: bool = True
    attn_out_dropout: float = 0.0   # on the attention output, before the residual add
    mlp_out_dropout: float = 0.0    # on the MLP output, before the residual add
    mlp_inner_dropout: float = 0.0  # inside the MLP, before its output dense (gated; plain: T5 v1.0)
    post_norms: bool = False        # pre-norm layers: a norm on each branch's output too (Gemma 2/3)


def _rows(x, query_positions):
    return jnp.take_along_axis(x, query_positions[..., None].astype(jnp.int32), axis=1)


def _bias_rows(bias, batch: int, query_positions):
    """An additive score bias [B or 1, heads, L, L] cut to the query rows [B, P] -> [B, heads, P, L]."""
    bias = jnp.broadcast_to(bias, (batch,) + bias.shape[1:])
    return jnp.take_along_axis(bias, query_positions[:, None, :, None].astype(jnp.int32), axis=2)


def _mlp(spec: LayerSpec, x, dtype, param_dtype, deterministic: bool):
    if spec.gated_mlp:
        return GatedMLP(spec.intermediate_size, spec.act, spec.mlp_inner_dropout, spec.mlp_bias, dtype,
                        param_dtype, name="mlp")(x, deterministic)
    return plain_mlp(x, spec.intermediate_size, spec.act, dtype, param_dtype, spec.mlp_bias, spec.mlp_inner_dropout,
                     deterministic)


def post_norm_block(spec: LayerSpec, dtype: Dtype, param_dtype: Dtype, attention_impl: str | None,
                    x, mask4, deterministic: bool, query_positions=None, bias=None, score=None):
    """The post-norm layer's body, its params (attention, attention_norm, mlp_in, mlp_out,
    mlp_norm) created in the calling module's scope. bias [B or 1, heads, L, L]: cut to the
    query rows here. score: a ScorePlugin whose per-row arrays are already for the query rows."""
    xq = None if query_positions is None else _rows(x, query_positions)
    if bias is not None and query_positions is not None:
        bias = _bias_rows(bias, x.shape[0], query_positions)
    h = Attention(spec.attention, dtype, param_dtype, attention_impl, name="attention")(
        x, mask4, deterministic, xq, bias, score=score)
    h = nn.Dropout(spec.attn_out_dropout)(h, deterministic=deterministic)
    x = x if xq is None else xq
    x = spec.norm("attention_norm", param_dtype)(x + h).astype(dtype)
    x = constrain(x, ("batch", "length", "embed"))
    h = _mlp(spec, x, dtype, param_dtype, deterministic)
    h = nn.Dropout(spec.mlp_out_dropout)(h, deterministic=deterministic)
    x = spec.norm("mlp_norm", param_dtype)(x + h).astype(dtype)
    return constrain(x, ("batch", "length", "embed"))


class PostNormLayer(nn.Module):
    spec: LayerSpec
    dtype: Dtype
    param_dtype: Dtype
    attention_impl: str | None = None

    @nn.compact
    def __call__(self, x, mask4, deterministic: bool, query_positions=None, bias=None, score=None):
        return post_norm_block(self.spec, self.dtype, self.param_dtype, self.attention_impl, x, mask4,
                               deterministic, query_positions, bias, score)


def post_norm_stack(spec: LayerSpec, num_layers: int, remat: bool, dtype: Dtype, param_dtype: Dtype,
                    attention_impl: str | None, x, attention_mask, deterministic: bool, query_positions=None,
                    bias=None):
    """num_layers PostNormLayers with the bidirectional segment mask, created as layer_{i} in
    the calling module. bias: shared by every layer. query_positions: the last layer's rows."""
    mask4 = attention_mask_4d(attention_mask)
    for i in range(num_layers):
        last = i == num_layers - 1 and query_positions is not None
        layer = layer_class(PostNormLayer, remat, 3)(spec, dtype, param_dtype, attention_impl, name=f"layer_{i}")
        x = layer(x, attention_mask_4d(attention_mask, query_positions) if last else mask4,
                  deterministic, query_positions if last else None, bias)
    return x


class PreNormLayer(nn.Module):
    """x + drop(attn(attn_norm(x))), then x + drop(mlp(mlp_norm(x))); with spec.post_norms,
    x + post_attn_norm(attn(attn_norm(x))), then x + post_mlp_norm(mlp(mlp_norm(x))) (Gemma 2/3).

    attn_norm: the name of the norm before attention, or None for none (HF ModernBERT's layer 0
    has nn.Identity there: the embeddings' norm comes right before it)."""
    spec: LayerSpec
    attn_norm: str | None
    dtype: Dtype
    param_dtype: Dtype
    attention_impl: str | None = None

    @nn.compact
    def __call__(self, x, mask4, deterministic: bool, query_positions=None, rotate=None, bias=None):
        """rotate must rotate the queries at the query_positions rows when those are given.
        bias: an additive score bias [B or 1, heads, L, L] for every row (T5's relative
        positions, computed once and shared by the layers); cut to the query rows here."""
        spec = self.spec
        h = spec.norm(self.attn_norm, self.param_dtype)(x).astype(self.dtype) if self.attn_norm else x
        hq = None
        if query_positions is not None:
            rows = query_positions[..., None].astype(jnp.int32)
            hq, x = jnp.take_along_axis(h, rows, axis=1), jnp.take_along_axis(x, rows, axis=1)
            bias = None if bias is None else _bias_rows(bias, x.shape[0], query_positions)
        a = Attention(spec.attention, self.dtype, self.param_dtype, self.attention_impl, name="attention")(
            h, mask4, deterministic, hq, bias, rotate)
        if spec.post_norms:
            a = spec.norm("post_attn_norm", self.param_dtype)(a).astype(self.dtype)
        x = x + nn.Dropout(spec.attn_out_dropout)(a, deterministic=deterministic)
        x = constrain(x, ("batch", "length", "embed"))
        m = _mlp(spec, spec.norm("mlp_norm", self.param_dtype)(x).astype(self.dtype), self.dtype,
                 self.param_dtype, deterministic)
        if spec.post_norms:
            m = spec.norm("post_mlp_norm", self.param_dtype)(m).astype(self.dtype)
        if spec.mlp_out_dropout:   # T5LayerFF's (ModernBERT and the decoders have none there)
            m = nn.Dropout(spec.mlp_out_dropout)(m, deterministic=deterministic)
        return constrain((x + m).astype(self.dtype), ("batch", "length", "embed"))
