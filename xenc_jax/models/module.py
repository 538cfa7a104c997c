"""The fields every family-level module carries, declared once.

A family's encoder, its embeddings, layers and heads are all built from the family config with a
compute dtype and a param dtype (and, where attention runs, the kernel name for
models/attention_impl.py). Declaring those fields on two small bases keeps every module reading
them the same way; Flax modules are dataclasses, so a subclass adds only its own fields.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from .axes import Dtype


class ConfigModule(nn.Module):
    """A module built from a family config: cfg, compute dtype, param dtype."""
    cfg: Any
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32


class EncoderModule(ConfigModule):
    """A ConfigModule that runs attention: `attention_impl` names the kernel (None = the
    backend's default, chosen in models/attention_impl.py, never by the family)."""
    attention_impl: str | None = None
