"""ModernBERT (HF ModernBertModel / ModernBertForSequenceClassification): word embeddings and a
LayerNorm (no position table), pre-LayerNorm layers with rotary positions on q/k, alternating
global and sliding-window ("local") attention, a GeGLU MLP, a final LayerNorm; norms and
projections optionally without biases. Its head pools (first token or mean), then
dense -> act -> LayerNorm -> dropout -> classifier.

Positions are the position ids (per packed segment, restarting at 0) or the token index, as HF
(ModernBertModel defaults to arange). Rotary angles and the local window are both taken from
them, so a packed segment sees exactly what it would see alone.
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from ...axes import Dtype, constrain
from ...blocks import ACTIVATIONS, GLOBAL, LOCAL, AttentionSpec, LayerSpec, LayerType, NormSpec, PreNormLayer, \
    RopeScaling, embed, layer_class, layer_norm
from ...config import EncoderConfig
from ...dense import dense
from ...encoder import default_position_ids
from ...module import ConfigModule, EncoderModule


@dataclasses.dataclass(frozen=True)
class ModernBertConfig(EncoderConfig):
    layer_types: tuple[str, ...] = ()    # GLOBAL / LOCAL per layer
    global_rope_theta: float = 160_000.0
    local_rope_theta: float = 10_000.0
    global_rope_scaling: RopeScaling | None = None   # a rope type's rescaling per layer type (blocks.RopeScaling)
    local_rope_scaling: RopeScaling | None = None
    local_attention: int = 128           # HF's full window: local layers see local_attention // 2 each side
    norm_bias: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    classifier_bias: bool = False        # the head's dense only; the classifier always has a bias in HF
    classifier_pooling: str = "cls"      # "cls" | "mean"
    embedding_dropout: float = 0.0

    def layer_type(self, kind: str) -> LayerType:
        """GLOBAL: all tokens of the segment, global_rope_theta (and scaling); LOCAL:
        local_attention // 2 tokens each side, local_rope_theta (and scaling)."""
        if kind == GLOBAL:
            return LayerType(GLOBAL, None, self.global_rope_theta, rope_scaling=self.global_rope_scaling)
        if kind == LOCAL:
            return LayerType(LOCAL, self.local_attention // 2, self.local_rope_theta,
                             rope_scaling=self.local_rope_scaling)
        raise ValueError(f"unknown ModernBERT layer type {kind!r} (expected {GLOBAL!r} or {LOCAL!r})")

    def layer_spec(self) -> LayerSpec:
        """Pre-LayerNorm, GeGLU MLP. Dropouts as HF: attention probabilities and the attention
        output both use attention_dropout; the MLP's own (hidden) dropout is inside it."""
        attention = AttentionSpec(self.num_heads, self.head_dim, qkv_bias=self.attention_bias,
                                  out_bias=self.attention_bias, dropout=self.attention_dropout)
        return LayerSpec(attention, self.intermediate_size, self.hidden_act,
                         NormSpec("layer", self.layer_norm_eps, self.norm_bias), gated_mlp=True,
                         mlp_bias=self.mlp_bias, attn_out_dropout=self.attention_dropout,
                         mlp_inner_dropout=self.hidden_dropout)


class ModernBertEmbeddings(ConfigModule):

    @nn.compact
    def __call__(self, input_ids, deterministic: bool):
        cfg = self.cfg
        x = embed(cfg.vocab_size, cfg.hidden_size, "word", self.param_dtype)(input_ids)
        x = layer_norm(cfg.layer_norm_eps, "norm", self.param_dtype, use_bias=cfg.norm_bias)(x)
        return nn.Dropout(cfg.embedding_dropout)(x, deterministic=deterministic).astype(self.dtype)


def segment_mean(h, attention_mask, query_positions):
    """Mean of h [B, L, D] over the segment of each query row [B, P] -> [B, P, D] (fp32 sums).

    With a 0/1 mask and query 0 this is HF's classifier_pooling="mean"; with packed segment
    numbers it is the same per segment. A row of padding only gets zeros (HF would give 0/0).
    """
    seg = jnp.take_along_axis(attention_mask, query_positions.astype(jnp.int32), axis=1)      # [B, P]
    member = ((attention_mask[:, None, :] == seg[:, :, None]) & (seg[:, :, None] != 0)).astype(jnp.float32)
    total = jnp.einsum("bpl,bld->bpd", member, h.astype(jnp.float32))
    return (total / jnp.maximum(member.sum(-1, keepdims=True), 1.0)).astype(h.dtype)


def layer_inputs(cfg: ModernBertConfig, kind: str, attention_mask, position_ids, rows=None):
    """(mask4, rotate) of a GLOBAL or LOCAL layer: the segment-aware mask (AND the window for
    LOCAL) and the rotary hook with that kind's theta. rows [B, P]: only those query rows (the
    last layer for the head)."""
    return cfg.layer_type(kind).inputs(cfg.head_dim, attention_mask, position_ids, rows)


def make_layer(cfg: ModernBertConfig, i: int, dtype: Dtype, param_dtype: Dtype, attention_impl=None,
               name: str | None = None) -> PreNormLayer:
    """Layer i (layer 0 has no attention norm: HF's nn.Identity, right after the embeddings' norm)."""
    return layer_class(PreNormLayer, cfg.remat, 3)(cfg.layer_spec(), "attn_norm" if i > 0 else None, dtype,
                                                   param_dtype, attention_impl,
                                                   name=f"layer_{i}" if name is None else name)


class ModernBertEncoder(EncoderModule):
    """(input_ids, attention_mask, ...) -> final-normed hidden states [B, L, hidden]; arguments as
    BertEncoder's (token_type_ids is accepted and unused: ModernBERT has no token types).

    query_positions [B, P] (from SequenceClassifier): the pooled rows the head reads, [B, P, hidden]:
    with classifier_pooling "cls" the hidden state at those rows (the last layer computes only
    them), with "mean" the mean over each of those rows' segment (the last layer computes all).
    """
    cfg: ModernBertConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    attention_impl: str | None = None

    @nn.compact
    def __call__(self, input_ids, attention_mask, token_type_ids=None, position_ids=None,
                 deterministic: bool = True, query_positions=None):
        cfg = self.cfg
        if position_ids is None:
            position_ids = default_position_ids(cfg, input_ids)
        position_ids = jnp.asarray(position_ids, jnp.int32)
        x = ModernBertEmbeddings(cfg, self.dtype, self.param_dtype, name="embeddings")(input_ids, deterministic)
        x = constrain(x, ("batch", "length", "embed"))
        mean = cfg.classifier_pooling == "mean"
        rows = None if mean else query_positions   # the rows the last layer computes
        for i, kind in enumerate(cfg.layer_types):
            q = rows if i == cfg.num_layers - 1 else None
            mask4, rotate = layer_inputs(cfg, kind, attention_mask, position_ids, q)
            x = make_layer(cfg, i, self.dtype, self.param_dtype, self.attention_impl)(x, mask4, deterministic, q, rotate)
        x = layer_norm(cfg.layer_norm_eps, "final_norm", self.param_dtype, use_bias=cfg.norm_bias)(x)
        x = constrain(x.astype(self.dtype), ("batch", "length", "embed"))
        if mean and query_positions is not None:
            x = segment_mean(x, attention_mask, query_positions)
        return x


class ModernBertHead(ConfigModule):
    """HF ModernBertPredictionHead + drop + classifier on the pooled hidden state [..., hidden]."""

    @nn.compact
    def __call__(self, pooled, deterministic: bool = True):
        cfg = self.cfg
        x = dense(cfg.hidden_size, ("embed", "embed_out"), "dense", self.dtype, self.param_dtype,
                  use_bias=cfg.classifier_bias)(pooled)
        x = ACTIVATIONS[cfg.head_activation](x)
        x = layer_norm(cfg.layer_norm_eps, "norm", self.param_dtype, use_bias=cfg.norm_bias)(x).astype(self.dtype)
        x = nn.Dropout(cfg.classifier_dropout)(x, deterministic=deterministic)
        return dense(cfg.num_labels, ("embed", "labels"), "out", self.dtype, self.param_dtype)(x)


ModernBertConfig.encoder_module = ModernBertEncoder
ModernBertConfig.head_module = ModernBertHead
ModernBertConfig.output_params = ("final_norm",)
