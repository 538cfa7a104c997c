"""Token tables and the absolute-position embedding block (BERT family, MPNet)."""
from __future__ import annotations

import flax.linen as nn

from ..axes import Dtype
from ..dense import normal
from .norms import layer_norm


def embed(num: int, features: int, name: str, param_dtype: Dtype, std=0.02):
    """A lookup table [num, features] (vocab, embed), looked up in its param dtype."""
    return nn.Embed(
        num_embeddings=num, features=features, param_dtype=param_dtype, dtype=param_dtype, name=name,
        embedding_init=nn.with_logical_partitioning(normal(std), ("vocab", "embed")),
    )


class AbsoluteEmbeddings(nn.Module):
    """word + absolute position (+ token type when type_vocab_size > 0) -> LayerNorm -> dropout,
    params word / position / token_type / norm."""
    vocab_size: int
    features: int
    max_positions: int
    type_vocab_size: int
    eps: float
    dropout: float
    dtype: Dtype
    param_dtype: Dtype

    @nn.compact
    def __call__(self, input_ids, token_type_ids, position_ids, deterministic: bool):
        x = embed(self.vocab_size, self.features, "word", self.param_dtype)(input_ids)
        x = x + embed(self.max_positions, self.features, "position", self.param_dtype)(position_ids)
        if self.type_vocab_size > 0:
            x = x + embed(self.type_vocab_size, self.features, "token_type", self.param_dtype)(token_type_ids)
        x = layer_norm(self.eps, "norm", self.param_dtype)(x)
        return nn.Dropout(self.dropout)(x, deterministic=deterministic).astype(self.dtype)
