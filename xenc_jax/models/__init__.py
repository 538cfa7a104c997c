"""Flax Linen modules: pure functions of (params, batch) -> arrays."""
from .encoder import Encoder, SequenceClassifier, default_position_ids
from .heads import ClassificationHead

__all__ = ["Encoder", "SequenceClassifier", "ClassificationHead", "default_position_ids"]
