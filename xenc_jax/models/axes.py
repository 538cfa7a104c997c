"""Logical axis names, and the sharding hint on activations.

Every param and every large activation names its axes; xenc_jax/sharding.py resolves the names
onto a device mesh through one rules table, so no module knows the mesh.
  params:      vocab, embed, heads, kv_heads (grouped-query k/v), kv (head_dim), mlp, labels,
               embed_out / embed_proj (head and projection dense outputs, kept whole)
  activations: batch, length, embed, heads, kv, mlp
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn

Dtype = Any


def constrain(x, axes):
    """Sharding hint on an activation; a no-op outside a mesh with logical-axis rules."""
    return nn.with_logical_constraint(x, axes)
