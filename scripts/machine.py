"""The machine a benchmark ran on, for every number it prints: CPU model, the instruction-set
flags that decide XLA:CPU's and PyTorch's fast paths, core count."""
from __future__ import annotations

import os
import platform

FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx_vnni")


def cpu_description() -> str:
    name, flags = "", set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name") and not name:
                name = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    keep = [f for f in FLAGS if f in flags]
    return (f"{name or platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"flags {'/'.join(keep) or 'none of ' + '/'.join(FLAGS)}")
