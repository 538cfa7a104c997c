"""Training rows from tables: Parquet (one file, or a directory of shards read in file-name
order) and a `datasets` folder written by `Dataset.save_to_disk` (read with
`datasets.load_from_disk`, memory-mapped Arrow). train/rows.iter_rows reads TSV, CSV and JSON
Lines itself and hands these two here.

Why these loaders: pyarrow reads Parquet a record batch at a time (only the columns asked for),
and `datasets` is the format Hugging Face data sets are saved in; both are already dependencies
of the data extras, and both give the rows in one fixed order, so the training order (a
permutation of that order drawn from (seed, epoch), train/data.py) and resuming at a checkpoint's
exact batch work as for a text file, as does the row-by-row sharding over processes.

A row is a dict {column: value}, as a JSON Lines object; `where` names the shard and the 0-based
row in it, so a bad value is reported as for a text file's line.

A Hugging Face data set (format "hf", or a path "hf://ID"): `datasets.load_dataset(path, name,
split=split, streaming=streaming)` on a hub id (for users with internet) or a local folder that
load_dataset reads (data files, a loading script is never run). Resolved by `datasets` itself.

Streaming (DataSource.streaming, train/streaming.py): a source is a list of *units* that can be read
on their own from any row, in one fixed order: a Parquet row group, 4096 rows of a memory-mapped
`datasets` table, or the whole source read in order (a text file, a hub stream).
"""
from __future__ import annotations

import dataclasses
import itertools
import os
from pathlib import Path

TABLE_FORMATS = ("parquet", "hf_disk", "hf")
HUB_PREFIX = "hf://"
BATCH_ROWS = 4096


def table_format(path: Path) -> str | None:
    """"parquet" (a .parquet file, or a directory holding .parquet files), "hf_disk" (a
    directory holding a save_to_disk state.json), else None."""
    if path.is_file():
        return "parquet" if path.suffix.lower() == ".parquet" else None
    if path.is_dir():
        if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
            return "hf_disk"
        if any(path.glob("*.parquet")):
            return "parquet"
    return None


def _shards(path: Path, error) -> list[Path]:
    if path.is_file():
        return [path]
    shards = sorted(path.glob("*.parquet"))
    if not shards:
        raise error(f"{path}: no .parquet files in this directory")
    return shards


def parquet_rows(path: Path, error):
    """(where, row dict) of every row of every shard, a record batch at a time."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise error("Parquet training data needs pyarrow: pip install pyarrow") from None
    for shard in _shards(path, error):
        try:
            batches = pq.ParquetFile(shard).iter_batches(batch_size=BATCH_ROWS)
            row = 0
            for batch in batches:
                for values in batch.to_pylist():
                    yield f"{shard.name} row {row}", values
                    row += 1
        except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
            raise error(f"{shard}: not a readable Parquet file ({e})") from None


def hf_disk_rows(path: Path, error):
    """(where, row dict) of a save_to_disk folder (one split; a DatasetDict folder: name the
    split's subfolder), BATCH_ROWS rows at a time from the memory-mapped Arrow files."""
    ds = hf_disk_dataset(path, error)
    for start in range(0, len(ds), BATCH_ROWS):
        batch = ds[start:start + BATCH_ROWS]
        names = list(batch)
        for i, values in enumerate(zip(*batch.values())):
            yield f"row {start + i}", dict(zip(names, values))


def hf_disk_dataset(path: Path, error):
    """The Dataset of a save_to_disk folder (memory-mapped, nothing read yet)."""
    try:
        from datasets import Dataset, load_from_disk
    except ImportError:
        raise error("a datasets folder needs the `datasets` package: pip install datasets") from None
    try:
        ds = load_from_disk(str(path))
    except (OSError, ValueError, FileNotFoundError) as e:
        raise error(f"{path}: not a folder written by datasets' save_to_disk ({e})") from None
    if not isinstance(ds, Dataset):
        raise error(f"{path} holds the splits {sorted(ds)}: point the data path at one of them, e.g. "
                    f"{path / sorted(ds)[0]}")
    return ds


def hub_id(src) -> str:
    return src.path[len(HUB_PREFIX):] if src.path.startswith(HUB_PREFIX) else src.path


def load_hf(src, error, streaming: bool = False):
    """datasets.load_dataset(id or folder, name, split=..., streaming=...): a Dataset or an
    IterableDataset. An unknown id, no network, a missing split: one line naming them."""
    try:
        import datasets
    except ImportError:
        raise error("a Hugging Face data set needs the `datasets` package: pip install datasets") from None
    ident = hub_id(src)
    what = f"Hugging Face data set {ident!r}" + (f" (name {src.name!r})" if src.name else "")
    try:
        ds = datasets.load_dataset(ident, src.name, split=src.split, streaming=streaming)
    except ConnectionError as e:
        offline = os.environ.get("HF_DATASETS_OFFLINE", os.environ.get("HF_HUB_OFFLINE", "0")) not in ("0", "")
        why = ("offline mode is on (HF_DATASETS_OFFLINE/HF_HUB_OFFLINE)" if offline
               else f"the Hub is not reachable ({e})")
        raise error(f"{what}: not found locally and {why}; check the id, go online once to download it, "
                    "or give a local folder, Parquet file or save_to_disk folder as the data path") from None
    except (FileNotFoundError, ValueError, KeyError, datasets.exceptions.DatasetNotFoundError) as e:
        raise error(f"{what}, split {src.split!r}: {str(e).splitlines()[0] if str(e) else type(e).__name__} "
                    "(check the id, name and split)") from None
    if isinstance(ds, (datasets.DatasetDict, datasets.IterableDatasetDict)):  # split=None
        raise error(f"{what} has the splits {sorted(ds)}: set split to one of them")
    return ds


def _dataset_rows(ds, start: int = 0, stop: int | None = None):
    """(row index, row dict) of a map-style Dataset, BATCH_ROWS rows at a time."""
    stop = len(ds) if stop is None else stop
    for a in range(start, stop, BATCH_ROWS):
        batch = ds[a:min(a + BATCH_ROWS, stop)]
        names = list(batch)
        for i, values in enumerate(zip(*batch.values())):
            yield a + i, dict(zip(names, values))


def table_rows(path: Path, fmt: str, error, src=None):
    """iter_rows for the table formats: (where in the source, row dict)."""
    if fmt == "hf":
        ds = load_hf(src, error)
        return ((f"row {i}", row) for i, row in _dataset_rows(ds))
    if not path.exists():
        raise error(f"data {'file' if path.suffix else 'folder'} {path} does not exist")
    return parquet_rows(path, error) if fmt == "parquet" else hf_disk_rows(path, error)


# ----------------------------------------------------------------------------- units (streaming)

@dataclasses.dataclass(frozen=True)
class Unit:
    """A part of the source readable on its own: `rows` rows from row `first` of the source's
    fixed order; `key` says where (shard and row group, or a row range)."""
    first: int
    rows: int
    key: tuple


class Units:
    """A source as units. read(unit, skip) yields (where, row) from row `skip` of the unit;
    memory: one record batch (BATCH_ROWS rows), whatever the size of the source."""

    def __init__(self, units: list[Unit], reader):
        self.units, self._reader = units, reader

    @property
    def num_rows(self) -> int:
        return self.units[-1].first + self.units[-1].rows if self.units else 0

    def read(self, unit: Unit, skip: int = 0):
        return self._reader(unit, skip)


def parquet_units(path: Path, error, columns=None) -> Units:
    """One unit per row group of every shard (from the footers alone); only `columns` are read."""
    import pyarrow.parquet as pq
    units, first = [], 0
    for shard in _shards(path, error):
        try:
            meta = pq.ParquetFile(shard).metadata
        except (OSError, ValueError) as e:
            raise error(f"{shard}: not a readable Parquet file ({e})") from None
        at = 0
        for g in range(meta.num_row_groups):
            n = meta.row_group(g).num_rows
            units.append(Unit(first, n, (shard, g, at)))
            first, at = first + n, at + n

    def read(unit: Unit, skip: int):
        shard, g, at = unit.key
        pf = pq.ParquetFile(shard)
        names = set(pf.schema_arrow.names)
        cols = [c for c in columns if c in names] if columns else None  # a missing one: named per row
        row, name = 0, shard.name
        for batch in pf.iter_batches(batch_size=BATCH_ROWS, row_groups=[g], columns=cols):
            if row + batch.num_rows <= skip:
                row += batch.num_rows
                continue
            batch = batch.slice(max(skip - row, 0))
            row = max(row, skip)
            names = batch.schema.names  # column lists zipped: RecordBatch.to_pylist is ~3x slower
            for i, values in enumerate(zip(*(c.to_pylist() for c in batch.columns)), at + row):
                yield f"{name} row {i}", dict(zip(names, values))
            row += batch.num_rows
    return Units(units, read)


def dataset_units(ds) -> Units:
    """A map-style `datasets.Dataset` (memory-mapped Arrow): units of BATCH_ROWS rows."""
    n = len(ds)
    units = [Unit(a, min(BATCH_ROWS, n - a), (a,)) for a in range(0, n, BATCH_ROWS)]
    return Units(units, lambda u, skip: ((f"row {i}", r) for i, r in
                                         _dataset_rows(ds, u.first + skip, u.first + u.rows)))


def sequential_units(rows, num_rows: int) -> Units:
    """The whole source as one unit read in order (a text file, a hub stream); rows() starts a
    new pass. Skipping reads the rows before (once, when resuming)."""
    return Units([Unit(0, num_rows, ())] if num_rows else [],
                 lambda u, skip: itertools.islice(rows(), skip, u.rows))
