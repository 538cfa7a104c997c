"""Run a kernel on each device's share of a sharded batch (shard_map), when a mesh is in context.

XLA cannot partition a Pallas call (splash), and cuDNN's fused attention partitions through
custom_partitioning, which needs real devices while lowering (no AbstractMesh, no export for a
mesh we do not have). Attention is independent per row and per head, so each device runs the
kernel on its own rows and heads: the mesh axes the logical rules give "batch" and "heads"
(sharding.py's rules table, read from flax's context as every constraint in the model is).
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
from jax.sharding import PartitionSpec as P


def per_device(fn, q, k, v, *rows):
    """fn(q, k, v, *rows) per device. q/k/v [B, L, H, D]; rows: arrays whose dim 0 is B (or 1:
    the same for every row) and, for 4-d ones, dim 1 heads (or 1): masks, biases, segment ids."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return fn(q, k, v, *rows)
    batch, _, heads, _ = nn.logical_to_mesh_axes(("batch", "length", "heads", "kv"))
    size = lambda axes: math.prod(mesh.shape[a] for a in ((axes,) if isinstance(axes, str) else axes or ()))
    if q.shape[0] % size(batch) or q.shape[2] % size(heads):
        return fn(q, k, v, *rows)   # not a split batch (module.init's 1-row example): as is
    qkv = P(batch, None, heads, None)

    def spec(x):
        b = batch if x.shape[0] > 1 else None
        if x.ndim == 4:
            return P(b, heads if x.shape[1] > 1 else None, None, None)
        return P(b, *([None] * (x.ndim - 1)))
    return jax.shard_map(fn, mesh=mesh, in_specs=(qkv, qkv, qkv, *map(spec, rows)), out_specs=qkv,
                         check_vma=False)(q, k, v, *rows)
