"""Pure train and eval steps, jitted over a device mesh with explicit in/out shardings.

    train_step(state, batch, rng) -> (state, metrics)      state donated
    eval_step(params, batch) -> logits | embeddings

`state` is a TrainState pytree (step, params, opt_state). Dropout keys are
`fold_in(rng, state.step)`, so a run is a pure function of (initial state, data order, rng):
resuming from a checkpoint reproduces the uninterrupted run, and the key does not depend on
how the batch is sharded (threefry is partitionable), so sharded training equals one device.

Batches are dicts of arrays whose leading axis is rows (split over the mesh's data axes), as
data.TrainBatch.arrays() makes them (TrainBatch is a batching.Batch, laid out by the function
inference batches with): the model inputs of the one batch contract (model_fns.py,
batching.MODEL_INPUTS: 0-based positions, the model's position offset added inside the jitted
function), one text or pair per row,
  input_ids, attention_mask, token_type_ids, position_ids: int32 [R, L], R = Q * G rows
  cls_positions: int32 [R, 1] zeros (one segment per row, read at its first token)
plus valid: bool [R] and labels: float32 [Q, G].
The model runs through model_fns.make_score_fn / make_embed_fn, the functions inference and the
evaluators use (per_row: its [R, 1, ...] output as [R, ...]).
For a cross-encoder, row q * G + s is slot s of group q (see data.py); for a bi-encoder the
G texts of a row (anchor, positive, negatives..., or text1, text2) are its G slots.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from ..batching import MODEL_INPUTS
from ..model_fns import make_embed_fn, make_score_fn
from . import losses as L

CROSS_LOSSES = ("bce", "ce", "mse", "margin_mse", "mnrl", "listnet", "listmle", "lambda", "ranknet")
BI_LOSSES = ("mnrl", "mnrl_symmetric", "cosent", "matryoshka_mnrl", "matryoshka_cosent")
_ACTIVATIONS = {None: None, "identity": None, "none": None, "sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh}


@flax.struct.dataclass
class TrainState:
    step: jax.Array          # int32 scalar: micro-steps done
    params: Any
    opt_state: Any
    ema: Any = None          # exponential moving average of params (ema_decay > 0), else None

    def eval_params(self):
        """The weights to evaluate and export: the EMA when one is kept."""
        return self.params if self.ema is None else self.ema


# ----------------------------------------------------------------------------- losses

def _activation(name):
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown loss activation {name!r}; use one of {sorted(k for k in _ACTIVATIONS if k)}")
    return _ACTIVATIONS[name]


def cross_encoder_loss(name: str, **kw) -> Callable:
    """(logits [R, C], batch) -> scalar, for the fixed [Q, G] group layout."""
    if name not in CROSS_LOSSES:
        raise ValueError(f"unknown cross-encoder loss {name!r}; choose from {CROSS_LOSSES}")
    kw = dict(kw)
    if "activation_fn" in kw:
        kw["activation_fn"] = _activation(kw["activation_fn"])

    def fn(logits, batch):
        labels, valid = batch["labels"], batch["valid"]
        q, g = labels.shape
        if name == "ce":
            return L.softmax_cross_entropy_loss(logits, labels[:, 0], valid, **kw)
        scores = logits[:, 0].reshape(q, g)
        vmask = valid.reshape(q, g)
        if name == "bce":
            return L.binary_cross_entropy_loss(scores, labels, vmask, **kw)
        if name == "mse":
            return L.mse_loss(scores, labels, vmask, **kw)
        if name == "margin_mse":
            return L.margin_mse_loss(scores, labels, vmask, **kw)
        if name == "mnrl":
            return L.cross_encoder_mnrl_loss(scores, vmask, **kw)
        return {"listnet": L.list_net_loss, "listmle": L.list_mle_loss, "lambda": L.lambda_loss,
                "ranknet": L.rank_net_loss}[name](scores, labels, vmask, **kw)
    return fn


def bi_encoder_loss(name: str, **kw) -> Callable:
    """(embeddings [R, D], batch) -> scalar; rows hold G texts each (embeddings [Q*G, D])."""
    if name not in BI_LOSSES:
        raise ValueError(f"unknown bi-encoder loss {name!r}; choose from {BI_LOSSES}")
    kw = dict(kw)
    dims = kw.pop("matryoshka_dims", None)
    weights = kw.pop("matryoshka_weights", None)

    def fn(emb, batch):
        labels, valid = batch["labels"], batch["valid"]
        q, g = labels.shape
        e = emb.reshape(q, g, -1)
        v = valid.reshape(q, g)
        base = name.removeprefix("matryoshka_")
        if base.startswith("mnrl"):
            sym = base == "mnrl_symmetric"
            neg = e[:, 2:] if g > 2 else None

            def loss(a, p, *n):
                return L.multiple_negatives_ranking_loss(
                    a, p, n[0] if n else None, mask=v[:, 0] & v[:, 1],
                    negatives_mask=v[:, 2:] if n else None, symmetric=sym, **kw)
            arrays = [e[:, 0], e[:, 1]] + ([neg] if neg is not None else [])
        else:
            def loss(a, b):
                return L.cosent_loss(a, b, labels[:, 0], v[:, 0] & v[:, 1], **kw)
            arrays = [e[:, 0], e[:, 1]]
        if name.startswith("matryoshka_"):
            return L.matryoshka_loss(loss, arrays, dims=dims, weights=weights)
        return loss(*arrays)
    return fn


# ----------------------------------------------------------------------------- model apply

def per_row(model_fn: Callable) -> Callable:
    """A model_fns score_fn / embed_fn on training rows: one segment per row (cls_positions
    [R, 1] zeros), so its [R, 1, ...] output is read as [R, ...], what the losses take."""
    def apply(params, batch, rng=None, deterministic=True):
        return model_fn(params, batch, rng, deterministic)[:, 0]
    return apply


def score_fn(module: nn.Module) -> Callable:
    """model_fns.make_score_fn of a SequenceClassifier-like module (the function inference scores
    with): fp32 logits [B, P, C]; the position offset is the module's config's."""
    return make_score_fn(module, module.cfg.position_offset)


def embed_fn(module: nn.Module, pooling="mean", ops=(), *, frozen_dense=None) -> Callable:
    """model_fns.make_embed_fn of a BareEncoder-like module (the function BiEncoder embeds with:
    the encoder, then the pooling modes and the ST Dense / Normalize `ops`): fp32 [B, P, D].
    Dense weights: params["dense"] (trained), or `frozen_dense` (constants: no gradient, no
    optimizer update)."""
    return make_embed_fn(module, module.cfg.position_offset, pooling, ops, frozen_dense)


def cross_encoder_apply(module: nn.Module) -> Callable:
    """(params, batch, rng, deterministic) -> fp32 logits [R, C]: score_fn per row."""
    return per_row(score_fn(module))


def bi_encoder_apply(module: nn.Module, pooling="mean", ops=(), *, frozen_dense=None) -> Callable:
    """(params, batch, rng, deterministic) -> fp32 sentence embeddings [R, D]: embed_fn per row."""
    return per_row(embed_fn(module, pooling, ops, frozen_dense=frozen_dense))


def cached_apply(apply_fn: Callable, chunks: int) -> Callable:
    """`apply_fn` over `chunks` mini-batches of rows with activation memory of one: GradCache.

    GradCache (Gao et al., 2021) embeds the whole batch without keeping activations, takes the
    loss gradient with respect to the embeddings, then re-runs each mini-batch and backpropagates
    its slice of that gradient. Here that schedule comes from autodiff: the mini-batches run in
    a lax.map whose body is rematerialised (jax.checkpoint), so the forward keeps only each
    mini-batch's outputs, and the backward recomputes one mini-batch at a time and feeds it the
    embedding cotangents of the full-batch loss. The loss still sees every row (all in-batch
    negatives); gradients equal the one-pass step's (tests/test_train_step.py). Cost: one extra
    forward. Works for any row-wise `apply_fn` (bi- and cross-encoders).

    Mini-batch c takes rows c, c + chunks, c + 2 * chunks, ...: with rows split over devices in
    blocks, every mini-batch then has rows on every device. Dropout keys are fold_in(key, c).
    """
    if not isinstance(chunks, int) or isinstance(chunks, bool) or chunks < 1:
        raise ValueError(f"cache chunks must be a positive int, got {chunks!r}")
    if chunks == 1:
        return apply_fn
    def apply(params, batch, rng=None, deterministic=True):
        rows = batch["input_ids"].shape[0]
        if rows % chunks:
            raise ValueError(f"a batch of {rows} rows does not split into {chunks} equal mini-batches "
                             "(GradCache): make the rows per batch a multiple of the chunk count")
        split = lambda x: jnp.swapaxes(x.reshape((rows // chunks, chunks) + x.shape[1:]), 0, 1)

        @jax.checkpoint
        def one(p, c, part):
            key = None if rng is None else jax.random.fold_in(rng, c)
            return apply_fn(p, part, key, deterministic)

        out = jax.lax.map(lambda t: one(params, t[0], t[1]),
                          (jnp.arange(chunks), {k: split(batch[k]) for k in MODEL_INPUTS}))
        return jnp.swapaxes(out, 0, 1).reshape((rows,) + out.shape[2:])
    return apply


# ----------------------------------------------------------------------------- sharding

def make_plan(strategy: str = "dp", mesh: Mesh | None = None):
    """A sharding.ShardingPlan over `mesh` (default: every device on the 'data' axis).

    "dp": params replicated, batch rows split over data. "fsdp": params (and their optimizer
    moments) split along their `embed` axis too, ZeRO-3 style: XLA all-gathers a param where it
    is used and reduce-scatters its gradient. "tp"/"fsdp_tp" need a mesh with a model axis.
    """
    from ..sharding import ShardingPlan, make_mesh
    return ShardingPlan(mesh if mesh is not None else make_mesh(data=-1, model=1), strategy)


def param_shardings(plan, module: nn.Module):
    """Shardings of `module`'s params from their logical axis names (no allocation)."""
    ids = jnp.zeros((1, 2), jnp.int32)
    return plan.module_param_shardings(module, ids, ids)


def state_shardings(plan, tx: optax.GradientTransformation, params, p_sh, ema: bool = False) -> TrainState:
    """Shardings of the whole TrainState: optimizer moments and the EMA follow their params."""
    abstract_opt = jax.eval_shape(tx.init, params)
    opt_sh = optax.tree_map_params(tx, lambda _, s: s, abstract_opt, p_sh,
                                   transform_non_params=lambda _: plan.replicated)
    return TrainState(step=plan.replicated, params=p_sh, opt_state=opt_sh, ema=p_sh if ema else None)


def create_state(plan, tx, params, shardings: TrainState) -> TrainState:
    # put_params builds new global arrays from a host copy: the train step donates its state,
    # which must never free the caller's arrays.
    ema = None if shardings.ema is None else plan.put_params(params, shardings.ema)
    params = plan.put_params(params, shardings.params)
    opt_state = jax.jit(tx.init, out_shardings=shardings.opt_state)(params)
    step = jax.device_put(jnp.zeros((), jnp.int32), plan.replicated)
    return TrainState(step=step, params=params, opt_state=opt_state, ema=ema)


def ema_update(ema, params, updates_done, decay: float):
    """EMA of the weights after `updates_done` optimizer updates. The decay ramps up as
    min(decay, (1 + n) / (10 + n)) (TensorFlow's ExponentialMovingAverage with num_updates), so
    early averages are not dominated by the starting weights."""
    n = jnp.asarray(updates_done, jnp.float32)
    d = jnp.minimum(jnp.float32(decay), (1.0 + n) / (10.0 + n))
    return jax.tree.map(lambda e, p: (d * e + (1.0 - d) * p.astype(e.dtype)).astype(e.dtype), ema, params)


# ----------------------------------------------------------------------------- steps

def make_train_step(apply_fn: Callable, loss_fn: Callable, tx: optax.GradientTransformation,
                    plan, shardings: TrainState, *, lr_schedule=None,
                    grad_accum_steps: int = 1, ema_decay: float = 0.0, donate: bool = True) -> Callable:
    """Jitted `train_step(state, batch, rng) -> (state, metrics)`; one compile per batch shape.
    With a state that keeps an EMA, it is updated after each optimizer update (every
    `grad_accum_steps` micro-steps, when the params change)."""
    def train_step(state: TrainState, batch: dict, rng: jax.Array):
        key = jax.random.fold_in(rng, state.step)

        def objective(params):
            out = apply_fn(params, batch, key, deterministic=False)
            return loss_fn(out, batch)

        loss, grads = jax.value_and_grad(objective)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads),
                   "rows": jnp.sum(batch["valid"].astype(jnp.int32))}
        if lr_schedule is not None:
            metrics["lr"] = lr_schedule(state.step // grad_accum_steps)
        ema = state.ema
        if ema is not None:
            done = (state.step + 1) // grad_accum_steps
            moved = ema_update(ema, params, done, ema_decay)
            ema = moved if grad_accum_steps == 1 else jax.tree.map(
                lambda m, e: jnp.where((state.step + 1) % grad_accum_steps == 0, m, e), moved, ema)
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state, ema=ema), metrics

    batch_sh = {**_input_shardings(plan), "labels": plan.batch_sharding(2), "valid": plan.batch_sharding(1)}
    return plan.jit(train_step, in_shardings=(shardings, batch_sh, plan.replicated),
                    out_shardings=(shardings, plan.replicated),
                    donate_argnums=(0,) if donate else ())


def _input_shardings(plan) -> dict:
    """The model inputs (batching.MODEL_INPUTS, all int32 [R, ...]): rows split over data."""
    return {k: plan.batch_sharding(2) for k in MODEL_INPUTS}


def make_eval_step(model_fn: Callable, plan, param_shardings) -> Callable:
    """Jitted `eval_step(params, batch) -> outputs` (deterministic, replicated out) of a
    score_fn / embed_fn (or a per_row one) over a batch of MODEL_INPUTS (Batch.arrays())."""
    def eval_step(params, batch):
        return model_fn(params, batch, None, deterministic=True)
    return plan.jit(eval_step, in_shardings=(param_shardings, _input_shardings(plan)), out_shardings=plan.replicated)


# ----------------------------------------------------------------------------- divergence

class FiniteSteps:
    """The train steps whose loss and grad norm nobody has checked yet, as the step returned
    them (device scalars). A step with a NaN / inf loss or grad norm must never reach a
    checkpoint, an evaluation or an export: its weights (or its optimizer moments, with gradient
    accumulation) are most likely NaN, and saved they would become what a resume starts from and,
    with keep_checkpoints, delete the last good checkpoint.

    No device read per step (steps are dispatched asynchronously): `first_bad` reads them only
    where the loop reads the device anyway, at a log line (the values it fetched) and before a
    save / evaluation / export (which wait for the last step; its loss is an output of the same
    program). The loss and grad norm are global (replicated outputs of the jitted step), so every
    process sees the same values and stops at the same place: none waits in a save alone.

    Not optax.apply_if_finite (skip the update of a non-finite step and go on): skipping steps
    silently trains on other data than the config says, and a run that diverged once usually
    does again. Stopping, with the last good checkpoint kept, is the contract."""

    def __init__(self, step: int):
        self.first, self.pending = step + 1, []   # the step number of pending[0]

    def add(self, metrics: dict) -> None:
        self.pending.append(metrics)

    def first_bad(self, got: list | None = None) -> tuple[int, float, float] | None:
        """(step, loss, grad norm) of the first unchecked step that is not finite, or None; all
        unchecked steps count as checked afterwards. `got`: host values of the latest len(got)
        steps when the caller fetched them already (the log line), else they are read here."""
        n = len(self.pending)
        got = jax.device_get(self.pending) if got is None else got[len(got) - n:]
        first, self.first, self.pending = self.first, self.first + n, []
        for i, m in enumerate(got):
            loss, norm = float(m["loss"]), float(m.get("grad_norm", 0.0))
            if not (math.isfinite(loss) and math.isfinite(norm)):
                return first + i, loss, norm
        return None
