"""Feed-forward blocks by activation name: the plain MLP (dense -> act -> dense) and the gated
one (GLU: out(act(input(x)) * gate(x)), ModernBERT's GeGLU, Qwen's/Llama's SwiGLU, Gemma's
GeGLU-tanh). ACTIVATIONS are HF-exact."""
from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from ..axes import Dtype, constrain
from ..dense import dense

ACTIVATIONS: dict[str, Callable] = {
    # exact erf GELU: torch.nn.functional.gelu / HF "gelu"
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    # tanh approximation: HF "gelu_new", "gelu_pytorch_tanh" and "gelu_fast" are the same function
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_fast": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "tanh": jnp.tanh,
}


def plain_mlp(x, intermediate_size: int, act: str, dtype: Dtype, param_dtype: Dtype, use_bias: bool = True,
              dropout: float = 0.0, deterministic: bool = True):
    """mlp_out(drop(act(mlp_in(x)))), its two denses created in the CALLING module's scope (BERT's
    checkpoints put them in the layer, next to the attention; call inside a compact method).
    dropout: between the two denses (T5 v1.0's DenseReluDense; BERT has none there: 0)."""
    h = dense(intermediate_size, ("embed", "mlp"), "mlp_in", dtype, param_dtype, use_bias=use_bias)(x)
    h = constrain(ACTIVATIONS[act](h), ("batch", "length", "mlp"))
    if dropout:
        h = nn.Dropout(dropout)(h, deterministic=deterministic)
    return dense(x.shape[-1], ("mlp", "embed"), "mlp_out", dtype, param_dtype, use_bias=use_bias)(h)


class GatedMLP(nn.Module):
    """GLU MLP: out(drop(act(input(x)) * gate(x))). HF names differ per family (ModernBERT's
    fused Wi holds input and gate as its halves; Qwen's gate_proj is our `input`, up_proj our
    `gate`): each family's HF table maps them."""
    intermediate_size: int
    act: str
    dropout: float
    use_bias: bool
    dtype: Dtype
    param_dtype: Dtype

    @nn.compact
    def __call__(self, x, deterministic: bool):
        mk = lambda n, axes, f: dense(f, axes, n, self.dtype, self.param_dtype, use_bias=self.use_bias)
        h = ACTIVATIONS[self.act](mk("input", ("embed", "mlp"), self.intermediate_size)(x))
        h = constrain(h * mk("gate", ("embed", "mlp"), self.intermediate_size)(x), ("batch", "length", "mlp"))
        h = nn.Dropout(self.dropout)(h, deterministic=deterministic)
        return mk("out", ("mlp", "embed"), x.shape[-1])(h)
