"""Flax Linen modules: pure functions of (params, batch) -> arrays."""
from .config import EncoderConfig
from .encoder import BareEncoder, SequenceClassifier, default_position_ids
from .families.bert import BertConfig, BertEncoder
from .families.mpnet import MPNetConfig, MPNetEncoder
from .heads import ClassificationHead

Encoder = BertEncoder  # the name before families had their own modules

__all__ = ["BareEncoder", "Encoder", "SequenceClassifier", "ClassificationHead", "default_position_ids",
           "EncoderConfig", "BertConfig", "BertEncoder", "MPNetConfig", "MPNetEncoder"]
