"""The machine a benchmark ran on, for every number it prints: CPU model and generation, core
count, last-level cache, and the instruction-set flags that decide XLA:CPU's and PyTorch's fast
paths (read by the library's own xenc_jax.autotune.cpu_model, the one /proc/cpuinfo reader)."""
from __future__ import annotations

import os


def cpu_description() -> str:
    """e.g. "AMD EPYC (family 25 model 17), 2 cores, L3 32768K, flags avx2/avx512f/avx512_bf16".
    Family and model tell CPU generations apart where a VM shows only a brand name."""
    from xenc_jax.autotune import cpu_model
    from xenc_jax.machine import cpu_info
    name, flags = cpu_model()
    fields = cpu_info()
    gen = f" (family {fields['cpu family']} model {fields['model']})" if "cpu family" in fields else ""
    try:  # the last-level cache (what decides how large a batch stays in cache); cpuinfo shows L2
        cache = ", L3 " + open("/sys/devices/system/cpu/cpu0/cache/index3/size").read().strip()
    except OSError:
        cache = ""
    return f"{name}{gen}, {os.cpu_count()} cores{cache}, flags {flags or 'none of the dot-path flags'}"
