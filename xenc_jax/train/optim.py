"""Optimizer: AdamW with warmup + linear/cosine/constant decay, gradient clipping, weight-decay
mask and gradient accumulation, as one optax transformation.

The recipe matches Hugging Face's Trainer (what sentence-transformers trains with): torch AdamW
(decoupled weight decay, bias-corrected moments, eps 1e-6 in ST's old `fit`, 1e-8 in the
Trainer), `get_linear_schedule_with_warmup` (0 -> lr over the warmup steps, then linearly to 0
at the last step), global-norm clipping before the update, and no decay on biases and
LayerNorm parameters (our leaf names: `bias`, `scale`; embeddings and kernels decay, as HF's
`get_decay_parameter_names` decays `*.weight` of embeddings too).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

NO_DECAY_LEAVES = ("bias", "scale")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    learning_rate: float = 2e-5
    weight_decay: float = 0.01
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-6
    schedule: str = "linear"        # linear | cosine | constant (all after linear warmup)
    warmup_ratio: float = 0.1       # of the total optimizer steps (used when warmup_steps < 0)
    warmup_steps: int = -1
    max_grad_norm: float = 1.0      # 0 or less: no clipping
    grad_accum_steps: int = 1       # micro-batches per optimizer update (optax.MultiSteps)
    layer_decay: float = 1.0        # layer-wise lr decay: lr x layer_decay^depth below the head (1 = off)
    head_lr_scale: float = 1.0      # lr multiplier for the head (pooler/classifier): often fresh weights

    def __post_init__(self):
        if self.schedule not in ("linear", "cosine", "constant"):
            raise ValueError(f"optim.schedule must be linear, cosine or constant, got {self.schedule!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"optim.learning_rate must be > 0, got {self.learning_rate}")
        if not 0 <= self.warmup_ratio <= 1:
            raise ValueError(f"optim.warmup_ratio must be in [0, 1], got {self.warmup_ratio}")
        if int(self.grad_accum_steps) < 1:
            raise ValueError(f"optim.grad_accum_steps must be >= 1, got {self.grad_accum_steps}")
        if not 0 < self.layer_decay <= 1:
            raise ValueError(f"optim.layer_decay must be in (0, 1], got {self.layer_decay}")
        if not self.head_lr_scale > 0:
            raise ValueError(f"optim.head_lr_scale must be > 0, got {self.head_lr_scale}")

    def num_warmup(self, total_steps: int) -> int:
        if self.warmup_steps >= 0:
            return int(self.warmup_steps)
        return int(-(-self.warmup_ratio * total_steps // 1))  # ceil, as HF's get_warmup_steps


def decay_mask(params):
    """True for leaves that get weight decay: everything but biases and LayerNorm scales."""
    return jax.tree_util.tree_map_with_path(lambda path, _: _names(path)[-1] not in NO_DECAY_LEAVES, params)


def _names(path) -> list[str]:
    return [str(getattr(k, "key", getattr(k, "name", k))) for k in path]


@dataclasses.dataclass(frozen=True)
class Depths:
    """Where each child of the encoder's params sits, from the model's config (not guessed from
    names): `layer_{i}` for i < num_layers are the shared blocks' layers; `inputs` are below
    layer 0 (token / position / relative tables and their norms: the family's
    EncoderConfig.input_params); `outputs` are above the last layer (a final norm:
    EncoderConfig.output_params). Anything else under "encoder" is an error, so a family that
    adds a param group must place it."""
    num_layers: int
    inputs: tuple[str, ...]
    outputs: tuple[str, ...] = ()

    @classmethod
    def of(cls, model_config) -> "Depths":
        return cls(int(model_config.num_layers), tuple(model_config.input_params),
                   tuple(model_config.output_params))

    def depth(self, child: str) -> int:
        """Depth of an encoder child counted down from the top: outputs 0, layer i of N N - i,
        inputs N + 1."""
        if child.startswith("layer_") and child[6:].isdigit() and int(child[6:]) < self.num_layers:
            return self.num_layers - int(child[6:])
        if child in self.inputs:
            return self.num_layers + 1
        if child in self.outputs:
            return 0
        raise ValueError(f"encoder param group {child!r} is neither layer_0..layer_{self.num_layers - 1} nor "
                         f"named in the family config's input_params {self.inputs} or output_params "
                         f"{self.outputs}: add it there so layer-wise lr decay can place it")


def lr_scales(params, depths: Depths, layer_decay: float = 1.0, head_lr_scale: float = 1.0):
    """Per-leaf lr multipliers (a pytree like `params`) for layer-wise lr decay.

    Depth counts down from the top, as in ELECTRA/BEiT fine-tuning: encoder layer i of N has
    depth N - i, the embeddings (and whatever else is below layer 0) N + 1, a final norm above
    the last layer 0 (Depths). Multiplier = layer_decay ** depth. Everything outside
    params["encoder"] (the head: pooler, classifier, LM-head columns; a bi-encoder's Dense) is
    scaled by `head_lr_scale`.
    """
    def scale(path, _):
        names = _names(path)
        if names[0] != "encoder":
            return float(head_lr_scale)
        return float(layer_decay ** depths.depth(names[1]))
    return jax.tree_util.tree_map_with_path(scale, params)


def scale_updates(scales) -> optax.GradientTransformation:
    """Multiply each leaf's update by a fixed factor. After AdamW this is a per-parameter-group
    learning rate (decoupled weight decay is part of the update, so it scales too, as with
    torch param groups). optax has no stateless per-leaf scale, so it is written here."""
    def update(updates, state, params=None):
        return jax.tree.map(lambda u, f: u * jnp.asarray(f, u.dtype), updates, scales), state
    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make_schedule(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
    """lr(step) for optimizer step = 0, 1, ... (HF: the lr used by update k is lr(k))."""
    total = max(int(total_steps), 1)
    warm = min(cfg.num_warmup(total), total)
    lr = cfg.learning_rate

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        warm_f = jnp.float32(max(warm, 1))
        up = step / warm_f
        frac = jnp.clip((step - warm) / jnp.float32(max(total - warm, 1)), 0.0, 1.0)
        if cfg.schedule == "linear":
            down = 1.0 - frac
        elif cfg.schedule == "cosine":
            down = 0.5 * (1.0 + jnp.cos(jnp.pi * frac))
        else:
            down = jnp.ones_like(frac)
        return lr * jnp.where(step < warm, up, down)

    return schedule


def make_optimizer(cfg: OptimConfig, total_steps: int, params=None, depths: Depths | None = None
                   ) -> optax.GradientTransformation:
    """total_steps counts optimizer updates (micro-batches / grad_accum_steps). `params` (arrays
    or shapes) and `depths` (Depths.of(model config)) are needed only for layer_decay /
    head_lr_scale, to place each leaf."""
    parts = []
    if cfg.max_grad_norm and cfg.max_grad_norm > 0:
        parts.append(optax.clip_by_global_norm(cfg.max_grad_norm))
    parts.append(optax.adamw(make_schedule(cfg, total_steps), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                             weight_decay=cfg.weight_decay, mask=decay_mask))
    if cfg.layer_decay != 1.0 or cfg.head_lr_scale != 1.0:
        if params is None or depths is None:
            raise ValueError("optim.layer_decay / head_lr_scale need the params and the model's depths to "
                             "group them: pass params= and depths=Depths.of(model_config)")
        parts.append(scale_updates(lr_scales(params, depths, cfg.layer_decay, cfg.head_lr_scale)))
    tx = optax.chain(*parts)
    if cfg.grad_accum_steps > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=int(cfg.grad_accum_steps))
    return tx
