"""What machine this is: the one reader of /proc/cpuinfo (for the compilation cache's key, the
autotune and the benchmarks' machine line)."""
from __future__ import annotations

import functools
import hashlib
import platform


@functools.lru_cache(maxsize=None)
def cpu_info() -> dict[str, str]:
    """The first processor's /proc/cpuinfo fields ("model name", "cpu family", "model", "flags"
    or "Features" on ARM, ...); {} where there is no /proc/cpuinfo. The one reader of it for the
    compilation-cache key, the autotune and the benchmarks' machine line."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            info = f.read(1 << 16)
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in info.splitlines()[:40]:
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_key() -> str:
    """The CPU model and its feature flags, hashed: XLA:CPU compiles for the host's instruction
    set, so a cache shared between machines (a home directory on NFS) must not hand AVX-512 code
    to a CPU without it."""
    fields = cpu_info()
    text = platform.machine() + fields.get("model name", "") + fields.get("flags", fields.get("Features", ""))
    return hashlib.sha256(text.encode()).hexdigest()[:12]
