"""Streaming training data (DataSource.streaming): rows read a window at a time, so memory is
bounded by the window (`window` rows, parsed and tokenized) whatever the size of the data.

Why not a new loader: the rows come from pyarrow (a Parquet row group, a record batch at a time,
only the columns read), `datasets` (memory-mapped Arrow tables, load_dataset streams) or the text
readers of train/rows.py, each read from a given row (train/sources.py: "units"; a TSV or JSON
Lines file: 4096-row units found by one pass that keeps a byte offset per unit). What this module
adds is the order, which must be a pure function of (seed, epoch) so that a checkpoint's position
(epoch, step) resumes at the exact example: HF's IterableDataset.shuffle drops its buffer on resume
and grain would need random access to single rows (a Parquet row costs its whole row group).

Order of an epoch: the units in a permutation drawn from (seed, epoch), each clipped to
DataSource.rows, concatenated; this row stream is cut into windows of `window` rows; each window's
rows are permuted (seed, epoch, window); its i-th row goes to process i % process_count, which
parses and tokenizes only its share. Inside a window the groups are length-sorted in mega batches
and the batch order shuffled, as BatchStream does over a whole epoch. Each window has a fixed
number of steps, ceil(ceil(rows / processes) * copies / local batch), known from the row count
alone: a row dropped (skip_labels, on_bad_row="skip") leaves an empty slot (valid=False, masked by
every loss) instead of moving later rows to other steps. The bucket lengths of a window's steps
are agreed on by one small allgather per window. The global shuffle is as good as the units are
small: Parquet row groups and 4096-row slices of a `datasets` table or of a TSV / JSON Lines
file are shuffled as wholes; a CSV file or a hub stream is one unit (read in order, shuffled
within each window): write large data as Parquet with small row groups (row_group_size=16384).

Labels are checked as each window is read (the first `window` rows of the data when training
starts, before any model compute), so a bad row late in a large file stops the run when it is
reached, naming file:line, unless on_bad_row="skip".
"""
from __future__ import annotations

import itertools
import logging
import math
from pathlib import Path

import numpy as np

from . import data
from .data import (BatchStream, DataError, Examples, Groups, bucket_of, check_labels, check_source, make_groups,
                   parse_rows)
from .rows import iter_rows, line_index
from .sources import Unit, Units, dataset_units, hf_disk_dataset, load_hf, parquet_units, sequential_units

log = logging.getLogger(__name__)
TEXT_UNIT_ROWS = 4096  # rows of a TSV / JSON Lines unit: 16 bytes of index each


def open_units(src) -> Units:
    """The source as units (train/sources.py), nothing but footers / lengths read yet; a text
    file or a hub stream of unknown length is counted in one pass."""
    fmt = src.resolved_format()
    if fmt == "parquet":
        path = Path(src.path)
        if not path.exists():
            raise DataError(f"data {'file' if path.suffix else 'folder'} {path} does not exist")
        keys = list(src.columns) + ([] if src.label_column is None else [src.label_column])
        return parquet_units(path, DataError, keys if all(isinstance(k, str) for k in keys) else None)
    if fmt == "hf_disk":
        if not Path(src.path).exists():
            raise DataError(f"data folder {src.path} does not exist")
        return dataset_units(hf_disk_dataset(Path(src.path), DataError))
    if fmt == "hf":
        ds = load_hf(src, DataError, streaming=True)
        if hasattr(ds, "__len__"):
            return dataset_units(ds)
        splits = getattr(ds.info, "splits", None) or {}
        n = getattr(splits.get(src.split), "num_examples", None) if src.split in splits else None

        def rows():
            return ((f"row {i}", r) for i, r in enumerate(ds))
        if not n:
            log.info("%s: counting the rows of the stream (its card gives no count)", src.path)
            n = sum(1 for _ in rows())
        return sequential_units(rows, n)
    if fmt in ("tsv", "jsonl"):  # a row a line: units of TEXT_UNIT_ROWS rows from a line index
        iter_rows(src, fmt)  # the checks of a missing file and bad settings
        n, marks, header = line_index(src, fmt, TEXT_UNIT_ROWS)
        k = TEXT_UNIT_ROWS
        units = [Unit(i * k, min(k, n - i * k), at) for i, at in enumerate(marks)]
        return Units(units, lambda u, skip: itertools.islice(iter_rows(src, fmt, u.key, header), skip, u.rows))

    def rows():  # CSV: a quoted text may span lines, so the file is one unit read in order
        return iter_rows(src, fmt)
    return sequential_units(rows, sum(1 for _ in rows()))


def read_examples(src, *, process_index: int = 0, process_count: int = 1):
    """The training data of this process: a StreamedExamples for streaming data (the first window
    read and checked now), else data.read_examples (every row of this process's shard)."""
    if src.streaming:
        return StreamedExamples(src, process_index, process_count)
    return data.read_examples(src, process_index=process_index, process_count=process_count)


class StreamedExamples:
    """What read_examples returns for streaming data: the source as units, this process's place,
    and the window reader. The first window (in the data's own order) is parsed now, so a wrong
    column or label is an error before the model loads."""

    def __init__(self, src, process_index: int = 0, process_count: int = 1):
        check_source(src)
        if not isinstance(src.window, int) or src.window < 1:
            raise DataError(f"window must be a positive number of rows, got {src.window!r}")
        self.src, self.kind, self.source = src, src.kind, src.path
        self.process_index, self.process_count = process_index, process_count
        self.units = open_units(src)
        start, stop = src.rows if src.rows else (0, None)
        stop = self.units.num_rows if stop is None else min(stop, self.units.num_rows)
        self.start, self.stop = start, stop
        self.num_rows = max(stop - start, 0)
        self.label_check = None
        self._cursor = None    # (epoch, segment, next row of its unit, iterator): the read goes on
        self._segments = None  # (epoch, segments, offsets)
        if not self.num_rows:
            raise DataError(f"{src.path}: no examples (no rows at all"
                            f"{'; check rows=' + str(src.rows) if src.rows else ''})")
        self.first = self._parse(self._fixed_order_rows(src.window), "the first window")

    def __len__(self):
        return self.num_rows

    @property
    def texts(self):
        raise DataError(f"{self.source}: this needs every row in memory (e.g. silver pairs), but the data "
                        "is streamed; set streaming false")

    labels = texts

    def check_labels(self, loss: str, num_labels: int) -> None:
        self.label_check = (loss, num_labels)
        if self.first.texts:
            check_labels(self.first, loss, num_labels)

    def groups_of(self, tokenizer, max_length: int, **kw):
        return StreamedGroups(self, tokenizer, max_length, kw)

    # ---- rows
    def _fixed_order_rows(self, limit: int) -> list:
        out = []
        for u in self.units.units:
            a, b = max(self.start, u.first), min(self.stop, u.first + u.rows)
            if a < b:
                out += itertools.islice(self.units.read(u, a - u.first), min(b - a, limit - len(out)))
            if len(out) >= limit:
                break
        return out

    def segments(self, seed: int, epoch: int, shuffle: bool = True):
        """([(unit, first row in it, rows)], offsets) of the epoch's row stream."""
        if self._segments is None or self._segments[0] != (seed, epoch):
            units = self.units.units
            order = np.random.default_rng([seed, epoch, 0]).permutation(len(units)) if shuffle else range(len(units))
            segs = []
            for u in (units[i] for i in order):
                a, b = max(self.start, u.first), min(self.stop, u.first + u.rows)
                if a < b:
                    segs.append((u, a - u.first, b - a))
            self._segments = ((seed, epoch), segs, np.cumsum([0] + [t for _, _, t in segs]))
        return self._segments[1:]

    def window_rows(self, seed: int, epoch: int, w: int, shuffle: bool = True) -> list:
        """(where, row) of the epoch's stream rows [w * window, (w + 1) * window), in order."""
        segs, offs = self.segments(seed, epoch, shuffle)
        lo, hi = w * self.src.window, min((w + 1) * self.src.window, self.num_rows)
        i, out = int(np.searchsorted(offs, lo, side="right")) - 1, []
        while lo < hi:
            unit, skip, take = segs[i]
            a, b = lo - int(offs[i]), min(take, hi - int(offs[i]))
            at = skip + a
            c = self._cursor
            it = c[3] if c is not None and c[:3] == ((seed, epoch), i, at) else self.units.read(unit, at)
            out += itertools.islice(it, b - a)
            self._cursor = ((seed, epoch), i, skip + b, it)
            lo, i = int(offs[i]) + b, i + 1
        return out

    def local_rows(self, seed: int, epoch: int, w: int, shuffle: bool = True) -> list:
        """This process's share of window w: the window's rows permuted, every process_count-th."""
        rows = self.window_rows(seed, epoch, w, shuffle)
        perm = np.random.default_rng([seed, epoch, 1, w]).permutation(len(rows)) if shuffle else np.arange(len(rows))
        return [rows[j] for j in perm[self.process_index::self.process_count]]

    def _parse(self, rows, what: str) -> Examples:
        texts, labels, bad, skipped, _ = parse_rows(self.src, rows)
        if bad:
            log.warning("%s: skipped %d bad row(s) in %s; first: %s", self.source, len(bad), what, bad[0])
        return Examples(self.kind, texts, None if self.src.label_column is None else labels, self.source)

    def window_examples(self, seed: int, epoch: int, w: int, shuffle: bool = True) -> Examples:
        ex = self._parse(self.local_rows(seed, epoch, w, shuffle), f"window {w} of epoch {epoch}")
        if self.label_check is not None and ex.texts:
            check_labels(ex, *self.label_check)
        return ex


class StreamedGroups:
    """make_groups' result for streamed examples: how to tokenize a window. batch_stream(groups)
    makes a WindowStream of it."""

    def __init__(self, ex: StreamedExamples, tokenizer, max_length: int, kw: dict):
        self.examples, self.tokenizer, self.max_length, self.kw = ex, tokenizer, max_length, kw
        src = ex.src
        if kw.get("task") == "bi_encoder":
            self.group_size = len(src.columns)
        elif src.kind == "lists":
            if not kw.get("group_size"):
                raise DataError(f"{src.path}: streamed lists need list_size (documents per query), so that "
                                "every window has the same shape")
            self.group_size = int(kw["group_size"])
        else:
            self.group_size = 1 if src.kind == "pairs" else len(src.columns) - 1

    def tokenize(self, ex: Examples) -> Groups:
        G = self.group_size
        if not ex.texts:  # every row of this process's share dropped: all its slots are empty
            return Groups([], np.zeros((0, G), np.float32), G, np.zeros((0,), np.int64))
        groups = make_groups(ex, self.tokenizer, self.max_length, **self.kw)
        if groups.group_size != G:
            raise DataError(f"{ex.source}: a window has groups of {groups.group_size} texts, expected {G}")
        return groups


def batch_stream(groups, cfg, **kw) -> BatchStream:
    """The training loop's batches: a WindowStream for streamed groups, else data.BatchStream."""
    return (WindowStream if isinstance(groups, StreamedGroups) else BatchStream)(groups, cfg, **kw)


class WindowStream(BatchStream):
    """BatchStream over streamed data: the same position ({epoch, index}), start_at, fixed shapes
    and build(); batches planned one window at a time."""

    def __init__(self, groups: StreamedGroups, cfg, *, process_index: int = 0, process_count: int = 1,
                 allgather=None):
        if cfg.batch_size % process_count:
            raise ValueError(f"batch_size {cfg.batch_size} must be a multiple of the process count {process_count}")
        if cfg.drop_last:
            raise ValueError("drop_last does not apply to streamed data (each window has a fixed number of steps)")
        self.streamed, self.cfg, self.groups = groups, cfg, None
        self.local_batch = cfg.batch_size // process_count
        self.process_index, self.process_count = process_index, process_count
        self._allgather = allgather
        self.epoch, self.index = 0, 0
        ex, W = groups.examples, groups.examples.src.window
        copies = 2 if ex.src.add_swapped else 1
        steps = [math.ceil(math.ceil(min(W, ex.num_rows - s) / process_count) * copies / self.local_batch)
                 for s in range(0, ex.num_rows, W)]
        self._cum = np.concatenate([[0], np.cumsum(steps)]).astype(np.int64)
        self._window = None   # (epoch, w, batches, lens)

    def steps_per_epoch(self) -> int:
        return int(self._cum[-1])

    def plan(self, epoch: int):
        raise NotImplementedError("streamed data is planned one window at a time (window_plan)")

    def window_plan(self, epoch: int, w: int) -> tuple[list, list]:
        """(local group indices per step, bucket length per step) of window w; sets self.groups."""
        cfg, b = self.cfg, self.local_batch
        ex = self.streamed.examples.window_examples(cfg.seed, epoch, w, cfg.shuffle)
        self.groups = self.streamed.tokenize(ex)
        n, steps = len(self.groups), int(self._cum[w + 1] - self._cum[w])
        order = np.arange(n)
        mega = b * max(1, cfg.group_factor)
        batches = []
        for s in range(0, n, mega):
            chunk = order[s:s + mega]  # already in a random order: the window's permutation
            chunk = chunk[np.argsort(-self.groups.lengths[chunk], kind="stable")]
            batches += [chunk[i:i + b] for i in range(0, len(chunk), b)]
        assert len(batches) <= steps, (len(batches), steps)
        batches += [np.zeros((0,), np.int64)] * (steps - len(batches))
        if cfg.shuffle:
            perm = np.random.default_rng([cfg.seed, epoch, 2, w, self.process_index]).permutation(steps)
            batches = [batches[i] for i in perm]
        lens = [bucket_of(int(self.groups.lengths[ix].max()), cfg.bucket_lengths, cfg.max_length) if len(ix) else 0
                for ix in batches]
        if self.process_count > 1:
            lens = [int(x) for x in np.max(self._allgather(np.asarray(lens)), axis=0)]
        lens = [x if x else min(cfg.bucket_lengths) for x in lens]
        return batches, lens

    def __next__(self):
        if self.index >= self.steps_per_epoch():
            self.epoch, self.index = self.epoch + 1, 0
        w = int(np.searchsorted(self._cum, self.index, side="right")) - 1
        if self._window is None or self._window[:2] != (self.epoch, w):
            self._window = (self.epoch, w, *self.window_plan(self.epoch, w))
        batches, lens = self._window[2:]
        j = self.index - int(self._cum[w])
        out = self.build(batches[j], lens[j])
        self.index += 1
        return out
