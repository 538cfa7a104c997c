"""Tokenize on the host and plan fixed-shape, padded numpy batches for the jitted model.

Why this file exists: XLA compiles once per input shape. If batches were padded to "the longest
example in the batch" (what sentence-transformers does in PyTorch), every new length would be a
new compilation. Here every batch has one of the few shapes of `BucketConfig.resolve`, whatever
the inputs, so the number of compilations is bounded by the number of buckets.

Tokenization reproduces what sentence-transformers 6.2 feeds its model, because the library
promises identical scores: ST's `Transformer.preprocess` calls the tokenizer with
`truncation="longest_first"` and `max_length = tokenizer.model_max_length` (= max_seq_length),
passes the texts unchanged (no `.strip()` since ST 5; only the deprecated `fit` still strips),
and implements `do_lower_case` by prepending a `Lowercase` normalizer to the fast tokenizer.

numpy only: this runs in input pipelines and on hosts that never import jax.
"""
from __future__ import annotations

import copy
import itertools
import threading
import weakref
from dataclasses import dataclass

import numpy as np

# Tokenizer calls are chunked: one call for a million pairs would hold every id as a Python int
# (~36 bytes each) in one list of lists before we convert it to compact int32 arrays.
_TOKENIZE_CHUNK = 4096
_SEQ_TYPES = (tuple, list, np.ndarray)


@dataclass(frozen=True, eq=False, slots=True)
class Encoding:
    """One tokenized example (a pair or a single text) with special tokens, no padding."""

    input_ids: np.ndarray  # int32 [n]
    token_type_ids: np.ndarray  # int32 [n]; zeros when the tokenizer returns none (RoBERTa)

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


def unique_encodings(encodings: list[Encoding]) -> tuple[list[Encoding], np.ndarray]:
    """(distinct encodings in first-seen order, inverse): encodings[i] == unique[inverse[i]].

    Scoring each distinct input once makes duplicates' results identical by construction:
    with packing, two copies of one pair sit in different rows next to different neighbours,
    and the float rounding of their scores may differ in the last bit. It also saves the
    repeated work (re-ranking lists often repeat passages).
    """
    index: dict[tuple[bytes, bytes], int] = {}
    unique, inverse = [], np.empty(len(encodings), np.int64)
    for i, e in enumerate(encodings):
        key = (e.input_ids.tobytes(), e.token_type_ids.tobytes())
        j = index.setdefault(key, len(unique))
        if j == len(unique):
            unique.append(e)
        inverse[i] = j
    return unique, inverse


# ----------------------------------------------------------------------------- validation

def _describe(x) -> str:
    text = repr(x)
    return f"{type(x).__name__} {text[:60] + '...' if len(text) > 60 else text}"


def as_sequence(items, what: str, example: str):
    # A bare string is iterable, so without this check it would be read as a list of characters.
    if isinstance(items, (str, bytes)):
        raise TypeError(f"{what} must be a list, got a single {_describe(items)}; "
                        f"wrap it in a list: {example}")
    if isinstance(items, dict) or items is None:
        raise TypeError(f"{what} must be a list like {example}, got {_describe(items)}")
    if isinstance(items, (list, tuple)):
        return items
    try:
        return list(items)  # generators, numpy arrays, pandas Series
    except TypeError:
        raise TypeError(f"{what} must be a list like {example}, got {_describe(items)}") from None


def _check_text(x, where: str, fix: str) -> str:
    if x is None:
        raise TypeError(f"{where} is None; every text must be a str (use '' for an empty text, "
                        f"or {fix})")
    if not isinstance(x, str):
        raise TypeError(f"{where} is {_describe(x)}, not a str; convert it with str() or {fix}")
    return str(x)  # np.str_ and other subclasses -> plain str


def split_pairs(pairs, offset: int = 0) -> tuple[list[str], list[str]]:
    """`offset`: the index of pairs[0] in the whole input (a chunk of a stream), for messages."""
    pairs = as_sequence(pairs, "pairs", "[(query, passage), ...]")
    if offset == 0 and len(pairs) == 2 and all(isinstance(x, str) for x in pairs):
        raise TypeError("pairs looks like one pair of two strings, not a list of pairs; "
                        "wrap it in a list: [(text_a, text_b)]")
    first, second = [], []
    for i, pair in enumerate(pairs, offset):
        # Fast path for the common case; the slow path below only runs to explain an error.
        if type(pair) in (tuple, list) and len(pair) == 2:
            a, b = pair
            if type(a) is str and type(b) is str:
                first.append(a)
                second.append(b)
                continue
        if isinstance(pair, (str, bytes)):
            raise TypeError(f"pairs[{i}] is a single {_describe(pair)}, not a (text_a, text_b) "
                            "pair; build the input as [(query, passage), ...]")
        if not isinstance(pair, _SEQ_TYPES):
            raise TypeError(f"pairs[{i}] is {_describe(pair)}; expected a (text_a, text_b) "
                            "tuple or list")
        if len(pair) != 2:
            raise ValueError(f"pairs[{i}] has {len(pair)} items; a pair must have exactly 2 texts "
                             "(text_a, text_b). To score one query against several passages, make "
                             "one pair per passage")
        first.append(_check_text(pair[0], f"pairs[{i}][0]", "drop the pair"))
        second.append(_check_text(pair[1], f"pairs[{i}][1]", "drop the pair"))
    return first, second


def _check_max_length(tokenizer, max_length, pair: bool) -> int:
    if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)):
        raise TypeError(f"max_length must be an int, got {_describe(max_length)}")
    # HF silently skips truncation when max_length cannot even hold the special tokens, which
    # would hand make_batches sequences longer than max_length: refuse it here instead.
    with TOKENIZER_LOCK:
        special = tokenizer.num_special_tokens_to_add(pair=pair)
    if max_length < max(1, special):
        raise ValueError(f"max_length={max_length} is too small: the tokenizer adds {special} "
                         f"special tokens to each {'pair' if pair else 'text'}; use at least "
                         f"{max(1, special)}")
    return int(max_length)


# ----------------------------------------------------------------------------- tokenization

# A HF fast tokenizer call first sets truncation/padding on the shared Rust object, then encodes
# with the GIL released: another thread can change the settings in between (wrong max_length)
# or collide with it ("Already borrowed"). Every use of a tokenizer here holds this lock; the
# Rust side already encodes a batch on all cores, so serializing calls costs little.
TOKENIZER_LOCK = threading.RLock()


def copy_tokenizer(tokenizer):
    """A deep copy taken under TOKENIZER_LOCK (copying pickles the Rust object, which borrows it)."""
    with TOKENIZER_LOCK:
        return copy.deepcopy(tokenizer)


def _encode(tokenizer, first, second, max_length: int) -> list[Encoding]:
    out: list[Encoding] = []
    for start in range(0, len(first), _TOKENIZE_CHUNK):
        stop = start + _TOKENIZE_CHUNK
        with TOKENIZER_LOCK:
            enc = tokenizer(first[start:stop], None if second is None else second[start:stop],
                            truncation="longest_first", max_length=max_length, padding=False,
                            return_attention_mask=False)
        types = enc.get("token_type_ids")
        for k, ids in enumerate(enc["input_ids"]):
            tt = (np.asarray(types[k], dtype=np.int32) if types is not None
                  else np.zeros(len(ids), np.int32))
            out.append(Encoding(np.asarray(ids, dtype=np.int32), tt))
    return out


def tokenize_pairs(tokenizer, pairs, max_length: int, offset: int = 0) -> list[Encoding]:
    """Token ids of each (text_a, text_b) pair exactly as ST 6.2 `CrossEncoder.predict` makes them.
    `offset`: the index of pairs[0] in the whole input, for error messages."""
    first, second = split_pairs(pairs, offset)
    max_length = _check_max_length(tokenizer, max_length, pair=True)
    return _encode(tokenizer, first, second, max_length) if first else []


def tokenize_texts(tokenizer, texts, max_length: int, do_lower_case: bool = False,
                   offset: int = 0) -> list[Encoding]:
    """Token ids of each text exactly as ST 6.2's `Transformer` module makes them.
    `offset`: the index of texts[0] in the whole input, for error messages."""
    texts = as_sequence(texts, "texts", "[text, ...]")
    clean = []
    for i, t in enumerate(texts, offset):
        if type(t) is not str:
            if isinstance(t, _SEQ_TYPES):
                raise TypeError(f"texts[{i}] is {_describe(t)}, not a str; tokenize_texts takes "
                                "single texts (use tokenize_pairs for (text_a, text_b) pairs)")
            t = _check_text(t, f"texts[{i}]", "drop the text")
        clean.append(t)
    max_length = _check_max_length(tokenizer, max_length, pair=False)
    if not clean:
        return []
    if do_lower_case:
        tokenizer = _lowercasing(tokenizer)
    return _encode(tokenizer, clean, None, max_length)


_LOWERCASED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _lowercasing(tokenizer):
    """A copy of `tokenizer` lowercasing the way ST's do_lower_case does.

    ST mutates its own tokenizer (prepends a Rust `Lowercase` normalizer). We copy instead of
    mutating the caller's tokenizer, and cache the copy because deepcopy costs tens of ms.
    Lowercasing the Python strings would differ: `str.lower` applies context rules (final
    sigma) that the Rust normalizer does not, and pre-lowercased text would no longer match
    added tokens such as "[SEP]", which are matched before normalization.
    """
    with TOKENIZER_LOCK:  # one copy per tokenizer even when threads race to make it
        return _lowercased_locked(tokenizer)


def _lowercased_locked(tokenizer):
    try:
        return _LOWERCASED[tokenizer]
    except (KeyError, TypeError):
        pass
    tok = copy.deepcopy(tokenizer)
    if getattr(tok, "is_fast", False):
        from tokenizers.normalizers import Lowercase, Sequence

        norm = tok.backend_tokenizer.normalizer
        parts = list(norm) if isinstance(norm, Sequence) else ([] if norm is None else [norm])
        if not any(isinstance(p, Lowercase) for p in parts):
            tok.backend_tokenizer.normalizer = Sequence([Lowercase(), *parts])
    else:  # slow tokenizers (transformers v4 only), as ST does
        try:
            tok.do_lower_case = True
        except AttributeError:
            tok.basic_tokenizer.do_lower_case = True
    try:
        _LOWERCASED[tokenizer] = tok
    except TypeError:
        pass
    return tok


# ----------------------------------------------------------------------------- batch planning

def _positive_int(value, name: str, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"BucketConfig.{name} must be a positive int"
                         f"{' or None' if allow_none else ''}, got {value!r}")


@dataclass(frozen=True)
class BucketConfig:
    # Clipped to max_length (always a bucket). Finer than powers of two: on real query-passage
    # mixes doubling buckets left ~40% of computed tokens as padding; these leave ~15-20% for
    # a few more one-off compilations (scripts/bench_cross_encoder.py, docs/benchmarks.md).
    lengths: tuple[int, ...] = (32, 64, 96, 128, 160, 192, 256, 320, 384, 512)
    batch_size: int | None = None  # fixed rows per batch for every bucket, or
    tokens_per_batch: int | None = 8192  # rows = tokens_per_batch // bucket_len (>= 1)
    row_multiple: int = 1  # rows rounded up to a multiple of this (data-parallel device count)
    pack: bool = False  # pack several short examples into one row
    max_segments: int = 8  # P: max examples per packed row
    # Packed rows hold at most this many tokens (None: max_length). Attention over a packed row
    # costs O(row length^2) whatever the segments, so shorter rows waste less on masked pairs.
    pack_length: int | None = None

    def __post_init__(self):
        lengths = tuple(self.lengths) if not isinstance(self.lengths, int) else (self.lengths,)
        if not lengths:
            raise ValueError("BucketConfig.lengths must name at least one length")
        for length in lengths:
            _positive_int(length, "lengths entries")
        # Normalized so equal configs compare and hash equal (the config may key a compile cache).
        object.__setattr__(self, "lengths", tuple(sorted({int(x) for x in lengths})))
        _positive_int(self.batch_size, "batch_size", allow_none=True)
        _positive_int(self.tokens_per_batch, "tokens_per_batch", allow_none=True)
        if self.batch_size is None and self.tokens_per_batch is None:
            raise ValueError("BucketConfig needs batch_size or tokens_per_batch (both are None)")
        _positive_int(self.row_multiple, "row_multiple")
        _positive_int(self.max_segments, "max_segments")
        _positive_int(self.pack_length, "pack_length", allow_none=True)

    @property
    def segments(self) -> int:
        """P, the second axis of cls_positions/example_ids (1 when not packing)."""
        return self.max_segments if self.pack else 1

    def bucket_lengths(self, max_length: int) -> list[int]:
        if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)) \
                or max_length < 1:
            raise ValueError(f"max_length must be a positive int, got {max_length!r}")
        return [x for x in self.lengths if x < max_length] + [int(max_length)]

    def rows(self, length: int) -> int:
        rows = self.batch_size if self.batch_size is not None else max(
            1, self.tokens_per_batch // length)
        return -(-rows // self.row_multiple) * self.row_multiple

    def resolve(self, max_length: int) -> list[tuple[int, int]]:
        """Every (rows, length) shape make_batches can produce, shortest length first."""
        return [(self.rows(length), length) for length in self.bucket_lengths(max_length)]


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


def _pack(lens: np.ndarray, capacity: int, max_segments: int) -> tuple[np.ndarray, np.ndarray]:
    """Best-fit-decreasing bin packing; returns (examples in row order, segments per row).

    Best fit instead of first fit because the tightest open row can be found in O(1): open rows
    are kept in stacks indexed by their free space, and a Python int used as a bitset over free
    space finds the smallest free space >= the item length with one shift and one lowest-bit
    trick. Same packing quality guarantees as FFD, ~1 us per example instead of a scan.
    """
    order = np.argsort(-lens, kind="stable")
    smallest = int(lens.min())
    open_rows: list[list[int]] = [[] for _ in range(capacity + 1)]
    nonempty = 0  # bit c set <=> some open row has exactly c free tokens
    rows: list[list[int]] = []
    for i, n in zip(order.tolist(), lens[order].tolist()):
        fits = nonempty >> n
        if fits:
            free = n + (fits & -fits).bit_length() - 1
            stack = open_rows[free]
            r = stack.pop()
            if not stack:
                nonempty ^= 1 << free
            rows[r].append(i)
            count = len(rows[r])
        else:  # a new row; an example longer than the capacity gets a row of its own
            r, free, count = len(rows), max(capacity, n), 1
            rows.append([i])
        free -= n
        if count < max_segments and free >= smallest:
            if not open_rows[free]:
                nonempty |= 1 << free
            open_rows[free].append(r)
    counts = np.fromiter(map(len, rows), np.int64, len(rows))
    seg_ex = np.fromiter(itertools.chain.from_iterable(rows), np.int64, len(lens))
    return seg_ex, counts


def _assign_buckets(row_tokens: np.ndarray, buckets: np.ndarray, rows_per_batch: list[int]) -> np.ndarray:
    """Bucket index of every row: the smallest bucket that fits it, except that the last batch
    of each bucket is topped up with the longest rows of smaller buckets.

    Those slots would otherwise be empty padding rows that the device computes anyway, so
    promotion never adds work and often saves a batch in a smaller bucket. The set of shapes
    (hence compilations) is unchanged.
    """
    fit = np.searchsorted(buckets, row_tokens)  # smallest bucket >= row content
    order = np.argsort(-row_tokens, kind="stable")
    assigned = np.empty_like(fit)
    pos, n = 0, len(order)
    for b in range(len(buckets) - 1, -1, -1):
        # Rows still unassigned all fit bucket b; those that need it come first (longest first).
        must = int(np.count_nonzero(fit[order[pos:]] == b))
        take = 0 if must == 0 else min(-(-must // rows_per_batch[b]) * rows_per_batch[b], n - pos)
        # Never split rows of equal length between two buckets: identical inputs (duplicates)
        # must see identical shapes to get bit-identical scores.
        while must < take < n - pos and row_tokens[order[pos + take]] == row_tokens[order[pos + take - 1]]:
            take -= 1
        assigned[order[pos:pos + take]] = b
        pos += take
    return assigned


def _scatter(shape, fill, dtype, where, values) -> np.ndarray:
    out = np.full(shape[0] * shape[1], fill, dtype)
    out[where] = values
    return out.reshape(shape)


def _fill(seg_ex, counts, length, rows, segments, lens, offsets, ids, types, pad_id) -> list[Batch]:
    """Scatter the rows (each a run of `counts[r]` examples from `seg_ex`) into [rows, length]
    batches. One batch at a time keeps the token-level temporaries small."""
    n_rows = len(counts)
    row_first = np.concatenate([[0], np.cumsum(counts)])  # segment range of each row
    seg_row = np.repeat(np.arange(n_rows), counts)
    seg_num = np.arange(len(seg_ex)) - row_first[seg_row]  # 0-based slot within its row
    seg_len = lens[seg_ex]
    seg_start = np.cumsum(seg_len) - seg_len
    seg_col = seg_start - seg_start[row_first[:-1]][seg_row]  # first column of each segment
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


def make_batches(encodings: list[Encoding], config: BucketConfig, max_length: int,
                 pad_token_id: int) -> list[Batch]:
    """Fixed-shape batches covering every encoding once; longest bucket first (so an
    out-of-memory shape fails at the start, as in ST which also sorts longest first).

    Unpacked: each example gets its own row in the smallest bucket that fits it.
    Packed: examples are packed best-fit-decreasing into rows of max_length tokens and at most
    P segments, then each row goes to the smallest bucket that holds its content. Packing
    within each example's own bucket would almost never pack anything: with doubling buckets
    every example in a bucket is longer than half of it.
    """
    if not isinstance(config, BucketConfig):
        raise TypeError(f"config must be a BucketConfig, got {_describe(config)}")
    buckets = np.asarray(config.bucket_lengths(max_length))
    if isinstance(pad_token_id, bool) or not isinstance(pad_token_id, (int, np.integer)):
        raise TypeError(f"pad_token_id must be an int, got {_describe(pad_token_id)} (a tokenizer "
                        "without a pad token returns None: pass another id, e.g. 0; padding "
                        "is masked out anyway)")
    encodings = list(encodings)
    if not encodings:
        return []
    for i, e in enumerate(encodings):
        if not isinstance(e, Encoding):
            raise TypeError(f"encodings[{i}] is {_describe(e)}; make it with tokenize_pairs or "
                            "tokenize_texts")
    lens = np.fromiter((e.input_ids.shape[0] for e in encodings), np.int64, len(encodings))
    type_lens = np.fromiter((e.token_type_ids.shape[0] for e in encodings), np.int64, len(lens))
    if (bad := np.flatnonzero(type_lens != lens)).size:
        raise ValueError(f"encodings[{bad[0]}] has {lens[bad[0]]} input_ids but "
                         f"{type_lens[bad[0]]} token_type_ids")
    if (bad := np.flatnonzero((lens < 1) | (lens > max_length))).size:
        raise ValueError(f"encodings[{bad[0]}] has {lens[bad[0]]} tokens, outside 1..max_length="
                         f"{max_length}; tokenize with the same max_length you batch with")
    ids = np.concatenate([e.input_ids for e in encodings]).astype(np.int32, copy=False)
    types = np.concatenate([e.token_type_ids for e in encodings]).astype(np.int32, copy=False)
    offsets = np.cumsum(lens) - lens

    if config.pack and config.max_segments > 1:
        capacity = min(int(max_length), config.pack_length or int(max_length))
        seg_ex, counts = _pack(lens, capacity, config.max_segments)
    else:
        seg_ex, counts = np.argsort(-lens, kind="stable"), np.ones(len(lens), np.int64)
    row_tokens = np.add.reduceat(lens[seg_ex], np.cumsum(counts) - counts)
    row_bucket = _assign_buckets(row_tokens, buckets, [config.rows(int(x)) for x in buckets])
    # Rows longest first (stable), so rows promoted from smaller buckets sit in each bucket's
    # last batch only, where they replace padding rows.
    order = np.argsort(-row_tokens, kind="stable")
    first = np.cumsum(counts) - counts
    seg_ex = np.concatenate([seg_ex[first[r]:first[r] + counts[r]] for r in order]) if len(order) else seg_ex
    counts, row_bucket = counts[order], row_bucket[order]
    seg_bucket = np.repeat(row_bucket, counts)
    batches = []
    for b in range(len(buckets) - 1, -1, -1):
        in_bucket = row_bucket == b
        if in_bucket.any():
            length = int(buckets[b])
            batches += _fill(seg_ex[seg_bucket == b], counts[in_bucket], length,
                             config.rows(length), config.segments, lens, offsets, ids, types,
                             int(pad_token_id))
    return batches


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
