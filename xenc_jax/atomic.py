"""Atomic writes of model directories and output files: a reader (or a later training step) sees
the old version or the new one, never a torn one.

A file is written to a temporary sibling, flushed to disk and renamed over the target (rename is
atomic within a filesystem). A directory cannot be renamed over a non-empty one, so it takes two
renames: the old directory to an `.old` sibling, then the new one into place, then the old one is
deleted. A kill between the two renames leaves the target missing and the `.old` sibling whole;
`recover_dir` (run before every export and before loading an export) puts it back. Temporary
siblings left by a killed writer are removed by the next write to the same target.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path

TMP_TAG = ".xenc-tmp-"


def _old(path: Path) -> Path:
    return path.with_name(f".{path.name}.xenc-old")


def _fsync_tree(root: Path) -> None:
    """Data on disk before the rename makes it visible (a power cut must not expose empty files)."""
    for p in [root, *root.rglob("*")]:
        if p.is_symlink():
            continue
        try:
            fd = os.open(p, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fsync(fd)
        except OSError:
            pass  # some filesystems refuse fsync on directories
        finally:
            os.close(fd)


def recover_dir(path: str | os.PathLike) -> None:
    """Undo a directory swap interrupted between its two renames; drop stale temporaries."""
    path = Path(path)
    old = _old(path)
    if old.is_dir():
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)  # the swap finished; only the delete was cut
        else:
            os.replace(old, path)
    for stale in path.parent.glob(f".{path.name}{TMP_TAG}*") if path.parent.is_dir() else ():
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike):
    """`with atomic_dir(p) as tmp:` write the directory's files under `tmp`; on a clean exit `tmp`
    replaces `p` (an existing `p` survives any failure or kill before that)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(path)
    tmp = path.with_name(f".{path.name}{TMP_TAG}{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        yield tmp
        _fsync_tree(tmp)
        old = _old(path)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w", **open_kw):
    """`with atomic_file(p, "wb") as f:` the file appears at `p` complete, or not at all."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{TMP_TAG}{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, mode, **open_kw) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_npy(path: str | os.PathLike, array) -> None:
    """np.save, atomically (np.save on a file object does not append `.npy`)."""
    import numpy as np
    with atomic_file(path, "wb") as f:
        np.save(f, np.asarray(array))
