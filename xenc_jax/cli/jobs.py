"""Resumable CLI jobs, one scheme for one process and for many: the output is written as
finished parts, and a rerun continues.

`xenc score in.tsv -o scores.jsonl` writes `scores.jsonl.parts/` beside the output:
  manifest.json              what the job is: the input file's and the model's identity by
                             content, every setting that changes the output, and the number
                             of processes
  part-p00000-000000.jsonl   process 0's chunk 0, chunk 1, ... (each written atomically,
  part-p00000-000001.jsonl   atomic.atomic_file); in a run of N processes, process k writes
  part-p00001-000000.jsonl   part-p0000k-* for its own share of the input (shares.py)
  done-p00000.json           written when process k has finished its share: {"parts", "items"}
Killed at any point, the same command run again checks the manifest, skips the input items of
its finished parts (read, not scored), and continues with the first missing part. When every
process is done, the parts are assembled into the output atomically, process by process and
chunk by chunk (shares are contiguous, so that is input order), and the parts directory is
removed; with --output-parts they are kept, and `xenc merge-parts OUTPUT` assembles them later.
So the output equals an uninterrupted run's byte for byte: part k always holds chunk k's
results, and a chunk's results do not depend on what ran before it. A manifest that differs
(another input, model, setting or process count) is refused with the differing keys, or
discarded with --overwrite.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..atomic import atomic_file

MANIFEST = "manifest.json"
VERSION = 2  # 2: part-pPPPPP-KKKKKK names and done-pPPPPP.json for one process too


def parts_dir(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.name + ".parts")


def _diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k, "<absent>"), new.get(k, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += _diff(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {str(a)[:60]} -> {str(b)[:60]}")
    return out


def _read_json(path: Path):
    """A JSON file we wrote (atomically), or None: absent or unreadable means not ours."""
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, ValueError):
        return None


def _part_name(process: int, k: int, ext: str) -> str:
    return f"part-p{process:05d}-{k:06d}.{ext}"


class PartsJob:
    """Parts of one output written by `process` of `processes`. `identity`: JSON-able dict of
    everything the output depends on. Only process 0 creates or replaces the manifest; the others
    open theirs after it (cli/streamed.py orders that with multihost.raise_together)."""

    def __init__(self, output: str | Path, identity: dict, ext: str, *, overwrite: bool = False,
                 process: int = 0, processes: int = 1):
        self.output, self.dir, self.ext = Path(output), parts_dir(output), ext
        self.process, self.processes = process, processes
        manifest = {"version": VERSION, "processes": processes, **identity}
        path = self.dir / MANIFEST
        if process != 0:
            if _read_json(path) != manifest:
                raise ValueError(f"{path} does not match this process's job: is the output directory shared "
                                 "by all processes, and do they run the same command?")
        elif self.dir.is_dir():
            old = _read_json(path)
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
        return self.dir / _part_name(self.process, k, self.ext)

    def write_part(self, k: int, write) -> None:
        """write(f) fills part k (binary file); it appears complete or not at all."""
        with atomic_file(self.part(k), "wb") as f:
            write(f)
        self.done = max(self.done, k + 1)

    def complete(self, items: int) -> None:
        """This process has written all its parts (`items` results in them)."""
        with atomic_file(self.dir / f"done-p{self.process:05d}.json", "w", encoding="utf-8") as f:
            json.dump({"parts": self.done, "items": items}, f)

    def keep_or_discard(self) -> bool:
        """After a failed or interrupted run: True if finished parts remain for a rerun to resume;
        else the parts directory (a manifest alone) is removed, so that no later job on this
        output borrows a manifest nothing was written under (issue 29)."""
        if any(self.dir.glob("part-*")):
            return True
        shutil.rmtree(self.dir, ignore_errors=True)
        return False

    def discard(self) -> None:
        """After a failed or interrupted run that cannot be resumed (its input was stdin, which
        cannot be read again): the parts are of no use, so none are left behind."""
        shutil.rmtree(self.dir, ignore_errors=True)

    def assemble(self, assemble, target: str | Path | None = None) -> tuple[Path, int]:
        """Every process's parts -> the output (or `target`), then the parts are removed."""
        return _assemble(self.dir, self.processes, self.ext, assemble, Path(target or self.output))

    def finish(self, assemble, items: int) -> Path:
        """One process: complete() and assemble()."""
        self.complete(items)
        return self.assemble(assemble)[0]


def complete_parts(directory: Path, processes: int, ext: str) -> tuple[list[Path], int]:
    """(every process's parts in input order, results in them); an error naming the processes
    that have not finished their share."""
    parts, items, missing = [], 0, []
    for p in range(processes):
        done = _read_json(directory / f"done-p{p:05d}.json")
        files = [directory / _part_name(p, k, ext) for k in range(done["parts"])] if done else []
        if done is None or not all(f.is_file() for f in files):
            written = len(list(directory.glob(f"part-p{p:05d}-*.{ext}")))
            missing.append(f"process {p} ({written} part(s) written, share not finished)")
            continue
        parts += files
        items += int(done["items"])
    if missing:
        raise ValueError(f"{directory}: not every process has finished its share: {'; '.join(missing)}. Run the "
                         "same command again (all processes) to finish them")
    return parts, items


def _assemble(directory: Path, processes: int, ext: str, assemble, target: Path) -> tuple[Path, int]:
    parts, items = complete_parts(directory, processes, ext)
    with atomic_file(target, "wb") as f:
        assemble(parts, f)
    shutil.rmtree(directory, ignore_errors=True)
    return target, items


def merge(output: str | Path, target: str | Path | None = None) -> tuple[Path, int]:
    """`xenc merge-parts`: assemble the kept parts of OUTPUT (from --output-parts) into OUTPUT (or
    `target`), after checking every process finished. -> (file written, results)."""
    from .writers import part_format
    directory = parts_dir(output)
    manifest = _read_json(directory / MANIFEST)
    if manifest is None:
        raise FileNotFoundError(f"no parts to merge: {directory / MANIFEST} does not exist (give the --output "
                                "of the run that wrote them)")
    if manifest.get("version") != VERSION:
        raise ValueError(f"{directory} was written by another xenc_jax version (parts version "
                         f"{manifest.get('version')}, this one reads {VERSION}); run the job again")
    fmt = part_format(manifest["settings"]["output_format"])
    return _assemble(directory, int(manifest["processes"]), fmt.ext, fmt.assemble, Path(target or output))
