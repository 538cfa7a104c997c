"""The one matmul seam: every matmul on a param (projections, MLPs, heads, DeBERTa's embedding
projection, a causal-LM scorer's token columns, sentence-transformers Dense layers) takes its
dot_general from `dot_general(dtype, policy)`.

A policy is a name -> (compute dtype, output dtype) -> dot_general. Today there is one:
"fp32_accumulate": fp32 compute uses lax.dot_general as is; a lower compute dtype (bf16)
accumulates in fp32 and casts the result. For bf16 that is both more exact and, on XLA:CPU with
AVX512-BF16, 2x faster than a bf16-output dot (which XLA runs as an fp32 matmul plus converts).
Int8 (e.g. qwix's quantized dot_general) plugs in here as another entry of POLICIES; no family
changes.
"""
from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from .axes import Dtype

DotGeneral = Callable[..., jax.Array]
DEFAULT_POLICY = "fp32_accumulate"


def _fp32_accumulate(dtype: Dtype, out_dtype: Dtype) -> DotGeneral:
    f32 = jnp.dtype(jnp.float32)
    if jnp.dtype(dtype) == f32 and jnp.dtype(out_dtype) == f32:
        return jax.lax.dot_general

    def dot_general(lhs, rhs, dimension_numbers, precision=None, **kwargs):
        kwargs["preferred_element_type"] = jnp.float32
        return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision, **kwargs).astype(out_dtype)
    return dot_general


# policy name -> (compute dtype, output dtype) -> dot_general
POLICIES: dict[str, Callable[[Dtype, Dtype], DotGeneral]] = {"fp32_accumulate": _fp32_accumulate}


def dot_general(dtype: Dtype, policy: str = DEFAULT_POLICY, out_dtype: Dtype | None = None) -> DotGeneral:
    """The dot_general of `policy` for operands in `dtype`, results in `out_dtype` (default: dtype)."""
    if policy not in POLICIES:
        raise ValueError(f"unknown matmul policy {policy!r}; known: {sorted(POLICIES)}")
    return POLICIES[policy](dtype, dtype if out_dtype is None else out_dtype)


def normal(std: float = 0.02):
    """HF's weight init: N(0, std)."""
    return nn.initializers.normal(stddev=std)


class _KernelBox(nn.LogicallyPartitioned):
    """LogicallyPartitioned that skips its sharding constraint while its value does not have
    one dimension per name. DenseGeneral calls kernel_init (bias_init) with the FLAT 2-D (1-D)
    shape and unboxes that value before reshaping it to [in..., out...]; under a mesh with
    logical-axis rules (sharding.ShardingPlan.context) flax would apply the N names to the 2-D
    value and fail, in init and in apply's shape check. The reshaped N-D kernel is constrained
    as usual."""

    def unbox(self, apply_constraint=True):
        return super().unbox(apply_constraint and jnp.ndim(self.value) == len(self.names))


def _boxed_init(init, axes: tuple):
    return lambda rng, shape, dtype=jnp.float32: _KernelBox(init(rng, shape, dtype), axes)


def dense(features, axes: tuple, name: str, dtype: Dtype, param_dtype: Dtype, in_axis=-1, std=0.02,
          use_bias: bool = True, policy: str = DEFAULT_POLICY) -> nn.DenseGeneral:
    """DenseGeneral with logically named kernel/bias (HF init: N(0, std), zero bias): `axes`
    names the kernel's [in..., out...] dims, the bias takes the output names."""
    n_out = 1 if isinstance(features, int) else len(features)
    return nn.DenseGeneral(
        features=features, axis=in_axis, dtype=dtype, param_dtype=param_dtype, name=name, use_bias=use_bias,
        dot_general=dot_general(dtype, policy),
        kernel_init=_boxed_init(normal(std), axes),
        bias_init=_boxed_init(nn.initializers.zeros_init(), axes[-n_out:]),
    )


def contract(x: jax.Array, w: jax.Array, dimension_numbers, dtype: Dtype, out_dtype: Dtype | None = None,
             precision=None, policy: str = DEFAULT_POLICY) -> jax.Array:
    """lax.dot_general(x, w) on a param `w` outside a Dense module (a scorer's token columns,
    sentence-transformers Dense kernels), both operands cast to `dtype`, by `policy`."""
    dot = dot_general(dtype, policy, out_dtype)
    return dot(x.astype(dtype), w.astype(dtype), dimension_numbers, precision)
