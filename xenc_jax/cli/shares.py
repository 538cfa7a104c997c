"""Each process's share of an input file in a multi-process streamed job, found without reading
the other shares: a contiguous byte range cut at line starts (TSV, JSONL), or a contiguous range
of row groups (Parquet, from the footer alone). Contiguous shares keep input order: the merged
output is process 0's parts, then process 1's, and so on.

The processes exchange only counts (one all-gather): how many items and lines each share holds,
so every process knows the input index and the line number its share starts at (for the output's
"index" and for error messages naming file:line).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np


@dataclasses.dataclass(frozen=True)
class Share:
    start: int            # byte offset (text) or first row group (Parquet)
    end: int              # exclusive
    first_line: int = 1   # text: the line number of the share's first line; Parquet: its first row
    first_item: int = 0   # the input index of the share's first item
    items: int = 0        # items (non-blank lines, rows) in the share


def _line_start_at_or_after(f, pos: int) -> int:
    """The first line start >= pos (a line belongs to the share holding its first byte)."""
    if pos == 0:
        return 0
    f.seek(pos - 1)
    if f.read(1) == b"\n":
        return pos
    f.readline()
    return f.tell()


def text_range(path: str, index: int, count: int) -> tuple[int, int]:
    size = Path(path).stat().st_size
    with open(path, "rb") as f:
        return (_line_start_at_or_after(f, size * index // count),
                _line_start_at_or_after(f, size * (index + 1) // count))


def count_text(path: str, start: int, end: int) -> tuple[int, int]:
    """(lines, non-blank lines) in [start, end)."""
    lines = items = 0
    with open(path, "rb") as f:
        f.seek(start)
        while f.tell() < end:
            raw = f.readline()
            if not raw:
                break
            lines += 1
            items += bool(raw.strip())
    return lines, items


def parquet_range(path: str, index: int, count: int) -> tuple[int, int, int, int]:
    """(first row group, end row group, first row, rows) of this process's share."""
    import pyarrow.parquet as pq
    md = pq.ParquetFile(path).metadata
    groups = md.num_row_groups
    a, b = groups * index // count, groups * (index + 1) // count
    rows = [md.row_group(g).num_rows for g in range(groups)]
    return a, b, sum(rows[:a]), sum(rows[a:b])


def my_share(path: str, fmt: str, index: int, count: int) -> Share:
    """A collective: every process calls it, and they all-gather their counts."""
    from jax.experimental import multihost_utils
    if fmt == "parquet":
        a, b, first_row, rows = parquet_range(path, index, count)
        return Share(a, b, first_row, first_row, rows)
    start, end = text_range(path, index, count)
    lines, items = count_text(path, start, end)
    got = np.asarray(multihost_utils.process_allgather(np.asarray([lines, items], np.int64)))
    return Share(start, end, 1 + int(got[:index, 0].sum()), int(got[:index, 1].sum()), items)
