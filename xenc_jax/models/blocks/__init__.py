"""Shared transformer parts with generic names; every family composes these.

  attention.py   Attention(AttentionSpec): MHA/GQA, q/k norm, soft-cap, scale, bias, rotary hook,
                 score plug-in (ScorePlugin); the kernel is models/attention_impl.py's choice
  masks.py       segment-aware masks: bidirectional, pairwise (DeBERTa), causal, sliding window
  norms.py       LayerNorm (with/without bias), RMSNorm, (1 + w) RMSNorm; NormSpec
  mlp.py         ACTIVATIONS, plain_mlp, GatedMLP
  positions.py   RelativePositionBias (buckets), RotaryPositions (+ rope types' scalings), LayerType (window/theta per kind)
  embeddings.py  embed, AbsoluteEmbeddings
  layers.py      LayerSpec, PostNormLayer / post_norm_stack, PreNormLayer, layer_class (remat)
"""
from .attention import Attention, AttentionSpec, ScorePlugin
from .embeddings import AbsoluteEmbeddings, embed
from .layers import LayerSpec, PostNormLayer, PreNormLayer, layer_class, post_norm_block, post_norm_stack
from .masks import attention_mask_4d, causal_mask_4d, pair_mask_4d, sliding_window_mask
from .mlp import ACTIVATIONS, GatedMLP, plain_mlp
from .norms import NormSpec, OnePlusRMSNorm, layer_norm, rms_norm
from .positions import GLOBAL, LOCAL, LayerType, LinearRopeScaling, Llama3RopeScaling, ProportionalRopeScaling, \
    RelativePositionBias, RopeScaling, RotaryPositions, Rotation, YarnRopeScaling, relative_position_buckets

__all__ = ["Attention", "AttentionSpec", "ScorePlugin", "AbsoluteEmbeddings", "embed", "LayerSpec", "PostNormLayer",
           "PreNormLayer", "layer_class", "post_norm_block", "post_norm_stack", "attention_mask_4d",
           "causal_mask_4d", "pair_mask_4d", "sliding_window_mask", "ACTIVATIONS", "GatedMLP", "plain_mlp",
           "NormSpec", "OnePlusRMSNorm", "layer_norm", "rms_norm", "GLOBAL", "LOCAL", "LayerType",
           "LinearRopeScaling", "Llama3RopeScaling", "ProportionalRopeScaling", "RelativePositionBias", "RopeScaling",
           "RotaryPositions", "Rotation", "YarnRopeScaling", "relative_position_buckets"]
