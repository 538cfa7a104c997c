"""ModernBERT (models/families/modernbert/model.py)."""
from .model import GLOBAL, LOCAL, ModernBertConfig, ModernBertEncoder, ModernBertHead, layer_inputs, make_layer, \
    segment_mean

__all__ = ["GLOBAL", "LOCAL", "ModernBertConfig", "ModernBertEncoder", "ModernBertHead", "layer_inputs",
           "make_layer", "segment_mean"]
