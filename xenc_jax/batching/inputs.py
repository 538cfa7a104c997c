"""Checks on what callers pass as texts and pairs: a clear one-line error naming the bad item
(`pairs[3][1] is None ...`) instead of a tokenizer traceback or, worse, a silently wrong input
(a bare string is iterable and would be read as a list of one-character texts).
"""
from __future__ import annotations

import numpy as np

_SEQ_TYPES = (tuple, list, np.ndarray)


def describe(x) -> str:
    """A short description of a bad value for an error message: its type and a cut repr."""
    text = repr(x)
    return f"{type(x).__name__} {text[:60] + '...' if len(text) > 60 else text}"


def as_sequence(items, what: str, example: str):
    # A bare string is iterable, so without this check it would be read as a list of characters.
    if isinstance(items, (str, bytes)):
        raise TypeError(f"{what} must be a list, got a single {describe(items)}; "
                        f"wrap it in a list: {example}")
    if isinstance(items, dict) or items is None:
        raise TypeError(f"{what} must be a list like {example}, got {describe(items)}")
    if isinstance(items, (list, tuple)):
        return items
    try:
        return list(items)  # generators, numpy arrays, pandas Series
    except TypeError:
        raise TypeError(f"{what} must be a list like {example}, got {describe(items)}") from None


def check_text(x, where: str, fix: str) -> str:
    if x is None:
        raise TypeError(f"{where} is None; every text must be a str (use '' for an empty text, "
                        f"or {fix})")
    if not isinstance(x, str):
        raise TypeError(f"{where} is {describe(x)}, not a str; convert it with str() or {fix}")
    return check_utf8(str(x), where)  # np.str_ and other subclasses -> plain str


def check_utf8(text: str, where: str) -> str:
    """`text`, refused when it cannot be encoded as UTF-8: a lone surrogate ("caf\\udce9", what
    bytes decoded with errors="surrogateescape" leave) makes the tokenizer fail with a bare
    "TextInputSequence must be str". Only surrogates fail to encode; ASCII is checked in C."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"{where} cannot be encoded as UTF-8: it holds the lone surrogate "
                         f"{text[e.start]!r} at character {e.start} (bytes decoded with "
                         "errors='surrogateescape' or a wrong codec); decode the file as UTF-8, e.g. "
                         "open(path, encoding='utf-8', errors='replace')") from None
    return text


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
                if not (a.isascii() and b.isascii()):
                    check_utf8(a, f"pairs[{i}][0]")
                    check_utf8(b, f"pairs[{i}][1]")
                first.append(a)
                second.append(b)
                continue
        if isinstance(pair, (str, bytes)):
            raise TypeError(f"pairs[{i}] is a single {describe(pair)}, not a (text_a, text_b) "
                            "pair; build the input as [(query, passage), ...]")
        if not isinstance(pair, _SEQ_TYPES):
            raise TypeError(f"pairs[{i}] is {describe(pair)}; expected a (text_a, text_b) "
                            "tuple or list")
        if len(pair) != 2:
            raise ValueError(f"pairs[{i}] has {len(pair)} items; a pair must have exactly 2 texts "
                             "(text_a, text_b). To score one query against several passages, make "
                             "one pair per passage")
        first.append(check_text(pair[0], f"pairs[{i}][0]", "drop the pair"))
        second.append(check_text(pair[1], f"pairs[{i}][1]", "drop the pair"))
    return first, second


def check_texts(texts, offset: int = 0) -> list[str]:
    """`texts` as a list of plain str. `offset`: the index of texts[0] in the whole input."""
    texts = as_sequence(texts, "texts", "[text, ...]")
    clean = []
    for i, t in enumerate(texts, offset):
        if type(t) is not str:
            if isinstance(t, _SEQ_TYPES):
                raise TypeError(f"texts[{i}] is {describe(t)}, not a str; tokenize_texts takes "
                                "single texts (use tokenize_pairs for (text_a, text_b) pairs)")
            t = check_text(t, f"texts[{i}]", "drop the text")
        elif not t.isascii():
            check_utf8(t, f"texts[{i}]")
        clean.append(t)
    return clean
