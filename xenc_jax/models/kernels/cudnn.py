"""GPU: cuDNN flash attention through jax.nn.dot_product_attention(implementation="cudnn").

How packed rows go in: jax.nn.dot_product_attention takes a bool `mask` (or an additive bias)
broadcastable to [B, heads, Lq, L]; its cuDNN path folds the mask into a bias of [B, 1, Lq, L]
in the compute dtype (jax._src.cudnn.fused_attention_stablehlo.combine_bias_and_mask) and runs
the flash kernel over it. So the segment-aware mask of a packed row goes in as that bias:
flash compute (no [heads, L, L] fp32 scores), but one [B, 1, L, L] bf16 array per layer kind
(128 MiB for an 8192-token row), not linear in memory. The linear alternative, cuDNN's packed
"THD" layout (per-segment q/kv offsets and lengths: fused_attention_stablehlo.
dot_product_attention's q_offsets / kv_offsets), is private jax API and Hopper-only; it is not
used here. Its sliding window is left-only (causal), so a bidirectional window (ModernBERT)
also goes in through the mask.

Constraints (jax's check_is_flash_attention / check_layout; checked when the call is traced):
cuDNN present (jax's CUDA plugin), q/k/v fp16 or bf16 (fp32 runs XLA), head dim a multiple of
8 and <= 128 (<= 256 on Hopper and later), even query and key lengths (its backward with a bias
needs them; tests/test_export_platforms.py found a decoder's 1-row last layer failing there). No soft-cap, dropout or score plug-in (the seam
runs "reference" for those). Verified so far only by lowering for "cuda" on CPU
(tests/test_export_platforms.py); scripts/device_check.py checks it against CPU fp32 on a GPU.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from .per_device import per_device
from .segment_mask import dense

SUPPORTS = frozenset({"bias", "scale"})


def _cudnn_version() -> int | None:
    """cuDNN's version as jax's CUDA plugin reports it, or None without the plugin / a GPU."""
    try:
        from jax._src.cudnn import fused_attention_stablehlo as fa
        return fa.check_cudnn_version()
    except (ImportError, RuntimeError):
        return None


def _max_head_dim() -> int:
    from jax._src.cudnn import fused_attention_stablehlo as fa
    try:
        return 256 if fa.check_compute_capability("9.0") else 128
    except Exception:   # no GPU to ask: the conservative bound
        return 128


def check(q, k, v, mask, asked) -> str | None:
    if _cudnn_version() is None:
        return "cuDNN not detected (no CUDA plugin or GPU)"
    if q.dtype not in (jnp.float16, jnp.bfloat16):
        return f"cuDNN flash attention needs fp16/bf16 q/k/v, got {q.dtype}"
    head_dim, limit = q.shape[-1], _max_head_dim()
    if head_dim % 8 or head_dim > limit:
        return f"head dim {head_dim} is not a multiple of 8 <= {limit}"
    if q.shape[1] % 2 or k.shape[1] % 2:
        # cuDNN's backward with a bias (our mask) needs even lengths, and whether this call will
        # be differentiated is not known here: e.g. a decoder's last layer, 1 read row per text
        return f"query/key lengths {q.shape[1]}/{k.shape[1]}: cuDNN with a mask needs even lengths"
    return None


def attention(q, k, v, mask, *, bias=None, scale=None):
    """Per device under a mesh (kernels/per_device.py: cuDNN's partitioning rule needs devices
    while lowering, so a program for a mesh could not be built ahead of time)."""
    def fn(q, k, v, mask, *bias):
        return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation="cudnn", scale=scale,
                                            bias=bias[0].astype(q.dtype) if bias else None)
    return per_device(fn, q, k, v, dense(mask), *(() if bias is None else (bias,)))
