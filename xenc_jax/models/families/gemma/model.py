"""Gemma and Gemma 2 decoders (HF Gemma{,2}Model, ...ForCausalLM, ...ForSequenceClassification) on
the shared Llama-shaped decoder (models/decoder.py). What makes them Gemma is data on the shared
DecoderConfig, set by hf.py: (1 + w) RMSNorm everywhere, embeddings scaled by sqrt(hidden), GeGLU
with tanh GELU, tied embeddings; Gemma 2 adds a norm after the attention and after the MLP, the
score scale query_pre_attn_scalar ** -0.5, attention and final-logit soft-caps, and alternating
sliding / full layers.
"""
from __future__ import annotations

import dataclasses

from ...decoder import DecoderConfig


@dataclasses.dataclass(frozen=True)
class GemmaConfig(DecoderConfig):
    """DecoderConfig under Gemma's name: no switches of its own."""
