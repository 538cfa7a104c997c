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

from .jobs import PartsJob
from .writers import part_format, score_rows_text

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
                                   "columns": getattr(args, "columns", None), "key": getattr(args, "key", None),
                                   # only when set: manifests of jobs without a header stay as they were
                                   **({"header": True} if getattr(args, "header", None) else {})},
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
            if _without_layout(found) == _without_layout({"version": VERSION, "processes": 1, **identity}):
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
    fmt = part_format(args.output_format)
    index, count = (0, 1) if run is None else (run.index, run.count)
    check_destination(args, count)
    t0 = time.time()
    job, share = _open_job(args, model, what, settings, fmt.ext, index, count)
    first = 0 if share is None else share.first_item
    try:
        n, skipped, t_scoring, wait = _score_parts(args, model, job, make_source(share), counter, what, score,
                                                   fmt.write, first)
        if count == 1 and n == 0 and args.input not in (None, "-"):
            raise ValueError(f"{args.input}: no {what} found (the file is empty or has only blank lines)")
    except BaseException:
        if job is not None and count == 1 and args.input in (None, "-"):
            job.discard()  # stdin cannot be read again: its parts could never be resumed
        elif job is not None and count == 1:  # no manifest without parts left behind (issue 29)
            args.resumable = job.keep_or_discard()
        raise
    where = _finish(args, job, fmt, index, count, n - first)
    seconds = time.time() - t0
    if count > 1:
        info = ", ".join(x for x in (rate_text(n - first - skipped, seconds, what, " scored now"),
                                     f"{model.compile_count} compiles") if x)
        print(f"xenc {what}: process {index} of {count}: {n - first} in {seconds:.1f}s ({info}){where}",
              file=sys.stderr, flush=True)
        return 0
    info = ", ".join(x for x in (rate_text(n - skipped, seconds, what, " scored now"),
                                 f"{skipped} from finished parts" if skipped else "",
                                 f"{model.compile_count} compiles; streaming {t_scoring:.1f}s{wait}; "
                                 f"{layout_line(model)}") if x)
    print(f"xenc {what}: {n} in {seconds:.1f}s ({info}){where}", file=sys.stderr, flush=True)
    return 0


def check_destination(args, count: int) -> None:
    """Before any model loads: where the output can go with `count` processes."""
    from .io import check_output
    check_output(args.output, args.input)
    to_stdout = args.output in (None, "-")
    if to_stdout and args.output_format not in ("jsonl", "tsv", "csv"):
        raise ValueError(f"{args.output_format} output is binary: give --output FILE")
    if to_stdout and getattr(args, "output_parts", False):
        raise ValueError("--output-parts keeps the parts of --output FILE: give --output FILE")
    if count > 1 and (to_stdout or args.input in (None, "-")):
        raise ValueError("a multi-process job reads an input file and writes --output FILE, both on a filesystem "
                         "every process sees (each process reads only its share of the file, and writes its "
                         "own parts); stdin and stdout cannot be shared: save the input to a file first")


def rate_text(count: int, seconds: float, unit: str, suffix: str = "") -> str:
    """"123 pairs/s" for a summary line; "" where no rate is meaningful (nothing scored, or under
    a second: compiling and loading dominate, and 1 pair in 3.2 s is no throughput)."""
    if count <= 0 or seconds < 1.0:
        return ""
    r = count / seconds
    return f"{r:.0f} {unit}/s{suffix}" if r >= 100 else f"{r:.3g} {unit}/s{suffix}"


def _open_job(args, model, what, settings, ext, index: int, count: int):
    """-> (the output's parts: this job's finished ones to resume, or a fresh directory; None for
    stdout), (this process's share of the input in a multi-process job, else None)."""
    if count > 1:
        return _open_shared_job(args, model, what, settings, ext, index, count)
    if args.output in (None, "-"):
        return None, None
    if args.input in (None, "-"):  # stdin cannot be read again: parts of this run only
        import uuid
        choose_layout(args, model)
        identity = {"job": what, "input": "stdin", "run": uuid.uuid4().hex,
                    "settings": {"output_format": args.output_format}}
        return PartsJob(args.output, identity, ext, overwrite=True), None
    identity = job_identity(args, model, what, settings)
    choose_layout(args, model, identity)
    identity["settings"]["layout"] = layout(model)  # what choose_layout chose
    job = PartsJob(args.output, identity, ext, overwrite=args.overwrite)
    if job.done:
        print(f"xenc: resuming {args.output}: {job.done} finished part(s) of {model.chunk_size} {what} each in "
              f"{job.dir}", file=sys.stderr, flush=True)
    return job, None


def _open_shared_job(args, model, what, settings, ext, index: int, count: int):
    """Several processes: each finds its share of the file (a collective), then process 0 checks
    (or replaces) the manifest, and then the others join it."""
    from ..multihost import raise_together
    from .io import pair_format
    from .shares import my_share
    share = my_share(args.input, pair_format(args.input, getattr(args, "input_format", None)), index, count)
    identity = job_identity(args, model, what, settings)
    job = raise_together(lambda: PartsJob(args.output, identity, ext, overwrite=args.overwrite, processes=count)
                         if index == 0 else None, what="opening the output parts")
    job = raise_together(lambda: job or PartsJob(args.output, identity, ext, process=index, processes=count),
                         what="opening the output parts")
    return job, share


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


def _finish(args, job, fmt, index: int, count: int, items: int) -> str:
    """This process's parts are complete; once every process's are (a barrier), process 0
    assembles them in input order, or with --output-parts leaves them for `xenc merge-parts`.
    -> where the output went, for the summary line."""
    if job is None:
        return ""
    from ..multihost import raise_together
    job.complete(items)
    if count > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices("xenc-stream-parts-written")
    if getattr(args, "output_parts", False):
        return f" -> {job.dir} (kept; assemble with: xenc merge-parts {args.output})"
    raise_together(lambda: job.assemble(fmt.assemble) if index == 0 else None, what="assembling the output")
    return f" -> {args.output}" if index == 0 else ""
