"""Meshes, logical-axis rules, and placing params and batches on devices (one CPU to a TPU pod).

Every param already carries logical axis names (models/dense.py and models/blocks, `nn.with_logical_partitioning`)
and activations carry `nn.with_logical_constraint` hints. This file resolves those names onto a
small device mesh through ONE rules table, so scoring, encoding and training share one notion
of "how is this sharded". No pmap: `jax.jit` with explicit in/out shardings (pjit semantics).

Mesh axes
  data   batch rows are split over it (data parallel); also holds param shards under "fsdp"
         when the mesh has no separate fsdp axis (ZeRO-3 style)
  fsdp   optional: batch rows AND param shards (fully sharded data parallel)
  model  tensor parallel: attention heads and MLP hidden units

Rules table: logical axis -> mesh axis, per strategy ("-" = replicated on that dimension)

  logical      dp (default)    fsdp                 tp           fsdp_tp
  batch        (data, fsdp)    (data, fsdp)         (data, fsdp) (data, fsdp)
  embed        -               fsdp, else data      -            fsdp, else data
  heads        -               -                    model        model
  mlp          -               -                    model        model
  length, kv, vocab, labels, embed_out, embed_proj: replicated in every strategy

  Mesh axes the mesh does not have are dropped from the rules (batch -> data on a mesh without
  fsdp). Flax applies rules in order and never uses one mesh axis twice in one array, so the
  activation (batch, length, embed) stays split by batch only under "fsdp" while the param
  (vocab, embed) is split by embed. A param dimension not divisible by its mesh axes is left
  replicated (logged; `strict=True` makes it an error): e.g. a 30522-row vocab on 4 devices.
  Examples: query kernel [embed, heads, kv] -> dp P(None, None, None), tp P(None, 'model', None),
  fsdp P('data', None, None) (mesh without fsdp axis); mlp_in kernel [embed, mlp] -> tp
  P(None, 'model').

API (what scoring, encoding and training use)
  make_mesh(data=-1, model=1, fsdp=None, *, devices=None) -> Mesh
      -1 = "all remaining devices" (at most one axis); the product must use every device
      (pass devices=jax.devices()[:n] to use fewer). Axis types are Auto (GSPMD propagation).
  resolve_mesh(mesh) -> Mesh | None      None -> None, "auto" -> make_mesh() over all devices,
                                         "data=4,model=2" -> make_mesh(**parse_mesh_spec(...))
  axis_rules(strategy="dp", mesh=None) -> tuple[(logical, mesh_axes), ...]   the table above
  ShardingPlan(mesh, strategy="dp", strict=False)       everything below, bound to one mesh:
      .rules                                 flax logical-axis rules for this mesh
      .batch_axes / .data_parallel_size      mesh axes that split batch rows, and their size
      .local_data_parallel_size              distinct row shards held by this process
      .batch_sharding(ndim=1)                NamedSharding splitting dim 0 over batch_axes
      .replicated                            NamedSharding(mesh, P())
      .param_shardings(abstract)             boxed abstract params (jax.eval_shape of
                                             module.init, or of a train-state init) -> tree of
                                             NamedSharding; unboxed leaves -> replicated
      .module_param_shardings(module, *example_args)   same, tracing module.init for you
      .put_params(params, shardings)         host or device params -> global sharded arrays
                                             (multi-host safe: make_array_from_callback)
      .place_batch(local_arrays)             process-local numpy rows -> global arrays split
                                             over batch_axes (make_array_from_process_local_data)
      .local_rows(x)                         global array split over batch_axes -> numpy of the
                                             rows this process supplied, in order
      .jit(fn, in_shardings=..., out_shardings=..., **jit_kwargs)
                                             jax.jit whose trace AND calls run under this plan's
                                             mesh and logical-axis rules (so the modules'
                                             with_logical_constraint hints bind)
      .context()                             `with plan.context():` mesh + rules, e.g. for
                                             jax.jit(init, out_shardings=...) in training
  spec_table(shardings) -> {"encoder/layer_0/attention/query/kernel": P(None, 'model', None), ...}

Used by: runner.BucketedRunner(plan=...) and placement.setup_sharding, hence
CrossEncoder(mesh=, sharding=) and BiEncoder(mesh=, sharding=); multi-process input and output
helpers are in multihost.py; docs/multihost.md has the launch recipes.

Training example:
  plan = ShardingPlan(make_mesh(data=-1, model=2), "fsdp_tp")
  abstract = jax.eval_shape(lambda: module.init(rng, ids, mask))          # boxed
  p_shard = plan.param_shardings(abstract)
  with plan.context():
      variables = jax.jit(lambda: module.init(rng, ids, mask), out_shardings=p_shard)()
  step = plan.jit(train_step, in_shardings=(state_sh, plan.batch_sharding(2)), out_shardings=...)
"""
from __future__ import annotations

import contextlib
import functools
import logging
import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AbstractMesh, AxisType, Mesh, NamedSharding, PartitionSpec as P

log = logging.getLogger(__name__)

__all__ = ["MESH_AXES", "STRATEGIES", "make_mesh", "resolve_mesh", "parse_mesh_spec", "axis_rules",
           "ShardingPlan", "spec_table"]

MESH_AXES = ("data", "fsdp", "model")
STRATEGIES = ("dp", "fsdp", "tp", "fsdp_tp")
# Logical names the modules use that every strategy replicates; listed so the table is complete
# (and a typo in a module shows up as "no rule" in tests rather than silently).
# kv_heads (grouped-query k/v of decoders) stay whole under tp: there are often fewer kv heads
# than the model axis, and the k/v projections are small; each device repeats them to its query heads.
_REPLICATED = ("length", "kv", "kv_heads", "vocab", "labels", "embed_out", "embed_proj")


# ----------------------------------------------------------------------------- meshes

def _device_list(devices) -> list:
    devices = list(jax.devices() if devices is None else np.ravel(np.asarray(devices, dtype=object)))
    if not devices:
        raise ValueError("no devices to build a mesh from")
    return devices


def make_mesh(data: int = -1, model: int = 1, fsdp: int | None = None, *,
              devices: Sequence | None = None) -> Mesh:
    """A (data[, fsdp], model) mesh over all devices (or `devices`), Auto axis types.

    Sizes are ints >= 1, or -1 for "the rest" (at most one). The product must equal the number
    of devices: a mesh bigger than the machine, or sizes that do not divide the device count,
    raise a ValueError that names the numbers.
    """
    devices = _device_list(devices)
    names = ["data"] + (["fsdp"] if fsdp is not None else []) + ["model"]
    sizes = [data] + ([fsdp] if fsdp is not None else []) + [model]
    for n, s in zip(names, sizes):
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or (s < 1 and s != -1):
            raise ValueError(f"mesh axis {n}={s!r}: sizes are ints >= 1, or -1 for 'the rest'")
    free = [i for i, s in enumerate(sizes) if s == -1]
    if len(free) > 1:
        raise ValueError(f"at most one mesh axis may be -1, got {dict(zip(names, sizes))}")
    fixed = math.prod(s for s in sizes if s != -1)
    n = len(devices)
    desc = " x ".join(f"{a}={s}" for a, s in zip(names, sizes))
    if free:
        if n % fixed:
            raise ValueError(f"mesh {desc}: {n} devices are not divisible by the fixed axes "
                             f"(product {fixed}), so -1 has no integer size")
        sizes[free[0]] = n // fixed
    total = math.prod(sizes)
    if total > n:
        raise ValueError(f"mesh {desc} needs {total} devices, but only {n} are available "
                         f"({jax.process_count()} process(es) x {jax.local_device_count()} local)")
    if total < n:
        raise ValueError(f"mesh {desc} uses {total} of the {n} devices; make the sizes multiply to "
                         f"{n} (or use -1), or pass devices=jax.devices()[:{total}] to use a subset")
    mesh = jax.make_mesh(tuple(int(s) for s in sizes), tuple(names),
                         axis_types=(AxisType.Auto,) * len(names), devices=devices)
    _check_process_layout(mesh)
    return mesh


def _check_process_layout(mesh: Mesh) -> None:
    """Multi-host: every process must hold the same number of row shards."""
    if jax.process_count() == 1:
        return
    plan = ShardingPlan(mesh)
    plan.local_data_parallel_size  # raises with a clear message when uneven


def resolve_mesh(mesh) -> Mesh | None:
    """None -> None (single device), "auto" -> data-parallel mesh over all devices, a Mesh as is."""
    if mesh is None or isinstance(mesh, Mesh):
        return mesh
    if isinstance(mesh, str) and mesh == "auto":
        return make_mesh()
    if isinstance(mesh, str):
        return make_mesh(**parse_mesh_spec(mesh))
    raise TypeError(f"mesh must be None, 'auto', 'data=4,model=2' or a jax.sharding.Mesh, got {mesh!r}")


def parse_mesh_spec(spec: str) -> dict[str, int]:
    """'data=4,model=2' / 'data=-1,fsdp=2' -> make_mesh keyword arguments (for the CLI)."""
    out = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, size = part.partition("=")
        if name not in MESH_AXES or not size.lstrip("-").isdigit():
            raise ValueError(f"bad mesh spec {spec!r}: use e.g. 'data=4,model=2' with axes {MESH_AXES}")
        out[name] = int(size)
    if not out:
        raise ValueError(f"empty mesh spec {spec!r}")
    return out


# ----------------------------------------------------------------------------- rules

def axis_rules(strategy: str = "dp", mesh: Mesh | None = None) -> tuple[tuple[str, Any], ...]:
    """The logical-axis rules table (see the module docstring) for `strategy`.

    With a mesh, axes it lacks are dropped (a rule left with no axis maps to None).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown sharding strategy {strategy!r}; use one of {STRATEGIES}")
    have = set(MESH_AXES if mesh is None else mesh.axis_names)

    def axes(*names):
        kept = tuple(n for n in names if n in have)
        return None if not kept else kept[0] if len(kept) == 1 else kept

    param_axis = axes("fsdp") or axes("data")  # FSDP shards over fsdp, else over data
    rules = [("batch", axes("data", "fsdp"))]
    rules.append(("embed", param_axis if strategy in ("fsdp", "fsdp_tp") else None))
    tp = strategy in ("tp", "fsdp_tp")
    rules += [("heads", axes("model") if tp else None), ("mlp", axes("model") if tp else None)]
    rules += [(name, None) for name in _REPLICATED]
    return tuple(rules)


# ----------------------------------------------------------------------------- the plan

def _mesh_axes_size(mesh: Mesh, entry) -> int:
    if entry is None:
        return 1
    names = entry if isinstance(entry, tuple) else (entry,)
    return math.prod(mesh.shape[n] for n in names)


class ShardingPlan:
    """A mesh + a strategy's rules: param/batch shardings, placement, and sharded jit."""

    def __init__(self, mesh: Mesh, strategy: str = "dp", *, strict: bool = False):
        # An AbstractMesh (devices we do not have) serves for tracing and jax.export only:
        # tests/test_export_platforms.py lowers the training step for an 8-device TPU/GPU mesh.
        if not isinstance(mesh, (Mesh, AbstractMesh)):
            raise TypeError(f"ShardingPlan needs a jax.sharding.Mesh (or AbstractMesh), got {mesh!r}")
        self.mesh, self.strategy, self.strict = mesh, strategy, strict
        self.rules = axis_rules(strategy, mesh)
        self.batch_axes = tuple(a for a in ("data", "fsdp") if a in mesh.axis_names)
        self.data_parallel_size = _mesh_axes_size(mesh, self.batch_axes or None)
        self.replicated = NamedSharding(mesh, P())

    def __repr__(self):
        return f"ShardingPlan({dict(self.mesh.shape)}, {self.strategy!r})"

    # ---- contexts ----
    @contextlib.contextmanager
    def context(self):
        """Mesh + logical-axis rules: flax's with_logical_constraint binds inside it."""
        use = jax.sharding.use_abstract_mesh if isinstance(self.mesh, AbstractMesh) else jax.set_mesh
        with use(self.mesh), nn.logical_axis_rules(self.rules):
            yield

    def jit(self, fn: Callable, **jit_kwargs) -> Callable:
        """jax.jit(fn, **jit_kwargs) that traces and runs under this plan's context.

        The rules are read at trace time, and jit's cache does not key on flax's rules, so the
        context is entered around every call (cheap) rather than trusted to the caller.
        """
        jitted = jax.jit(fn, **jit_kwargs)

        @functools.wraps(fn)
        def call(*args, **kwargs):
            with self.context():
                return jitted(*args, **kwargs)

        call.jitted = jitted
        return call

    # ---- batches ----
    def batch_sharding(self, ndim: int = 1) -> NamedSharding:
        """Dim 0 split over the batch axes, the rest replicated."""
        first = (self.batch_axes if len(self.batch_axes) > 1 else
                 self.batch_axes[0] if self.batch_axes else None)
        return NamedSharding(self.mesh, P(first, *([None] * (ndim - 1))))

    def _row_shards(self) -> tuple[int, list]:
        """(number of distinct row shards, the row-shard indices this process holds, sorted)."""
        d = self.data_parallel_size
        index_map = self.batch_sharding(1).devices_indices_map((d,))
        mine = {index_map[dev][0].start or 0 for dev in self.mesh.devices.flat
                if dev.process_index == jax.process_index()}
        return d, sorted(mine)

    @functools.cached_property
    def local_data_parallel_size(self) -> int:
        """Distinct row shards this process holds (= data_parallel_size on one host)."""
        d, mine = self._row_shards()
        p = jax.process_count()
        if len(mine) * p != d:
            raise ValueError(
                f"mesh {dict(self.mesh.shape)}: process {jax.process_index()} holds {len(mine)} of "
                f"{d} batch-row shards, but {p} processes need {d // p if d >= p else 'a whole'} "
                f"each; with several processes the data-parallel size ({d}) must be a multiple "
                f"of the process count and each process must own whole rows of the mesh (put "
                f"'model' inside a host: e.g. data=-1,model=<devices per host or fewer>)")
        return len(mine)

    def place_batch(self, arrays: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        """Process-local host rows -> global arrays split over the batch axes.

        Each process passes its own rows (local rows a multiple of local_data_parallel_size);
        the global batch is the concatenation over processes in mesh order.
        """
        scale = self.data_parallel_size // self.local_data_parallel_size
        out = {}
        for k, v in arrays.items():
            v = np.asarray(v)
            if v.shape[0] % self.local_data_parallel_size:
                raise ValueError(f"{k}: {v.shape[0]} local rows are not a multiple of this "
                                 f"process's {self.local_data_parallel_size} data-parallel shards "
                                 "(BucketConfig.row_multiple)")
            out[k] = jax.make_array_from_process_local_data(
                self.batch_sharding(v.ndim), v, (v.shape[0] * scale,) + v.shape[1:])
        return out

    def local_rows(self, x: jax.Array) -> np.ndarray:
        """The rows of a batch-sharded global array that this process supplied, as numpy."""
        if not isinstance(x, jax.Array) or x.is_fully_addressable:
            return np.asarray(x)
        seen, parts = set(), []
        for shard in sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0):
            start = shard.index[0].start or 0
            if start not in seen:  # replicas over 'model' hold the same rows
                seen.add(start)
                parts.append(np.asarray(shard.data))
        return np.concatenate(parts)

    # ---- params ----
    def _leaf_sharding(self, path, logical: P, shape: tuple[int, ...]) -> NamedSharding:
        mesh_axes = list(nn.logical_to_mesh_axes(tuple(logical), self.rules))
        for i, entry in enumerate(mesh_axes):
            size = _mesh_axes_size(self.mesh, entry)
            if size > 1 and shape[i] % size:
                msg = (f"param {jax.tree_util.keystr(path)} {tuple(shape)}: dim {i} "
                       f"({logical[i]}={shape[i]}) is not divisible by mesh axes {entry} "
                       f"(size {size})")
                if self.strict:
                    raise ValueError(msg)
                log.info("%s; left replicated on that dim", msg)
                mesh_axes[i] = None
        return NamedSharding(self.mesh, P(*mesh_axes))

    def param_shardings(self, abstract) -> Any:
        """Boxed abstract params (LogicallyPartitioned leaves, e.g. jax.eval_shape(module.init))
        -> a tree of NamedSharding of the same (unboxed) structure. Plain leaves: replicated."""
        is_box = lambda x: isinstance(x, nn.LogicallyPartitioned)  # noqa: E731
        leaves = jax.tree.leaves(abstract, is_leaf=is_box)
        if self.strategy != "dp" and leaves and not any(map(is_box, leaves)):
            # Plain arrays carry no logical names: all would come back replicated, silently.
            raise ValueError("param_shardings needs the boxed abstract params (jax.eval_shape of "
                             "module.init, before nn.meta.unbox) to read their logical axis names; "
                             "for a module use module_param_shardings(module, *example_args)")

        def one(path, leaf):
            if is_box(leaf):
                return self._leaf_sharding(path, leaf.get_partition_spec(), leaf.value.shape)
            return self.replicated

        return jax.tree_util.tree_map_with_path(one, abstract, is_leaf=is_box)

    def module_param_shardings(self, module: nn.Module, *example_args, collection="params"):
        """Shardings for `module.init(rng, *example_args)[collection]` (no allocation)."""
        abstract = jax.eval_shape(lambda: module.init(jax.random.key(0), *example_args))
        return self.param_shardings(abstract[collection])

    def put_params(self, params, shardings) -> Any:
        """Params (numpy or jax, identical on every process) -> global arrays with `shardings`.

        make_array_from_callback builds each device's shard from the host copy, so it works
        with devices of other processes in the mesh (jax.device_put needs all local)."""
        def put(x, sharding):
            if isinstance(x, jax.Array) and x.sharding == sharding:
                return x   # already placed (loaded straight into the mesh: hf/pretrained.py)
            host = np.asarray(jax.device_get(x))
            return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])

        return jax.tree.map(put, params, shardings)


def spec_table(shardings) -> dict[str, P]:
    """{'encoder/layer_0/attention/query/kernel': P(None, 'model', None), ...}, for tests/logs."""
    flat = jax.tree_util.tree_flatten_with_path(shardings)[0]
    return {"/".join(str(getattr(k, "key", k)) for k in path): s.spec for path, s in flat}
