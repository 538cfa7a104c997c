"""The decoder every Llama-shaped family shares (Llama, Mistral, Qwen2, Qwen3, Gemma 1/2/3): token embeddings,
pre-RMSNorm layers with causal grouped-query attention and rotary positions, a SwiGLU MLP, a final
RMSNorm; and the two heads a decoder scores with. What differs between those families is data on
DecoderConfig: q/k norms (Qwen3), biases (Qwen2's q/k/v, attention_bias, mlp_bias), an explicit
head_dim, rope scaling (llama3, linear, yarn, proportional), a sliding window (Mistral), tied embeddings; Gemma's (1 + w)
norms, scaled embeddings, post-branch norms, score scale, soft-caps and GeGLU (by activation name). A family folder
holds a DecoderConfig subclass (its name) and its HF record; the modules are these.

A decoder is read at the LAST real token of each (packed) segment, not the first: the score
head (ForSequenceClassification's `score`, or the LM head of a causal-LM reranker) runs only
there, and the last layer computes only those rows. The LM head never runs over the vocabulary:
only the columns of the scoring tokens are taken, and the score is logit[true] - logit[false]
(or logit[true] alone), as sentence-transformers' LogitScore.

Packed rows: attention is block-causal (a token sees the earlier tokens of its own segment) and
positions restart per segment, so each pair is scored exactly as alone; a sliding window is
measured on position ids, so it restarts per segment too. Rotary angles depend only on position
differences, so HF's left padding (positions shifted by the padding) gives the same attention as
our right padding up to rounding.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import flax.linen as nn
import jax.numpy as jnp

from .axes import Dtype, constrain
from .blocks import GLOBAL, LOCAL, AttentionSpec, LayerSpec, LayerType, NormSpec, PreNormLayer, RopeScaling, embed, \
    layer_class
from .config import EncoderConfig
from .dense import contract, dense, normal
from .encoder import default_position_ids
from .module import ConfigModule, EncoderModule


@dataclasses.dataclass(frozen=True)
class DecoderConfig(EncoderConfig):
    num_kv_heads: int = 0              # grouped-query attention: query heads per kv head = num_heads // num_kv_heads
    attn_head_dim: int = 0             # an explicit head_dim (may differ from hidden // heads); 0: hidden // heads
    rope_theta: float = 10_000.0
    # a rope type's rescaling (llama3, linear, yarn, proportional; blocks.RopeScaling): every layer's, but
    # only the GLOBAL ones' when local_rope_theta is set (Gemma 3: local_rope_scaling is the LOCAL ones')
    rope_scaling: RopeScaling | None = None
    sliding_window: int = 0            # > 0: sliding layers see the last `sliding_window` tokens (self included)
    layer_kinds: tuple[str, ...] = ()  # GLOBAL / LOCAL per layer; (): all LOCAL with a window, else all GLOBAL
    qk_norm: bool = False              # Qwen3: RMSNorm over head_dim on q and k
    qkv_bias: bool = False             # biases on q/k/v
    out_bias: bool = False             # bias on o_proj
    mlp_bias: bool = False             # biases on the MLP's gate/up/down (Llama's mlp_bias)
    tie_word_embeddings: bool = False  # the LM head is the token embedding table
    # Gemma's switches (the defaults are Llama's)
    norm_kind: str = "rms"             # blocks NormSpec kind of every norm; "rms_one_plus": (1 + w) RMSNorm
    embed_scale: bool = False          # token embeddings times sqrt(hidden), rounded to their dtype
    post_norms: bool = False           # Gemma 2/3: a norm on the attention's and the MLP's outputs too
    attn_scale: float | None = None    # score scale (Gemma 2/3: query_pre_attn_scalar ** -0.5); None: head_dim ** -0.5
    attn_softcap: float | None = None  # Gemma 2: cap * tanh(scores / cap)
    final_softcap: float | None = None  # Gemma 2: cap * tanh(logits / cap) on the LM logits
    local_rope_theta: float | None = None  # Gemma 3: the sliding layers' rope theta; None: rope_theta
    local_rope_scaling: RopeScaling | None = None  # Gemma 3: the sliding layers' rope scaling (with local_rope_theta)
    bidirectional: bool = False        # EmbeddingGemma: no causal mask; a window reaches both ways
    head_kind: str = "score"           # "score": ForSequenceClassification's Linear; "lm": causal-LM columns
    score_token_ids: tuple[int, ...] = ()   # "lm": (true,) or (true, false), resolved when loading
    reads_last_token: ClassVar[bool] = True  # SequenceClassifier reads each segment's last token

    @property
    def head_dim(self) -> int:
        return self.attn_head_dim or self.hidden_size // self.num_heads

    @property
    def head_class_suffix(self) -> str:
        return "ForCausalLM" if self.head_kind == "lm" else "ForSequenceClassification"

    def head_inputs(self, encoder) -> dict:
        """The tied LM head reads the decoder's token table (bound `encoder` after its call)."""
        if self.head_kind == "lm" and self.tie_word_embeddings:
            return {"tied_embedding": nn.meta.unbox(encoder.variables["params"]["word"]["embedding"])}
        return {}

    def __post_init__(self):
        super().__post_init__()
        kinds = self.layer_kinds or (GLOBAL,) * self.num_layers
        if len(kinds) != self.num_layers or set(kinds) - {GLOBAL, LOCAL} or (LOCAL in kinds and self.sliding_window < 1):
            raise ValueError(f"layer_kinds {kinds!r} must name {GLOBAL!r} or {LOCAL!r} for each of the "
                             f"{self.num_layers} layers, {LOCAL!r} only with a sliding_window >= 1")

    def layer_types(self) -> tuple[LayerType, ...]:
        """Each layer's kind: causal (unless bidirectional), rotary with rope_theta (and its
        scaling; LOCAL layers with local_rope_theta when set); a LOCAL layer also masks keys
        `sliding_window` or more tokens away (HF: kv_idx > q_idx - window; bidirectional Gemma 3:
        |q_idx - kv_idx| < window)."""
        kinds = self.layer_kinds or ((LOCAL if self.sliding_window else GLOBAL),) * self.num_layers
        causal = not self.bidirectional
        own = self.local_rope_theta is not None   # Gemma 3: the sliding layers' own rope
        local_theta, local_scaling = (self.local_rope_theta, self.local_rope_scaling) if own else \
            (self.rope_theta, self.rope_scaling)
        of = {GLOBAL: LayerType(GLOBAL, None, self.rope_theta, causal=causal, rope_scaling=self.rope_scaling),
              LOCAL: LayerType(LOCAL, self.sliding_window - 1, local_theta, causal=causal, rope_scaling=local_scaling)}
        return tuple(of[k] for k in kinds)

    def layer_spec(self) -> LayerSpec:
        """Pre-RMSNorm, grouped-query attention (Qwen3: RMSNorm per head on q and k, before
        the rotation), SwiGLU MLP; no dropout but on attention probabilities."""
        norm = NormSpec(self.norm_kind, self.layer_norm_eps)
        attention = AttentionSpec(self.num_heads, self.head_dim, self.num_kv_heads, qkv_bias=self.qkv_bias,
                                  out_bias=self.out_bias, qk_norm=norm if self.qk_norm else None,
                                  dropout=self.attention_dropout, scale=self.attn_scale, softcap=self.attn_softcap)
        return LayerSpec(attention, self.intermediate_size, self.hidden_act, norm, gated_mlp=True,
                         mlp_bias=self.mlp_bias, post_norms=self.post_norms)


class DecoderLayer(PreNormLayer):
    """The shared pre-norm layer, norms input_norm / mlp_norm (HF input_layernorm /
    post_attention_layernorm); its own class only so that captured intermediates name it."""


class Decoder(EncoderModule):
    """(input_ids, attention_mask, ...) -> final-normed hidden states [B, L, hidden]; arguments as
    BertEncoder's (token_type_ids is accepted and unused). query_positions [B, P]: only those
    rows, [B, P, hidden] (the last layer computes only them)."""

    @nn.compact
    def __call__(self, input_ids, attention_mask, token_type_ids=None, position_ids=None,
                 deterministic: bool = True, query_positions=None):
        cfg = self.cfg
        if position_ids is None:
            position_ids = default_position_ids(cfg, input_ids)
        position_ids = jnp.asarray(position_ids, jnp.int32)
        x = embed(cfg.vocab_size, cfg.hidden_size, "word", self.param_dtype)(input_ids)
        if cfg.embed_scale:   # HF Gemma: embeddings * tensor(sqrt(hidden), their dtype)
            x = x * jnp.asarray(cfg.hidden_size ** 0.5, x.dtype)
        x = nn.Dropout(cfg.hidden_dropout)(x, deterministic=deterministic).astype(self.dtype)
        x = constrain(x, ("batch", "length", "embed"))
        kinds, spec = cfg.layer_types(), cfg.layer_spec()
        full = {kind: kind.inputs(cfg.head_dim, attention_mask, position_ids) for kind in dict.fromkeys(kinds)}
        layer = layer_class(DecoderLayer, cfg.remat, 3)
        for i, kind in enumerate(kinds):
            last = i == cfg.num_layers - 1 and query_positions is not None
            mask4, rotate = kind.inputs(cfg.head_dim, attention_mask, position_ids, query_positions) if last \
                else full[kind]
            x = layer(spec, "input_norm", self.dtype, self.param_dtype, self.attention_impl, name=f"layer_{i}")(
                x, mask4, deterministic, query_positions if last else None, rotate)
        x = spec.norm("final_norm", self.param_dtype)(x)
        return constrain(x.astype(self.dtype), ("batch", "length", "embed"))


class TokenColumns(nn.Module):
    """The LM head's kernel [embed, vocab] (HF lm_head.weight transposed); returns only the
    columns of `ids`, [embed, len(ids)]."""
    vocab_size: int
    hidden_size: int
    param_dtype: Dtype

    @nn.compact
    def __call__(self, ids):
        kernel = self.param("kernel", nn.with_logical_partitioning(normal(0.02), ("embed", "vocab")),
                            (self.hidden_size, self.vocab_size), self.param_dtype)
        return jnp.take(kernel, ids, axis=1)


class DecoderHead(ConfigModule):
    """Score at the read token [..., hidden] -> [..., num_labels] (fp32 out).

    "score": ForSequenceClassification's `score` Linear (no bias).
    "lm": the causal LM's logits of cfg.score_token_ids only (one [hidden, n] matmul, not the
    vocabulary): logit[true] - logit[false], or logit[true] alone. tied_embedding [vocab,
    hidden]: the token table, when the LM head is tied to it (no params here then)."""
    cfg: DecoderConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, h, deterministic: bool = True, tied_embedding=None):
        cfg = self.cfg
        if cfg.head_kind == "score":
            return dense(cfg.num_labels, ("embed", "labels"), "score", self.dtype, self.param_dtype,
                         use_bias=False)(h)
        ids = jnp.asarray(cfg.score_token_ids, jnp.int32)
        if ids.size not in (1, 2):
            raise ValueError(f"a causal-LM scorer needs 1 or 2 score_token_ids (true[, false]), got "
                             f"{cfg.score_token_ids!r}")
        if tied_embedding is not None:
            cols = jnp.take(tied_embedding, ids, axis=0).T
        else:
            cols = TokenColumns(cfg.vocab_size, cfg.hidden_size, self.param_dtype, name="lm")(ids)
        logits = contract(h, cols, (((h.ndim - 1,), (0,)), ((), ())), self.dtype, out_dtype=jnp.float32)
        if cfg.final_softcap is not None:   # HF Gemma2ForCausalLM: on each logit, before any difference
            logits = jnp.tanh(logits / cfg.final_softcap) * cfg.final_softcap
        return logits[..., :1] - logits[..., 1:2] if ids.size == 2 else logits


DecoderConfig.encoder_module = Decoder
DecoderConfig.head_module = DecoderHead
DecoderConfig.input_params, DecoderConfig.output_params = ("word",), ("final_norm",)
