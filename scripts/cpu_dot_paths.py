"""Which XLA:CPU path a model-shaped dot takes on this CPU, fp32 against bf16 (bf16 inputs, fp32
accumulation, as the models compute with dtype="bfloat16"), and how fast, under a few XLA flag
settings; torch's GEMM beside it. For issue 17: the same bf16 flag (avx512_bf16) was fast on an
AMD EPYC and slow on an Intel Xeon, so run this on a CPU before trusting a default there.

    python scripts/cpu_dot_paths.py                  # MiniLM MLP shape: [4096, 384] x [384, 1536]
    python scripts/cpu_dot_paths.py --m 4096 --k 768 --n 3072

Each XLA flag setting runs in its own subprocess (flags are read once, at backend start).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

FLAG_SETS = ["", "--xla_cpu_use_onednn=true", "--xla_cpu_experimental_ynn_fusion_type=dot",
             "--xla_cpu_use_xnnpack=true"]

CHILD = r"""
import json, re, sys, time
import numpy as np, jax, jax.numpy as jnp
m, k, n, reps = map(int, sys.argv[1:5])
rng = np.random.default_rng(0)
x = rng.standard_normal((m, k), np.float32); w = rng.standard_normal((k, n), np.float32)
out = {}
for name, dt in (("fp32", jnp.float32), ("bf16", jnp.bfloat16)):
    f = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
    a, b = jnp.asarray(x, dt), jnp.asarray(w, dt)
    compiled = f.lower(a, b).compile()
    hlo = compiled.as_text()
    # the library a dot went to: a custom call's target, or a custom fusion's kind (__ynn_fusion, __onednn...)
    kinds = sorted(set(re.findall(r'custom_call_target="([^"]+)"', hlo))
                   | set(re.findall(r'"fusion_config":\{"kind":"([^"]+)"', hlo)))
    compiled(a, b).block_until_ready()
    times = []
    for _ in range(reps):
        t = time.perf_counter(); compiled(a, b).block_until_ready(); times.append(time.perf_counter() - t)
    out[name] = {"gflops": 2 * m * k * n / sorted(times)[len(times) // 2] / 1e9, "kernels": kinds,
                 "dot_in_hlo": "dot(" in hlo}
print(json.dumps(out))
"""


def torch_rates(m: int, k: int, n: int, reps: int) -> dict:
    import time
    import torch
    out = {}
    for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(m, k, dtype=dt), torch.randn(k, n, dtype=dt)
        a @ b
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t)
        out[name] = 2 * m * k * n / sorted(times)[len(times) // 2] / 1e9
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--m", type=int, default=4096)
    ap.add_argument("--k", type=int, default=384)
    ap.add_argument("--n", type=int, default=1536)
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args()
    import jax
    from machine import cpu_description
    print(f"# {cpu_description()}; jax {jax.__version__}; [{args.m}, {args.k}] x [{args.k}, {args.n}], "
          f"median of {args.reps}")
    print("| XLA_FLAGS | fp32 GFLOP/s | bf16 GFLOP/s | bf16 / fp32 | kernels (fp32 / bf16) |")
    print("|---|---|---|---|---|")
    for flags in FLAG_SETS:
        env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": flags}
        got = subprocess.run([sys.executable, "-c", CHILD, str(args.m), str(args.k), str(args.n), str(args.reps)],
                             env=env, capture_output=True, text=True)
        if got.returncode:
            print(f"| `{flags or '(none)'}` | failed: {got.stderr.strip().splitlines()[-1][:80]} | | | |")
            continue
        r = json.loads(got.stdout.strip().splitlines()[-1])
        print(f"| `{flags or '(none)'}` | {r['fp32']['gflops']:.0f} | {r['bf16']['gflops']:.0f} | "
              f"{r['bf16']['gflops'] / r['fp32']['gflops']:.2f} | {','.join(r['fp32']['kernels']) or '-'} / "
              f"{','.join(r['bf16']['kernels']) or '-'} |", flush=True)
    try:
        t = torch_rates(args.m, args.k, args.n, args.reps)
        print(f"| torch {__import__('torch').__version__} | {t['fp32']:.0f} | {t['bf16']:.0f} | "
              f"{t['bf16'] / t['fp32']:.2f} | - |")
    except ImportError:
        pass


if __name__ == "__main__":
    main()
