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
"""
from __future__ import annotations

from pathlib import Path

TABLE_FORMATS = ("parquet", "hf_disk")
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
    for start in range(0, len(ds), BATCH_ROWS):
        batch = ds[start:start + BATCH_ROWS]
        names = list(batch)
        for i, values in enumerate(zip(*batch.values())):
            yield f"row {start + i}", dict(zip(names, values))


def table_rows(path: Path, fmt: str, error):
    """iter_rows for the table formats: (where in the source, row dict)."""
    if not path.exists():
        raise error(f"data {'file' if path.suffix else 'folder'} {path} does not exist")
    return parquet_rows(path, error) if fmt == "parquet" else hf_disk_rows(path, error)
