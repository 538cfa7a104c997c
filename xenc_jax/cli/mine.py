"""`xenc mine`: hard negatives for the (anchor, positive) rows of a JSON Lines or Parquet file,
mined over a corpus with a bi-encoder (optionally rescored by a cross-encoder teacher), written
as JSON Lines or Parquet rows in sentence-transformers' output formats.

The rows are those `xenc_jax.mine_hard_negatives` returns for the same rows, corpus and options
(tests/test_cli_mine.py). How the work is laid out (mining_stream.py, mining_core.py):
- the pairs file is read twice and never held: once for the plan (anchor ids by hash, each
  anchor's positives, 24 bytes per row), once for the anchors' texts, a chunk at a time;
- the corpus is embedded once into device blocks (cached in OUTPUT.parts/embeddings/, or in
  --cache-folder, so a resumed job does not embed it again);
- each chunk of --chunk-size anchors is embedded, searched, (rescored,) selected and written as
  one part of OUTPUT.parts/ (cli/jobs.py: atomic parts, a manifest of the inputs, models and
  settings); a killed job run again continues at the first missing part, and the assembled output
  equals an uninterrupted run's byte for byte. Random sampling draws from a stream per chunk
  (seeded by --seed and the chunk's index), so resuming does not change it either.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from dataclasses import asdict

from .io import (check_input, check_output, iter_pairs, iter_texts, json_text, pair_format, read_json_objects,
                 require_pyarrow)
from .score import ignore_config_keys_arg

ROW_FORMATS = ("triplet", "n-tuple", "n-tuple-scores", "labeled-pair", "labeled-list")


def register(sub) -> None:
    p = sub.add_parser("mine", help="mine hard negatives for (anchor, positive) rows with a bi-encoder "
                       "(sentence-transformers' mine_hard_negatives), optionally scored by a cross-encoder teacher")
    p.add_argument("--pairs", required=True, help="(anchor, positive) rows: JSON Lines objects (.jsonl) or Parquet")
    p.add_argument("--columns", default=None, metavar="ANCHOR,POSITIVE",
                   help="the anchor and positive keys/columns (default: the first two of the first row / schema)")
    p.add_argument("--corpus", default=None, help="texts to mine negatives from: one per line, JSON Lines (strings "
                   "or objects with --corpus-key) or Parquet (column --corpus-key); positives not in it join it. "
                   "Default: the positives themselves")
    p.add_argument("--corpus-format", choices=["text", "jsonl", "parquet"], default=None,
                   help="default: from the file name (.jsonl, .parquet; anything else: a text per line)")
    p.add_argument("--corpus-key", default="text", help="JSON key / Parquet column of the corpus text "
                   "(default: %(default)s; a BEIR corpus's title is not used); a .tsv corpus: its column number "
                   "(1-based), or its name with --corpus-header")
    p.add_argument("--corpus-header", action=argparse.BooleanOptionalAction, default=None,
                   help="a text or .tsv corpus: the first line names the columns (skipped). Default: a first line "
                        "of column names only (e.g. id<TAB>text) is refused; --no-corpus-header reads it as a text")
    p.add_argument("--model", default=None, help="bi-encoder (default: sentence-transformers/all-MiniLM-L6-v2, "
                   "its packaged copy offline)")
    p.add_argument("--rerank", default=None, metavar="CE",
                   help="cross-encoder teacher: rescore the candidates (it then picks the negatives, as ST's "
                        "cross_encoder=) and write its scores with --scores or --format n-tuple-scores")
    p.add_argument("--output", "-o", required=True, help="output file, written in resumable parts")
    p.add_argument("--output-format", choices=["jsonl", "parquet"], default=None,
                   help="default: from the output file name (.parquet), else jsonl")
    p.add_argument("--overwrite", action="store_true",
                   help="discard the finished parts of a different earlier job instead of refusing")
    _mining_args(p)
    g = p.add_argument_group("models and devices")
    g.add_argument("--max-seq-length", type=int, default=None, help="bi-encoder token limit (default: the model's)")
    g.add_argument("--rerank-max-length", type=int, default=None, help="teacher token limit (default: the model's)")
    g.add_argument("--batch-size", type=int, default=None, help="rows per batch (default: a token budget per bucket)")
    g.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="compute dtype")
    g.add_argument("--mesh", default=None, help="device mesh for both models and the corpus, e.g. 'auto'")
    g.add_argument("--chunk-size", type=int, default=16384, help="anchors per part (default: %(default)s)")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bars (default: on a terminal)")
    ignore_config_keys_arg(g, "the bi-encoder's or the --rerank model's")
    p.set_defaults(func=run_mine)


def _mining_args(p) -> None:
    """The options of mine_hard_negatives, under their names."""
    g = p.add_argument_group("mining (sentence-transformers' mine_hard_negatives options)")
    g.add_argument("--format", dest="rows_format", choices=ROW_FORMATS, default="triplet",
                   help="output_format (default: %(default)s)")
    g.add_argument("--scores", action="store_true", help="output_scores: scores instead of labels")
    g.add_argument("--num-negatives", type=int, default=3, help="default: %(default)s")
    g.add_argument("--range-min", type=int, default=0, help="skip this many top candidates (default: 0)")
    g.add_argument("--range-max", type=int, default=None, help="consider candidates up to this rank")
    g.add_argument("--max-score", type=float, default=None, help="drop candidates scoring above this")
    g.add_argument("--min-score", type=float, default=None, help="drop candidates scoring below this")
    g.add_argument("--absolute-margin", type=float, default=None,
                   help="drop candidates scoring above the anchor's lowest positive score minus this")
    g.add_argument("--relative-margin", type=float, default=None,
                   help="drop candidates scoring above (1 - this) x the anchor's lowest positive score")
    g.add_argument("--sampling-strategy", choices=["top", "random"], default="top",
                   help="the best num_negatives of what is left, or a random draw of them (default: top)")
    g.add_argument("--seed", type=int, default=0, help="random sampling's seed (default: %(default)s)")
    g.add_argument("--include-positives", action="store_true",
                   help="keep the positives among the candidates (n-tuple rows in rank order, as ST)")
    g.add_argument("--missing-positive", choices=["add", "error"], default="add",
                   help="a positive that is not in --corpus: joins it (ST's behaviour, the default) or is an error")
    g.add_argument("--query-prompt", default=None, help="text put before each anchor when embedding it")
    g.add_argument("--query-prompt-name", default=None, help="a prompt of the model's config (default: its 'query')")
    g.add_argument("--corpus-prompt", default=None, help="text put before each corpus text")
    g.add_argument("--corpus-prompt-name", default=None,
                   help="a prompt of the model's config (default: its 'document', 'passage' or 'corpus')")
    g.add_argument("--embedding-dtype", choices=["float32", "float16", "bfloat16"], default="float32",
                   help="precision the corpus embeddings are held in (default: %(default)s)")
    g.add_argument("--cache-folder", default=None, help="keep the corpus embeddings here (default: in the "
                   "output's parts directory, removed when the job is done)")


# ----------------------------------------------------------------------------- inputs

def _pair_columns(args) -> list[str]:
    """--columns, or the first two keys of the first JSON object / columns of the Parquet schema."""
    if args.columns:
        cols = [c.strip() for c in args.columns.split(",")]
        if len(cols) != 2 or not all(cols) or cols[0] == cols[1]:
            raise ValueError(f"--columns takes two different names ANCHOR,POSITIVE, got {args.columns!r}")
        return cols
    if args.pairs_format == "parquet":
        import pyarrow.parquet as pq
        names = pq.ParquetFile(args.pairs).schema_arrow.names
    else:
        first = next(read_json_objects(args.pairs, "{anchor, positive}"), None)
        names = [] if first is None else list(first[1])
    if len(names) < 2:
        raise ValueError(f"{args.pairs}: found columns {names}, need an anchor and a positive column; "
                         "name them with --columns ANCHOR,POSITIVE")
    return names[:2]


def _pair_rows(args, cols):
    """(where, anchor, positive) per row; a missing key or a value that is not a text names its row."""
    if args.pairs_format == "parquet":
        for i, (a, p) in enumerate(iter_pairs(args.pairs, "parquet", cols)):
            yield f"{args.pairs}: row {i}", a, p
        return
    for where, obj in read_json_objects(args.pairs, "{anchor, positive}"):
        missing = [c for c in cols if c not in obj]
        if missing:
            raise ValueError(f"{where}: no {missing[0]!r} key (the row has {sorted(obj)[:8]}); name the anchor and "
                             "positive keys with --columns ANCHOR,POSITIVE")
        yield where, json_text(obj[cols[0]], where, repr(cols[0])), json_text(obj[cols[1]], where, repr(cols[1]))


def _read_corpus(args) -> list | None:
    if args.corpus is None:
        return None
    corpus = list(iter_texts(args.corpus, args.corpus_format, key=args.corpus_key, header=args.corpus_header,
                             flags=("--corpus-key", "--corpus-header")))
    if not corpus:
        raise ValueError(f"{args.corpus}: the corpus has no texts (the file is empty or has only blank lines)")
    return corpus


def _check_args(args) -> None:
    """Before any file is read or model loaded."""
    for flag in ("chunk_size", "batch_size", "max_seq_length", "rerank_max_length"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
    if args.output in ("-", "") or args.pairs == "-" or args.corpus == "-":
        raise ValueError("xenc mine reads its pairs twice and writes its output in resumable parts: give files "
                         "for --pairs, --corpus and --output, not '-'")
    args.pairs_format = pair_format(args.pairs, None)
    if args.pairs_format not in ("jsonl", "parquet"):
        raise ValueError(f"--pairs {args.pairs}: give JSON Lines (.jsonl) or Parquet (.parquet) rows with an anchor "
                         "and a positive column")
    check_input(args.pairs)
    check_input(args.corpus)
    check_output(args.output, args.pairs, args.corpus)
    from .writers import output_format
    args.output_format = output_format(args.output, args.output_format, ("jsonl", "parquet"))
    if "parquet" in (args.pairs_format, args.output_format) or str(args.corpus).lower().endswith(".parquet"):
        require_pyarrow("Parquet input or output")


# ----------------------------------------------------------------------------- the job

def _options(args, plan):
    from ..mining_options import Options, is_filtered, resolve_output_format, resolve_range_max
    fmt, scores = resolve_output_format(args.rows_format, args.scores, args.include_positives)
    filtered = is_filtered(args.absolute_margin, args.relative_margin, args.max_score, args.min_score, args.rerank)
    range_max = resolve_range_max(args.range_min, args.range_max, args.num_negatives, plan.max_positives,
                                  len(plan.corpus), filtered)
    return Options(args.range_min, range_max, args.num_negatives, args.sampling_strategy, args.absolute_margin,
                   args.relative_margin, args.max_score, args.min_score, args.include_positives, fmt, scores)


def _load_models(args):
    from ..bi_encoder import BiEncoder
    from ..compile_cache import cli_compilation_cache
    from ..cross_encoder import CrossEncoder
    from .score import ignored_config_keys
    from .search import default_bi_encoder
    cache, mesh = cli_compilation_cache(), {"mesh": args.mesh} if args.mesh else {}
    ignore = ignored_config_keys(args)
    model = BiEncoder(args.model or default_bi_encoder(), max_seq_length=args.max_seq_length, dtype=args.dtype,
                      compilation_cache=cache, ignore_config_keys=ignore, **mesh)
    cross = None if args.rerank is None else CrossEncoder(args.rerank, max_length=args.rerank_max_length,
                                                          dtype=args.dtype, compilation_cache=cache,
                                                          ignore_config_keys=ignore, **mesh)
    return model, cross


def _identity(args, cols, model, cross, o, prompts) -> dict:
    """Everything the output depends on (the parts' manifest): inputs and models by content."""
    from pathlib import Path

    import jax

    import xenc_jax
    from ..identity import file_identity, model_identity
    corpus = None if args.corpus is None else {"path": str(Path(args.corpus).resolve()),
                                               "file": file_identity(args.corpus), "format": args.corpus_format,
                                               "key": args.corpus_key,
                                               # only when set: manifests of jobs without it stay as they were
                                               **({"header": True} if args.corpus_header else {})}
    return {"job": "mine",
            "input": {"path": str(Path(args.pairs).resolve()), "file": file_identity(args.pairs), "columns": cols},
            "corpus": corpus, "model": model_identity(model.model_dir),
            "rerank": None if cross is None else model_identity(cross.model_dir),
            "settings": {**asdict(o), "seed": args.seed, "prompts": list(prompts), "chunk_size": args.chunk_size,
                         "embedding_dtype": args.embedding_dtype, "missing_positive": args.missing_positive,
                         "batch_size": args.batch_size, "dtype": args.dtype, "max_seq_length": model.max_seq_length,
                         "rerank_max_length": None if cross is None else cross.max_length,
                         "output_format": args.output_format},
            "versions": {"xenc_jax": getattr(xenc_jax, "__version__", "?"), "jax": jax.__version__}}


def run_mine(args) -> int:
    from ..mining_options import check_arguments, resolve_prompt
    from ..mining_stream import scan_pairs
    from .jobs import PartsJob
    t0 = time.time()
    _check_args(args)
    cols = _pair_columns(args)
    plan = scan_pairs(_pair_rows(args, cols), _read_corpus(args), args.missing_positive, source=args.pairs)
    o = _options(args, plan)  # range_max vs the corpus, num_negatives: before any model loads
    if plan.added:
        print(f"xenc mine: {plan.added} positive(s) are not in the corpus (first: {plan.first_added}); they join "
              "it, as in sentence-transformers (--missing-positive error refuses instead)", file=sys.stderr)
    model, cross = _load_models(args)
    check_arguments(model, cross, sampling_strategy=args.sampling_strategy, missing_positive=args.missing_positive,
                    embedding_dtype=args.embedding_dtype)
    prompts = (resolve_prompt(model, args.query_prompt, args.query_prompt_name, ("query",)),
               resolve_prompt(model, args.corpus_prompt, args.corpus_prompt_name, ("document", "passage", "corpus")))
    job = PartsJob(args.output, _identity(args, cols, model, cross, o, prompts), args.output_format,
                   overwrite=args.overwrite)
    try:
        stats = _mine_parts(args, job, plan, o, model, cross, prompts, cols)
    except BaseException:
        args.resumable = job.keep_or_discard()
        raise
    from .writers import part_format
    job.finish(part_format(args.output_format).assemble, plan.anchors)
    _summary(args, plan, stats, time.time() - t0)
    _shortfall(stats, o)
    return 0


def _mine_parts(args, job, plan, o, model, cross, prompts, cols) -> Counter:
    """Embed the corpus (or read it from the cache), then mine and write each missing part."""
    import contextlib

    from .. import mining_rows
    from ..mining_core import Miner, chunk_rng
    from ..mining_embed import EMBEDDING_DTYPES, model_fingerprint, query_chunks
    from ..mining_options import search_chunk_sizes
    from ..mining_stream import anchor_chunks
    from ..progress import progress
    stats = Counter(anchors_before=min(job.done * args.chunk_size, plan.anchors))
    if job.done * args.chunk_size >= plan.anchors:
        return stats  # every part is written: only the assembly is left
    if job.done:
        print(f"xenc: resuming {args.output}: {job.done} finished part(s) of {args.chunk_size} anchors each in "
              f"{job.dir}", file=sys.stderr, flush=True)
    show = sys.stderr.isatty() if args.progress is None else args.progress
    block, query_block = search_chunk_sizes(None, None, args.chunk_size)
    cache = (str(args.cache_folder or job.dir / "embeddings"), model_fingerprint(model))
    miner = Miner(model, cross, o, plan.corpus, plan.pos_flat, max_positives=plan.max_positives, prompt=prompts[1],
                  dtype=EMBEDDING_DTYPES[args.embedding_dtype], batch_size=args.batch_size, cache=cache,
                  block_size=block, query_chunk_size=query_block, mesh=None, axis="data", verbose=show, stats=stats)
    bar = progress(None, total=plan.anchors, desc="mining", show=show, unit="anchor")
    bar.update(stats["anchors_before"])
    write = _part_writer(args.output_format, o, cols)
    with contextlib.ExitStack() as stack:
        stack.callback(bar.close)
        anchors = (a for _, a, _ in _pair_rows(args, cols))
        for k, _, queries, positive_ids, query_corpus in anchor_chunks(plan, anchors, args.chunk_size,
                                                                       o.include_positives):
            if k < job.done:
                continue  # a finished part: its anchors are read, not mined
            q = next(query_chunks(model, queries, chunk=len(queries), prompt=prompts[0], batch_size=args.batch_size,
                                  cache=None, stack=stack, verbose=False))
            miner.lap("embed_queries")
            r = miner.mine(q, queries, positive_ids, query_corpus, chunk_rng(args.seed, k))
            columns, _ = mining_rows.build(o.output_format, o.output_scores, cols[0], cols[1], queries, plan.corpus,
                                           positive_ids, r.pos_scores, r.neg_ids, r.neg_scores, len(queries))
            job.write_part(k, lambda f, columns=columns: write(columns, f))
            miner.lap("rows")
            stats["anchors_now"] += len(queries)
            stats["rows_now"] += len(next(iter(columns.values())))
            stats["short_anchors"] += int((r.neg_scores == float("-inf")).any(1).sum())  # fewer than asked
            stats["rank_sum"] += int(r.ranks.sum())
            stats["ranked_first"] += int((r.ranks == 1).sum())
            bar.update(len(queries))
    stats.update({f"skipped:{name}": n for name, n in miner.skipped.items()})  # what each filter removed
    return stats


def _part_writer(fmt: str, o, cols):
    """write(columns {name: list}, binary file): one part as JSON Lines rows, or a Parquet table
    with a fixed schema (every part the same, an empty one too, so that the parts concatenate)."""
    if fmt == "jsonl":
        def write(columns, f):
            names = list(columns)
            f.write("".join(json.dumps(dict(zip(names, row)), ensure_ascii=False) + "\n"
                            for row in zip(*columns.values())).encode("utf-8"))
        return write
    import pyarrow as pa
    import pyarrow.parquet as pq
    text, score, scores = pa.string(), pa.float32(), pa.list_(pa.float32())
    fields = [(cols[0], text)]
    if o.output_format == "triplet":
        fields += [(cols[1], text), ("negative", text)] + ([("scores", scores)] if o.output_scores else [])
    elif o.output_format == "n-tuple":
        fields += [(cols[1], text)] + [(f"negative_{k + 1}", text) for k in range(o.num_negatives)]
        fields += [("scores", scores)] if o.output_scores else []
    elif o.output_format == "labeled-pair":
        fields += [(cols[1], text), ("score", score) if o.output_scores else ("label", pa.int64())]
    else:
        fields += [(cols[1], pa.list_(text)),
                   ("scores", scores) if o.output_scores else ("labels", pa.list_(pa.int64()))]
    schema = pa.schema(fields)

    def write(columns, f):
        pq.write_table(pa.table({name: columns[name] for name in schema.names}, schema=schema), f)
    return write


def _shortfall(stats: Counter, o) -> None:
    """Anchors mined now with fewer negatives than --num-negatives (0 output rows included): which
    filter removed the candidates and which flag loosens it (a silent empty file looked like a bug)."""
    short, now = stats["short_anchors"], stats["anchors_now"]
    if not short and (stats["rows_now"] or not now):
        return
    from ..mining_rows import shortfall_hint
    skipped = Counter({k.split(":", 1)[1]: v for k, v in stats.items() if k.startswith("skipped:")})
    print(f"xenc mine: warning: {short} of {now} anchors got fewer than {o.num_negatives} negative(s) "
          f"({stats['rows_now']} output rows). "
          + shortfall_hint(skipped, o, flag=lambda name: "--" + name.replace("_", "-")),
          file=sys.stderr, flush=True)


def _summary(args, plan, stats: Counter, seconds: float) -> None:
    phases = ", ".join(f"{'writing rows' if name == 'rows' else name} {stats[name]:.1f}s"
                       for name in ("embed_corpus", "embed_queries", "search", "rescore", "select", "rows")
                       if stats[name])
    now = stats["anchors_now"]
    ranks = (f"; hardest positive ranked first for {stats['ranked_first'] / now:.1%} of them, mean rank "
             f"{stats['rank_sum'] / now:.1f}" if now else "")
    before = f", {stats['anchors_before']} anchors from finished parts" if stats["anchors_before"] else ""
    # "rows" alone named both the input's (anchor, positive) rows and the output's rows
    print(f"xenc mine: {plan.rows} input pairs ({plan.anchors} distinct anchors) over {len(plan.corpus)} corpus "
          f"texts in {seconds:.1f}s: {now} anchors mined now into {stats['rows_now']} output rows ({args.rows_format}"
          f"{'; ' + phases if phases else ''}){before}{ranks} -> {args.output}", file=sys.stderr, flush=True)
