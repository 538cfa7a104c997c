"""The one seam for attention kernels: name -> function, chosen per backend. Families never
pick a kernel: a module passes its implementation name through, and `attention` here decides.

Every kernel takes projected q [B, Lq, H, D], k/v [B, L, H, D] (grouped-query k/v already
repeated to H heads) and a bool mask [B, 1, Lq, L] (True = may attend; blocks/masks.py), plus
the optional features below, and returns [B, Lq, H, D]:
  bias     additive score bias [B or 1, H, Lq, L] (relative positions)
  scale    score scale (None: 1 / sqrt(D))
  softcap  logit soft-cap c: scores -> c * tanh(scores / c) before the mask
  score    a score plug-in (blocks/attention.py:ScorePlugin) computing the scaled scores itself
           (DeBERTa's disentangled c2p/p2c terms)
  dropout  a function on the attention probabilities (training)
A kernel lists the features it supports; asked for one it lacks, `attention` runs "reference"
(the written-out kernel, which has them all). A fully masked row (an empty padding row) gets
uniform weights, never NaN, in every kernel.

Kernels:
  xla            jax.nn.dot_product_attention over the whole batch (XLA's fused path)
  cudnn          the same with implementation="cudnn" (cuDNN flash attention on GPU)
  query_chunked  "reference" over groups of query rows, one group after another (the CPU path)
  reference      softmax(QK^T * scale + bias + mask) V written out, scores and softmax in fp32
A new kernel (cuDNN with GQA natively, TPU splash) is one `register` call.
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import Callable

import jax
import jax.numpy as jnp

FEATURES = ("bias", "scale", "softcap", "score", "dropout")


@dataclasses.dataclass(frozen=True)
class Kernel:
    fn: Callable[..., jax.Array]     # (q, k, v, mask4, **features) -> [B, Lq, H, D]
    supports: frozenset[str]         # the FEATURES it implements


def reference(q, k, v, mask4, *, bias=None, scale=None, softcap=None, score=None, dropout=None):
    """softmax(QK^T * scale + bias + mask) V with heads as a batch axis.

    Written out (not jax.nn.dot_product_attention) because on XLA:CPU this [B, H, Lq, L] layout
    runs as plain batched matmuls: 1.4x faster per group of rows than jax's [B, Lq, H, D]
    einsums and 3x over a whole batch (scripts/bench_cross_encoder.py). Scores and softmax are
    fp32 whatever the compute dtype. The mask is added as 0 / finfo.min: for any finite score
    that equals masked_fill (finfo.min absorbs it), and a row with no allowed key is uniform.
    """
    if score is None:
        scale = (1.0 / jnp.sqrt(jnp.asarray(q.shape[-1], jnp.float32)) if scale is None
                 else jnp.asarray(scale, jnp.float32))
        qt = (q.astype(jnp.float32) * scale).astype(q.dtype).transpose(0, 2, 1, 3)
        s = jnp.matmul(qt, k.transpose(0, 2, 3, 1), preferred_element_type=jnp.float32)
    else:
        s = score(q, k)
    if bias is not None:
        s = s + bias.astype(jnp.float32)
    if softcap is not None:
        s = softcap * jnp.tanh(s / softcap)
    s = s + jnp.where(mask4, 0.0, jnp.finfo(jnp.float32).min).astype(jnp.float32)
    p = jax.nn.softmax(s, axis=-1)
    if dropout is not None:
        p = dropout(p)
    out = jnp.matmul(p.astype(v.dtype), v.transpose(0, 2, 1, 3), preferred_element_type=jnp.float32)
    return out.astype(v.dtype).transpose(0, 2, 1, 3)


def query_chunked(q, k, v, mask4, *, bias=None, scale=None, softcap=None, score=None, tokens_per_chunk: int = 512):
    """`reference` over groups of rows, one group after another (lax.map).

    On XLA:CPU the whole-batch form materialises [B, heads, Lq, L] scores and runs its softmax
    memory-bound; groups of ~512 key tokens keep the scores in cache (1.2-2x faster,
    docs/benchmarks.md). Same math per row. The group size is a divisor of B, so shapes stay
    static. A bias and a score plug-in's per-row arrays are cut into the same groups.
    """
    rows, length = q.shape[0], k.shape[1]
    group = max(d for d in range(1, max(1, tokens_per_chunk // length) + 1) if rows % d == 0)
    split = lambda x: x.reshape((rows // group, group) + x.shape[1:])
    per_row = [q, k, v, mask4]
    if bias is not None:
        per_row.append(jnp.broadcast_to(bias, (rows,) + bias.shape[1:]))
    n_fixed = len(per_row)
    if score is not None:
        per_row += [jnp.broadcast_to(r, (rows,) + r.shape[1:]) for r in score.rows()]

    def one_group(t):
        group_score = None if score is None else score.with_rows(tuple(t[n_fixed:]))
        return reference(*t[:4], bias=t[4] if bias is not None else None, scale=scale, softcap=softcap,
                         score=group_score)
    out = jax.lax.map(one_group, tuple(split(x) for x in per_row))
    return out.reshape(q.shape[:2] + out.shape[-2:])


def _jax_attention(implementation: str):
    def kernel(q, k, v, mask4, *, bias=None, scale=None):
        return jax.nn.dot_product_attention(q, k, v, mask=mask4, implementation=implementation, scale=scale,
                                            bias=None if bias is None else bias.astype(q.dtype))
    return kernel


KERNELS: dict[str, Kernel] = {
    "xla": Kernel(_jax_attention("xla"), frozenset({"bias", "scale"})),
    "cudnn": Kernel(_jax_attention("cudnn"), frozenset({"bias", "scale"})),
    "query_chunked": Kernel(query_chunked, frozenset({"bias", "scale", "softcap", "score"})),
    "reference": Kernel(reference, frozenset(FEATURES)),
}
# Old names still accepted, with a DeprecationWarning: old name -> kernel.
ALIASES = {"xla_chunked": "query_chunked"}


def register(name: str, kernel: Kernel) -> None:
    """Add an attention kernel (e.g. a TPU splash or cuDNN GQA kernel) under `name`."""
    if name in KERNELS or name in ALIASES:
        raise ValueError(f"attention kernel {name!r} is already registered")
    unknown = set(kernel.supports) - set(FEATURES)
    if unknown:
        raise ValueError(f"kernel {name!r} claims unknown features {sorted(unknown)}; known: {FEATURES}")
    KERNELS[name] = kernel


def resolve(implementation: str | None) -> str:
    """The registered kernel name of `implementation` (None: "xla"); unknown names are an error."""
    if implementation is None:
        return "xla"
    if implementation in ALIASES:
        new = ALIASES[implementation]
        warnings.warn(f"attention_impl={implementation!r} is deprecated; use {new!r}", DeprecationWarning,
                      stacklevel=3)
        return new
    if implementation not in KERNELS:
        raise ValueError(f"unknown attention_impl {implementation!r}; use one of {sorted(KERNELS)} (or None)")
    return implementation


def default_attention_impl(mesh=None) -> str | None:
    """The kernel for this backend: 'query_chunked' for unsharded inference on CPU, else None
    (jax's XLA attention)."""
    return "query_chunked" if mesh is None and jax.default_backend() == "cpu" else None


def attention(q, k, v, mask4, implementation: str | None = None, **features):
    """Attention by the named kernel, or by "reference" when the kernel lacks a feature asked
    for (features given as None are not asked)."""
    asked = {name: value for name, value in features.items() if value is not None}
    unknown = set(asked) - set(FEATURES)
    if unknown:
        raise TypeError(f"unknown attention features {sorted(unknown)}; known: {FEATURES}")
    kernel = KERNELS[resolve(implementation)]
    if not set(asked) <= kernel.supports:
        kernel = KERNELS["reference"]
    return kernel.fn(q, k, v, mask4, **asked)
