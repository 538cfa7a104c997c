"""The host side of the one batch contract: `Batch` (the model inputs of model_fns.py plus the
example ids that put results back in input order), the one function that lays examples out in
fixed-shape rows (`fill_rows`: inference's planned batches and the training stream's batches both
come from it), and `scatter_results`, which undoes the layout.

numpy only: this runs in input pipelines and on hosts that never import jax.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The arrays a jitted model function reads (model_fns.py: score_fn / embed_fn), in this order.
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids", "cls_positions")


@dataclass(frozen=True, eq=False)
class Batch:
    """One fixed-shape batch on the host: the model inputs (model_fns.py documents the contract,
    positions 0-based within each segment) plus example_ids, which only the host reads to put
    results back in input order."""
    input_ids: np.ndarray  # int32 [B, L], pad id where empty
    attention_mask: np.ndarray  # int32 [B, L]: segment ids, 0 padding, else segment number 1..P
    token_type_ids: np.ndarray  # int32 [B, L]
    position_ids: np.ndarray  # int32 [B, L]: 0-based position within its segment, 0 on padding
    cls_positions: np.ndarray  # int32 [B, P]: read positions, first token of each segment, 0 for empty slots
    example_ids: np.ndarray  # int64 [B, P]: index into the input list, -1 when empty

    def arrays(self) -> dict[str, np.ndarray]:
        """The model inputs (MODEL_INPUTS) as the dict score_fn / embed_fn take."""
        return {k: getattr(self, k) for k in MODEL_INPUTS}

    shape = property(lambda self: self.input_ids.shape)
    num_examples = property(lambda self: int(np.count_nonzero(self.example_ids >= 0)))
    # For benchmark reporting: tokens of real examples, and token slots the model computes
    # (B * L, padding included), so efficiency = real_tokens / padded_tokens.
    real_tokens = property(lambda self: int(np.count_nonzero(self.attention_mask)))
    padded_tokens = property(lambda self: int(self.attention_mask.size))


@dataclass(frozen=True, eq=False)
class TokenTable:
    """Examples' tokens end to end: example i is ids[offsets[i]:offsets[i] + lens[i]] (its token
    types the same slice of `types`). One array instead of a list of small ones, so a batch is
    filled by a few vectorised gathers."""
    ids: np.ndarray      # int32 [T]
    types: np.ndarray    # int32 [T]
    lens: np.ndarray     # int64 [N]
    offsets: np.ndarray  # int64 [N]

    @classmethod
    def of(cls, encodings: list) -> "TokenTable":
        """From tokenization.Encoding's; None (an empty slot of a training group) has length 0."""
        empty = np.zeros(0, np.int32)
        ids = [empty if e is None else e.input_ids for e in encodings]
        types = [empty if e is None else e.token_type_ids for e in encodings]
        lens = np.fromiter((x.shape[0] for x in ids), np.int64, len(ids))
        type_lens = np.fromiter((x.shape[0] for x in types), np.int64, len(ids))
        if (bad := np.flatnonzero(type_lens != lens)).size:
            raise ValueError(f"encodings[{bad[0]}] has {lens[bad[0]]} input_ids but "
                             f"{type_lens[bad[0]]} token_type_ids")
        return cls(np.concatenate(ids or [empty]).astype(np.int32, copy=False),
                   np.concatenate(types or [empty]).astype(np.int32, copy=False),
                   lens, np.cumsum(lens) - lens)


def _scatter(shape, fill, dtype, where, values) -> np.ndarray:
    out = np.full(shape[0] * shape[1], fill, dtype)
    out[where] = values
    return out.reshape(shape)


def fill_rows(table: TokenTable, seg_ex: np.ndarray, counts: np.ndarray, shape: tuple[int, int],
              segments: int, pad_id: int) -> list[Batch]:
    """Lay rows out in batches of `shape` = (rows, length), in order, the last one topped up with
    empty rows. Row r holds the next counts[r] examples of `seg_ex` (indices into `table`) side
    by side, each its own segment (counts[r] = 0: an empty row). Positions are 0-based within
    each segment, as model_fns.py wants them. One batch at a time keeps the token-level
    temporaries small."""
    rows, length = shape
    lens, offsets, ids, types = table.lens, table.offsets, table.ids, table.types
    n_rows = len(counts)
    row_first = np.concatenate([[0], np.cumsum(counts)])  # segment range of each row
    seg_row = np.repeat(np.arange(n_rows), counts)
    seg_num = np.arange(len(seg_ex)) - row_first[seg_row]  # 0-based slot within its row
    seg_len = lens[seg_ex]
    seg_start = np.cumsum(seg_len) - seg_len
    seg_col = seg_start - seg_start[row_first[seg_row]]  # first column of each segment
    out = []
    for r0 in range(0, n_rows, rows):
        s0, s1 = row_first[r0], row_first[min(r0 + rows, n_rows)]
        n = seg_len[s0:s1]
        tok_start = np.cumsum(n) - n
        within = np.arange(int(n.sum())) - np.repeat(tok_start, n)
        flat = np.repeat((seg_row[s0:s1] - r0) * length + seg_col[s0:s1], n) + within
        src = np.repeat(offsets[seg_ex[s0:s1]], n) + within
        slot = (seg_row[s0:s1] - r0) * segments + seg_num[s0:s1]
        tokens, slots = (rows, length), (rows, segments)
        out.append(Batch(_scatter(tokens, pad_id, np.int32, flat, ids[src]),
                         _scatter(tokens, 0, np.int32, flat, np.repeat(seg_num[s0:s1] + 1, n)),
                         _scatter(tokens, 0, np.int32, flat, types[src]),
                         _scatter(tokens, 0, np.int32, flat, within),
                         _scatter(slots, 0, np.int32, slot, seg_col[s0:s1]),
                         _scatter(slots, -1, np.int64, slot, seg_ex[s0:s1])))
    return out


def scatter_results(batches_outputs, num_examples: int) -> np.ndarray:
    """Per-example results in input order from [(Batch, outputs [B, P, ...]), ...].

    Empty slots and padded rows are dropped; every example must get exactly one result, which
    catches a lost or repeated batch instead of silently returning garbage rows.
    """
    all_ids, all_vals = [], []
    for k, (batch, outputs) in enumerate(batches_outputs):
        outputs = np.asarray(outputs)
        if outputs.shape[:2] != batch.example_ids.shape:
            raise ValueError(f"outputs of batch {k} have shape {outputs.shape}; expected "
                             f"[B, P, ...] with [B, P] = {list(batch.example_ids.shape)} (for "
                             "unpacked batches P = 1: add the axis with outputs[:, None])")
        all_ids.append(batch.example_ids.reshape(-1))
        all_vals.append(outputs.reshape((-1,) + outputs.shape[2:]))
    if not all_ids:
        if num_examples:
            raise ValueError(f"no batches given, but num_examples={num_examples}")
        return np.zeros((0,), np.float32)
    ids = np.concatenate(all_ids)
    vals = np.concatenate(all_vals)
    keep = ids >= 0
    ids, vals = ids[keep], vals[keep]
    if ids.size and ids.max() >= num_examples:
        raise ValueError(f"example id {int(ids.max())} out of range for num_examples={num_examples}")
    counts = np.bincount(ids, minlength=num_examples)
    if (counts != 1).any():
        missing, repeated = np.flatnonzero(counts == 0), np.flatnonzero(counts > 1)
        raise ValueError(f"every example needs exactly one result: {missing.size} missing "
                         f"(e.g. {missing[:5].tolist()}), {repeated.size} repeated "
                         f"(e.g. {repeated[:5].tolist()}); pass the outputs of every batch "
                         "from make_batches exactly once")
    result = np.empty((num_examples,) + vals.shape[1:], vals.dtype)
    result[ids] = vals
    return result
