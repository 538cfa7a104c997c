"""Llama and Mistral decoders (HF Llama/Mistral Model, ...ForCausalLM, ...ForSequenceClassification)
on the shared Llama-shaped decoder (models/decoder.py: modules, heads, packing, last-token reads).

Mistral is Llama's math plus a sliding window (every layer sees the last `sliding_window` tokens,
itself included) and without bias switches, so both are this one config class: the window, the
biases (attention_bias on q/k/v/o, mlp_bias), an explicit head_dim and the rope scaling (llama3,
linear) are data on the shared DecoderConfig, set by hf.py's two records.
"""
from __future__ import annotations

import dataclasses

from ...decoder import DecoderConfig


@dataclasses.dataclass(frozen=True)
class LlamaConfig(DecoderConfig):
    """DecoderConfig under Llama's name: no switches of its own."""
