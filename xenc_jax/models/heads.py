"""Sequence-classification heads, exactly as Hugging Face defines them per family.

All are `dropout -> dense -> act -> dropout -> out` on the first token's hidden state:
  BERT:       pooler (dense + tanh) -> dropout -> classifier     (no dropout before the pooler)
  RoBERTa/XLM-R, MPNet: dropout -> dense -> tanh -> dropout -> out_proj
  ELECTRA:    dropout -> dense -> gelu -> dropout -> out_proj
  DistilBERT: pre_classifier -> relu -> dropout -> classifier    (no dropout before dense)
so one module with the family's activation and dropout placement (config values) covers them.
"""
from __future__ import annotations

import flax.linen as nn

from .blocks import ACTIVATIONS
from .dense import dense
from .module import ConfigModule


class ClassificationHead(ConfigModule):

    @nn.compact
    def __call__(self, first_token, deterministic: bool = True):
        cfg = self.cfg
        drop = nn.Dropout(cfg.classifier_dropout)
        x = first_token
        if cfg.head_dropout_first:
            x = drop(x, deterministic=deterministic)
        x = dense(cfg.hidden_size, ("embed", "embed_out"), "dense", self.dtype, self.param_dtype)(x)
        x = ACTIVATIONS[cfg.head_activation](x)
        x = drop(x, deterministic=deterministic)
        return dense(cfg.num_labels, ("embed", "labels"), "out", self.dtype, self.param_dtype)(x)
