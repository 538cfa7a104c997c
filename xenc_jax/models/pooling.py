"""Sentence-embedding pooling, per packed segment: pure jnp functions, jit-safe.

Semantics are those of sentence-transformers 6.2 `Pooling` on right-padded inputs:

* cls:                  the first token of the text
* max:                  elementwise max over the text's tokens
* mean:                 sum of the text's tokens / token count
* mean_sqrt_len_tokens: sum / sqrt(token count)
* weightedmean:         tokens weighted by 1-based position in the text
* lasttoken:            the last token of the text

Inputs follow batching.Batch: `attention_mask` int [B, L] holds 0 on padding and the segment
number 1..P of the text each token belongs to (several texts may be packed into one row), so
every function returns [B, P, D], one vector per segment slot (empty slots hold garbage that the
host drops via example_ids). Unpacked batches are the P = 1 case. Accumulation is fp32.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

from .dense import contract

POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
# ST's legacy booleans in 1_Pooling/config.json, in ST's concatenation order.
LEGACY_KEYS = {"pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max",
               "pooling_mode_mean_tokens": "mean", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
               "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}

_HI = lax.Precision.HIGHEST


def check_modes(modes) -> tuple[str, ...]:
    """'mean' or ('cls', 'mean') -> a validated tuple of mode names."""
    modes = (modes,) if isinstance(modes, str) else tuple(modes)
    if not modes:
        raise ValueError(f"pooling needs at least one mode from {POOLING_MODES}")
    for m in modes:
        if m not in POOLING_MODES:
            raise ValueError(f"unknown pooling mode {m!r}; valid modes: {POOLING_MODES}")
    return modes


def segment_masks(attention_mask: jax.Array, segments: int) -> jax.Array:
    """[B, L] segment numbers -> float32 one-hot [B, P, L] (1 where token l belongs to slot p)."""
    slots = jnp.arange(1, segments + 1, dtype=attention_mask.dtype)
    return (attention_mask[:, None, :] == slots[None, :, None]).astype(jnp.float32)


def _sum(h, w):
    """sum_l w[b, p, l] * h[b, l, :] -> [B, P, D] in fp32."""
    return jnp.einsum("bpl,bld->bpd", w, h.astype(jnp.float32), precision=_HI)


def _gather(h, positions):
    """h [B, L, D] at positions [B, P] -> [B, P, D]."""
    pos = jnp.clip(positions, 0, h.shape[1] - 1).astype(jnp.int32)
    return jnp.take_along_axis(h, pos[..., None], axis=1)


def pool(modes: Sequence[str] | str, hidden: jax.Array, attention_mask: jax.Array,
         position_ids: jax.Array, cls_positions: jax.Array) -> jax.Array:
    """Concatenated pooled vectors [B, P, len(modes) * D] (fp32).

    hidden: [B, L, D] last hidden state; attention_mask: int [B, L] segment numbers (0 = pad);
    position_ids: int [B, L] 0-based position of each token within its text;
    cls_positions: int [B, P] first token of each segment.
    """
    modes = check_modes(modes)
    segments = cls_positions.shape[1]
    m = segment_masks(attention_mask, segments)  # [B, P, L]
    count = jnp.sum(m, axis=-1)[..., None]  # [B, P, 1]
    out, mean_sum = [], None
    for mode in modes:
        if mode == "cls":
            out.append(_gather(hidden, cls_positions).astype(jnp.float32))
        elif mode == "lasttoken":
            last = cls_positions + jnp.maximum(count[..., 0].astype(jnp.int32) - 1, 0)
            out.append(_gather(hidden, last).astype(jnp.float32))
        elif mode in ("mean", "mean_sqrt_len_tokens"):
            if mean_sum is None:
                mean_sum = _sum(hidden, m)
            denom = jnp.maximum(count, 1e-9)
            out.append(mean_sum / (denom if mode == "mean" else jnp.sqrt(denom)))
        elif mode == "weightedmean":
            w = m * (position_ids[:, None, :].astype(jnp.float32) + 1.0)
            out.append(_sum(hidden, w) / jnp.maximum(jnp.sum(w, axis=-1)[..., None], 1e-9))
        elif mode == "max":
            # One [B, L, D] masked max per slot (P is static and small): no [B, P, L, D] temporary.
            h = hidden.astype(jnp.float32)
            out.append(jnp.stack([jnp.max(jnp.where(attention_mask[..., None] == p + 1, h, -jnp.inf), axis=1)
                                  for p in range(segments)], axis=1))
    return out[0] if len(out) == 1 else jnp.concatenate(out, axis=-1)


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """torch.nn.functional.normalize(x, p=2, dim=-1): x / max(||x||, eps)."""
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


# Dense activations by the class path ST stores in 2_Dense/config.json.
DENSE_ACTIVATIONS = {
    "torch.nn.modules.activation.Tanh": jnp.tanh,
    "torch.nn.modules.linear.Identity": lambda x: x,
    "torch.nn.modules.activation.ReLU": jax.nn.relu,
    "torch.nn.modules.activation.Sigmoid": jax.nn.sigmoid,
    "torch.nn.modules.activation.GELU": lambda x: jax.nn.gelu(x, approximate=False),
    "torch.nn.modules.activation.SiLU": jax.nn.silu,
}


@dataclasses.dataclass(frozen=True)
class DenseSpec:
    """An ST Dense module: act(x @ W^T + b) (+ residual)."""
    in_features: int
    out_features: int
    bias: bool
    activation: str  # torch class path, a key of DENSE_ACTIVATIONS
    use_residual: bool = False


def dense(x: jax.Array, kernel: jax.Array, bias: jax.Array | None, activation: str,
          residual_kernel: jax.Array | None = None, use_residual: bool = False) -> jax.Array:
    """ST Dense: act(x @ W^T + b) (+ x or x @ R^T when use_residual). kernel is torch's [out, in]."""
    y = _linear(x, kernel)
    if bias is not None:
        y = y + bias.astype(x.dtype)
    y = DENSE_ACTIVATIONS[activation](y)
    if use_residual:
        y = y + (x if residual_kernel is None else _linear(x, residual_kernel))
    return y


def _linear(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """x @ kernel^T for torch's [out, in] kernel, through the matmul seam, at full fp32 precision."""
    return contract(x, kernel, (((x.ndim - 1,), (1,)), ((), ())), x.dtype, precision=_HI)


def sentence_head(modes: Sequence[str] | str, ops: Sequence[tuple], dense_params: Sequence[dict],
                  hidden: jax.Array, attention_mask: jax.Array, position_ids: jax.Array,
                  cls_positions: jax.Array) -> jax.Array:
    """What an ST model computes after its encoder: pool, then its Dense / Normalize ops in order.

    ops: ("dense", DenseSpec) | ("normalize", None); dense_params: one {"kernel" [out, in],
    "bias"?, "residual"?} per Dense op. Returns fp32 [B, P, D]. BiEncoder and the bi-encoder
    train step both embed through this function.
    """
    x = pool(modes, hidden, attention_mask, position_ids, cls_positions)
    return sentence_ops(ops, dense_params, x)


# Modes whose vector for a text of zero tokens is defined in ST (a decoder tokenizer adds no
# special tokens, so "" tokenizes to nothing): ST's row is all padding, and lasttoken gathers
# from token_embeddings * mask, the means divide a zero sum by a clamped count: zero either way.
# (cls would read a padding token's hidden state, max ST's -1e9 fill: not reproduced.)
EMPTY_TEXT_MODES = ("lasttoken", "mean", "mean_sqrt_len_tokens", "weightedmean")


def sentence_ops(ops: Sequence[tuple], dense_params: Sequence[dict], x: jax.Array) -> jax.Array:
    """The Dense / Normalize ops of an ST model applied to pooled vectors x [..., D] (fp32 out)."""
    n_dense = sum(kind == "dense" for kind, _ in ops)
    if len(dense_params) != n_dense:
        raise ValueError(f"{len(dense_params)} Dense param sets for {n_dense} Dense modules")
    dense_i = 0
    for kind, spec in ops:
        if kind == "dense":
            prm = dense_params[dense_i]
            dense_i += 1
            x = dense(x, prm["kernel"], prm.get("bias"), spec.activation, prm.get("residual"), spec.use_residual)
        elif kind == "normalize":
            x = l2_normalize(x)
        else:
            raise ValueError(f"unknown sentence op {kind!r} (dense | normalize)")
    return x.astype(jnp.float32)
