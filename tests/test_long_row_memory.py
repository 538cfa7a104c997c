"""Attention memory is linear in the row length on CPU: a Qwen3-shaped tiny reranker (3 layers,
4 heads of 16, GQA 2 kv heads, hidden 64, random weights: no checkpoint needed) scores one row
of 2048, 4096 and 8192 tokens, one (query, document) pair filling the row, each length in its own
process; the child reports its own peak RSS (resource.getrusage(RUSAGE_SELF).ru_maxrss).

The path is the one CPU selects by default (attention_impl.default_attention_impl():
query_chunked): rows are cut into blocks of 512 query rows, and a block's mask is built from the
segment ids, so the scores held at once are [4 heads, 512, L] fp32 = 8 KiB per key token, never
[4, L, L] (the quadratic path: 64 MiB at 2k, 1 GiB at 8k; before this path the issue measured
0.66 GB -> 2.6 GB peak RSS for 2k -> 8k).

Bounds, with a linear model peak(L) = a + b L (a: the process, jax and the compiled program,
the same for every L):
  - growth 4k -> 8k <= 2 x growth 2k -> 4k + 48 MiB: linear growth doubles with the doubling
    of L (quadratic growth would quadruple); 48 MiB absorbs allocator and page-cache noise;
  - peak(8k) - peak(2k) <= 6144 tokens x 48 KiB: up to 6 live copies of the block's 8 KiB/token
    of scores (scores, exp, probabilities...) plus the activations. The quadratic path's
    scores alone grow by 960 MiB over the same 6k tokens, 5x more than this bound.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

LENGTHS = (2048, 4096, 8192)
MIB = 2 ** 20
# an HF Qwen3 config.json, written out (no transformers import in the child: less to load)
QWEN3 = dict(model_type="qwen3", architectures=["Qwen3ForSequenceClassification"], vocab_size=1000,
             hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
             intermediate_size=128, max_position_embeddings=16384, rms_norm_eps=1e-6, hidden_act="silu",
             rope_theta=10000.0, attention_bias=False, attention_dropout=0.0, tie_word_embeddings=False,
             pad_token_id=0, num_labels=1, use_sliding_window=False)

CHILD = r"""
import json, resource, sys
import jax, jax.numpy as jnp, numpy as np
from xenc_jax.hf.configs import config_from_dict
from xenc_jax.hf.pretrained import build_module
from xenc_jax.model_fns import make_score_fn
from xenc_jax.models.attention_impl import default_attention_impl
length, config = int(sys.argv[1]), json.loads(sys.argv[2])
cfg = config_from_dict(config)
impl = default_attention_impl()
module = build_module(cfg, head=True, attention_impl=impl)
ids = jnp.zeros((1, 2), jnp.int32)
# Random weights drawn in numpy on the shapes flax would init: module.init run eagerly compiles
# one XLA program per op (~2/3 of each child's time on 2 cores), and jitted it compiles one more
# program whose compile-time peak is in every child's RSS. Norm scales 1, as flax inits them;
# the same seed in every child.
shapes = jax.eval_shape(module.init, jax.random.key(0), ids, ids)["params"]
w = np.random.default_rng(1)
params = jax.tree_util.tree_map_with_path(lambda path, s: jnp.asarray(
    np.ones(s.shape) if "['scale']" in jax.tree_util.keystr(path) else w.normal(0, 0.02, s.shape), s.dtype), shapes)
r = np.random.default_rng(0)
batch = {"input_ids": r.integers(1, cfg.vocab_size, (1, length)), "attention_mask": np.ones((1, length)),
         "token_type_ids": np.zeros((1, length)), "position_ids": np.arange(length)[None],
         "cls_positions": np.zeros((1, 1))}
batch = {k: jnp.asarray(v, jnp.int32) for k, v in batch.items()}
compiled = jax.jit(make_score_fn(module, cfg.position_offset)).lower(params, batch).compile()
# The peak of the run alone: compiling peaks near the same RSS at every length (in the process
# peak it hid the 2k run's growth: 17 MiB 2k->4k, then 129 MiB 4k->8k, failing the linear bound
# on a sound kernel). Free pages go back to the OS (malloc_trim; the parent fixes glibc's mmap
# threshold, so large buffers are mapped per use and not served from memory compiling left in
# the heap), then VmHWM restarts from the current RSS (clear_refs 5).
import ctypes
ctypes.CDLL("libc.so.6").malloc_trim(0)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
score = float(np.asarray(compiled(params, batch)).ravel()[0])
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"impl": impl, "score": score, "maxrss_kb": hwm,
                  "process_maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def peak_rss(length: int) -> dict:
    # one CPU device, no forced host devices; a fixed mmap threshold (glibc raises it as mapped
    # blocks are freed, then serves large buffers from the heap that compiling grew)
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "", "MALLOC_MMAP_THRESHOLD_": "131072"}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)   # a cache hit would skip the compile in some children only
    out = subprocess.run([sys.executable, "-c", CHILD, str(length), json.dumps(QWEN3)], capture_output=True,
                         text=True, env=env, timeout=300, cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def peaks() -> dict[int, dict]:
    return {n: peak_rss(n) for n in LENGTHS}


def test_cpu_default_is_the_linear_kernel(peaks):
    assert {p["impl"] for p in peaks.values()} == {"query_chunked"}
    assert all(abs(p["score"]) < 1e3 for p in peaks.values())   # finite, a real score


def test_peak_memory_grows_linearly(peaks):
    mib = {n: p["maxrss_kb"] * 1024 / MIB for n, p in peaks.items()}
    print("peak RSS MiB of the run:", {n: round(v) for n, v in mib.items()},
          "of the process (compile included):", {n: round(p["process_maxrss_kb"] / 1024) for n, p in peaks.items()})
    d1, d2 = mib[4096] - mib[2048], mib[8192] - mib[4096]
    assert d2 <= 2 * d1 + 48, f"growth 4k->8k {d2:.0f} MiB vs 2k->4k {d1:.0f} MiB: not linear ({mib})"
    assert mib[8192] - mib[2048] <= 6144 * 48 / 1024, f"2k->8k grows {mib[8192] - mib[2048]:.0f} MiB ({mib})"
