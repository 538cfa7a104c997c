"""DeBERTa's disentangled attention score as a plug-in of the shared Attention (blocks/attention.py
ScorePlugin): besides content-to-content (q.k) it adds content-to-position (q . key-projected
relative embedding, "c2p") and position-to-content (k . query-projected relative embedding,
"p2c"), each divided by sqrt(head_dim * (1 + number of those terms)).

The relative embedding table [2 * span, hidden] is projected with the attention's own key/query
denses (share_att_key) or its own pos_key/pos_query denses; `index` [B, 1, Lq, L] picks, for
each (query, key) pair, the table row of their (bucketed) relative distance. Written with
einsums, scores in fp32, exactly as before it became a plug-in.
"""
from __future__ import annotations

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class DisentangledScore:
    scale: float = flax.struct.field(pytree_node=False)   # sqrt(head_dim * score factor)
    index: jax.Array | None = None       # [B, 1, Lq, L] rows of the relative table; None: no relative terms
    rel_table: jax.Array | None = None   # [2 * span, hidden], before project()
    pos_key: jax.Array | None = None     # [2 * span, heads, kv] (c2p), after project()
    pos_query: jax.Array | None = None   # [2 * span, heads, kv] (p2c), after project()
    c2p: bool = flax.struct.field(pytree_node=False, default=False)
    p2c: bool = flax.struct.field(pytree_node=False, default=False)
    share_att_key: bool = flax.struct.field(pytree_node=False, default=False)
    pos_dropout: float = flax.struct.field(pytree_node=False, default=0.0)   # HF pos_dropout (hidden dropout)

    def project(self, project, deterministic: bool) -> "DisentangledScore":
        if self.rel_table is None:
            return self
        r = nn.Dropout(self.pos_dropout)(self.rel_table, deterministic=deterministic)
        pos_key = project("key" if self.share_att_key else "pos_key", r) if self.c2p else None
        pos_query = project("query" if self.share_att_key else "pos_query", r) if self.p2c else None
        return self.replace(rel_table=None, pos_key=pos_key, pos_query=pos_query)

    def __call__(self, q, k):
        """q [B, Lq, H, D], k [B, L, H, D] -> scaled scores [B, H, Lq, L] fp32."""
        f32 = dict(preferred_element_type=jnp.float32)
        s = jnp.einsum("bqhd,bkhd->bhqk", q, k, **f32) / self.scale
        if self.pos_key is not None:
            c2p = jnp.einsum("bqhd,rhd->bhqr", q, self.pos_key, **f32)                 # [B, H, Lq, 2S]
            s = s + jnp.take_along_axis(c2p, self.index, axis=-1) / self.scale
        if self.pos_query is not None:
            p2c = jnp.einsum("bkhd,rhd->bhrk", k, self.pos_query, **f32)               # [B, H, 2S, L]
            s = s + jnp.take_along_axis(p2c, self.index, axis=-2) / self.scale
        return s

    def rows(self) -> tuple[jax.Array, ...]:
        return () if self.index is None else (self.index,)

    def with_rows(self, rows: tuple[jax.Array, ...]) -> "DisentangledScore":
        return self.replace(index=rows[0]) if rows else self
