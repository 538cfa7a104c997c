"""The config every encoder family shares, as a frozen dataclass. Families with more switches
subclass it (models/families/<name>.py). Knows nothing of Hugging Face: hf/configs.py reads
config.json into these.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, ClassVar


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    family: str                 # HF model_type
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    hidden_act: str
    max_position_embeddings: int
    type_vocab_size: int        # 0: no token-type embeddings (DistilBERT, MPNet)
    layer_norm_eps: float
    pad_token_id: int
    embedding_size: int         # == hidden_size except ELECTRA-small-style projection
    num_labels: int
    hidden_dropout: float
    attention_dropout: float
    classifier_dropout: float
    head_activation: str        # tanh (BERT pooler, RoBERTa, MPNet), gelu (ELECTRA), relu (DistilBERT)
    head_dropout_first: bool = False  # dropout before the head's dense (RoBERTa, ELECTRA, MPNet)
    position_offset: int = 0    # added to 0-based positions: RoBERTa-style models start at padding_idx + 1
    raw_json: str = dataclasses.field(default="", compare=False, repr=False)  # the original config.json
    # Training option, not part of the checkpoint: rematerialise each layer (jax.checkpoint) so
    # the backward pass recomputes a layer's activations from its input instead of keeping
    # them: activation memory of about one layer plus the layer inputs, for one more forward.
    remat: bool = False

    # The family's modules, set by each family's config class (models/families/<name>.py):
    # encoder_module(cfg, dtype, param_dtype, attention_impl) and head_module(cfg, dtype, param_dtype).
    encoder_module: ClassVar[type]
    head_module: ClassVar[type]
    # Decoders (models/families/qwen.py) are read at each segment's last token, not its first.
    reads_last_token: ClassVar[bool] = False

    # HF class of the model with its head: "{architecture}{head_class_suffix}"
    head_class_suffix: ClassVar[str] = "ForSequenceClassification"

    def head_inputs(self, encoder) -> dict:
        """Extra keyword arguments of the head, taken from the bound encoder (a tied LM head
        reads the token table); none for encoders."""
        return {}

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def raw_dict(self) -> dict[str, Any]:
        return json.loads(self.raw_json) if self.raw_json else {}

    def with_num_labels(self, num_labels: int) -> "EncoderConfig":
        return dataclasses.replace(self, num_labels=int(num_labels))
