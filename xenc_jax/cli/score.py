"""`xenc score` and `xenc rank`: the cross-encoder main job."""
from __future__ import annotations

import argparse

from . import distributed
from .io import (ByteCounter, check_first, check_input, check_output, iter_pairs, iter_queries, open_out, pair_columns,
                 pair_format, read_texts, require_pyarrow)
from .writers import concat, output_format, rows_text


def _model_args(p):
    p.add_argument("--model", default="cross-encoder/ms-marco-MiniLM-L6-v2",
                   help="local HF model directory or hub id (default: %(default)s)")
    p.add_argument("--max-length", type=int, default=None, help="token limit per pair (default: the model's)")
    p.add_argument("--batch-size", type=int, default=None, help="rows per batch (default: a token budget per bucket)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="compute dtype")
    p.add_argument("--pack", action=argparse.BooleanOptionalAction, default=None, help="pack several short pairs per row")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None, help="progress bar (default: on a terminal)")
    _allow_new_head_arg(p)
    ignore_config_keys_arg(p)


def ignore_config_keys_arg(p, models: str = "the model's") -> None:
    """--ignore-config-keys, the library's ignore_config_keys= (every command that loads a model)."""
    p.add_argument("--ignore-config-keys", default=None, metavar="K1,K2",
                   help=f"config.json attributes xenc_jax does not handle, which you checked do not change "
                        f"{models} math (loading refuses them otherwise: they could silently change the results)")


def ignored_config_keys(args) -> tuple[str, ...]:
    """--ignore-config-keys "a, b" -> ("a", "b")."""
    return tuple(k.strip() for k in (getattr(args, "ignore_config_keys", None) or "").split(",") if k.strip())


def _allow_new_head_arg(p):
    p.add_argument("--allow-new-head", action="store_true",
                   help="score a folder without a trained classification head with a new random head "
                        "(meaningless scores; default: refused)")


def _load(args, run=None):
    import dataclasses

    from ..compile_cache import cli_compilation_cache
    from ..runner import default_buckets
    from ..cross_encoder import CrossEncoder
    buckets = dataclasses.replace(default_buckets("pairs"), pack=bool(args.pack)) if args.pack is not None else None
    sharded = {} if run is None else {"mesh": run.mesh, "sharding": run.sharding}
    extra = {"chunk_size": args.chunk_size} if getattr(args, "chunk_size", None) else {}
    return CrossEncoder(args.model, max_length=args.max_length, dtype=args.dtype, buckets=buckets,
                        compilation_cache=cli_compilation_cache(), allow_new_head=args.allow_new_head,
                        ignore_config_keys=ignored_config_keys(args), **sharded, **extra)


def run_score(args) -> int:
    args.output_format = output_format(args.output, args.output_format)
    if args.chunk_size is not None and args.chunk_size < 1:
        raise ValueError(f"--chunk-size must be >= 1, got {args.chunk_size}")
    check_input(args.input)
    # before any model loads: the columns asked for, the optional Parquet dependency, the first row
    pair_columns(args.input, args.input_format, _columns(args), args.header)
    if pair_format(args.input, args.input_format) == "parquet":
        require_pyarrow("Parquet input")
    if args.output_format == "parquet":
        require_pyarrow("Parquet output")
    if args.input not in (None, "-"):  # stdin cannot be read twice
        check_first(iter_pairs(args.input, args.input_format, _columns(args), header=args.header))
    run = distributed.Run(args)  # joins a multi-process run first, before any device is used
    if args.header and run.count > 1:  # each process's share would count the header line as a pair
        raise ValueError("--header with several processes is not supported: remove the header line first "
                         "(tail -n +2 IN > OUT) and name the columns by number")
    from .streamed import check_destination, stream_job
    check_destination(args, run.count)
    model = _load(args, run)
    counter = ByteCounter(args.input)
    return stream_job(args, model, lambda share: iter_pairs(args.input, args.input_format, _columns(args), counter,
                                                            share, args.header), counter, what="pairs",
                      settings={"raw": args.raw, "softmax": args.softmax}, run=run,
                      score=lambda items, chunk, stats: model.predict_stream(
                          items, chunk_size=chunk, batch_size=args.batch_size, show_progress_bar=False,
                          activation_fn="identity" if args.raw else None, apply_softmax=args.softmax, stats=stats))


def _columns(args):
    return [c.strip() for c in args.columns.split(",")] if getattr(args, "columns", None) else None


def run_rank(args) -> int:
    args.output_format = output_format(args.output, args.output_format, ("jsonl", "tsv", "csv"))
    if (args.query is None) == (args.input is None):
        raise ValueError("give either --query with --documents, or --input with one JSON object per query "
                         '({"query": ..., "documents": [...]})')
    if args.top_k is not None and args.top_k < 1:
        raise ValueError(f"--top-k must be >= 1, got {args.top_k} (leave it out for all documents)")
    if args.query is not None:
        return _rank_one(args)
    return _rank_stream(args)


def _rank_one(args) -> int:
    """`xenc rank --query Q --documents FILE`: every line of FILE is one document, tabs included
    (JSON Lines / Parquet: the 'text' field)."""
    import sys
    import time

    from .streamed import rate_text
    if not args.documents:
        raise ValueError("--query needs --documents FILE (one document per line, or JSON Lines with 'text')")
    fmt = pair_format(args.documents, None)
    if fmt == "parquet":
        require_pyarrow("Parquet input")
    check_output(args.output, args.documents)
    docs = read_texts(args.documents, fmt if fmt != "tsv" else "text")
    if not docs:
        raise ValueError(f"no documents found in {args.documents} (the file is empty or has only blank lines)")
    t0 = time.time()
    model = _load(args)
    ranked = model.rank_many([args.query], [docs], top_k=args.top_k, return_documents=True,
                             batch_size=args.batch_size, show_progress_bar=args.progress)
    with open_out(args.output) as out:
        out.write(_rank_rows(["0"], ranked, args.output_format, header=True))
    seconds = time.time() - t0
    info = ", ".join(x for x in (rate_text(len(docs), seconds, "pairs"), f"{model.compile_count} compiles") if x)
    print(f"xenc rank: 1 query, {len(docs)} documents in {seconds:.1f}s ({info})"
          f"{'' if args.output in (None, '-') else ' -> ' + str(args.output)}", file=sys.stderr, flush=True)
    return 0


def _rank_rows(qids, ranked, fmt: str, header: bool) -> str:
    rows = [{"qid": qid, "rank": r + 1, "corpus_id": h["corpus_id"], "score": h["score"], "text": h["text"]}
            for qid, hits in zip(qids, ranked) for r, h in enumerate(hits)]
    return rows_text(rows, fmt, ["qid", "rank", "corpus_id", "score", "text"], header=header)


def _query_chunks(items, pairs_per_chunk: int):
    """Whole queries, cut once a chunk holds pairs_per_chunk pairs (depends on the input alone)."""
    chunk, pairs = [], 0
    for it in items:
        chunk.append(it)
        pairs += len(it[2])
        if pairs >= pairs_per_chunk:
            yield chunk
            chunk, pairs = [], 0
    if chunk:
        yield chunk


def _rank_stream(args) -> int:
    """`xenc rank --input`: queries read and ranked a chunk at a time, written in resumable parts."""
    import sys
    import time

    from ..streaming import prefetch
    from .jobs import PartsJob
    from .streamed import job_identity, rate_text
    fmt = args.output_format
    check_input(args.input)
    check_output(args.output, args.input)
    # a bad first query before the model loads; not stdin: it cannot be read twice (the job would
    # lose its first query and renumber the qids)
    if args.input != "-":
        check_first(iter_queries(args.input))
    model = _load(args)
    t0 = time.time()
    chunks = prefetch(_query_chunks(iter_queries(args.input), model.chunk_size), lambda c: c)  # reads ahead
    job = None
    queries = pairs = 0
    try:
        if args.output not in (None, "-") and args.input != "-":   # stdin cannot be read again: no parts
            args.output_format = fmt
            job = PartsJob(args.output, job_identity(args, model, "queries", {"top_k": args.top_k}), fmt,
                           overwrite=args.overwrite)
        with (open_out(args.output) if job is None else _nothing()) as out:
            for k, chunk in enumerate(chunks):
                queries += len(chunk)
                if job is not None and k < job.done:
                    continue  # finished part: read, not scored
                pairs += sum(len(d) for _, _, d in chunk)
                ranked = model.rank_many([q for _, q, _ in chunk], [d for _, _, d in chunk], top_k=args.top_k,
                                         return_documents=True, batch_size=args.batch_size, show_progress_bar=False)
                text = _rank_rows([qid for qid, _, _ in chunk], ranked, fmt, header=k == 0)
                if job is None:
                    out.write(text)
                else:
                    job.write_part(k, lambda f: f.write(text.encode("utf-8")))
        if queries == 0:
            raise ValueError(f"{args.input}: no queries found (the file is empty or has only blank lines)")
    except BaseException:
        if job is not None:
            args.resumable = job.keep_or_discard()
        raise
    if job is not None:
        job.finish(concat, queries)
    seconds = time.time() - t0
    info = ", ".join(x for x in (rate_text(pairs, seconds, "pairs"), f"{model.compile_count} compiles") if x)
    print(f"xenc rank: {queries} queries in {seconds:.1f}s ({info})"
          f"{'' if args.output in (None, '-') else ' -> ' + str(args.output)}", file=sys.stderr, flush=True)
    return 0


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def register(sub) -> None:
    p = sub.add_parser("score", help="score text pairs with a cross-encoder")
    p.add_argument("input", nargs="?", default="-",
                   help="TSV (text1<TAB>text2), JSONL or Parquet file; '-' = stdin (TSV). Blank lines are "
                        "skipped; read in chunks: memory does not grow with the input")
    p.add_argument("--input-format", choices=["tsv", "jsonl", "parquet"], default=None,
                   help="default: from the file name")
    p.add_argument("--columns", default=None, metavar="A,B",
                   help="the two texts: TSV column numbers, 1-based as in `cut -f` (default: a line must have "
                        "exactly two columns; more is an error, as a text holding a tab would be cut), or names "
                        "with --header; JSONL keys / Parquet columns (default: the first of query,document / "
                        "text1,text2 / sentence1,sentence2 / ...)")
    p.add_argument("--header", action=argparse.BooleanOptionalAction, default=None,
                   help="TSV: the first line names the columns (skipped; --columns may use the names). Default: "
                        "a first line of column names only (e.g. query<TAB>passage) is refused; --no-header "
                        "scores it as a pair")
    p.add_argument("--output", "-o", default="-",
                   help="output file (default: stdout). A file is written in resumable parts: after a crash "
                        "or kill, the same command continues where it stopped")
    p.add_argument("--output-format", choices=["jsonl", "tsv", "csv", "parquet"], default=None,
                   help="default: from the output file name (.parquet, .tsv, .csv), else jsonl. CSV: a header "
                        "(score), then a score per row")
    p.add_argument("--chunk-size", type=int, default=None, help="pairs per chunk (default: 8192)")
    p.add_argument("--overwrite", action="store_true",
                   help="discard the finished parts of a different earlier job instead of refusing")
    p.add_argument("--raw", action="store_true", help="raw logits, no activation")
    p.add_argument("--softmax", action="store_true", help="softmax over labels (num_labels > 1)")
    _model_args(p)
    distributed.add_args(p)
    p.set_defaults(func=run_score)

    p = sub.add_parser("rank", help="rank documents for one query, or candidates for many queries")
    p.add_argument("--query", help="the query text")
    p.add_argument("--documents", help="documents file: one document per line, the whole line (tabs included; "
                   "blank lines skipped), or JSON Lines (.jsonl) / Parquet with 'text'")
    p.add_argument("--input", help="JSONL, one {'query', 'documents'[, 'qid']} object per line; every query needs "
                   "at least one document. Output qids are strings: the given qid (a string or an integer), "
                   "else the query's 0-based index in the file")
    p.add_argument("--top-k", type=int, default=None, metavar="K",
                   help="write only the K best documents of each query (K >= 1; default: all, best first)")
    p.add_argument("--output", "-o", default="-", help="output file (default: stdout); with --input, written in "
                   "resumable parts")
    p.add_argument("--output-format", choices=["jsonl", "tsv", "csv"], default=None,
                   help="default: from the output file name (.tsv, .csv), else jsonl")
    p.add_argument("--chunk-size", type=int, default=None, help="pairs per chunk, whole queries (default: 8192)")
    p.add_argument("--overwrite", action="store_true",
                   help="discard the finished parts of a different earlier job instead of refusing")
    _model_args(p)
    p.set_defaults(func=run_rank)

    p = sub.add_parser("tune", help="measure and cache this CPU's fastest layout for a model (autotune), "
                       "or show the cached one")
    p.add_argument("--model", default="cross-encoder/ms-marco-MiniLM-L6-v2", help="model directory or hub id")
    p.add_argument("--kind", choices=["cross", "bi"], default="cross", help="cross-encoder (pairs) or "
                   "bi-encoder (texts)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="the compute dtype asked for")
    p.add_argument("--max-length", type=int, default=None, help="token limit (default: the model's)")
    p.add_argument("--show", action="store_true", help="print the cached tuning, measure nothing")
    p.add_argument("--force", action="store_true", help="measure again even if cached")
    _allow_new_head_arg(p)
    ignore_config_keys_arg(p)
    p.set_defaults(func=run_tune)


def run_tune(args) -> int:
    """Tune (or show) the layout `xenc score` / the library will use for this model on this CPU."""
    import os

    from ..autotune import cache_path, cpu_model, enabled
    if not enabled():
        raise ValueError("XENC_AUTOTUNE=0 turns the autotune and its cache off (nothing is tuned, and no "
                         "cached tuning is read or used); unset it to tune or --show")
    from ..compile_cache import cli_compilation_cache
    if args.show:  # the cache key is the model's shape: its config and tokenizer, no weights loaded
        from ..autotune import cached, folder_key
        found = cached(folder_key("pairs" if args.kind == "cross" else "texts", args.model, args.dtype,
                                  args.max_length, ignore_config_keys=ignored_config_keys(args)))
        print(found.describe() if found else f"no tuning cached for this model on this CPU ({cache_path()})")
    elif args.kind == "cross":
        from ..cross_encoder import CrossEncoder
        print(CrossEncoder(args.model, max_length=args.max_length, dtype=args.dtype,
                           allow_new_head=args.allow_new_head, ignore_config_keys=ignored_config_keys(args),
                           compilation_cache=cli_compilation_cache()).autotune(force=args.force).describe())
    else:
        from ..bi_encoder import BiEncoder
        print(BiEncoder(args.model, max_seq_length=args.max_length, dtype=args.dtype,
                        ignore_config_keys=ignored_config_keys(args),
                        compilation_cache=cli_compilation_cache()).autotune(force=args.force).describe())
    print(f"CPU: {' '.join(cpu_model())}, {os.cpu_count()} cores; cache: {cache_path()}")
    return 0
