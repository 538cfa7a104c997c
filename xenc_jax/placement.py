"""Putting a model's params where they run: read on the host when a mesh will shard them, the
plan load_pretrained places each param into, and the sharded setup of params and buckets."""
from __future__ import annotations

import contextlib
import dataclasses
import math

import jax
import numpy as np


@contextlib.contextmanager
def loading_on_host(mesh):
    """With a mesh, load weights into host memory (this process's CPU device): load_pretrained
    makes jnp arrays, which would otherwise land whole on the default accelerator before
    setup_sharding splits them, and a model too big for one device is a reason to shard."""
    if mesh is None:
        yield
        return
    try:
        cpu = jax.local_devices(backend="cpu")[0]
    except RuntimeError:  # JAX_PLATFORMS without cpu: keep the default device
        yield
        return
    with jax.default_device(cpu):
        yield


def load_plan(mesh, strategy: str = "dp"):
    """The ShardingPlan load_pretrained(plan=) puts each param into as it is read (a sharded
    checkpoint never sits whole on the host or on one device), or None without a mesh."""
    if mesh is None:
        return None
    from .sharding import ShardingPlan, resolve_mesh
    resolved = resolve_mesh(mesh)
    return None if resolved is None else ShardingPlan(resolved, strategy)


def setup_sharding(module, params, buckets, mesh, strategy: str = "dp"):
    """-> (plan, params, param_shardings, buckets) for a model class taking `mesh=`.

    mesh None: (None, params, None, buckets) unchanged. Else params are placed with the
    strategy's shardings and buckets get row_multiple = a multiple of this process's
    data-parallel size, so every bucket's rows split evenly (shapes stay fixed).
    """
    from .sharding import ShardingPlan, resolve_mesh
    mesh = resolve_mesh(mesh)
    if mesh is None:
        return None, params, None, buckets
    plan = ShardingPlan(mesh, strategy)
    ids = np.zeros((1, 2), np.int32)
    by_module = plan.module_param_shardings(module, ids, ids)
    # Params the module does not own (e.g. BiEncoder's Dense layers) are replicated.
    shardings = {k: by_module[k] if k in by_module else jax.tree.map(lambda _: plan.replicated, v)
                 for k, v in params.items()}
    params = plan.put_params(params, shardings)
    multiple = math.lcm(buckets.row_multiple, plan.local_data_parallel_size)
    return plan, params, shardings, dataclasses.replace(buckets, row_multiple=multiple)
