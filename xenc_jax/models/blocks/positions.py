"""Positions: absolute tables live in blocks/embeddings.py; here the relative position bias
(T5-style buckets, as MPNet uses them; computed once per forward and shared by every layer),
rotary positions (RoPE; applied to queries and keys in each layer), and layer types as data
(a layer's attention window and rotary base, e.g. ModernBERT's global/local alternation).
"""
from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, Union

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from ..axes import Dtype
from ..dense import normal
from .masks import attention_mask_4d, causal_mask_4d, sliding_window_mask


def relative_position_buckets(max_distance_in_input: int, num_buckets: int = 32,
                              max_distance: int = 128) -> np.ndarray:
    """Bucket of every relative position r = key - query in [-D, D] (D = max_distance_in_input),
    indexed by r + D: HF MPNetEncoder.relative_position_bucket, in float32 like torch (checked
    against it in tests/test_family_mpnet.py). A host constant: the in-graph work is one gather.
    """
    n = -np.arange(-max_distance_in_input, max_distance_in_input + 1, dtype=np.int64)
    half = num_buckets // 2
    ret = (n < 0).astype(np.int64) * half
    n = np.abs(n)
    max_exact = half // 2
    with np.errstate(divide="ignore", invalid="ignore"):
        large = max_exact + (np.log(n.astype(np.float32) / np.float32(max_exact))
                             / np.float32(math.log(max_distance / max_exact))
                             * np.float32(half - max_exact))
    large = np.where(n < max_exact, 0, large).astype(np.int64)  # log(0) rows are not used
    large = np.minimum(large, half - 1)
    return (ret + np.where(n < max_exact, n, large)).astype(np.int32)


class RelativePositionBias(nn.Module):
    """positions [B or 1, L] -> additive attention bias [B or 1, heads, L, L] (fp32).

    The relative position of key j to query i is positions[j] - positions[i]. With per-segment
    position ids (packed pairs restart at 0) that is the distance inside the segment; pairs of
    tokens in different segments get some bucket, but attention masks them anyway.
    """
    table_size: int          # rows of the learnt table (HF relative_attention_num_buckets)
    num_heads: int
    param_dtype: Dtype
    num_buckets: int = 32    # buckets the bucketing uses (HF always passes its default, 32)
    max_distance: int = 128

    @nn.compact
    def __call__(self, positions: jax.Array) -> jax.Array:
        length = positions.shape[-1]
        table = self.param("embedding", nn.with_logical_partitioning(normal(0.02), (None, "heads")),
                           (self.table_size, self.num_heads), self.param_dtype)
        buckets = jnp.asarray(relative_position_buckets(length - 1, self.num_buckets, self.max_distance))
        rel = positions[:, None, :].astype(jnp.int32) - positions[:, :, None].astype(jnp.int32)
        bucket = buckets[jnp.clip(rel, -(length - 1), length - 1) + (length - 1)]   # [B, L, L]
        bias = jnp.asarray(table, jnp.float32)[bucket]                               # [B, L, L, H]
        return bias.transpose(0, 3, 1, 2)


@dataclasses.dataclass(frozen=True)
class Llama3RopeScaling:
    """HF rope_type "llama3" (Llama 3.1+): long wavelengths divided by `factor`, short ones kept,
    the band between interpolated (transformers modeling_rope_utils._compute_llama3_parameters;
    its attention factor is 1, so cos/sin are not rescaled). Done in float32 like torch."""
    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position_embeddings: int
    attention_factor: ClassVar[float] = 1.0

    def __call__(self, inv_freq: np.ndarray, theta: float | None = None, head_dim: int | None = None) -> np.ndarray:
        inv_freq = np.asarray(inv_freq, np.float32)
        old = float(self.original_max_position_embeddings)
        low_wavelen, high_wavelen = old / self.low_freq_factor, old / self.high_freq_factor
        # torch's `scalar / tensor` is reciprocal(tensor) * scalar: the same order here
        wavelen = (np.float32(1) / inv_freq) * np.float32(2 * math.pi)
        scaled = np.where(wavelen > low_wavelen, inv_freq / np.float32(self.factor), inv_freq)
        smooth = ((np.float32(1) / wavelen) * np.float32(old) - np.float32(self.low_freq_factor)) \
            / np.float32(self.high_freq_factor - self.low_freq_factor)
        smoothed = (1 - smooth) * scaled / np.float32(self.factor) + smooth * scaled
        medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        return np.where(medium, smoothed, scaled).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class LinearRopeScaling:
    """HF rope_type "linear" (Gemma 3 4B+'s global layers): every inverse frequency divided by
    `factor`, i.e. positions interpolated (modeling_rope_utils._compute_linear_scaling_rope_parameters;
    attention factor 1). In float32 like torch's `inv_freq /= factor`."""
    factor: float
    attention_factor: ClassVar[float] = 1.0

    def __call__(self, inv_freq: np.ndarray, theta: float | None = None, head_dim: int | None = None) -> np.ndarray:
        return (np.asarray(inv_freq, np.float32) / np.float32(self.factor)).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class YarnRopeScaling:
    """HF rope_type "yarn" (Qwen2.5 / Qwen3 long context): per frequency a blend of the default one
    (fast, extrapolated) and the one divided by `factor` (slow, interpolated), the blend a linear
    ramp over the dims between find_correction_range(beta_fast, beta_slow); cos and sin are then
    multiplied by `attention_factor` (0.1 ln(factor) + 1 unless the config sets it; the reader
    computes it as HF does). Fixed for every input: no dependence on the batch. In torch's float32
    order (modeling_rope_utils._compute_yarn_parameters), the host-side scalars in float64 as Python."""
    factor: float
    original_max_position_embeddings: int
    attention_factor: float = 1.0
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    truncate: bool = True

    def _correction_range(self, dim: int, theta: float) -> tuple[float, float]:
        def correction_dim(rotations: float) -> float:   # HF find_correction_dim, Python floats
            return (dim * math.log(self.original_max_position_embeddings / (rotations * 2 * math.pi))) \
                / (2 * math.log(theta))
        low, high = correction_dim(self.beta_fast), correction_dim(self.beta_slow)
        if self.truncate:
            low, high = math.floor(low), math.ceil(high)
        return max(low, 0), min(high, dim - 1)

    def __call__(self, inv_freq: np.ndarray, theta: float | None = None, head_dim: int | None = None) -> np.ndarray:
        dim = int(head_dim)
        # torch: float32 exponents, a float32 base, pow rounded to float32 (ours: correctly rounded)
        exponent = np.arange(0, dim, 2).astype(np.float32) / np.float32(dim)
        pos = (np.float64(np.float32(theta)) ** exponent.astype(np.float64)).astype(np.float32)
        extrapolation = np.float32(1) / pos
        interpolation = np.float32(1) / (np.float32(self.factor) * pos)
        low, high = self._correction_range(dim, float(theta))
        if low == high:
            high += 0.001   # HF's guard against a zero-width ramp
        ramp = np.clip((np.arange(dim // 2, dtype=np.float32) - np.float32(low)) / np.float32(high - low), 0, 1)
        keep = np.float32(1) - ramp.astype(np.float32)   # HF's inv_freq_extrapolation_factor
        return (interpolation * (np.float32(1) - keep) + extrapolation * keep).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class ProportionalRopeScaling:
    """HF rope_type "proportional" (modeling_rope_utils._compute_proportional_rope_parameters): the
    first int(partial_rotary_factor * head_dim // 2) default frequencies (exponents over the whole
    head_dim), the rest 0 (cos 1, sin 0: those dims pass unrotated), all divided by `factor`. The one
    rope type with which transformers rotates only part of the head in these families."""
    factor: float = 1.0
    partial_rotary_factor: float = 1.0
    attention_factor: ClassVar[float] = 1.0

    def __call__(self, inv_freq: np.ndarray, theta: float | None = None, head_dim: int | None = None) -> np.ndarray:
        inv_freq = np.array(inv_freq, np.float32)
        inv_freq[int(self.partial_rotary_factor * int(head_dim) // 2):] = 0
        return (inv_freq / np.float32(self.factor)).astype(np.float32)


RopeScaling = Union[Llama3RopeScaling, LinearRopeScaling, YarnRopeScaling, ProportionalRopeScaling]


@dataclasses.dataclass(frozen=True)
class RotaryPositions:
    """Rotary position embedding with base `theta` over the whole head (HF's "default" rope type:
    cat(freqs, freqs) layout, rotate_half). No params; its hook is blocks.Attention's `rotate`.
    scaling: a rope type's rescaling of the inverse frequencies (RopeScaling), and of cos/sin (yarn).

    Angles come from position ids, so packed segments (positions restarting) rotate exactly as
    they would alone. The rotation is done in fp32 and cast back, as HF's apply_rotary_pos_emb.
    """
    head_dim: int
    theta: float
    scaling: RopeScaling | None = None

    def inv_freq(self) -> np.ndarray:
        """1 / theta^(2i/d), rounded once to float32 (host constant; checked against HF's)."""
        exponent = np.arange(0, self.head_dim, 2, dtype=np.float64) / self.head_dim
        inv_freq = (1.0 / (float(self.theta) ** exponent)).astype(np.float32)
        return inv_freq if self.scaling is None else self.scaling(inv_freq, self.theta, self.head_dim)

    def cos_sin(self, positions: jax.Array) -> tuple[jax.Array, jax.Array]:
        """positions [B, L] -> cos, sin [B, L, 1, head_dim] fp32 (broadcast over heads), times the
        scaling's attention factor as HF's rotary forward (yarn's; 1 for the other types)."""
        freqs = positions.astype(jnp.float32)[..., None] * jnp.asarray(self.inv_freq())
        emb = jnp.concatenate([freqs, freqs], axis=-1)[:, :, None, :]
        cos, sin = jnp.cos(emb), jnp.sin(emb)
        factor = 1.0 if self.scaling is None else float(self.scaling.attention_factor)
        if factor != 1.0:   # HF: emb.cos() * attention_scaling, a float32 product
            cos, sin = cos * np.float32(factor), sin * np.float32(factor)
        return cos, sin

    def hook(self, positions: jax.Array, query_positions: jax.Array | None = None) -> "Rotation":
        """(q [B, Lq, H, D], k [B, L, H, D]) -> rotated (q, k). Keys sit at `positions` [B, L];
        queries too, or at the rows `query_positions` [B, P] of them when only those are asked."""
        positions = jnp.asarray(positions)
        q_pos = positions if query_positions is None else jnp.take_along_axis(
            jnp.broadcast_to(positions, (query_positions.shape[0], positions.shape[1])),
            query_positions.astype(jnp.int32), axis=1)
        (cq, sq), (ck, sk) = self.cos_sin(q_pos), self.cos_sin(positions)
        return Rotation(cq, sq, ck, sk)


@flax.struct.dataclass
class Rotation:
    """RotaryPositions' hook: the cos/sin tables of queries and keys, applied by calling it.
    A pytree, not a closure, so it passes into a rematerialised layer (nn.remat) like any
    array argument instead of leaking the outer trace's tables into the recomputed one."""
    cos_q: jax.Array
    sin_q: jax.Array
    cos_k: jax.Array
    sin_k: jax.Array

    def __call__(self, q, k):
        return _rotate(q, self.cos_q, self.sin_q), _rotate(k, self.cos_k, self.sin_k)


def _rotate(x, cos, sin):
    half = x.shape[-1] // 2
    x32 = x.astype(jnp.float32)
    rotated = jnp.concatenate([-x32[..., half:], x32[..., :half]], axis=-1)   # HF rotate_half
    return (x32 * cos + rotated * sin).astype(x.dtype)


# HF's layer_types names (ModernBERT, Gemma 2/3, Qwen's config)
GLOBAL, LOCAL = "full_attention", "sliding_attention"


@dataclasses.dataclass(frozen=True)
class LayerType:
    """What differs between a model's kinds of layers, as data: the attention window and the
    rotary base. half_window None: global attention; else a sliding window of half_window
    tokens each side (bidirectional; with causal=True the window's later half is cut by the
    causal mask). rope_theta None: no rotary positions; rope_scaling: RotaryPositions' scaling."""
    name: str = GLOBAL
    half_window: int | None = None
    rope_theta: float | None = None
    causal: bool = False
    rope_scaling: RopeScaling | None = None

    def mask(self, segments, positions, query_rows=None):
        """The [B, 1, Lq, L] mask of this layer kind (blocks/masks.py), queries at query_rows."""
        mask4 = (causal_mask_4d if self.causal else attention_mask_4d)(segments, query_rows)
        if self.half_window is not None:
            q_pos = positions if query_rows is None else jnp.take_along_axis(
                positions, query_rows.astype(jnp.int32), 1)
            mask4 = mask4 & sliding_window_mask(q_pos, positions, self.half_window)
        return mask4

    def rotary(self, head_dim: int, positions, query_rows=None) -> "Rotation | None":
        if self.rope_theta is None:
            return None
        return RotaryPositions(head_dim, self.rope_theta, self.rope_scaling).hook(positions, query_rows)

    def inputs(self, head_dim: int, segments, positions, query_rows=None):
        """(mask4, rotate) for one layer of this kind."""
        return self.mask(segments, positions, query_rows), self.rotary(head_dim, positions, query_rows)
