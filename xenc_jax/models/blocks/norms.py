"""Norms over the last axis, statistics in fp32 whatever the compute dtype (bf16 mean/var loses
too much); the result is fp32 and callers cast it back to their compute dtype.

  LayerNorm        with or without bias (BERT family, DeBERTa; ModernBERT's norm_bias=False)
  RMSNorm          x * rsqrt(mean(x^2) + eps) * w        (Qwen2/3, Llama, Mistral)
  (1 + w) RMSNorm  x * rsqrt(mean(x^2) + eps) * (1 + w)  (Gemma 1/2/3: w starts at zero)

NormSpec names one of them as data, so a config can say which norm its layers use.
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from ..axes import Dtype


def layer_norm(eps: float, name: str, param_dtype: Dtype, use_bias: bool = True):
    return nn.LayerNorm(
        epsilon=eps, dtype=jnp.float32, param_dtype=param_dtype, name=name, use_bias=use_bias,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("embed",)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("embed",)),
    )


def rms_norm(eps: float, name: str, param_dtype: Dtype, axis_name: str = "embed"):
    """RMSNorm (HF Qwen2/Qwen3 RMSNorm). axis_name: the logical name of the normed axis ("kv"
    for per-head q/k norms)."""
    return nn.RMSNorm(epsilon=eps, dtype=jnp.float32, param_dtype=param_dtype, name=name,
                      scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), (axis_name,)))


class OnePlusRMSNorm(nn.Module):
    """RMSNorm scaled by (1 + w), w initialised to zero (HF GemmaRMSNorm: the product is taken
    in fp32, then cast)."""
    eps: float
    param_dtype: Dtype
    axis_name: str = "embed"

    @nn.compact
    def __call__(self, x):
        w = self.param("scale", nn.with_logical_partitioning(nn.initializers.zeros_init(), (self.axis_name,)),
                       (x.shape[-1],), self.param_dtype)
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return y * (1.0 + w.astype(jnp.float32))


NORM_KINDS = ("layer", "rms", "rms_one_plus")


@dataclasses.dataclass(frozen=True)
class NormSpec:
    kind: str = "layer"      # one of NORM_KINDS
    eps: float = 1e-12
    use_bias: bool = True    # LayerNorm only

    def __post_init__(self):
        if self.kind not in NORM_KINDS:
            raise ValueError(f"unknown norm kind {self.kind!r}; use one of {NORM_KINDS}")

    def __call__(self, name: str, param_dtype: Dtype, axis_name: str = "embed") -> nn.Module:
        """The norm module named `name` (param `scale`, and `bias` for a LayerNorm with bias)."""
        if self.kind == "layer":
            return layer_norm(self.eps, name, param_dtype, use_bias=self.use_bias)
        if self.kind == "rms":
            return rms_norm(self.eps, name, param_dtype, axis_name)
        return OnePlusRMSNorm(self.eps, param_dtype, axis_name, name=name)
