"""LLM (causal-LM) reranker scoring: sentence-transformers 6.x vs xenc_jax on a Qwen3-0.6B-shaped
random reranker, same pairs, same weights, one process, medians over repeats (issue 15).

    python scripts/bench_llm_reranker.py                       # CPU: 4 layers, 256 pairs, fp32 + bf16 (~9 min on 2 cores)
    python scripts/bench_llm_reranker.py --pairs 16 --layers 1 --repeats 1    # smoke run
    python scripts/bench_llm_reranker.py --device gpu          # GPU: 28 layers, ours bf16 vs ST bf16 on CUDA
                                                               # (= --pairs 2048 --layers 28 --variants bf16,bf16p --st-dtype bfloat16)

The model is Qwen3ForCausalLM with Qwen3-0.6B's shapes (hidden 1024, 16 query / 8 kv heads of
128, MLP 3072, rope theta 1e6, tied embeddings) but only --layers decoder layers, so a 2-core
CPU gets through it; --layers 28 is the real depth. Weights are HF's seeded initialisation
(std 0.02): realistic magnitudes, so a raw-logit difference says something about rounding.
The tokenizer is the test suite's small BPE with the Qwen3-Reranker chat template
(tests/tiny_llm.py); real text splits into more tokens with it than with Qwen's 151k vocab,
so pairs are longer than with the real model (the mean is printed). ST loads the folder as a
Transformer(text-generation) + LogitScore(yes, no) CrossEncoder with its default attention
(sdpa); ours is xenc_jax.CrossEncoder on the ST folder with the library's default buckets.

Pairs are real MS MARCO queries x passages (../shared/data/msmarco-dl19-subset, or
$XENC_DATA_DIR). Scores are compared as raw logits (activation identity, logit(yes) -
logit(no)): stricter than the default sigmoid, which flattens differences. Variants of ours:
fp32; bf16 (dtype="bfloat16": bf16 compute, fp32 params, the library's meaning of dtype);
bf16p (dtype and param_dtype bfloat16, like ST's bf16 weights). Also printed: host-side
formatting + tokenizing time of both libraries, since an LLM reranker's chat template is
rendered per pair on the host.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))   # tiny_llm.py: the test tokenizer and config builder

from bench_cross_encoder import load_pairs, timed_run  # noqa: E402
from machine import cpu_description  # noqa: E402



def qwen3_06b() -> dict:
    """Qwen3-0.6B's config.json (the qwen3 family's BASE preset), minus the depth (--layers), the
    vocabulary and the special ids (the test tokenizer's)."""
    from xenc_jax.hf import registry
    return {k: v for k, v in registry.family("qwen3").base.items()
            if k not in ("num_hidden_layers", "vocab_size", "bos_token_id", "eos_token_id")}

VARIANTS = {"fp32": ("float32", "float32"), "bf16": ("bfloat16", "float32"), "bf16p": ("bfloat16", "bfloat16")}


def build_reranker(path: Path, layers: int, max_length: int, seed: int = 0) -> Path:
    """HF Qwen3ForCausalLM + reranker tokenizer in path/hf, saved by ST as a CrossEncoder in path/st."""
    import torch
    import transformers as tf
    from sentence_transformers import CrossEncoder as STCrossEncoder
    from tiny_llm import llm_tokenizer, tiny_llm_config

    tok = llm_tokenizer(path / "hf", template="reranker")
    # tiny_llm_config: vocab MODEL_VOCAB_SIZE (covers the tokenizer), pad/eos ids, no bos
    cfg = tiny_llm_config("qwen3-causal", pad_token_id=tok.pad_token_id, num_hidden_layers=layers, **qwen3_06b())
    torch.manual_seed(seed)
    tf.Qwen3ForCausalLM(cfg).save_pretrained(str(path / "hf"), safe_serialization=True)
    STCrossEncoder(str(path / "hf"), max_length=max_length, local_files_only=True).save(str(path / "st"))
    return path / "st"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "gpu"],
                   help="gpu: ST on CUDA and jax on its GPU; changes the defaults of --layers/--variants/--st-dtype")
    p.add_argument("--pairs", type=int, default=None, help="default 256 (cpu), 2048 (gpu)")
    p.add_argument("--layers", type=int, default=None, help="decoder layers; default 4 (cpu), 28 (gpu, Qwen3-0.6B)")
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--variants", default=None, help=f"comma list of {'|'.join(VARIANTS)}; default fp32,bf16 (cpu), bf16,bf16p (gpu)")
    p.add_argument("--st-dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="ST's model dtype; default float32 (cpu), bfloat16 (gpu)")
    p.add_argument("--st-batch-size", type=int, default=32, help="ST's predict batch size (its default: 32)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--model", default=None, help="an existing ST reranker folder instead of building one")
    p.add_argument("--data-dir", default=os.environ.get("XENC_DATA_DIR", str(HERE.parents[1] / "shared" / "data")))
    args = p.parse_args()
    gpu = args.device == "gpu"
    args.pairs = args.pairs or (2048 if gpu else 256)
    args.layers = args.layers or (28 if gpu else 4)
    args.variants = args.variants or ("bf16,bf16p" if gpu else "fp32,bf16")
    args.st_dtype = args.st_dtype or ("bfloat16" if gpu else "float32")

    import jax
    import torch
    import transformers
    import sentence_transformers
    from sentence_transformers import CrossEncoder as STCrossEncoder
    from xenc_jax import CrossEncoder
    from xenc_jax.batching import make_batches

    platform = jax.default_backend()
    if platform != ("gpu" if gpu else "cpu") or (gpu and not torch.cuda.is_available()):
        sys.exit(f"--device {args.device}: jax runs on {platform}, torch.cuda.is_available()={torch.cuda.is_available()}")
    torch_device = "cuda" if gpu else "cpu"
    folder = Path(args.model) if args.model else build_reranker(Path(tempfile.mkdtemp()) / "rr", args.layers, args.max_length)
    pairs = load_pairs(Path(args.data_dir), args.pairs, seed=0)
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  {cpu_description()}  "
          f"jax {jax.__version__} ({jax.devices()[0].device_kind})  torch {torch.__version__} ({torch_device})  "
          f"transformers {transformers.__version__}  sentence-transformers {sentence_transformers.__version__}")
    print(f"# Qwen3-0.6B-shaped random reranker, {args.layers} layers, {folder}  pairs {len(pairs)}  "
          f"max_length {args.max_length}  repeats {args.repeats} (median)")

    st = STCrossEncoder(str(folder), device=torch_device, max_length=args.max_length, local_files_only=True,
                        model_kwargs={"dtype": getattr(torch, args.st_dtype)})
    ident = torch.nn.Identity()

    def st_predict():
        out = st.predict(pairs, batch_size=args.st_batch_size, activation_fn=ident)
        if gpu:
            torch.cuda.synchronize()
        return out

    t0 = time.perf_counter()
    st.preprocess(pairs)   # ST's host side alone: chat template + tokenizer, as predict calls it
    st_host = time.perf_counter() - t0
    st.predict(pairs[:64], batch_size=args.st_batch_size, activation_fn=ident)   # warm-up
    st_wall, st_cpu, ref = timed_run(st_predict, args.repeats)
    rows = [f"| sentence-transformers {args.st_dtype}, batch {args.st_batch_size} | **{len(pairs) / st_wall:.2f}** "
            f"| {st_wall:.1f} | {st_cpu:.1f} | 1 | - | - | {st_host:.2f} |"]
    print(f"sentence-transformers {args.st_dtype}: {len(pairs) / st_wall:7.2f} pairs/s  ({st_wall:.2f} s wall, "
          f"{st_cpu:.2f} s CPU; host formatting+tokenizing {st_host:.2f} s)")

    for variant in args.variants.split(","):
        dtype, param_dtype = VARIANTS[variant]
        ce = CrossEncoder(folder, dtype=dtype, param_dtype=param_dtype, max_length=args.max_length)
        t0 = time.perf_counter()
        enc = ce.encode_pairs(pairs)   # our host side alone: the same chat template + tokenizer
        host = time.perf_counter() - t0
        lengths = np.array([len(e) for e in enc])
        batches = make_batches(enc, ce.buckets, ce.max_length, ce.tokenizer.pad_token_id)
        real, padded = sum(b.real_tokens for b in batches), sum(b.padded_tokens for b in batches)
        # warm-up: compile every bucket shape up front (cheaper than a whole untimed pass; any
        # compile during the timed passes would show as "+N while timed")
        t0 = time.perf_counter()
        ce.warmup()
        ce.predict(pairs[:8], activation_fn="identity")
        first, compiles = time.perf_counter() - t0, ce.compile_count
        wall, cpu, scores = timed_run(lambda: ce.predict(pairs, activation_fn="identity"), args.repeats)
        diff = float(np.abs(scores - ref).max())
        print(f"xenc_jax {variant:5s}: {len(pairs) / wall:7.2f} pairs/s  ({wall:.2f} s wall, {cpu:.2f} s CPU, "
              f"warm-up {first:.1f} s)  ratio {st_wall / wall:.2f}x wall, {st_cpu / cpu:.2f}x CPU  "
              f"max|diff| vs ST {diff:.1e} (raw logits, |ST| max {np.abs(ref).max():.2f})  "
              f"compiles {compiles} (+{ce.compile_count - compiles} while timed)  host formatting+tokenizing "
              f"{host:.2f} s  tokens/pair mean {lengths.mean():.0f} max {lengths.max()}, real/padded {real}/{padded} ({real / padded:.0%})")
        rows.append(f"| xenc_jax {variant} (dtype {dtype}, params {param_dtype}) | {len(pairs) / wall:.2f} | {wall:.1f} "
                    f"| {cpu:.1f} | **{st_wall / wall:.2f}x** / {st_cpu / cpu:.2f}x | {diff:.1e} | {ce.compile_count} "
                    f"| {host:.2f} |")
    print("\n| | pairs/s | wall s | CPU s | ratio to ST (wall / CPU) | max abs diff vs ST (logits) | compiles "
          "| host format+tokenize s |\n|---|---|---|---|---|---|---|---|\n" + "\n".join(rows))


if __name__ == "__main__":
    main()
