"""TPU: Pallas splash attention (jax.experimental.pallas.ops.tpu.splash_attention).

Our packing is exactly splash's segment ids: a packed row's segment numbers (0 = padding) go in
as SegmentIds(q, kv), a token attends only tokens of its own segment. What is left of the mask
is static and built once per shape: FullMask (bidirectional), CausalMask (decoders) or
LocalMask (a sliding window: (w, w) bidirectional as ModernBERT's local layers, (w, 0) with
causal). Windows here are on token indices, ours on position ids; inside a segment positions
restart at 0 and run with the index, so the two agree on every pair the segment ids allow.
The soft-cap is splash's attn_logits_soft_cap (c * tanh(s / c), as ours). Real rows equal the
XLA path; padding rows (segment 0) attend each other instead of the real keys, and are never read.

Memory is linear in the row length (blocks of block_q x block_kv scores; a [B, L] segment id
array in place of an [L, L] mask). Under a mesh the kernel runs per device (shard_map over the
mesh axes that the logical rules give batch and heads): a Pallas call cannot be partitioned by
XLA. On other platforms lax.platform_dependent runs the seam's written-out kernel (same math), so
a program exported for several platforms carries splash for TPU only.

Constraints (checked when traced, else the seam falls back to XLA): the mask is a SegmentMask
over all rows in order (not the last layer's few read rows: the static mask assumes query i is
token i), row length a multiple of 128 (splash's block shapes), fp32 or bf16 q/k/v. No bias,
dropout or score plug-in (the seam runs "reference" for those).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from .per_device import per_device
from .segment_mask import SegmentMask

SUPPORTS = frozenset({"scale", "softcap"})
LANES = 128   # TPU lanes: splash's kv blocks are multiples of this


def block_size(length: int) -> int | None:
    """The largest of 512 / 256 / 128 dividing the row length (None: none does)."""
    return next((b for b in (512, 256, 128) if length % b == 0), None)


def check(q, k, v, mask, asked) -> str | None:
    if not isinstance(mask, SegmentMask):
        return "splash needs the segment ids (a SegmentMask from blocks/masks.py), got a dense mask"
    if not mask.all_rows:
        return "only some query rows ask (a static splash mask assumes query i is token i)"
    if block_size(k.shape[1]) is None:
        return f"row length {k.shape[1]} is not a multiple of {LANES}"
    if q.dtype not in (jnp.float32, jnp.bfloat16):
        return f"splash runs fp32/bf16, got {q.dtype}"
    return None


@functools.lru_cache(maxsize=64)
def _kernel(heads: int, length: int, causal: bool, half_window: int | None, softcap: float | None,
            interpret: bool):
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm
    shape = (length, length)
    if half_window is not None:
        one = sm.LocalMask(shape, (half_window, 0 if causal else half_window), offset=0)
    else:
        one = sm.CausalMask(shape) if causal else sm.FullMask(shape)
    b = block_size(length)
    blocks = sk.BlockSizes(block_q=b, block_kv=b, block_kv_compute=b, block_q_dkv=b, block_kv_dkv=b,
                           block_kv_dkv_compute=b, block_q_dq=b, block_kv_dq=b)
    with jax.ensure_compile_time_eval():   # called while tracing: its tables must stay concrete
        kernel = sk.make_splash_mha(sm.MultiHeadMask([one] * heads), block_sizes=blocks, head_shards=1,
                                    q_seq_shards=1, attn_logits_soft_cap=softcap, interpret=interpret)
    # its block tables as numpy: host constants folded into the program. As jax arrays (what
    # make_splash_mha returns) a cached kernel's tables would be closed-over device buffers,
    # which jit lifts to extra arguments and jax.export then rejects (a pytree mismatch).
    return jax.tree.map(np.asarray, kernel)


def _splash(q, k, v, q_seg, k_seg, *, causal, half_window, scale, softcap, interpret):
    """q/k/v [B, L, H, D], segments [B, L] -> [B, L, H, D] (one device's share)."""
    from jax.experimental.pallas.ops.tpu.splash_attention.splash_attention_kernel import SegmentIds
    kernel = _kernel(q.shape[2], k.shape[1], causal, half_window, softcap, interpret)
    heads_first = lambda x: x.transpose(0, 2, 1, 3)
    qs = (q.astype(jnp.float32) * scale).astype(q.dtype)   # splash does not scale; ours scales q in fp32
    one = lambda a, b, c, s, t: kernel(a, b, c, segment_ids=SegmentIds(s, t))
    out = jax.vmap(one)(heads_first(qs), heads_first(k), heads_first(v), q_seg.astype(jnp.int32),
                        k_seg.astype(jnp.int32))
    return heads_first(out).astype(v.dtype)


def attention(q, k, v, mask: SegmentMask, *, scale=None, softcap=None, interpret: bool = False, elsewhere=None):
    """Splash on TPU (interpret=True: Pallas' interpreter on any backend, for tests); on other
    platforms `elsewhere(q, k, v, mask, scale=, softcap=)`, the seam's written-out kernel."""
    scale = 1.0 / float(np.sqrt(q.shape[-1])) if scale is None else float(scale)
    fn = functools.partial(_splash, causal=mask.causal, half_window=mask.half_window, scale=scale,
                           softcap=None if softcap is None else float(softcap), interpret=interpret)
    if interpret:   # per device too: the shard_map is checked on forced CPU devices
        return per_device(fn, q, k, v, mask.q_segments, mask.k_segments)

    def on_tpu(q, k, v, mask):
        return per_device(fn, q, k, v, mask.q_segments, mask.k_segments)

    def off_tpu(q, k, v, mask):
        return elsewhere(q, k, v, mask, scale=scale, softcap=softcap)
    return jax.lax.platform_dependent(q, k, v, mask, tpu=on_tpu, default=off_tpu)
