"""What a file or a model directory is, by content: the size and sha256 of each file. Used by the
training config digest (train/digest.py) and by resumable CLI jobs (cli/jobs.py) to tell whether
the input or the model changed since the run that wrote the checkpoint or the parts.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

FULL_HASH_BYTES = 256 << 20   # files up to this size are hashed whole
SAMPLES, SAMPLE_BYTES = 32, 1 << 20  # larger ones: 32 evenly spaced MiB (reading 16 GB each start is too slow)


def file_identity(path: str | os.PathLike) -> str:
    """'<size>:<sha256>' of the whole file, or 'size:sampled-sha256' of evenly spaced blocks for a
    large one (any edit that changes the size, the header or one of the blocks is caught)."""
    path = Path(path)
    size = path.stat().st_size
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if size <= FULL_HASH_BYTES:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
            return f"{size}:{h.hexdigest()}"
        for i in range(SAMPLES):
            f.seek((size - SAMPLE_BYTES) * i // (SAMPLES - 1))
            h.update(f.read(SAMPLE_BYTES))
    return f"{size}:sampled-{h.hexdigest()}"


def model_identity(model_dir: str | os.PathLike) -> dict[str, str]:
    """file_identity of every file in the model directory (config, weights, tokenizer, ST modules)."""
    root = Path(model_dir)
    return {str(p.relative_to(root)): file_identity(p) for p in sorted(root.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)}
