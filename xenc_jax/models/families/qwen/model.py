"""Qwen2 / Qwen3 decoders (HF Qwen{2,3}Model, ...ForCausalLM, ...ForSequenceClassification) as
scorers and embedders, on the shared Llama-shaped decoder (models/decoder.py: modules, heads,
packing, last-token reads). Qwen3 adds an RMSNorm per head on q and k (before the rotation) and
an explicit head_dim; Qwen2 has biases on q/k/v; Qwen3's attention_bias puts biases on q/k/v/o.
Which of those a checkpoint has is data on the config, read by hf.py.
"""
from __future__ import annotations

import dataclasses

from ...decoder import Decoder, DecoderConfig, DecoderHead, DecoderLayer


@dataclasses.dataclass(frozen=True)
class QwenConfig(DecoderConfig):
    """DecoderConfig under Qwen's name: no switches of its own (qk_norm, qkv_bias, out_bias and
    attn_head_dim are the shared decoder's)."""


QwenDecoder, QwenHead = Decoder, DecoderHead   # the names this folder exported before the shared decoder

__all__ = ["DecoderLayer", "QwenConfig", "QwenDecoder", "QwenHead"]
