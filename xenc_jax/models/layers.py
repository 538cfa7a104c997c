"""Deprecated home of the shared parts, kept as re-exports so that callers outside models/ keep
working: cross_encoder.py / bi_encoder.py (default_attention_impl) and
tests. New code imports from models.blocks (modules, masks, norms, activations),
models.attention_impl (kernels) and models.dense (matmuls)."""
from .attention_impl import default_attention_impl
from .blocks import ACTIVATIONS, attention_mask_4d, layer_norm, sliding_window_mask

__all__ = ["ACTIVATIONS", "attention_mask_4d", "default_attention_impl", "layer_norm", "sliding_window_mask"]
