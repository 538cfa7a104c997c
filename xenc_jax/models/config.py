"""The config every family shares, as a frozen dataclass. Families with more switches subclass
it (models/families/<name>/). Knows nothing of Hugging Face: hf/configs.py reads config.json
into these.

A config says what its layers are as data: `layer_spec()` (blocks/layers.py LayerSpec). The base
gives the post-LayerNorm layer of the BERT family from the shared fields; families with other
layers override it.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, ClassVar

from .blocks import AttentionSpec, LayerSpec, NormSpec


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
    layer_norm_eps: float
    pad_token_id: int
    num_labels: int
    attention_dropout: float
    # Fields of encoders with absolute-position tables and classification heads; a decoder
    # leaves them at these defaults.
    type_vocab_size: int = 0    # 0: no token-type embeddings (DistilBERT, MPNet, decoders)
    embedding_size: int = 0     # == hidden_size except ELECTRA-small-style projection; 0: hidden_size
    hidden_dropout: float = 0.0
    classifier_dropout: float = 0.0
    head_activation: str = ""   # tanh (BERT pooler, RoBERTa, MPNet), gelu (ELECTRA), relu (DistilBERT)
    head_dropout_first: bool = False  # dropout before the head's dense (RoBERTa, ELECTRA, MPNet)
    position_offset: int = 0    # added to 0-based positions: RoBERTa-style models start at padding_idx + 1
    raw_json: str = dataclasses.field(default="", compare=False, repr=False)  # the original config.json
    # Training option, not part of the checkpoint: rematerialise each layer (jax.checkpoint) so
    # the backward pass recomputes a layer's activations from its input instead of keeping
    # them: activation memory of about one layer plus the layer inputs, for one more forward.
    remat: bool = False

    # The family's modules, set by each family's config class (models/families/<name>/):
    # encoder_module(cfg, dtype, param_dtype, attention_impl) and head_module(cfg, dtype, param_dtype).
    encoder_module: ClassVar[type]
    head_module: ClassVar[type]
    # Decoders (models/decoder.py) are read at each segment's last token, not its first.
    reads_last_token: ClassVar[bool] = False
    # The encoder's param groups besides its layer_{i} (train/optim.Depths: layer-wise lr decay):
    # below layer 0 (token / position / relative tables and their norms), above the last layer.
    input_params: ClassVar[tuple[str, ...]] = ("embeddings",)
    output_params: ClassVar[tuple[str, ...]] = ()

    # HF class of the model with its head: "{architecture}{head_class_suffix}"
    head_class_suffix: ClassVar[str] = "ForSequenceClassification"

    def __post_init__(self):
        if not self.embedding_size:
            object.__setattr__(self, "embedding_size", self.hidden_size)

    def head_inputs(self, encoder) -> dict:
        """Extra keyword arguments of the head, taken from the bound encoder (a tied LM head
        reads the token table); none for encoders."""
        return {}

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def layer_spec(self) -> LayerSpec:
        """The post-LayerNorm layer (BERT, RoBERTa, ELECTRA, DistilBERT, MPNet, DeBERTa)."""
        attention = AttentionSpec(self.num_heads, self.head_dim, dropout=self.attention_dropout)
        return LayerSpec(attention, self.intermediate_size, self.hidden_act, NormSpec("layer", self.layer_norm_eps),
                         attn_out_dropout=self.hidden_dropout, mlp_out_dropout=self.hidden_dropout)

    @property
    def raw_dict(self) -> dict[str, Any]:
        return json.loads(self.raw_json) if self.raw_json else {}

    def with_num_labels(self, num_labels: int) -> "EncoderConfig":
        return dataclasses.replace(self, num_labels=int(num_labels))
