"""JAX's persistent compilation cache (a second process reuses compiled buckets) and the user
cache directory it and the autotune results live in."""
from __future__ import annotations

import os

import jax

from .machine import cpu_key


CACHE_MAX_BYTES = 4 << 30  # least recently used entries go beyond this (a MiniLM bucket is ~1-3 MB)


def enable_compilation_cache(path: str | None = None) -> str | None:
    """Turn on JAX's persistent compilation cache so a second process reuses compiled buckets
    (a fresh process's first call then skips XLA's compile: docs/benchmarks.md, first call).

    `path`: a directory, else $XENC_COMPILATION_CACHE, else the user cache directory (default_compilation_cache()) unless jax already has a cache directory configured
    (JAX_COMPILATION_CACHE_DIR or jax.config), which is then left as it is. "0" in the variable
    turns it off, also over a path given here; path=False turns it off for this call.
    """
    env = os.environ.get("XENC_COMPILATION_CACHE")
    if path is False or (env is not None and env.strip().lower() in ("0", "off", "false", "no")):
        return None
    path = path or env
    if not path:
        if jax.config.jax_compilation_cache_dir:
            return jax.config.jax_compilation_cache_dir
        path = default_compilation_cache()
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:  # a read-only home: run without the cache rather than fail
        return None
    jax.config.update("jax_compilation_cache_dir", path)
    if jax.config.jax_compilation_cache_max_size in (None, -1):
        jax.config.update("jax_compilation_cache_max_size", CACHE_MAX_BYTES)
    # Our bucket programs compile in well under a second on small models: cache them anyway.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


def user_cache_root() -> str:
    """$XDG_CACHE_HOME (or ~/.cache)/xenc_jax: compiled programs and autotune results."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "xenc_jax")


def default_compilation_cache() -> str:
    """The CLI's cache directory: $XDG_CACHE_HOME (or ~/.cache)/xenc_jax/jax-<version>-<cpu>."""
    return os.path.join(user_cache_root(), f"jax-{jax.__version__}-{jax.default_backend()}-{cpu_key()}")


def cli_compilation_cache() -> str | None:
    """On for the CLI (a second run does not compile again): $XENC_COMPILATION_CACHE if set
    ("0" turns it off), else default_compilation_cache(), also over a jax-configured one."""
    return enable_compilation_cache(os.environ.get("XENC_COMPILATION_CACHE") or default_compilation_cache())
