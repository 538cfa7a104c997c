"""Dtype names as users write them ("bf16", "float32", jnp.bfloat16) -> jnp dtypes."""
from __future__ import annotations

import jax.numpy as jnp


def as_dtype(dtype) -> jnp.dtype:
    """'float32' / 'bf16' / jnp.bfloat16 ... -> a jnp dtype, with a clear error."""
    names = {"fp32": "float32", "float32": "float32", "f32": "float32", "bf16": "bfloat16",
             "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16", "f16": "float16"}
    if isinstance(dtype, str):
        if dtype.lower() not in names:
            raise ValueError(f"unknown dtype {dtype!r}; use one of float32, bfloat16, float16")
        return jnp.dtype(names[dtype.lower()])
    return jnp.dtype(dtype)
