"""Training throughput (pairs/s): xenc_jax train_step vs sentence-transformers CrossEncoderTrainer,
same data (STS-B train), model (all-MiniLM-L6-v2 + fresh 1-label head), batch size, loss (BCE),
optimizer recipe, in one process run.

    python scripts/bench_train.py --steps 30 [--batch-size 16] [--torch-threads 1,2] [--json out.json]

JAX: the bucketed, length-grouped stream of the real loop; every bucket shape is compiled
before timing (compile time reported separately). ST: CrossEncoderTrainer.train() with
max_steps; per-step wall times come from a TrainerCallback, the first `--skip` steps dropped.
The JAX measurement runs before and after the ST one; the report uses the median step time of
both JAX phases, so a load change on a shared machine hits both sides alike.

malloc is tuned first, as `xenc train` does (xenc_jax/host_memory.py); it applies to the whole
process, ST included. XENC_MALLOC_TUNING=0 runs both sides with glibc's defaults.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def bench_jax(cfg, groups, steps: int, dtype: str):
    import jax

    from xenc_jax.hf.pretrained import load_pretrained
    from xenc_jax.dtypes import as_dtype
    from xenc_jax.train import step as S
    from xenc_jax.train.config import resolve_model
    from xenc_jax.train.data import BatchStream, StreamConfig
    from xenc_jax.train.optim import make_optimizer

    pt = load_pretrained(resolve_model(cfg.model), head=True, num_labels=1, seed=cfg.seed)
    stream = BatchStream(groups, StreamConfig(batch_size=cfg.batch_size, bucket_lengths=tuple(cfg.bucket_lengths),
                                              max_length=cfg.max_length, pad_token_id=pt.tokenizer.pad_token_id,
                                              seed=cfg.seed))
    tx = make_optimizer(cfg.optim, 10_000)
    plan = S.make_plan("dp")
    module = pt.module(dtype=as_dtype(dtype))
    sh = S.state_shardings(plan, tx, pt.params, S.param_shardings(plan, module))
    state = S.create_state(plan, tx, pt.params, sh)
    fn = S.make_train_step(S.cross_encoder_apply(module), S.cross_encoder_loss("bce"),
                           tx, plan, sh)
    rng = jax.random.key(0)
    batches, lens = stream.plan(0)
    t0 = time.time()
    for L in sorted(set(lens)):  # compile every shape the stream will produce
        state, m = fn(state, plan.place_batch(stream.build(batches[lens.index(L)], L).arrays()), rng)
    jax.block_until_ready(m)
    compile_s = time.time() - t0

    def phase():
        times, rows = [], 0
        for _ in range(steps):
            b = next(stream)
            rows += b.num_examples
            t = time.perf_counter()
            nonlocal_state[0], m = fn(nonlocal_state[0], plan.place_batch(b.arrays()), rng)
            jax.block_until_ready(m["loss"])
            times.append(time.perf_counter() - t)
        return times, rows
    nonlocal_state = [state]
    return phase, compile_s


def bench_st(cfg, texts, labels, steps: int, skip: int, threads: int):
    import torch
    from datasets import Dataset
    from sentence_transformers.cross_encoder import CrossEncoder, CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss
    from transformers import TrainerCallback

    from xenc_jax.train.config import resolve_model
    torch.set_num_threads(threads)
    ds = Dataset.from_dict({"sentence1": [t[0] for t in texts], "sentence2": [t[1] for t in texts],
                            "label": [float(y) for y in labels]})
    model = CrossEncoder(resolve_model(cfg.model), num_labels=1, max_length=cfg.max_length, device="cpu")
    stamps = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            stamps.append(["b", time.perf_counter()])

        def on_step_end(self, *a, **k):
            stamps.append(["e", time.perf_counter()])

    args = CrossEncoderTrainingArguments(
        output_dir="/tmp/xenc_bench_train_st", max_steps=steps + skip, per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.optim.learning_rate, warmup_ratio=cfg.optim.warmup_ratio,
        weight_decay=cfg.optim.weight_decay, adam_epsilon=cfg.optim.eps, max_grad_norm=cfg.optim.max_grad_norm,
        seed=cfg.seed, save_strategy="no", eval_strategy="no", report_to="none", use_cpu=True,
        disable_tqdm=True, logging_steps=10_000)
    trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=ds, loss=BinaryCrossEntropyLoss(model),
                                  callbacks=[Timer()])
    trainer.train()
    # step time = from one step's begin to the next step's begin (data loading included, as in training)
    begins = [t for k, t in stamps if k == "b"]
    ends = [t for k, t in stamps if k == "e"]
    times = list(np.diff(begins)[skip:]) + ([ends[-1] - begins[-1]] if len(begins) > skip else [])
    return times


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--skip", type=int, default=3, help="ST warm-up steps not timed")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--examples", type=int, default=2000, help="STS-B train rows used")
    ap.add_argument("--torch-threads", default=str(os.cpu_count()), help="comma list; each is measured")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--buckets", default="16,24,32,48,64,128",
                    help="bucket lengths of the JAX stream (length-grouped batches make short buckets pay off)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import dataclasses

    from xenc_jax.host_memory import status, tune_malloc
    tune_malloc()  # before JAX starts its CPU threads, as train.loop.train does

    import transformers as tf

    from xenc_jax.train.config import load_config, resolve_model
    from xenc_jax.train.data import make_groups, read_examples

    cfg = load_config(REPO / "configs" / "stsb_cross_encoder.py")
    cfg = dataclasses.replace(cfg, batch_size=args.batch_size,
                              bucket_lengths=tuple(int(x) for x in args.buckets.split(",")),
                              train=dataclasses.replace(cfg.train, rows=(0, args.examples)))
    ex = read_examples(cfg.train)
    tok = tf.AutoTokenizer.from_pretrained(resolve_model(cfg.model))
    groups = make_groups(ex, tok, cfg.max_length)
    real_tokens = float(np.mean(groups.lengths))

    phase, compile_s = bench_jax(cfg, groups, args.steps, args.dtype)
    jax_times, rows = phase()
    st = {}
    for threads in [int(x) for x in args.torch_threads.split(",")]:
        st[threads] = bench_st(cfg, ex.texts, ex.labels, args.steps, args.skip, threads)
    jax_times2, _ = phase()
    jax_step = float(np.median(jax_times + jax_times2))
    result = {"batch_size": args.batch_size, "jax_buckets": list(cfg.bucket_lengths), "steps_timed": args.steps, "mean_pair_tokens": round(real_tokens, 1),
              "load_average": os.getloadavg(), "cpu_count": os.cpu_count(), "malloc_tuning": status()["reason"],
              "jax": {"median_step_s": round(jax_step, 4), "pairs_per_s": round(args.batch_size / jax_step, 2),
                      "median_step_s_before_st": round(float(np.median(jax_times)), 4),
                      "median_step_s_after_st": round(float(np.median(jax_times2)), 4),
                      "compile_s": round(compile_s, 1), "dtype": args.dtype},
              "st": {}}
    for threads, times in st.items():
        s = float(np.median(times))
        result["st"][f"torch_threads={threads}"] = {"median_step_s": round(s, 4),
                                                    "pairs_per_s": round(args.batch_size / s, 2)}
    best_st = max(v["pairs_per_s"] for v in result["st"].values())
    result["speedup_vs_best_st"] = round(result["jax"]["pairs_per_s"] / best_st, 2)
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
