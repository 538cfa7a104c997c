"""The machine a benchmark ran on, for every number it prints: CPU model, the instruction-set
flags that decide XLA:CPU's and PyTorch's fast paths, core count."""
from __future__ import annotations

import os
import platform

FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx_vnni")


def cpu_description() -> str:
    """e.g. "AMD EPYC (family 25 model 17), 2 cores, L3 32768K, flags avx2/avx512f/avx512_bf16".
    Family and model tell CPU generations apart where a VM shows only a brand name."""
    fields, flags = {}, set()
    try:
        for line in open("/proc/cpuinfo"):
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "cpu family", "model") and key not in fields:
                fields[key] = value.strip()
            if key == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    keep = [f for f in FLAGS if f in flags]
    name = fields.get("model name") or platform.processor() or platform.machine()
    gen = f" (family {fields['cpu family']} model {fields['model']})" if "cpu family" in fields else ""
    try:  # the last-level cache (what decides how large a batch stays in cache); cpuinfo shows L2
        cache = ", L3 " + open("/sys/devices/system/cpu/cpu0/cache/index3/size").read().strip()
    except OSError:
        cache = ""
    return (f"{name}{gen}, {os.cpu_count()} cores{cache}, "
            f"flags {'/'.join(keep) or 'none of ' + '/'.join(FLAGS)}")
