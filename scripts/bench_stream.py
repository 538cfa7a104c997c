"""Streaming batch scoring: `xenc score` on a file against the host's upper bound (the
tokenizer alone) and against `predict` on an in-memory list, with peak memory and the share of
the streaming time the device waited on the host.

    python scripts/bench_stream.py                          # 1M pairs tiny model, 50k pairs MiniLM-L6
    python scripts/bench_stream.py --tiny-pairs 200000 --minilm-pairs 10000

Tiny model: a 2-layer BERT (hidden 64) with MiniLM's tokenizer on generated pairs, so the
device is fast and the host (reading, tokenizing, writing) is what is measured: the aim is at
least 80% of the tokenizer-only rate. MiniLM-L6: all-MiniLM-L6-v2's encoder with a seeded head
on real MS MARCO pairs (../shared/data): the aim is predict's pairs/s. Every number comes with
the CPU it was measured on.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "scripts"))


def cpu_line() -> str:
    import jax
    import tokenizers
    from machine import cpu_description
    return (f"{cpu_description()}; jax {jax.__version__}, tokenizers {tokenizers.__version__}, "
            f"python {platform.python_version()}")


def tiny_model(out: Path) -> Path:
    import transformers as tf
    from test_train_utils import minilm_path
    from tiny_hf import make_tiny
    tok = tf.AutoTokenizer.from_pretrained(str(minilm_path()))
    make_tiny("bert", out, num_labels=1, seed=1, vocab_size=tok.vocab_size, max_position_embeddings=512,
              hidden_size=64, intermediate_size=128, num_attention_heads=2, num_hidden_layers=2)
    tok.save_pretrained(str(out))
    return out


def generated_pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    from test_train_utils import WORDS
    rng = np.random.default_rng(seed)
    words = np.asarray(WORDS)
    return [(" ".join(words[rng.integers(0, len(words), rng.integers(2, 8))]),
             " ".join(words[rng.integers(0, len(words), rng.integers(10, 60))])) for _ in range(n)]


def write_tsv(path: Path, pairs) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for a, b in pairs:
            f.write(f"{a}\t{b}\n")
    return path


def tokenizer_rate(model_dir: Path, pairs, max_length: int) -> float:
    """Pairs/s of tokenization alone, in the chunks the stream uses: the host's upper bound."""
    import transformers as tf
    from xenc_jax.batching import tokenize_pairs
    tok = tf.AutoTokenizer.from_pretrained(str(model_dir))
    t = time.perf_counter()
    for i in range(0, len(pairs), 8192):
        tokenize_pairs(tok, pairs[i:i + 8192], max_length)
    return len(pairs) / (time.perf_counter() - t)


def device_rate(model_dir: Path, pairs, repeats: int = 2) -> float:
    """Pairs/s of the model alone on pre-tokenized, pre-built batches (the library's layout):
    on a CPU the "device" is the same cores the tokenizer uses, so a stream cannot beat
    1 / (1/tokenizer + 1/device) there; on an accelerator the two run side by side."""
    from xenc_jax.batching import make_batches, unique_encodings
    from xenc_jax.cross_encoder import CrossEncoder
    ce = CrossEncoder(str(model_dir))
    ce.autotune()
    enc, _ = unique_encodings(ce.encode_pairs(pairs, None, 0))
    batches = make_batches(enc, ce.buckets, ce.max_length, ce.tokenizer.pad_token_id or 0)
    ce._runner.run(ce.params, batches[:50], show_progress=False)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        ce._runner.run(ce.params, batches, show_progress=False)
        times.append(time.perf_counter() - t)
    return len(enc) / float(np.median(times))


def cli_run(tsv: Path, model_dir: Path, out: Path, env: dict) -> dict:
    script = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], stderr=subprocess.PIPE, text=True); "
              "sys.stderr.write(r.stderr); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024); "
              "sys.exit(r.returncode)")
    cmd = [sys.executable, "-c", script, sys.executable, "-c",
           "import sys; from xenc_jax.cli import main; sys.exit(main(sys.argv[1:]))",
           "score", str(tsv), "--model", str(model_dir), "-o", str(out)]
    t = time.perf_counter()
    got = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if got.returncode:
        raise SystemExit(got.stderr[-3000:])
    line = next(l for l in got.stderr.splitlines() if l.startswith("xenc pairs:"))
    m = re.search(r"streaming ([\d.]+)s, device waited on the host (\d+)%", line)
    n = int(line.split("xenc pairs: ")[1].split()[0])
    return {"pairs": n, "wall_s": wall, "stream_s": float(m[1]), "pairs_per_s_stream": n / float(m[1]),
            "pairs_per_s_wall": n / wall, "host_wait_pct": int(m[2]),
            "peak_rss_mb": float(got.stdout.split()[-1]), "summary": line}


def predict_rate(model_dir: Path, pairs, repeats: int = 2) -> float:
    from xenc_jax.cross_encoder import CrossEncoder
    ce = CrossEncoder(str(model_dir))
    ce.autotune()
    ce.predict(pairs[:2000])  # compile the buckets
    best = []
    for _ in range(repeats):
        t = time.perf_counter()
        ce.predict(pairs)
        best.append(time.perf_counter() - t)
    return len(pairs) / float(np.median(best))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny-pairs", type=int, default=1_000_000)
    ap.add_argument("--minilm-pairs", type=int, default=50_000)
    ap.add_argument("--data-dir", default=os.environ.get("XENC_DATA_DIR", str(REPO.parent / "shared" / "data")))
    args = ap.parse_args()
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}  {cpu_line()}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # one autotune cache for this run: predict / the model-only rate tune first (autotune.py)
        # and the CLI subprocesses read the same layout from it
        os.environ["XENC_AUTOTUNE_CACHE"] = str(tmp / "autotune.json")
        # and one compilation cache: the in-process runs fill it, so the CLI run, like a user's
        # second run, loads its compiled shapes instead of compiling inside the timed stream
        os.environ["XENC_COMPILATION_CACHE"] = str(tmp / "cache")
        env = {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu"), "PYTHONPATH": str(REPO)}
        if args.tiny_pairs:
            model = tiny_model(tmp / "tiny")
            pairs = generated_pairs(args.tiny_pairs)
            tsv = write_tsv(tmp / "tiny.tsv", pairs)
            tok = tokenizer_rate(model, pairs[:200_000], 512)
            dev = device_rate(model, pairs[:100_000])
            r = cli_run(tsv, model, tmp / "tiny.jsonl", env)
            rows.append(("tiny 2-layer, generated", r, tok, None, dev))
        if args.minilm_pairs:
            from bench_cross_encoder import default_model, load_pairs
            model = default_model(tmp / "minilm")
            pairs = load_pairs(Path(args.data_dir), args.minilm_pairs, seed=0)
            pairs = [(" ".join(a.split()), " ".join(b.split())) for a, b in pairs]  # one line, one tab each
            tsv = write_tsv(tmp / "minilm.tsv", pairs)
            tok = tokenizer_rate(model, pairs, 512)
            pred = predict_rate(model, pairs)  # tunes first: the CLI then reads the same layout
            r = cli_run(tsv, model, tmp / "minilm.jsonl", env)
            rows.append(("MiniLM-L6, MS MARCO", r, tok, pred, None))
    machine = cpu_line()
    print("| machine | model | N | xenc score pairs/s (streaming / wall) | tokenizer only | model only | "
          "shared-core bound | stream / tokenizer | stream / bound | predict, in memory | stream / predict | "
          "device waited on host | peak RSS |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r, tok, pred, dev in rows:
        bound = None if dev is None else 1 / (1 / tok + 1 / dev)
        sp = r["pairs_per_s_stream"]
        print(f"| {machine} | {name} | {r['pairs']} | {sp:.0f} / {r['pairs_per_s_wall']:.0f} | {tok:.0f} | "
              f"{'-' if dev is None else f'{dev:.0f}'} | {'-' if bound is None else f'{bound:.0f}'} | {sp / tok:.2f} | "
              f"{'-' if bound is None else f'{sp / bound:.2f}'} | {'-' if pred is None else f'{pred:.0f}'} | "
              f"{'-' if pred is None else f'{sp / pred:.2f}'} | {r['host_wait_pct']}% | {r['peak_rss_mb']:.0f} MB |")
    print(json.dumps([{"name": n, **r, "tokenizer_pairs_per_s": t, "predict_pairs_per_s": p, "model_pairs_per_s": d}
                      for n, r, t, p, d in rows]))


if __name__ == "__main__":
    main()
