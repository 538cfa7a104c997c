"""Flax Linen modules: pure functions of (params, batch) -> arrays."""
from .encoder import BareEncoder, Encoder, SequenceClassifier, default_position_ids
from .heads import ClassificationHead

__all__ = ["BareEncoder", "Encoder", "SequenceClassifier", "ClassificationHead", "default_position_ids"]
