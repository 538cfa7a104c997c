"""Flax Linen modules: pure functions of (params, batch) -> arrays.

  blocks/            shared transformer parts (attention, masks, norms, MLPs, positions, layers)
  attention_impl.py  name -> attention kernel, chosen per backend
  dense.py           the matmul seam (dot_general policy)
  families/<name>/   each family's config and modules, composed of blocks
  encoder.py         BareEncoder / SequenceClassifier wrappers; heads.py, pooling.py
"""
from .config import EncoderConfig
from .encoder import BareEncoder, SequenceClassifier, default_position_ids
from .families.bert import BertConfig, BertEncoder
from .families.mpnet import MPNetConfig, MPNetEncoder
from .heads import ClassificationHead

__all__ = ["BareEncoder", "SequenceClassifier", "ClassificationHead", "default_position_ids",
           "EncoderConfig", "BertConfig", "BertEncoder", "MPNetConfig", "MPNetEncoder"]
