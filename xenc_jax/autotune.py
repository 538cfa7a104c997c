"""Choose the CPU layout (packed row length, tokens per batch), the stream count and, for a
bfloat16 model, the compute dtype by measuring a handful of candidates on this machine.

Why measure instead of rules keyed on CPU flags: the defaults of runner.default_buckets came
from sweeps on one AMD EPYC, and the same flags do not predict the same speed. On a 2-core
Intel Xeon with AVX-512 BF16 and VNNI, XLA:CPU's bf16 dots ran no faster than fp32 and the
model in bf16 at 0.93x of sentence-transformers, slower than our own fp32; on an AMD EPYC with
the same AVX-512 BF16 flag bf16 is ~1.5x our fp32, and on an AVX2-only Zen 3 (no bf16
instructions at all) it was faster too. Whether XLA's kernels reach a fast path depends on
the CPU, its cache sizes and XLA's version together, so the tuner times the real model on
synthetic batches of each candidate shape (~1 compile and well under a second of scoring
each) and keeps the fastest. A candidate must beat the library default by MARGIN to replace
it, so noise on a shared machine does not flip the choice.

A model of more than CUT_ABOVE layers is timed on a copy of CUT_LAYERS of them (cut_copy): the
candidates batch the same per-layer work differently (the same matmul shapes, the same attention
per row in every layer), so they rank as its layers do, and embeddings and head are a small share
the layout hardly changes. The copy keeps the model's mix of layer kinds (sliding / full: Gemma,
ModernBERT, Qwen2's max_window_layers) and the kept layers' real weights; the tuning then costs
~k/L plus the compiles: MiniLM-L12's shape 67 s and 66 s whole, 25 s on 4 layers; ModernBERT-base's
194 s whole, 42 s on 4 layers, the same choice (2 shared cores, back to back in one process). Measured 2026-12-08 on a 2-core EPYC shared with other jobs (load 3-7), random
weights, each candidate's depths interleaved, medians of per-round rate / the default's (192 x 1024,
2 streams, fp32), whole model -> 4-layer copy. MiniLM-L12 shape, 7 rounds, wall (CPU time):
192x2048 0.96 -> 0.90 (0.94 -> 1.01), 256x2048 0.82 -> 0.84 (0.88 -> 0.90), 192x4096 0.85 -> 0.81
(0.88 -> 0.89), 1 stream 0.99 -> 0.93 (0.95 -> 0.98), bf16 compute 1.39 -> 1.53 (1.37 -> 1.58):
the same decisions (default layout, 2 streams, bf16). ModernBERT-base shape (22 layers, a global
one every third), 3 rounds at load ~2: 256x2048 0.97 -> 0.92 (0.96 -> 0.92), 1 stream 0.93 -> 0.92
(0.98 -> 0.98), bf16 1.54 -> 1.43 (1.53 -> 1.50): the same decisions. (An earlier 3 rounds at load
~6 spread 0.5-4x per round; two whole-model tunings in a row on MiniLM-L12 chose different layouts
at that load: the copy is no noisier than the whole model.) k = 4 rather than 2 (2 layers agreed
as closely on MiniLM-L12): one period of a global-every-third pattern, and the last layer (which
computes only the scored rows) a quarter of the copy rather than half; above 8 layers the copy at
least halves the tuning.

The result is cached per CPU (model name and flags), jax version and model shape in the user
cache directory ($XENC_AUTOTUNE_CACHE, default ~/.cache/xenc_jax/autotune.json), so the tuning
runs once per machine and model shape. XENC_AUTOTUNE=0 turns tuning and the cache off
(library defaults). `CrossEncoder.tuning` / `BiEncoder.tuning` and `xenc tune` show what was
chosen and the measurements behind it.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
import warnings
from typing import Any, Callable, Protocol

import jax
import numpy as np

from .batching import BucketConfig, Encoding, make_batches

log = logging.getLogger(__name__)

# (pack_length, tokens_per_batch) candidates per kind: the measured default first. Longer rows
# and bigger batches suit CPUs with large caches; 192 / 1024 suited a 32 MiB-L3 EPYC.
LAYOUTS = {"pairs": ((192, 1024), (192, 2048), (256, 2048), (192, 4096)),
           "texts": ((128, 1024), (128, 2048), (256, 2048), (128, 4096))}
TAIL_TOKENS = 1024     # tuned batches above this get tails that halve back down to it (Choice.buckets)
MARGIN = 0.05          # a candidate replaces the default only when this much faster
BF16_MARGIN = 0.03     # bf16 compute is replaced by fp32 only when fp32 is this much faster
MEASURE_S = 0.25       # seconds of scoring per measurement (at least 2 batches)
ROUNDS = 2             # each candidate measured this many times, interleaved; best counts
CUT_LAYERS = 4         # a model of more than CUT_ABOVE layers is tuned on a copy of this many (cut_copy)
CUT_ABOVE = 8
_LOCK = threading.Lock()
_WARNED: set = set()


@dataclasses.dataclass(frozen=True)
class Choice:
    pack_length: int
    tokens_per_batch: int
    streams: int
    compute_dtype: str          # what runs: "float32" or "bfloat16"

    def buckets(self, base: BucketConfig) -> BucketConfig:
        """The layout on `base`. Batches above the default's tokens get tails (BucketConfig.
        tail_halvings) that halve a bucket's last batch back down to about the default's size:
        a small call (a 32-pair reranking request) then computes no more padding than the
        default would, where a whole 4096-token batch left it 65% real tokens (80% with tails;
        100 pairs: 71% -> 91%). The default keeps none: its waste is at most one 1024-token batch
        per bucket, and each halving is one more shape per bucket to compile (docs/benchmarks.md)."""
        halvings = max(0, (self.tokens_per_batch // TAIL_TOKENS).bit_length() - 1)
        return dataclasses.replace(base, pack=True, pack_length=self.pack_length, tokens_per_batch=self.tokens_per_batch,
                                   batch_size=None, tail_halvings=halvings)

    def text(self) -> str:
        return (f"rows of {self.pack_length} x {self.tokens_per_batch} tokens, {self.streams} stream(s), "
                f"{self.compute_dtype} compute")


@dataclasses.dataclass(frozen=True)
class Tuning:
    choice: Choice
    source: str                 # "measured", "cache", or "default" (tuning off or not run)
    key: str
    measurements: tuple = ()    # (description, pairs or texts per second) per candidate
    measured_on: str = ""       # "": the whole model; else the cut copy the rates are of (Cut.text)

    def describe(self) -> str:
        on = f"\n  measured on {self.measured_on}" if self.measured_on else ""
        return f"autotune ({self.source}): {self.choice.text()}" + on + "".join(
            f"\n  {d}: {r:.1f}/s" for d, r in self.measurements)


def enabled() -> bool:
    return os.environ.get("XENC_AUTOTUNE", "1").strip().lower() not in ("0", "off", "false", "no")


def cache_path() -> str:
    from .compile_cache import user_cache_root
    return os.environ.get("XENC_AUTOTUNE_CACHE") or os.path.join(user_cache_root(), "autotune.json")


def cpu_model() -> tuple[str, str]:
    """(CPU model name, the flags that decide XLA:CPU's and PyTorch's dot paths)."""
    import platform

    from .machine import cpu_info
    info = cpu_info()
    flags = set(info.get("flags", info.get("Features", "")).split())
    keep = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx_vnni", "asimd", "bf16", "sve")
            if f in flags]
    return info.get("model name") or platform.processor() or platform.machine(), "/".join(keep)


def bf16_dot_feature() -> str | None:
    """The CPU feature a native bf16 dot would use, or None when the CPU has none."""
    flags = cpu_model()[1].split("/")
    for f in ("amx_bf16", "avx512_bf16", "bf16"):
        if f in flags:
            return f
    return None


UNTUNED = ("default", "dot check")  # sources a later autotune() replaces
DOT_SLOW = 0.9  # bf16 dot below this fraction of fp32's speed: fall back before any full tuning


def bf16_dot_ratio() -> float:
    """bf16 (fp32 accumulation) against fp32 speed of one model-shaped dot on this CPU, measured
    once per CPU and jax version (~0.3 s) and cached. A first guess for a bf16 model that has no
    full tuning yet, so an untuned process on a CPU whose bf16 dots are slow (the Xeon of
    ../shared/notes/intel-xeon-matmul-2026-12-02.md: 108-135 against 143-187 GFLOP/s) does not
    run slower than fp32 until someone tunes."""
    from .machine import cpu_key
    key = f"bf16-dot|jax {jax.__version__}|cpu {cpu_key()}"
    entry = _read_cache().get(key) if enabled() else None
    if isinstance(entry, dict) and isinstance(entry.get("ratio"), (int, float)):
        return float(entry["ratio"])
    import jax.numpy as jnp
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((1024, 384), np.float32), rng.standard_normal((384, 1536), np.float32)
    rates = {}
    for dt in (jnp.float32, jnp.bfloat16):
        f = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32)).lower(
            jnp.asarray(x, dt), jnp.asarray(w, dt)).compile()
        a, b = jnp.asarray(x, dt), jnp.asarray(w, dt)
        f(a, b).block_until_ready()
        times = []
        for _ in range(15):
            t = time.perf_counter()
            f(a, b).block_until_ready()
            times.append(time.perf_counter() - t)
        rates[dt] = 1 / sorted(times)[len(times) // 2]
    ratio = rates[jnp.bfloat16] / rates[jnp.float32]
    if enabled():
        _store_entry(key, {"ratio": round(ratio, 3), "cpu": " ".join(cpu_model())})
    return ratio


def default_choice(kind: str, dtype: str, streams: int) -> Choice:
    pack, tpb = LAYOUTS[kind][0]
    return Choice(pack, tpb, streams, dtype)


def tuning_key(kind: str, config, dtype: str, max_length: int, extra: str = "") -> str:
    from .machine import cpu_key
    shape = (f"{config.family} h{config.hidden_size} l{config.num_layers} a{config.num_heads} "
             f"i{config.intermediate_size} e{config.embedding_size}")
    return f"{kind}|{shape}|{dtype}|max{max_length}|{extra}|jax {jax.__version__}|cpu {cpu_key()}"


def folder_key(kind: str, model, dtype: str = "float32", max_length: int | None = None,
               param_dtype: str = "float32", ignore_config_keys: tuple[str, ...] = ()) -> str:
    """The key CrossEncoder (kind "pairs") or BiEncoder ("texts") of `model` with this compute dtype,
    max_length and param dtype looks its tuning up with, from the folder's config and tokenizer
    alone: the key holds the model's shape, never its weights, so `xenc tune --show` loads none.
    `ignore_config_keys`: as the encoders' (config.json attributes the caller checked are harmless)."""
    from .hf.configs import load_config
    from .hf.hub import resolve_model_dir
    from .hf.pretrained import load_tokenizer
    from .hf.st_folder import default_max_length, default_max_seq_length
    model_dir = resolve_model_dir(model)
    if kind == "pairs":
        config = load_config(model_dir, ignore_keys=ignore_config_keys)
        if max_length is None:
            max_length = default_max_length(load_tokenizer(model_dir), config)
    else:
        from .hf.st_folder import read_st_folder
        mods = read_st_folder(model_dir)
        config = load_config(mods.encoder_dir, ignore_keys=ignore_config_keys)
        if max_length is None:
            max_length = default_max_seq_length(mods.transformer, load_tokenizer(mods.encoder_dir), config)
    return tuning_key(kind, config, jax.numpy.dtype(dtype).name, int(max_length), extra=f"params {param_dtype}")


def _read_cache() -> dict:
    try:
        with open(cache_path(), encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}  # absent or damaged: tune again (the cache only ever saves time)


def cached(key: str) -> Tuning | None:
    if not enabled():
        return None
    entry = _read_cache().get(key)
    try:
        choice = Choice(**entry["choice"])
        on = entry.get("measured_on", "")
        return Tuning(choice, "cache", key, tuple(tuple(m) for m in entry.get("measurements", ())),
                      on if isinstance(on, str) else "")
    except (TypeError, KeyError):
        return None


def _store(t: Tuning) -> None:
    _store_entry(t.key, {"choice": dataclasses.asdict(t.choice), "measurements": [list(m) for m in t.measurements],
                         "measured_on": t.measured_on, "cpu": " ".join(cpu_model())})


def _store_entry(key: str, entry: dict) -> None:
    from .atomic import atomic_file
    path = cache_path()
    with _LOCK:
        data = _read_cache()
        data[key] = {**entry, "time": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        try:
            with atomic_file(path, "w") as f:
                json.dump(data, f, indent=1, sort_keys=True)
        except OSError as e:  # a read-only home: the tuning still applies to this process
            log.warning("could not write the autotune cache %s (%s)", path, e)


def synthetic_encodings(kind: str, vocab_size: int, n: int = 512, seed: int = 0,
                        max_length: int = 512, type_vocab_size: int = 2) -> list[Encoding]:
    """Token sequences of MS MARCO-like lengths (median ~80 tokens for pairs, ~48 for texts),
    all short enough to pack, with random ids: speed does not depend on which ids."""
    rng = np.random.default_rng(seed)
    median = 80 if kind == "pairs" else 48
    lens = np.clip(rng.lognormal(np.log(median), 0.45, n).astype(int), 4, min(120, max_length // 2))
    lo = min(1000, vocab_size // 2)
    return [Encoding(rng.integers(lo, vocab_size, k).astype(np.int32),
                     (np.arange(k) >= k // 3).astype(np.int32) if kind == "pairs" and type_vocab_size >= 2
                     else np.zeros(k, np.int32))  # a second segment only where the model has its embedding
            for k in lens]


# Per-layer config fields (GLOBAL / LOCAL per layer): DecoderConfig.layer_kinds (Gemma 2/3, Qwen2's
# max_window_layers, Mistral), ModernBertConfig.layer_types.
_PER_LAYER = ("layer_kinds", "layer_types")


@dataclasses.dataclass(frozen=True)
class Cut:
    """A copy of the model with fewer layers: the same sizes, the kept layers' real weights."""
    config: Any
    params: Any
    layers: tuple[int, ...]     # the model's layer numbers the copy keeps, in order (its layer_0, ...)
    of: int                     # the model's num_layers

    def text(self) -> str:
        kept = ", ".join(map(str, self.layers))
        return (f"a copy of {len(self.layers)} of the {self.of} layers ({kept}): the rates are the copy's, the "
                f"model runs ~{self.of / len(self.layers):.0f}x slower; the ranking is the model's")


def _keep(kinds: tuple, k: int) -> list[int]:
    """k layer numbers whose kinds come in the model's proportions (largest remainder, each kind
    at least once): the first ones of each kind. Layer 0 is always kept (ModernBERT's layer 0 has
    no attention norm: its params only fit a layer_0)."""
    counts = {c: kinds.count(c) for c in dict.fromkeys(kinds)}
    share = {c: n * k / len(kinds) for c, n in counts.items()}
    take = {c: max(1, int(v)) for c, v in share.items()}
    for c in sorted(share, key=lambda c: share[c] - int(share[c]), reverse=True):
        if sum(take.values()) < k:
            take[c] += 1
    return sorted(i for c in counts for i in [j for j, x in enumerate(kinds) if x == c][:take[c]])


def _layers_at(tree, n: int) -> tuple | None:
    """The path of the dict holding layer_0..layer_{n-1} in a params tree (None: not found)."""
    if not isinstance(tree, dict):
        return None
    if all(f"layer_{i}" in tree for i in range(n)):
        return ()
    for key, sub in tree.items():
        if (path := _layers_at(sub, n)) is not None:
            return (key, *path)
    return None


def cut_copy(config, params, layers: int | None = None) -> Cut | None:
    """The model cut to `layers` (CUT_LAYERS) layers when it has more than CUT_ABOVE, keeping the
    mix of its layer kinds; None: tune the whole model (shallow, or its layers are not layer_{i})."""
    layers = CUT_LAYERS if layers is None else layers
    n = config.num_layers
    path = _layers_at(params, n)
    if n <= max(CUT_ABOVE, layers) or path is None:
        return None
    fields = {f.name for f in dataclasses.fields(config)}
    per_layer = {f: tuple(getattr(config, f)) for f in _PER_LAYER if f in fields and getattr(config, f)}
    keep = _keep(next(iter(per_layer.values())) if per_layer else (0,) * n, layers)
    cut = dataclasses.replace(config, num_layers=len(keep), **{f: tuple(v[i] for i in keep)
                                                                for f, v in per_layer.items()})

    def rebuild(tree, rest):
        if not rest:
            others = {k: v for k, v in tree.items() if not (k.startswith("layer_") and k[6:].isdigit())}
            return {**others, **{f"layer_{j}": tree[f"layer_{i}"] for j, i in enumerate(keep)}}
        return {**tree, rest[0]: rebuild(tree[rest[0]], rest[1:])}
    return Cut(cut, rebuild(params, path), tuple(keep), n)


def _rate(runner, params, batches: list, per_batch: int) -> float:
    """Examples per second over >= MEASURE_S seconds (and >= 2 batches) of runner.run."""
    done, t0 = 0, time.perf_counter()
    while True:
        runner.run(params, batches, show_progress=False)
        done += len(batches)
        elapsed = time.perf_counter() - t0
        if elapsed >= MEASURE_S:
            return done * per_batch / elapsed


def tune(kind: str, key: str, *, make_runner: Callable[[str], object], params, base: BucketConfig,
         max_length: int, vocab_size: int, pad_id: int, dtype: str, streams: int,
         type_vocab_size: int = 2, measured_on: str = "") -> Tuning:
    """Measure the LAYOUTS candidates (and 1 vs `streams` streams, and fp32 against a requested
    bf16) with the real model and keep the fastest; cached under `key`.

    make_runner(compute_dtype) -> a fresh BucketedRunner of the model in that compute dtype;
    `params` its params. measured_on: "" for the whole model, else what cut_copy made (recorded).
    """
    encodings = synthetic_encodings(kind, vocab_size, max_length=max_length, type_vocab_size=type_vocab_size)
    runners = {dtype: make_runner(dtype)}
    sets, seen = {}, set()
    for pack, tpb in LAYOUTS[kind]:
        cfg = Choice(pack, tpb, streams, dtype).buckets(base)
        all_batches = make_batches(encodings, cfg, max_length, pad_id)
        shapes = [b.shape for b in all_batches]
        main = max(set(shapes), key=shapes.count)  # the full packed rows' shape
        batches = [b for b in all_batches if b.shape == main]
        if len(batches) < 2 or main in seen:  # max_length < pack_length: the same layout twice
            continue
        seen.add(main)
        per_batch = sum(b.num_examples for b in batches) / len(batches)
        # ~4096 tokens (>= 2 batches, one per stream) per pass: a pass of a MiniLM-sized model is
        # ~0.4 s on 2 cores, so the whole tuning is ~10 s, most of it the candidates' compiles
        sets[(pack, tpb)] = (batches[:max(2, -(-4096 // tpb))], per_batch)

    warm = set()

    def measure(c: Choice) -> float:
        if c.compute_dtype not in runners:
            runners[c.compute_dtype] = make_runner(c.compute_dtype)
        runner = runners[c.compute_dtype]
        runner.streams = c.streams
        batches, per_batch = sets[(c.pack_length, c.tokens_per_batch)]
        if (shape := (c.compute_dtype, c.pack_length, c.tokens_per_batch)) not in warm:
            runner.run(params, batches[:1], show_progress=False)  # compile (and warm) this shape first
            warm.add(shape)
        return _rate(runner, params, batches, per_batch)

    default = default_choice(kind, dtype, streams)
    layouts = [Choice(p, t, streams, dtype) for p, t in LAYOUTS[kind] if (p, t) in sets]
    if not layouts:  # too few tokens fit any layout (a tiny max_length): keep the defaults
        return Tuning(default, "measured", key, measured_on=measured_on)
    rates: dict[Choice, float] = {}
    for _ in range(ROUNDS):
        for c in layouts:
            rates[c] = max(rates.get(c, 0.0), measure(c))
    best = _pick(rates, default if default in rates else layouts[0], MARGIN)
    # streams: the stream count only changes how batches are issued, no compile
    if streams > 1:
        one = dataclasses.replace(best, streams=1)
        for _ in range(ROUNDS):
            rates[one] = max(rates.get(one, 0.0), measure(one))
            rates[best] = max(rates[best], measure(best))
        best = _pick({best: rates[best], one: rates[one]}, best, MARGIN)
    if dtype == "bfloat16":
        f32 = dataclasses.replace(best, compute_dtype="float32")
        for _ in range(ROUNDS):
            rates[f32] = max(rates.get(f32, 0.0), measure(f32))
            rates[best] = max(rates[best], measure(best))
        best = _pick({best: rates[best], f32: rates[f32]}, best, BF16_MARGIN)
    t = Tuning(best, "measured", key, tuple((c.text(), round(r, 2)) for c, r in rates.items()), measured_on)
    if enabled():
        _store(t)
    return t


def _pick(rates: dict, incumbent, margin: float):
    best = max(rates, key=rates.get)
    return best if rates[best] > rates[incumbent] * (1 + margin) else incumbent


def warn_if_fallback(t: Tuning, requested: str) -> None:
    """Say once per process and model shape when a requested bf16 runs in fp32, and why."""
    if requested != "bfloat16" or t.choice.compute_dtype == "bfloat16" or t.key in _WARNED:
        return
    _WARNED.add(t.key)
    name, flags = cpu_model()
    feature = bf16_dot_feature()
    why = (f"it has {feature}, but XLA:CPU's bfloat16 dots were not faster than float32 here" if feature else
           "it has no bfloat16 dot instructions (avx512_bf16 / amx_bf16)")
    how = ("one bf16 dot against fp32 (the model's full autotune, warmup(), may say more)" if t.source == "dot check"
           else "the autotune")
    warnings.warn(f"dtype='bfloat16' runs in float32 on this CPU ({name}): {why}, so float32 is the faster "
                  f"path (scores are also closer to the reference). Measured by {how}, cached in "
                  f"{cache_path()}; XENC_AUTOTUNE=0 keeps bfloat16 compute.", RuntimeWarning, stacklevel=3)


AUTOTUNE_MIN_EXAMPLES = 20000  # a call this large tunes first (once per machine): ~10 s against minutes


class TuneTarget(Protocol):
    """What Autotuned reads and sets on the model it tunes; encoders.Encoder provides all of it."""
    _tune_kind: str             # "pairs" (CrossEncoder) or "texts" (BiEncoder): LAYOUTS and the cache key
    config: Any                 # the model's EncoderConfig: its shape keys the cache; vocab sizes for synthetic ids
    params: Any                 # what the runners run with
    plan: Any                   # sharding.ShardingPlan or None: tuning is for the single-device path only
    dtype: Any                  # the compute dtype now (replaced by _set_compute_dtype)
    buckets: BucketConfig       # read as the base layout, replaced by the tuned one
    _runner: Any                # the model's BucketedRunner: its `streams` is read and set
    _pad_id: int                # the tokenizer's pad id (0 without one)

    def _token_limit(self) -> int: ...                # max_length / max_seq_length
    def _runner_for(self, dtype, config=None) -> Any: ...  # a fresh single-device BucketedRunner in compute
    #                                                    dtype, of the model or of a copy with this config (Cut)
    def _set_compute_dtype(self, dtype) -> None: ...  # run in this compute dtype from now on (new runner)


class Autotuned:
    """The tuning state, applying a Tuning, and when to tune; mixed into encoders.Encoder, which
    provides the TuneTarget interface."""

    def _init_tuning(self, mode, user_buckets: bool) -> None:
        if mode not in (None, True, False):
            raise ValueError(f"autotune must be None (use a cached tuning; tune in warmup() and on calls of "
                             f">= {AUTOTUNE_MIN_EXAMPLES} inputs), True (tune now) or False, got {mode!r}")
        self._tune_lock = threading.Lock()
        self._requested_dtype = jax.numpy.dtype(self.dtype).name
        # several processes must keep one bucket schedule: each CPU's own tuning could differ
        self._autotune = (mode is not False and enabled() and not user_buckets and self.plan is None
                          and jax.default_backend() == "cpu" and jax.process_count() == 1)
        params_dtype = jax.numpy.dtype(jax.tree.leaves(self.params)[0].dtype).name  # bf16 params cast per call
        self._tune_key = tuning_key(self._tune_kind, self.config, self._requested_dtype, self._token_limit(),
                                    extra=f"params {params_dtype}")
        b = self.buckets
        self.tuning = Tuning(Choice(b.pack_length or 0, b.tokens_per_batch or 0, self._runner.streams,
                                    self._requested_dtype), "default", self._tune_key)
        found = cached(self._tune_key) if self._autotune else None
        if found is not None:
            self._apply_tuning(found)
        elif self._autotune and mode is True:
            self.autotune()
        elif self._autotune and self._requested_dtype == "bfloat16" and bf16_dot_ratio() < DOT_SLOW:
            # no tuning yet: one dot says bf16 is slow on this CPU, so run fp32 until autotune() says more
            self._apply_tuning(dataclasses.replace(self.tuning, source="dot check", choice=dataclasses.replace(
                self.tuning.choice, compute_dtype="float32")))

    def autotune(self, force: bool = False) -> Tuning:
        """Measure the layout, stream and (for bf16) compute-dtype candidates on this machine with
        this model, apply the fastest, and cache it (autotune.py). Without `force` a cached or
        earlier result is reused. Returns the Tuning (also `self.tuning`)."""
        if self.plan is not None or jax.default_backend() != "cpu":
            raise ValueError("autotune tunes the single-device CPU path; with a mesh or on an accelerator the "
                             "defaults (large batches) apply")
        with self._tune_lock:
            if not force and self.tuning.source not in UNTUNED:
                return self.tuning
            if not force and (found := cached(self._tune_key)) is not None:
                self._apply_tuning(found)
                return found
            cut = cut_copy(self.config, self.params)  # the candidates rank per layer: a deep model's few do
            t = tune(self._tune_kind, self._tune_key,
                     make_runner=self._runner_for if cut is None else lambda dt: self._runner_for(dt, cut.config),
                     params=self.params if cut is None else cut.params, base=self.buckets,
                     max_length=self._token_limit(), vocab_size=self.config.vocab_size, pad_id=self._pad_id,
                     dtype=self._requested_dtype, streams=max(2, self._runner.streams),
                     type_vocab_size=self.config.type_vocab_size, measured_on=cut.text() if cut else "")
            log.info("%s", t.describe())
            self._apply_tuning(t)
            return t

    def _maybe_tune(self, items) -> None:
        """Tune before a large call (known length >= AUTOTUNE_MIN_EXAMPLES) when no tuning exists yet."""
        if (self._autotune and self.tuning.source in UNTUNED and hasattr(items, "__len__")
                and len(items) >= AUTOTUNE_MIN_EXAMPLES):
            self.autotune()

    def _apply_tuning(self, t: Tuning) -> None:
        c = t.choice
        self.buckets = c.buckets(self.buckets)
        if c.compute_dtype != jax.numpy.dtype(self.dtype).name:
            self._set_compute_dtype(c.compute_dtype)
        self._runner.streams = c.streams
        self.tuning = t
        warn_if_fallback(t, self._requested_dtype)
