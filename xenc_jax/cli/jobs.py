"""Resumable CLI jobs: the output is written as finished parts, and a rerun continues.

`xenc score in.tsv -o scores.jsonl` writes `scores.jsonl.parts/` beside the output:
`manifest.json` (what the job is: the input file's and the model's identity by content, and
every setting that changes the output) and `part-000000.jsonl`, ... one per chunk of input
items, each written atomically (atomic.atomic_file). Killed at any point, the same command run
again checks the manifest, skips the input items of the finished parts (read, not scored), and
continues with the first missing part. When all parts are done they are assembled into the
output atomically and the parts directory is removed. So the output equals an uninterrupted
run's byte for byte: part k always holds chunk k's results, and a chunk's results do not depend
on what ran before it. A manifest that differs (another input, model or setting) is refused
with the differing keys, or discarded with --overwrite.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..atomic import atomic_file

MANIFEST = "manifest.json"
VERSION = 1


def _diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k, "<absent>"), new.get(k, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += _diff(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {str(a)[:60]} -> {str(b)[:60]}")
    return out


class PartsJob:
    """Parts of one output. `identity`: JSON-able dict of everything the output depends on."""

    def __init__(self, output: str | Path, identity: dict, ext: str, *, overwrite: bool = False,
                 process: int | None = None):
        """process: this process's index in a multi-process job (parts part-p0000k-000000.ext, and
        only process 0 creates or replaces the manifest; the others call after it, via join)."""
        self.output = Path(output)
        self.dir = self.output.with_name(self.output.name + ".parts")
        self.ext = ext
        self.prefix = "part-" if process is None else f"part-p{process:05d}-"
        manifest = {"version": VERSION, **identity}
        path = self.dir / MANIFEST
        if process not in (None, 0):
            if not path.is_file() or json.loads(path.read_text(encoding="utf-8")) != manifest:
                raise ValueError(f"{path} does not match this process's job: is the output directory shared "
                                 "by all processes, and do they run the same command?")
        elif self.dir.is_dir():
            old = None
            try:
                old = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
            except (OSError, json.JSONDecodeError):
                old = None  # the manifest is written atomically: unreadable means not ours
            finished = any(self.dir.glob(f"part-*.{ext}"))  # any process's
            if old != manifest:  # parts of another job: refused, unless there are none to lose
                if old is not None and finished and not overwrite:
                    diff = _diff(old, manifest)
                    raise ValueError(
                        f"{self.dir} holds finished parts of a different job:\n  " + "\n  ".join(diff[:12])
                        + ("\n  ..." if len(diff) > 12 else "") + "\nRun the same command as before to "
                        "finish it, or add --overwrite to discard those parts and start again")
                shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        if not path.is_file():
            with atomic_file(path, "w", encoding="utf-8") as f:
                json.dump(manifest, f, indent=1, sort_keys=True)
        self.done = 0
        while self.part(self.done).is_file():  # parts are atomic: present means complete
            self.done += 1

    def part(self, k: int) -> Path:
        return self.dir / f"{self.prefix}{k:06d}.{self.ext}"

    def all_parts(self) -> list[Path]:
        """Every process's parts in input order (process 0's first: shares are contiguous)."""
        return sorted(self.dir.glob(f"part-*.{self.ext}"))

    def parts(self) -> list[Path]:
        return [self.part(k) for k in range(self.done)]

    def write_part(self, k: int, write) -> None:
        """write(f) fills part k (binary file); it appears complete or not at all."""
        with atomic_file(self.part(k), "wb") as f:
            write(f)
        self.done = max(self.done, k + 1)

    def keep_or_discard(self) -> bool:
        """After a failed or interrupted run: True if finished parts remain for a rerun to resume;
        else the parts directory (a manifest alone) is removed, so that no later job on this
        output borrows a manifest nothing was written under (issue 29)."""
        if any(self.dir.glob("part-*")):
            return True
        shutil.rmtree(self.dir, ignore_errors=True)
        return False

    def finish(self, assemble, parts: list[Path] | None = None) -> Path:
        """assemble(parts, f) writes the output from the parts; then the parts are removed."""
        with atomic_file(self.output, "wb") as f:
            assemble(self.parts() if parts is None else parts, f)
        shutil.rmtree(self.dir, ignore_errors=True)
        return self.output


def concat(parts: list[Path], f) -> None:
    """Byte concatenation (JSON Lines, TSV)."""
    for p in parts:
        with open(p, "rb") as src:
            shutil.copyfileobj(src, f, 1 << 20)
