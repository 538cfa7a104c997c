"""The streamed CLI job shared by `xenc score` and `xenc encode`: read the input one chunk at a
time, score it (the library tokenizes the next chunk while the device runs this one), write each
chunk's output in the background, in resumable parts when the output is a file (jobs.py).
Progress: a bar with items/s and an ETA (the total estimated from the bytes read so far when
the input is a file), off when stderr is not a terminal; always a one-line summary at the end.
"""
from __future__ import annotations

import itertools
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .jobs import PartsJob, concat


def output_format(output: str | None, fmt: str | None, allowed=("jsonl", "tsv", "parquet")) -> str:
    if fmt:
        return fmt
    name = str(output or "")
    for ext, f in ((".parquet", "parquet"), (".tsv", "tsv"), (".npy", "npy")):
        if name.endswith(ext) and f in allowed:
            return f
    return allowed[0]


# ----------------------------------------------------------------------------- score rows

def score_rows_text(scores: np.ndarray, start: int, fmt: str) -> str:
    """JSON Lines {"index", "score"} or TSV (the scores only) for rows start, start+1, ..."""
    out = []
    for i, s in enumerate(scores, start):
        if fmt == "tsv":
            out.append(f"{float(s):.7g}" if np.ndim(s) == 0 else "\t".join(f"{float(x):.7g}" for x in s))
        else:
            score = float(s) if np.ndim(s) == 0 else [float(x) for x in s]
            out.append(json.dumps({"index": i, "score": score}, ensure_ascii=False))
    return "".join(x + "\n" for x in out)


def _pa():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError("Parquet output needs pyarrow: pip install 'xenc_jax[parquet]'") from None
    return pa, pq


def _score_table(scores: np.ndarray, start: int):
    pa, _ = _pa()
    scores = np.asarray(scores, np.float32)
    index = pa.array(np.arange(start, start + len(scores), dtype=np.int64))
    if scores.ndim == 1:
        col = pa.array(scores)
    else:
        col = pa.FixedSizeListArray.from_arrays(pa.array(scores.reshape(-1)), scores.shape[1])
    return pa.table({"index": index, "score": col})


def write_scores_parquet(scores: np.ndarray, start: int, f) -> None:
    _, pq = _pa()
    pq.write_table(_score_table(scores, start), f)


def _embedding_table(emb: np.ndarray, start: int):
    pa, _ = _pa()
    emb = np.asarray(emb, np.float32)
    return pa.table({"index": pa.array(np.arange(start, start + len(emb), dtype=np.int64)),
                     "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), emb.shape[1])})


def concat_parquet(parts: list[Path], f) -> None:
    """One Parquet file from part files (a row group per part; one part in memory at a time)."""
    _, pq = _pa()
    writer = None
    try:
        for p in parts:
            table = pq.read_table(p)
            if writer is None:
                writer = pq.ParquetWriter(f, table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()


def concat_npy(parts: list[Path], f) -> None:
    """One .npy [N, D] float32 from part .npy files, streamed (never all in memory)."""
    shapes = [np.load(p, mmap_mode="r").shape for p in parts]
    dim = shapes[0][1] if shapes else 0
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
              "shape": (sum(s[0] for s in shapes), dim)}
    np.lib.format.write_array_header_1_0(f, header)
    for p in parts:
        f.write(np.ascontiguousarray(np.load(p, mmap_mode="r"), np.float32).tobytes())


def _encoder(fmt: str):
    """(part file extension, write(result, start, f), assemble(parts, f)) for a format."""
    if fmt in ("jsonl", "tsv"):
        return fmt, lambda r, start, f: f.write(score_rows_text(r, start, fmt).encode("utf-8")), concat
    if fmt == "parquet":
        return "parquet", lambda r, start, f: _pa()[1].write_table(_score_table(r, start), f), concat_parquet
    if fmt == "npy":
        return "npy", lambda r, start, f: np.save(f, np.asarray(r, np.float32)), concat_npy
    if fmt == "embeddings-parquet":
        return "parquet", lambda r, start, f: _pa()[1].write_table(_embedding_table(r, start), f), concat_parquet
    raise ValueError(f"unknown output format {fmt!r}")


# ----------------------------------------------------------------------------- progress

class Progress:
    def __init__(self, counter, show: bool | None, unit: str, initial: int = 0):
        self.counter, self.bar = counter, None
        if show is None:
            show = sys.stderr.isatty()
        if show:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=None, initial=initial, unit=unit, unit_scale=True, dynamic_ncols=True)

    def update(self, n: int, items_read: int) -> None:
        if self.bar is None:
            return
        c = self.counter
        if c.total and c.read:  # items so far x bytes in the file / bytes read so far
            self.bar.total = max(int(items_read * c.total / c.read), self.bar.n + n)
        self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class _Counted:
    """Counts the items the reader has handed out (they run ahead of the scoring)."""

    def __init__(self, it):
        self.it, self.n = it, 0

    def __iter__(self):
        for x in self.it:
            self.n += 1
            yield x


# ----------------------------------------------------------------------------- the job

def job_identity(args, model, what: str, settings: dict) -> dict:
    """Everything the output depends on: input and model by content, settings, versions."""
    import jax

    import xenc_jax
    from ..identity import file_identity, model_identity
    return {"job": what, "input": {"path": str(Path(args.input).resolve()), "file": file_identity(args.input),
                                   "format": getattr(args, "input_format", None),
                                   "columns": getattr(args, "columns", None), "key": getattr(args, "key", None)},
            "model": model_identity(model.model_dir),
            "settings": {**settings, "max_length": getattr(args, "max_length", None),
                         "max_seq_length": getattr(args, "max_seq_length", None), "batch_size": args.batch_size,
                         "dtype": args.dtype, "pack": args.pack, "chunk_size": model.chunk_size,
                         "output_format": args.output_format, "layout": layout(model)},
            "versions": {"xenc_jax": getattr(xenc_jax, "__version__", "?"), "jax": jax.__version__}}


def layout(model) -> dict:
    """What decides which inputs share a batch row and how it is computed: a rerun must score
    the remaining parts the same way, or their last bits could differ (the stream count does not
    change results)."""
    b = model.buckets
    return {"pack": b.pack, "pack_length": b.pack_length, "tokens_per_batch": b.tokens_per_batch,
            "compute_dtype": str(model.dtype)}


TUNE_INPUT_BYTES = 8 << 20  # ~20k MS MARCO pairs: tuning (~10-20 s, once per machine) pays for itself


def _without_layout(identity: dict) -> dict:
    return {**identity, "settings": {k: v for k, v in identity.get("settings", {}).items() if k != "layout"}}


def choose_layout(args, model, identity: dict | None = None) -> None:
    """Before a streamed job: resume with the layout its finished parts were scored with (from
    their manifest), or tune for this machine when the input is large (autotune.py). Only parts
    of this same job (`identity`, the layout aside) are resumed: another job's manifest, or one
    with no finished part, is not this job's layout."""
    if not model._autotune:
        return
    from ..autotune import Choice, Tuning
    from .jobs import MANIFEST, VERSION
    out = Path(args.output) if args.output not in (None, "-") else None
    parts = out.with_name(out.name + ".parts") if out is not None else None
    manifest = parts / MANIFEST if parts is not None else None
    if (manifest is not None and manifest.is_file() and not getattr(args, "overwrite", False)
            and identity is not None and any(parts.glob("part-*"))):
        try:
            found = json.loads(manifest.read_text(encoding="utf-8"))
            old = found["settings"]["layout"]
            if _without_layout(found) == _without_layout({"version": VERSION, **identity}):
                model._apply_tuning(Tuning(Choice(old["pack_length"], old["tokens_per_batch"],
                                                  model._runner.streams, old["compute_dtype"]),
                                           "resumed", model.tuning.key))
                return
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass  # not a layout we wrote: the manifest check reports the difference
    if args.input not in (None, "-") and os.path.getsize(args.input) >= TUNE_INPUT_BYTES:
        model.autotune()


def stream_job(args, model, make_source, counter, *, what: str, settings: dict, score, run=None) -> int:
    """make_source(share) -> iterator of input items (share: None, or this process's part of the
    file in a multi-process run, see shares.py); score(items_iterable, chunk_size, stats) ->
    iterator of per-chunk results (arrays), filling stats["host_wait_s"]."""
    fmt = args.output_format
    ext, write, assemble = _encoder(fmt)
    to_stdout = args.output in (None, "-")
    if to_stdout and fmt not in ("jsonl", "tsv"):
        raise ValueError(f"{fmt} output is binary: give --output FILE")
    multi = run is not None and run.count > 1
    if multi and (to_stdout or args.input in (None, "-")):
        raise ValueError("a multi-process streamed job reads an input file and writes --output FILE (every process "
                         "reads only its share of the file)")
    t0 = time.time()
    if multi:
        job, share = _open_multi(args, model, what, settings, ext, run)
        first = share.first_item
    else:
        job, share, first = (None if to_stdout else _open_job(args, model, what, settings, ext)), None, 0
    try:
        n, skipped, t_scoring, wait = _score_parts(args, model, job, make_source(share), counter, what, score,
                                                   write, first)
        if not multi and n == 0 and args.input not in (None, "-"):
            raise ValueError(f"{args.input}: no {what} found (the file is empty or has only blank lines)")
    except BaseException:
        if job is not None and not multi:  # no manifest without parts left behind (issue 29)
            args.resumable = job.keep_or_discard() and args.input not in (None, "-")
        raise
    if multi:
        return _finish_multi(args, job, assemble, run, model, what, n - first, skipped, time.time() - t0)
    if job is not None:
        job.finish(assemble)
    seconds = time.time() - t0
    info = ", ".join(x for x in (rate_text(n - skipped, seconds, what, " scored now"),
                                 f"{skipped} from finished parts" if skipped else "",
                                 f"{model.compile_count} compiles; streaming {t_scoring:.1f}s{wait}; "
                                 f"{layout_line(model)}") if x)
    print(f"xenc {what}: {n} in {seconds:.1f}s ({info}){'' if to_stdout else ' -> ' + str(args.output)}",
          file=sys.stderr, flush=True)
    return 0


def rate_text(count: int, seconds: float, unit: str, suffix: str = "") -> str:
    """"123 pairs/s" for a summary line; "" where no rate is meaningful (nothing scored, or under
    a second: compiling and loading dominate, and 1 pair in 3.2 s is no throughput)."""
    if count <= 0 or seconds < 1.0:
        return ""
    r = count / seconds
    return f"{r:.0f} {unit}/s{suffix}" if r >= 100 else f"{r:.3g} {unit}/s{suffix}"


def _open_multi(args, model, what, settings, ext, run):
    from ..multihost import raise_together
    from .io import _fmt
    from .shares import my_share
    share = my_share(args.input, _fmt(args.input, getattr(args, "input_format", None)), run.index, run.count)
    identity = {**job_identity(args, model, what, settings), "processes": run.count}
    # process 0 checks (or replaces) the manifest first; then the others join it
    job = raise_together(lambda: PartsJob(args.output, identity, ext, overwrite=args.overwrite, process=0)
                         if run.index == 0 else None, what="opening the output parts")
    job = raise_together(lambda: job or PartsJob(args.output, identity, ext, process=run.index),
                         what="opening the output parts")
    return job, share


def _open_job(args, model, what, settings, ext) -> PartsJob:
    """The output's parts: this job's finished ones to resume, or a fresh directory."""
    if args.input in (None, "-"):  # stdin cannot be read again: parts of this run only
        import uuid
        choose_layout(args, model)
        return PartsJob(args.output, {"job": what, "input": "stdin", "run": uuid.uuid4().hex}, ext, overwrite=True)
    identity = job_identity(args, model, what, settings)
    choose_layout(args, model, identity)
    identity["settings"]["layout"] = layout(model)  # what choose_layout chose
    job = PartsJob(args.output, identity, ext, overwrite=args.overwrite)
    if job.done:
        print(f"xenc: resuming {args.output}: {job.done} finished part(s) of {model.chunk_size} {what} each in "
              f"{job.dir}", file=sys.stderr, flush=True)
    return job


def _score_parts(args, model, job, source, counter, what, score, write, first):
    """Skip the items of the finished parts, score the rest chunk by chunk, write each chunk's
    result (a part, or stdout) in the background. -> (n, skipped, streaming seconds, wait text)."""
    chunk, done, stats, fmt = model.chunk_size, 0 if job is None else job.done, {}, args.output_format
    items = _Counted(source)
    it = iter(items)
    skipped = sum(1 for _ in itertools.islice(it, done * chunk))  # read, not scored
    if skipped != done * chunk:
        raise ValueError(f"{args.input} has {skipped} {what}, fewer than the {done} finished parts hold; "
                         "the input changed: use --overwrite")
    bar = Progress(counter, args.progress, unit=what[:-1] if what.endswith("s") else what, initial=skipped)
    n = first + skipped
    pool = ThreadPoolExecutor(1, thread_name_prefix="xenc-writer")  # writes chunk k-1 while k is scored
    pending = None
    try:
        t_scoring = time.time()
        for k, result in enumerate(score(it, chunk, stats), start=done):
            start, n = n, n + len(result)

            def out(result=result, start=start, k=k):
                if job is not None:
                    job.write_part(k, lambda f: write(result, start, f))
                else:
                    sys.stdout.write(score_rows_text(result, start, fmt))
                    sys.stdout.flush()
            if pending is not None:
                pending.result()  # at most one write in flight (bounded memory), errors surface here
            pending = pool.submit(out)
            bar.update(len(result), items.n)
        if pending is not None:
            pending.result()
    finally:
        pool.shutdown(wait=True)
        bar.close()
    t_scoring = time.time() - t_scoring
    wait = f", device waited on the host {100 * stats.get('host_wait_s', 0.0) / max(t_scoring, 1e-9):.0f}% of it"
    return n, skipped, t_scoring, wait


def layout_line(model) -> str:
    t = model.tuning
    return f"layout: {t.choice.text()} ({'autotune: ' + t.source if t.source != 'default' else 'default'})"


def _finish_multi(args, job, assemble, run, model, what, mine, skipped, seconds) -> int:
    """All parts written (a barrier), then process 0 assembles them in input order."""
    from jax.experimental import multihost_utils

    from ..multihost import raise_together
    multihost_utils.sync_global_devices("xenc-stream-parts-written")
    raise_together(lambda: job.finish(assemble, job.all_parts()) if run.index == 0 else None,
                   what="assembling the output")
    info = ", ".join(x for x in (rate_text(mine - skipped, seconds, what, " scored now"),
                                 f"{model.compile_count} compiles") if x)
    print(f"xenc {what}: process {run.index} of {run.count}: {mine} in {seconds:.1f}s ({info})"
          f"{' -> ' + str(args.output) if run.index == 0 else ''}", file=sys.stderr, flush=True)
    return 0
