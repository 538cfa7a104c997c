"""MPNet (HF MPNetModel / MPNetForSequenceClassification): BERT's post-LayerNorm layers and
absolute position embeddings (RoBERTa-style, starting at padding_idx + 1 = 2, no token types),
plus one relative position bias (32 T5-style buckets, max distance 128) computed once and added
to every layer's attention scores. Its head is RoBERTa's (dropout, dense, tanh, dropout, out_proj).

Relative positions come from the position ids when given (packed pairs: each segment's
positions restart, so the bias stays inside the segment) and from the token index otherwise,
exactly as HF (which always uses the index; equal on every real token of a right-padded row).
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from ...axes import constrain
from ...blocks import RelativePositionBias, post_norm_stack
from ...config import EncoderConfig
from ...encoder import absolute_embeddings, default_position_ids
from ...heads import ClassificationHead
from ...module import EncoderModule


@dataclasses.dataclass(frozen=True)
class MPNetConfig(EncoderConfig):
    relative_attention_num_buckets: int = 32   # rows of the bias table (HF buckets with 32 always)


class MPNetEncoder(EncoderModule):
    """(input_ids, attention_mask, ...) -> last hidden state [B, L, hidden]; arguments as
    BertEncoder's (token_type_ids is accepted and unused: MPNet has no token types)."""

    @nn.compact
    def __call__(self, input_ids, attention_mask, token_type_ids=None, position_ids=None,
                 deterministic: bool = True, query_positions=None):
        cfg = self.cfg
        if position_ids is None:
            relative = jnp.arange(input_ids.shape[1], dtype=jnp.int32)[None, :]
            position_ids = default_position_ids(cfg, input_ids)
        else:
            relative = position_ids
        x = absolute_embeddings(cfg, self.dtype, self.param_dtype)(input_ids, None, position_ids, deterministic)
        x = constrain(x, ("batch", "length", "embed"))
        bias = RelativePositionBias(cfg.relative_attention_num_buckets, cfg.num_heads, self.param_dtype,
                                    name="relative_bias")(relative)
        return post_norm_stack(cfg.layer_spec(), cfg.num_layers, cfg.remat, self.dtype, self.param_dtype,
                               self.attention_impl, x, attention_mask, deterministic, query_positions, bias)


MPNetConfig.encoder_module = MPNetEncoder
MPNetConfig.head_module = ClassificationHead
MPNetConfig.input_params = ("embeddings", "relative_bias")  # the bias table every layer adds
