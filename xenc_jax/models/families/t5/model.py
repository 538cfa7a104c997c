"""T5 encoder (HF T5EncoderModel / MT5EncoderModel, as sentence-transformers loads GTR and
sentence-T5): token embeddings (no position table, no scaling), pre-RMSNorm layers (T5LayerNorm:
no mean subtraction, no bias), attention without biases and without the 1/sqrt(d) scale, a head
dim (d_kv) independent of d_model, one relative position bias (bidirectional T5 buckets: its
table lives in layer 0 in HF) computed once and added to every layer's scores, a feed-forward
that is plain (v1.0's ReLU DenseReluDense) or gated (v1.1 / mT5: gated-GELU tanh), a final
RMSNorm. No biases anywhere.

Relative positions come from the position ids when given (packed rows: each segment restarts, so
the bias stays inside the segment) and from the token index otherwise, exactly as HF (which
always uses the index; equal on every real token of a right-padded row).
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from ...axes import constrain
from ...blocks import AttentionSpec, LayerSpec, NormSpec, PreNormLayer, RelativePositionBias, attention_mask_4d, \
    embed, layer_class
from ...config import EncoderConfig
from ...module import ConfigModule, EncoderModule


@dataclasses.dataclass(frozen=True)
class T5Config(EncoderConfig):
    attn_head_dim: int = 64                    # HF d_kv: heads * d_kv need not equal hidden_size
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    gated_mlp: bool = False                    # v1.1 / mT5 (DenseGatedActDense) vs v1.0 (DenseReluDense)

    @property
    def head_dim(self) -> int:
        return self.attn_head_dim

    def layer_spec(self) -> LayerSpec:
        """Pre-RMSNorm, no biases, unscaled scores; HF's one dropout_rate everywhere."""
        attention = AttentionSpec(self.num_heads, self.head_dim, qkv_bias=False, out_bias=False,
                                  dropout=self.attention_dropout, scale=1.0)
        return LayerSpec(attention, self.intermediate_size, self.hidden_act, NormSpec("rms", self.layer_norm_eps),
                         gated_mlp=self.gated_mlp, mlp_bias=False, attn_out_dropout=self.hidden_dropout,
                         mlp_out_dropout=self.hidden_dropout, mlp_inner_dropout=self.hidden_dropout)


class T5Encoder(EncoderModule):
    """(input_ids, attention_mask, ...) -> final-normed hidden states [B, L, hidden]; arguments as
    BertEncoder's (token_type_ids is accepted and unused). query_positions [B, P]: only those rows,
    [B, P, hidden] (the last layer computes only them)."""

    @nn.compact
    def __call__(self, input_ids, attention_mask, token_type_ids=None, position_ids=None,
                 deterministic: bool = True, query_positions=None):
        cfg = self.cfg
        relative = jnp.arange(input_ids.shape[1], dtype=jnp.int32)[None, :] if position_ids is None \
            else jnp.asarray(position_ids, jnp.int32)
        x = embed(cfg.vocab_size, cfg.hidden_size, "word", self.param_dtype)(input_ids)
        x = nn.Dropout(cfg.hidden_dropout)(x, deterministic=deterministic).astype(self.dtype)
        x = constrain(x, ("batch", "length", "embed"))
        bias = RelativePositionBias(cfg.relative_attention_num_buckets, cfg.num_heads, self.param_dtype,
                                    cfg.relative_attention_num_buckets, cfg.relative_attention_max_distance,
                                    name="relative_bias")(relative)
        spec, mask4 = cfg.layer_spec(), attention_mask_4d(attention_mask)
        layer = layer_class(PreNormLayer, cfg.remat, 3)
        for i in range(cfg.num_layers):
            last = i == cfg.num_layers - 1 and query_positions is not None
            rows = query_positions if last else None
            x = layer(spec, "attn_norm", self.dtype, self.param_dtype, self.attention_impl, name=f"layer_{i}")(
                x, attention_mask_4d(attention_mask, rows) if last else mask4, deterministic, rows, None, bias)
        x = spec.norm("final_norm", self.param_dtype)(x).astype(self.dtype)
        x = nn.Dropout(cfg.hidden_dropout)(x, deterministic=deterministic)
        return constrain(x, ("batch", "length", "embed"))


class T5NoHead(ConfigModule):
    """T5 runs as an encoder only (embeddings): HF's T5ForSequenceClassification runs the whole
    encoder-decoder and reads the decoder's last eos token, which is not implemented here."""

    def __call__(self, *args, **kwargs):
        raise ValueError(f"{self.cfg.family!r} models run here as encoders only (T5EncoderModel: BiEncoder, "
                         "SentenceTransformer folders such as GTR / sentence-T5); a T5 classification head "
                         "(T5ForSequenceClassification, encoder-decoder) is not supported: load it with head=False")


T5Config.encoder_module = T5Encoder
T5Config.head_module = T5NoHead
T5Config.input_params = ("word", "relative_bias")   # the bias table every layer adds
T5Config.output_params = ("final_norm",)
