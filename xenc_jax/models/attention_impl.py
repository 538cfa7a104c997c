"""The one seam for attention kernels: name -> function, chosen per backend. Families never
pick a kernel: a module passes its implementation name through, and `attention` here decides.

Every kernel takes projected q [B, Lq, H, D], k/v [B, L, H, D] (grouped-query k/v already
repeated to H heads) and a mask: a lazy kernels.segment_mask.SegmentMask (what blocks/masks.py
builds: segment ids + positions + kind; `segment_mask.dense(mask)` is the [B, 1, Lq, L] bool,
True = may attend) or that bool array itself; plus the optional features below; and returns
[B, Lq, H, D]:
  bias     additive score bias [B or 1, H, Lq, L] (relative positions)
  scale    score scale (None: 1 / sqrt(D))
  softcap  logit soft-cap c: scores -> c * tanh(scores / c) before the mask
  score    a score plug-in (blocks/attention.py:ScorePlugin) computing the scaled scores itself
           (DeBERTa's disentangled c2p/p2c terms)
  dropout  a function on the attention probabilities (training)
A kernel lists the features it supports; asked for one it lacks, `attention` runs "reference"
(the written-out kernel, which has them all). A kernel may also have constraints (platform,
head dim, block sizes, dtype, mask kind), checked when the call is traced: when one fails,
`attention` logs one INFO line (once per reason) and runs "xla" (or "reference" when xla lacks a
feature asked for). Rows of real tokens get the same result from every kernel; a fully masked
(padding) row gets finite values, never NaN, and is never read.

Kernels:
  xla            jax.nn.dot_product_attention over the whole batch (XLA's fused path)
  cudnn          cuDNN flash attention (GPU; kernels/cudnn.py)
  splash         Pallas splash attention (TPU; kernels/splash.py): segment ids, linear memory
  query_chunked  "reference" over groups of rows, and over blocks of query rows in long rows:
                 the CPU path, memory linear in the row length
  reference      softmax(QK^T * scale + bias + mask) V written out, scores and softmax in fp32
A new kernel is one `register` call.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import warnings
from typing import Callable

import jax
import jax.numpy as jnp

from .kernels import cudnn as _cudnn
from .kernels import splash as _splash
from .kernels.segment_mask import dense, query_rows

log = logging.getLogger(__name__)

FEATURES = ("bias", "scale", "softcap", "score", "dropout")


@dataclasses.dataclass(frozen=True)
class Kernel:
    fn: Callable[..., jax.Array]     # (q, k, v, mask, **features) -> [B, Lq, H, D]
    supports: frozenset[str]         # the FEATURES it implements
    # (q, k, v, mask, features asked) -> None when it can run, else why not (one line)
    check: Callable[..., str | None] | None = None


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
    s = s + jnp.where(dense(mask4), 0.0, jnp.finfo(jnp.float32).min).astype(jnp.float32)
    p = jax.nn.softmax(s, axis=-1)
    if dropout is not None:
        p = dropout(p)
    out = jnp.matmul(p.astype(v.dtype), v.transpose(0, 2, 1, 3), preferred_element_type=jnp.float32)
    return out.astype(v.dtype).transpose(0, 2, 1, 3)


def _query_block(lq: int, tokens_per_chunk: int) -> int | None:
    """Query rows per block for a long row: the largest divisor of lq <= tokens_per_chunk, or
    None (no blocking) when the row is short or lq has no divisor of a useful size."""
    if lq <= tokens_per_chunk:
        return None
    block = max(d for d in range(1, tokens_per_chunk + 1) if lq % d == 0)
    return block if block * 8 >= tokens_per_chunk else None


def _by_query_blocks(q, k, v, mask4, bias, scale, softcap, block: int):
    """`reference` on blocks of `block` query rows, one after another: the scores held at once
    are [rows, H, block, L], linear in the row length; the block's mask is built from the
    segment ids (a SegmentMask is never materialised whole)."""
    def one(i):
        start = i * block
        b = None if bias is None or bias.shape[2] == 1 else jax.lax.dynamic_slice_in_dim(bias, start, block, 2)
        return reference(jax.lax.dynamic_slice_in_dim(q, start, block, 1), k, v, query_rows(mask4, start, block),
                         bias=bias if b is None else b, scale=scale, softcap=softcap)
    out = jax.lax.map(one, jnp.arange(q.shape[1] // block))           # [n, rows, block, H, D]
    return jnp.moveaxis(out, 0, 1).reshape(q.shape[:2] + out.shape[-2:])


def query_chunked(q, k, v, mask4, *, bias=None, scale=None, softcap=None, score=None, tokens_per_chunk: int = 512):
    """`reference` over groups of rows, one group after another (lax.map); in rows longer than
    `tokens_per_chunk`, over blocks of query rows too.

    On XLA:CPU the whole-batch form materialises [B, heads, Lq, L] scores and runs its softmax
    memory-bound; groups of ~512 key tokens keep the scores in cache (1.2-2x faster,
    docs/benchmarks.md). Same math per row. The group size is a divisor of B, so shapes stay
    static. A bias and a score plug-in's per-row arrays are cut into the same groups. A long
    row (8k tokens) is one group, and its queries go in blocks of <= tokens_per_chunk rows, so
    memory grows linearly with the length (tests/test_long_row_memory.py); a score plug-in's
    rows are not cut by query, so with one a long row is one block.
    """
    rows, length = q.shape[0], k.shape[1]
    group = max(d for d in range(1, max(1, tokens_per_chunk // length) + 1) if rows % d == 0)
    block = None if score is not None else _query_block(q.shape[1], tokens_per_chunk)
    split = lambda x: x.reshape((rows // group, group) + x.shape[1:])
    whole = lambda x: jnp.broadcast_to(x, (rows,) + x.shape[1:])
    per_row = [q, k, v, jax.tree.map(whole, mask4)]
    if bias is not None:
        per_row.append(whole(bias))
    n_fixed = len(per_row)
    if score is not None:
        per_row += [whole(r) for r in score.rows()]

    def one_group(t):
        qg, kg, vg, mg = t[:4]
        bg = t[4] if bias is not None else None
        if block is not None:
            return _by_query_blocks(qg, kg, vg, mg, bg, scale, softcap, block)
        group_score = None if score is None else score.with_rows(tuple(t[n_fixed:]))
        return reference(qg, kg, vg, mg, bias=bg, scale=scale, softcap=softcap, score=group_score)
    out = jax.lax.map(one_group, jax.tree.map(split, tuple(per_row)))
    return out.reshape(q.shape[:2] + out.shape[-2:])


def _xla(q, k, v, mask4, *, bias=None, scale=None):
    return jax.nn.dot_product_attention(q, k, v, mask=dense(mask4), implementation="xla", scale=scale,
                                        bias=None if bias is None else bias.astype(q.dtype))


KERNELS: dict[str, Kernel] = {
    "xla": Kernel(_xla, frozenset({"bias", "scale"})),
    "cudnn": Kernel(_cudnn.attention, _cudnn.SUPPORTS, _cudnn.check),
    "splash": Kernel(functools.partial(_splash.attention, elsewhere=reference), _splash.SUPPORTS, _splash.check),
    "query_chunked": Kernel(query_chunked, frozenset({"bias", "scale", "softcap", "score"})),
    "reference": Kernel(reference, frozenset(FEATURES)),
}
# Old names still accepted, with a DeprecationWarning: old name -> kernel.
ALIASES = {"xla_chunked": "query_chunked"}
_logged: set[str] = set()


def register(name: str, kernel: Kernel) -> None:
    """Add an attention kernel under `name`."""
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


# backend -> the kernel it uses (mesh or not); CPU's query_chunked only without a mesh (its
# lax.map over row groups would serialise a batch that is split over devices)
BACKEND_KERNELS = {"tpu": "splash", "gpu": "cudnn", "cuda": "cudnn"}


def default_attention_impl(mesh=None, platform: str | None = None) -> str | None:
    """The kernel for `platform` (default: jax's default backend): 'splash' on TPU, 'cudnn' on
    CUDA GPUs, 'query_chunked' for unsharded CPU inference, else None (jax's XLA attention).
    Each checks its constraints per call and falls back to XLA where they do not hold."""
    platform = (platform or jax.default_backend()).lower()
    if platform == "cpu":
        return "query_chunked" if mesh is None else None
    if platform == "gpu" and "cuda" not in getattr(jax.devices()[0].client, "platform_version", "cuda").lower():
        return None   # ROCm: no cuDNN
    return BACKEND_KERNELS.get(platform)


def _fallback(name: str, reason: str, asked: set) -> Kernel:
    fallback = "xla" if asked <= KERNELS["xla"].supports else "reference"
    line = f"attention kernel {name!r} cannot run this call ({reason}); using {fallback!r}"
    if line not in _logged:   # one line per reason, not one per layer and call
        _logged.add(line)
        # INFO, not WARNING: most fallbacks are by design (a decoder's last layer reads a few
        # rows; fp32 compute on a GPU), and a CLI run must not print them to every user
        log.info(line)
    return KERNELS[fallback]


def attention(q, k, v, mask4, implementation: str | None = None, **features):
    """Attention by the named kernel; by "reference" when the kernel lacks a feature asked for
    (features given as None are not asked); by "xla" (logged) when its constraints fail."""
    asked = {name: value for name, value in features.items() if value is not None}
    unknown = set(asked) - set(FEATURES)
    if unknown:
        raise TypeError(f"unknown attention features {sorted(unknown)}; known: {FEATURES}")
    name = resolve(implementation)
    kernel = KERNELS[name]
    if not set(asked) <= kernel.supports:
        kernel = KERNELS["reference"]
    elif kernel.check is not None:
        reason = kernel.check(q, k, v, mask4, asked)
        if reason is not None:
            kernel = _fallback(name, reason, set(asked))
    return kernel.fn(q, k, v, mask4, **asked)
