"""The config-level helpers families share (HF default position ids, the absolute-position
embeddings of a config) and the two model wrappers every family uses: the bare encoder
(bi-encoders) and encoder + classification head.

A family is a config class (models/config.py) naming its encoder and head modules; each family's
encoder (models/families/<name>/) composes the shared blocks (models/blocks/).
The wrappers only read `cfg.encoder_module` and `cfg.head_module`, so they need no family list.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from .axes import Dtype
from .blocks import AbsoluteEmbeddings
from .config import EncoderConfig
from .module import EncoderModule


def last_token_positions(attention_mask: jax.Array, starts: jax.Array) -> jax.Array:
    """[B, L] segment mask (0 padding, else 1..P), [B, P] first columns -> [B, P] last columns
    of each segment (an empty slot keeps its start: a row whose output nobody reads)."""
    seg = jnp.arange(1, starts.shape[1] + 1, dtype=attention_mask.dtype)
    counts = jnp.sum(attention_mask[:, None, :] == seg[None, :, None], axis=-1, dtype=jnp.int32)
    return starts.astype(jnp.int32) + jnp.maximum(counts - 1, 0)


def default_position_ids(cfg: EncoderConfig, input_ids: jax.Array) -> jax.Array:
    """Position ids exactly as HF derives them when none are given."""
    if cfg.position_offset:
        # create_position_ids_from_input_ids: count non-pad tokens, start at padding_idx + 1.
        pad = cfg.position_offset - 1
        not_pad = (input_ids != pad).astype(jnp.int32)
        return jnp.cumsum(not_pad, axis=1) * not_pad + pad
    return jnp.broadcast_to(jnp.arange(input_ids.shape[1], dtype=jnp.int32), input_ids.shape)


def absolute_embeddings(cfg: EncoderConfig, dtype: Dtype, param_dtype: Dtype) -> AbsoluteEmbeddings:
    """The "embeddings" block of a config with absolute position tables (BERT family, MPNet)."""
    return AbsoluteEmbeddings(cfg.vocab_size, cfg.embedding_size, cfg.max_position_embeddings, cfg.type_vocab_size,
                              cfg.layer_norm_eps, cfg.hidden_dropout, dtype, param_dtype, name="embeddings")


class BareEncoder(EncoderModule):
    """The family's encoder alone, with its params under "encoder" like SequenceClassifier's, so
    one param tree (and one HF conversion table) serves both."""

    @nn.compact
    def __call__(self, input_ids, attention_mask, token_type_ids=None, position_ids=None,
                 deterministic: bool = True):
        encoder = self.cfg.encoder_module(self.cfg, self.dtype, self.param_dtype, self.attention_impl,
                                          name="encoder")
        return encoder(input_ids, attention_mask, token_type_ids, position_ids, deterministic)


class SequenceClassifier(EncoderModule):
    """The family's encoder + its classification head -> logits.

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
        if self.cfg.reads_last_token:   # decoders: each segment's last token
            positions = last_token_positions(attention_mask, positions)
        # Only the rows the head reads are computed in the last layer: [B, P, hidden].
        encoder = self.cfg.encoder_module(self.cfg, self.dtype, self.param_dtype, self.attention_impl,
                                          name="encoder")
        h = encoder(input_ids, attention_mask, token_type_ids, position_ids, deterministic, positions)
        first = h[:, 0] if cls_positions is None else h
        logits = self.cfg.head_module(self.cfg, self.dtype, self.param_dtype, name="head")(
            first, deterministic, **self.cfg.head_inputs(encoder))
        return logits.astype(jnp.float32)  # scores are always fp32 before any activation
