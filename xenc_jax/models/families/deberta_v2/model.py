"""DeBERTa-v2/v3 (HF DebertaV2Model / DebertaV2ForSequenceClassification): post-LayerNorm layers
whose attention is disentangled: besides content-to-content (q.k) it adds content-to-position
(q . key-projected relative embedding, "c2p") and position-to-content (k . query-projected
relative embedding, "p2c"), all scaled by sqrt(head_dim * (1 + number of those terms)). The
relative embedding table [2 * span, hidden] (optionally LayerNorm'ed) is shared by every layer;
a relative distance picks its row after optional log-bucketing (position_buckets).

Relative distances come from the position ids (query minus key), not the token index, so packed
pairs (positions restarting per segment) see exactly their unpacked distances; on a right-padded
unpacked row the two are equal, so this is HF's math there.

HF details kept on purpose (checked against PyTorch in tests/test_family_deberta.py):
- the embeddings are multiplied by the padding mask after their LayerNorm;
- the attention mask is m[i] * m[j] applied with masked_fill, so a padding query attends
  uniformly to every key (its row is all finfo.min); real tokens never see padding;
- the score scale counts the c2p/p2c entries of pos_att_type even when relative_attention is
  off (then no relative term is added, but the scale is still sqrt(head_dim * factor)).
"""
from __future__ import annotations

import dataclasses

import math

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from ...axes import constrain
from ...blocks import ACTIVATIONS, embed, layer_class, layer_norm, pair_mask_4d, post_norm_block
from ...config import EncoderConfig
from ...dense import dense, normal
from ...encoder import default_position_ids
from .disentangled import DisentangledScore
from ...module import ConfigModule, EncoderModule


@dataclasses.dataclass(frozen=True)
class DebertaV2Config(EncoderConfig):
    relative_attention: bool = False
    pos_att_type: tuple[str, ...] = ()      # subset of ("c2p", "p2c")
    position_buckets: int = -1              # <= 0: no log buckets
    max_relative_positions: int = 512       # resolved: HF's -1 means max_position_embeddings
    share_att_key: bool = False             # c2p/p2c reuse key_proj/query_proj for the relative embedding
    norm_rel_ebd: bool = False              # LayerNorm on the relative embedding table
    position_biased_input: bool = True      # absolute position embeddings added to the input
    pooler_dropout: float = 0.0             # ContextPooler's dropout (before its dense)

    @property
    def att_span(self) -> int:
        """Relative distances kept: the table has 2 * att_span rows."""
        return self.position_buckets if self.position_buckets > 0 else self.max_relative_positions

    @property
    def score_factor(self) -> int:
        return 1 + ("c2p" in self.pos_att_type) + ("p2c" in self.pos_att_type)


def log_bucket_position(rel: np.ndarray, bucket_size: int, max_position: int) -> np.ndarray:
    """HF make_log_bucket_position, in float32 like torch (checked against it in the tests):
    distances below bucket_size // 2 stay exact, larger ones are log-spaced up to max_position."""
    rel = np.asarray(rel, np.int64)
    sign = np.sign(rel)
    mid = bucket_size // 2
    abs_pos = np.where((rel < mid) & (rel > -mid), mid - 1, np.abs(rel))
    with np.errstate(divide="ignore", invalid="ignore"):
        log_pos = (np.ceil(np.log(abs_pos.astype(np.float32) / np.float32(mid))
                           / np.log(np.float32((max_position - 1) / mid)) * np.float32(mid - 1))
                   + np.float32(mid))
    return np.where(abs_pos <= mid, rel.astype(np.float32), log_pos * sign).astype(np.int64)


def relative_index_table(cfg: DebertaV2Config, max_distance: int) -> np.ndarray:
    """Row of the relative embedding table for every distance r = query - key in [-D, D]
    (indexed by r + D): the (bucketed) distance shifted by att_span and clamped, as HF's c2p
    gather. p2c uses the same row (HF gathers with -r(key, query), and bucketing is odd)."""
    rel = np.arange(-max_distance, max_distance + 1)
    if cfg.position_buckets > 0 and cfg.max_relative_positions > 0:
        rel = log_bucket_position(rel, cfg.position_buckets, cfg.max_relative_positions)
    span = cfg.att_span
    return np.clip(rel + span, 0, 2 * span - 1).astype(np.int32)


class DebertaV2Embeddings(ConfigModule):
    """word (+ absolute position) (+ token type) -> projection when embedding_size != hidden
    -> LayerNorm -> times the padding mask -> dropout."""

    @nn.compact
    def __call__(self, input_ids, token_type_ids, position_ids, attention_mask, deterministic: bool):
        cfg = self.cfg
        x = embed(cfg.vocab_size, cfg.embedding_size, "word", self.param_dtype)(input_ids)
        if cfg.position_biased_input:
            x = x + embed(cfg.max_position_embeddings, cfg.embedding_size, "position", self.param_dtype)(position_ids)
        if cfg.type_vocab_size > 0:
            types = jnp.zeros_like(input_ids) if token_type_ids is None else token_type_ids
            x = x + embed(cfg.type_vocab_size, cfg.embedding_size, "token_type", self.param_dtype)(types)
        if cfg.embedding_size != cfg.hidden_size:
            x = dense(cfg.hidden_size, ("embed_proj", "embed"), "project", self.dtype, self.param_dtype,
                      use_bias=False)(x)
        x = layer_norm(cfg.layer_norm_eps, "norm", self.param_dtype)(x)
        x = x * (attention_mask != 0)[..., None].astype(x.dtype)   # segment numbers count as 1
        return nn.Dropout(cfg.hidden_dropout)(x, deterministic=deterministic).astype(self.dtype)


class DebertaV2Layer(EncoderModule):
    """The shared post-LayerNorm layer with the disentangled score plugged into its attention.
    x [B, L, embed], allowed [B, 1, Lq, L] bool, rel_index [B, Lq, L] rows of rel_table
    [2 * span, hidden] (both None without relative attention) -> [B, Lq, embed]."""

    @nn.compact
    def __call__(self, x, allowed, rel_index, rel_table, deterministic: bool, query_positions=None):
        cfg = self.cfg
        relative = cfg.relative_attention and bool(cfg.pos_att_type)
        score = DisentangledScore(
            math.sqrt(cfg.head_dim * cfg.score_factor), index=rel_index[:, None] if relative else None,
            rel_table=rel_table if relative else None, c2p="c2p" in cfg.pos_att_type, p2c="p2c" in cfg.pos_att_type,
            share_att_key=cfg.share_att_key, pos_dropout=cfg.hidden_dropout)
        return post_norm_block(cfg.layer_spec(), self.dtype, self.param_dtype, self.attention_impl, x, allowed,
                               deterministic, query_positions, score=score)




class DebertaV2Encoder(EncoderModule):
    """(input_ids, attention_mask, ...) -> last hidden state [B, L, hidden]; arguments as
    BertEncoder's. The disentangled scores are always written out (no fused kernel computes
    c2p/p2c): attention_impl 'query_chunked' computes them a group of rows at a time, every
    other kernel falls back to the whole-batch 'reference' one (models/attention_impl.py)."""

    @nn.compact
    def __call__(self, input_ids, attention_mask, token_type_ids=None, position_ids=None,
                 deterministic: bool = True, query_positions=None):
        cfg = self.cfg
        if position_ids is None:
            position_ids = default_position_ids(cfg, input_ids)
        x = DebertaV2Embeddings(cfg, self.dtype, self.param_dtype, name="embeddings")(
            input_ids, token_type_ids, position_ids, attention_mask, deterministic)
        x = constrain(x, ("batch", "length", "embed"))
        rel_index = rel_table = None
        if cfg.relative_attention:
            rel_table = self.param("rel_embeddings", nn.with_logical_partitioning(normal(0.02), (None, "embed")),
                                   (2 * cfg.att_span, cfg.hidden_size), self.param_dtype)
            if cfg.norm_rel_ebd:
                rel_table = layer_norm(cfg.layer_norm_eps, "rel_norm", self.param_dtype)(rel_table)
            rel_table = rel_table.astype(self.dtype)
            d = input_ids.shape[1] - 1
            rows = jnp.asarray(relative_index_table(cfg, d))
            pos = position_ids.astype(jnp.int32)
            rel_index = rows[jnp.clip(pos[:, :, None] - pos[:, None, :], -d, d) + d]       # [B, L, L]
        allowed = pair_mask_4d(attention_mask)
        layer = layer_class(DebertaV2Layer, cfg.remat, 5)
        for i in range(cfg.num_layers):
            last = i == cfg.num_layers - 1 and query_positions is not None
            index = rel_index
            if last and rel_index is not None:
                index = jnp.take_along_axis(rel_index, query_positions[:, :, None].astype(jnp.int32), axis=1)
            x = layer(cfg, self.dtype, self.param_dtype, self.attention_impl, name=f"layer_{i}")(
                x, pair_mask_4d(attention_mask, query_positions) if last else allowed, index, rel_table,
                deterministic, query_positions if last else None)
        return x


class ContextPooler(ConfigModule):
    """DebertaV2ForSequenceClassification's head: first token -> dropout(pooler_dropout) -> dense
    -> pooler_hidden_act -> dropout(cls_dropout, else hidden dropout) -> classifier."""

    @nn.compact
    def __call__(self, first_token, deterministic: bool = True):
        cfg = self.cfg
        x = nn.Dropout(cfg.pooler_dropout)(first_token, deterministic=deterministic)
        x = dense(cfg.hidden_size, ("embed", "embed_out"), "dense", self.dtype, self.param_dtype)(x)
        x = ACTIVATIONS[cfg.head_activation](x)
        x = nn.Dropout(cfg.classifier_dropout)(x, deterministic=deterministic)
        return dense(cfg.num_labels, ("embed", "labels"), "out", self.dtype, self.param_dtype)(x)


DebertaV2Config.encoder_module = DebertaV2Encoder
DebertaV2Config.head_module = ContextPooler
DebertaV2Config.input_params = ("embeddings", "rel_embeddings", "rel_norm")  # tables every layer reads
