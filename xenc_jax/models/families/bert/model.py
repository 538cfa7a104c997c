"""BERT, RoBERTa, XLM-RoBERTa, ELECTRA and DistilBERT: one post-LayerNorm transformer with
absolute position embeddings. They differ in embeddings (token types or not, RoBERTa's position
offset, ELECTRA's projection) and in the head's activation and dropout placement, all config
values; the differing HF *names* live only in hf.py.
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from ...axes import constrain
from ...blocks import post_norm_stack
from ...config import EncoderConfig
from ...dense import dense
from ...encoder import absolute_embeddings, default_position_ids
from ...heads import ClassificationHead
from ...module import EncoderModule


@dataclasses.dataclass(frozen=True)
class BertConfig(EncoderConfig):
    """No switches beyond EncoderConfig's."""


class BertEncoder(EncoderModule):
    """(input_ids, attention_mask, ...) -> last hidden state [B, L, hidden]."""

    @nn.compact
    def __call__(self, input_ids, attention_mask, token_type_ids=None, position_ids=None,
                 deterministic: bool = True, query_positions=None):
        """attention_mask: int [B, L]; 0 = padding, else a segment number (blocks/masks.py).
        position_ids: HF position ids (already including RoBERTa's offset); None = HF's default.
        query_positions: int [B, P] or None. When given, the last layer computes only these
        positions and the result is [B, P, hidden]: a classifier reads one token per pair, and
        the last layer's other rows (its query projection, attention output, feed-forward)
        would be thrown away, 1/num_layers of the compute less a little. Keys and values still
        come from every token, so the rows computed are exactly the full encoder's.
        """
        cfg = self.cfg
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        if position_ids is None:
            position_ids = default_position_ids(cfg, input_ids)
        x = absolute_embeddings(cfg, self.dtype, self.param_dtype)(input_ids, token_type_ids, position_ids,
                                                                  deterministic)
        if cfg.embedding_size != cfg.hidden_size:
            x = dense(cfg.hidden_size, ("embed_proj", "embed"), "embeddings_project",
                      self.dtype, self.param_dtype)(x)
        x = constrain(x, ("batch", "length", "embed"))
        return post_norm_stack(cfg.layer_spec(), cfg.num_layers, cfg.remat, self.dtype, self.param_dtype,
                               self.attention_impl, x, attention_mask, deterministic, query_positions)


BertConfig.encoder_module = BertEncoder
BertConfig.head_module = ClassificationHead
BertConfig.input_params = ("embeddings", "embeddings_project")  # ELECTRA projects its embeddings
