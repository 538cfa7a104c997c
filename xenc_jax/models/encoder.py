"""The encoder for every supported family, and the full sequence-classification model.

BERT, RoBERTa, XLM-RoBERTa, ELECTRA and DistilBERT compute the same post-LayerNorm transformer;
they differ in embeddings (token types or not, RoBERTa's position offset, ELECTRA's projection)
and in the classification head. Those differences are config fields here; the differing HF
*names* live only in hf/weights.py. One module therefore serves all families (DistilBERT's
layout differs only in names, so it gets no module of its own).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from ..hf.configs import EncoderConfig
from .heads import ClassificationHead
from .layers import Dtype, TransformerLayer, attention_mask_4d, constrain, dense, embed, layer_norm


def default_position_ids(cfg: EncoderConfig, input_ids: jax.Array) -> jax.Array:
    """Position ids exactly as HF derives them when none are given."""
    if cfg.family in ("roberta", "xlm-roberta"):
        # create_position_ids_from_input_ids: count non-pad tokens, start at padding_idx + 1.
        not_pad = (input_ids != cfg.pad_token_id).astype(jnp.int32)
        return jnp.cumsum(not_pad, axis=1) * not_pad + cfg.pad_token_id
    return jnp.broadcast_to(jnp.arange(input_ids.shape[1], dtype=jnp.int32), input_ids.shape)


class Embeddings(nn.Module):
    cfg: EncoderConfig
    dtype: Dtype
    param_dtype: Dtype

    @nn.compact
    def __call__(self, input_ids, token_type_ids, position_ids, deterministic: bool):
        cfg = self.cfg
        x = embed(cfg.vocab_size, cfg.embedding_size, "word", self.param_dtype)(input_ids)
        x = x + embed(cfg.max_position_embeddings, cfg.embedding_size, "position", self.param_dtype)(position_ids)
        if cfg.type_vocab_size > 0:
            x = x + embed(cfg.type_vocab_size, cfg.embedding_size, "token_type", self.param_dtype)(token_type_ids)
        x = layer_norm(cfg.layer_norm_eps, "norm", self.param_dtype)(x)
        x = nn.Dropout(cfg.hidden_dropout)(x, deterministic=deterministic).astype(self.dtype)
        return x


class Encoder(nn.Module):
    """(input_ids, attention_mask, ...) -> last hidden state [B, L, hidden]."""
    cfg: EncoderConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    attention_impl: str | None = None

    @nn.compact
    def __call__(self, input_ids, attention_mask, token_type_ids=None, position_ids=None,
                 deterministic: bool = True, query_positions=None):
        """attention_mask: int [B, L]; 0 = padding, else a segment number (see attention_mask_4d).
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
        x = Embeddings(cfg, self.dtype, self.param_dtype, name="embeddings")(
            input_ids, token_type_ids, position_ids, deterministic)
        if cfg.embedding_size != cfg.hidden_size:
            x = dense(cfg.hidden_size, ("embed_proj", "embed"), "embeddings_project",
                      self.dtype, self.param_dtype)(x)
        x = constrain(x, ("batch", "length", "embed"))
        mask4 = attention_mask_4d(attention_mask)
        for i in range(cfg.num_layers):
            last = i == cfg.num_layers - 1 and query_positions is not None
            x = TransformerLayer(
                cfg.num_heads, cfg.head_dim, cfg.intermediate_size, cfg.hidden_act, cfg.layer_norm_eps,
                cfg.hidden_dropout, cfg.attention_dropout, self.dtype, self.param_dtype,
                self.attention_impl, name=f"layer_{i}")(
                    x, attention_mask_4d(attention_mask, query_positions) if last else mask4,
                    deterministic, query_positions if last else None)
        return x


class BareEncoder(nn.Module):
    """Encoder alone, with its params under "encoder" like SequenceClassifier's, so one param
    tree (and one HF conversion table) serves both."""
    cfg: EncoderConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    attention_impl: str | None = None

    @nn.compact
    def __call__(self, input_ids, attention_mask, token_type_ids=None, position_ids=None,
                 deterministic: bool = True):
        return Encoder(self.cfg, self.dtype, self.param_dtype, self.attention_impl, name="encoder")(
            input_ids, attention_mask, token_type_ids, position_ids, deterministic)


class SequenceClassifier(nn.Module):
    """Encoder + the family's classification head -> logits.

    cls_positions None: logits [B, num_labels] read at token 0 (as HF).
    cls_positions [B, P]: logits [B, P, num_labels], one per packed segment.
    """
    cfg: EncoderConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    attention_impl: str | None = None

    @nn.compact
    def __call__(self, input_ids, attention_mask, token_type_ids=None, position_ids=None,
                 cls_positions=None, deterministic: bool = True):
        positions = (jnp.zeros((input_ids.shape[0], 1), jnp.int32) if cls_positions is None
                     else cls_positions.astype(jnp.int32))
        # Only the rows the head reads are computed in the last layer: [B, P, hidden].
        h = Encoder(self.cfg, self.dtype, self.param_dtype, self.attention_impl, name="encoder")(
            input_ids, attention_mask, token_type_ids, position_ids, deterministic, positions)
        first = h[:, 0] if cls_positions is None else h
        logits = ClassificationHead(self.cfg, self.dtype, self.param_dtype, name="head")(first, deterministic)
        return logits.astype(jnp.float32)  # scores are always fp32 before any activation
