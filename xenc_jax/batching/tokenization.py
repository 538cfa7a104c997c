"""Tokenization exactly as sentence-transformers 6.2 feeds its model, because the library
promises identical scores: ST's `Transformer.preprocess` calls the tokenizer with
`truncation="longest_first"` and `max_length = tokenizer.model_max_length` (= max_seq_length),
passes the texts unchanged (no `.strip()` since ST 5; only the deprecated `fit` still strips),
and implements `do_lower_case` by prepending a `Lowercase` normalizer to the fast tokenizer.

An `Encoding` is one tokenized example (special tokens, no padding); batches are planned from
them (planning.make_batches).
"""
from __future__ import annotations

import copy
import threading
import weakref
from dataclasses import dataclass

import numpy as np

from .inputs import check_texts, describe, split_pairs

# Tokenizer calls are chunked: one call for a million pairs would hold every id as a Python int
# (~36 bytes each) in one list of lists before we convert it to compact int32 arrays.
_TOKENIZE_CHUNK = 4096


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


def _check_max_length(tokenizer, max_length, pair: bool) -> int:
    if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)):
        raise TypeError(f"max_length must be an int, got {describe(max_length)}")
    # HF silently skips truncation when max_length cannot even hold the special tokens, which
    # would hand make_batches sequences longer than max_length: refuse it here instead.
    with TOKENIZER_LOCK:
        special = tokenizer.num_special_tokens_to_add(pair=pair)
    if max_length < max(1, special):
        raise ValueError(f"max_length={max_length} is too small: the tokenizer adds {special} "
                         f"special tokens to each {'pair' if pair else 'text'}; use at least "
                         f"{max(1, special)}")
    return int(max_length)


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
    clean = check_texts(texts, offset)
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

