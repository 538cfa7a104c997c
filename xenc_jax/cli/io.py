"""Reading pairs/texts from TSV, JSON Lines or stdin, and writing results, for the CLI."""
from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path

PAIR_KEYS = [("query", "document"), ("query", "passage"), ("query", "text"), ("text1", "text2"),
             ("sentence1", "sentence2"), ("question1", "question2")]


def _fmt(path: str, fmt: str | None) -> str:
    if fmt:
        return fmt
    return "jsonl" if str(path).endswith((".jsonl", ".json")) else "tsv"


@contextmanager
def open_in(path: str):
    if path in (None, "-"):
        yield sys.stdin
    else:
        if not Path(path).is_file():
            raise FileNotFoundError(f"input file {path} does not exist")
        with open(path, encoding="utf-8") as f:
            yield f


@contextmanager
def open_out(path: str | None):
    if path in (None, "-"):
        yield sys.stdout
    else:  # atomic: the file appears complete or not at all
        from ..atomic import atomic_file
        with atomic_file(path, "w", encoding="utf-8") as f:
            yield f


def _pair_from_json(obj, where: str):
    if isinstance(obj, list) and len(obj) == 2:
        return obj[0], obj[1]
    if isinstance(obj, dict):
        for a, b in PAIR_KEYS:
            if a in obj and b in obj:
                return obj[a], obj[b]
    raise ValueError(f"{where}: expected a [text1, text2] list or an object with one of the key pairs "
                     f"{PAIR_KEYS}, got {str(obj)[:80]!r}")


def _lines(path: str):
    """(where, line) for each non-blank line, where = "path:line number" for error messages."""
    with open_in(path) as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n").rstrip("\r")
            if line.strip():
                yield f"{path}:{n}", line


def _json(line: str, where: str):
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: not valid JSON ({e})") from e


def read_pairs(path: str, fmt: str | None = None) -> list[tuple[str, str]]:
    """Pairs from TSV (text1<TAB>text2[<TAB>ignored...]) or JSON Lines."""
    fmt = _fmt(path, fmt)
    pairs = []
    for where, line in _lines(path):
        if fmt == "jsonl":
            pairs.append(_pair_from_json(_json(line, where), where))
        else:
            cols = line.split("\t")
            if len(cols) < 2:
                raise ValueError(f"{where}: expected two tab-separated texts, found {len(cols)} column(s)")
            pairs.append((cols[0], cols[1]))
    return pairs


def read_texts(path: str, fmt: str | None = None, key: str = "text") -> list[str]:
    """One text per line (plain/TSV: first column) or JSON Lines objects with `key`."""
    fmt = _fmt(path, fmt)
    texts = []
    for where, line in _lines(path):
        if fmt != "jsonl":
            texts.append(line.split("\t")[0])
            continue
        obj = _json(line, where)
        if isinstance(obj, str):
            texts.append(obj)
        elif isinstance(obj, dict) and key in obj:
            texts.append(obj[key])
        else:
            raise ValueError(f"{where}: expected a JSON string or an object with {key!r}")
    return texts


def read_jsonl(path: str) -> list[dict]:
    return [_json(line, where) for where, line in _lines(path)]
