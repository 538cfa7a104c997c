"""What CrossEncoder and BiEncoder share: loading a folder onto the host or a mesh, the compute
module and its jitted runner, bucket config, warmup, prompts, compile_count, the autotune's
interface (autotune.TuneTarget), and the chunked, pipelined scoring loop.

A subclass provides `_tune_kind` ("pairs" | "texts"), `_token_limit()` (its max_length or
max_seq_length), and `_model_fn(module)`: the pure model_fns.score_fn / embed_fn of a compute
module, which the runner jits once per bucket shape.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Iterator

import jax
import numpy as np

from .autotune import Autotuned
from .batching import BucketConfig
from .hf.hub import resolve_model_dir
from .hf.pretrained import load_pretrained
from .models.attention_impl import default_attention_impl
from .compile_cache import enable_compilation_cache
from .dtypes import as_dtype
from .placement import load_plan, loading_on_host, setup_sharding
from .progress import progress
from .multihost import raise_together
from .runner import BucketedRunner, NonFiniteOutput, check_outputs, default_buckets
from .streaming import check_chunk_size, check_stream_input, numbered_chunks, run_chunks


def open_model_dir(model_name_or_path, revision: str | None, compilation_cache) -> Path:
    """Turn on the compilation cache (before anything compiles), then the local model folder."""
    enable_compilation_cache(compilation_cache)
    return resolve_model_dir(model_name_or_path, revision)


def load_model(model_dir: Path, mesh, sharding: str, *, param_dtype, **kwargs):
    """hf.pretrained.load_pretrained; with a mesh each param goes straight into its sharding,
    read on the host (placement.loading_on_host)."""
    with loading_on_host(mesh):
        return load_pretrained(model_dir, param_dtype=as_dtype(param_dtype), plan=load_plan(mesh, sharding), **kwargs)


def check_token_limit(value, name: str, lowest: int, config) -> int:
    """`value` as the token limit, an int in lowest..the model's position table."""
    limit = config.max_position_embeddings - config.position_offset
    if isinstance(value, bool) or not isinstance(value, int) or not lowest <= value <= limit:
        raise ValueError(f"{name} must be an int in {lowest}..{limit} (the model's position table), got {value!r}")
    return value


class Encoder(Autotuned):
    """The shared base (see the module docstring). Attributes every model has: model_dir, config,
    params, tokenizer, dtype, buckets, plan, chunk_size, prompts, default_prompt_name, tuning."""

    _tune_kind: str

    def _token_limit(self) -> int:
        raise NotImplementedError

    def _model_fn(self, module) -> Callable:
        raise NotImplementedError

    def _init_runtime(self, pt, *, buckets: BucketConfig | None, attention_impl: str | None, mesh, sharding: str,
                      chunk_size: int, autotune: bool | None) -> None:
        """The compute module (in self.dtype), params placed on the mesh, the runner, the tuning.
        Needs self.params and self.dtype set."""
        self.buckets = buckets or default_buckets(self._tune_kind)
        if attention_impl is None:
            attention_impl = default_attention_impl(mesh)
        # config: the autotune's cut copy (autotune.cut_copy), else the model's own
        self._module_for = lambda dt, config=None: (pt if config is None else dataclasses.replace(
            pt, config=config)).module(dtype=dt, attention_impl=attention_impl)
        self._module = self._module_for(self.dtype)
        self.plan, self.params, shardings, self.buckets = setup_sharding(
            self._module, self.params, self.buckets, mesh, sharding)
        self._runner = BucketedRunner(self._model_fn(self._module), plan=self.plan, param_shardings=shardings)
        self.chunk_size = check_chunk_size(chunk_size)  # inputs per chunk in the *_stream calls
        self._init_tuning(autotune, user_buckets=buckets is not None)

    # ---- autotune.TuneTarget
    def _runner_for(self, dtype, config=None) -> BucketedRunner:
        """A single-device runner of the model (or of its copy with `config`, autotune.Cut) in
        compute `dtype` (the autotune's candidates)."""
        return BucketedRunner(self._model_fn(self._module_for(dtype, config)))

    def _set_compute_dtype(self, dtype) -> None:
        self.dtype = jax.numpy.dtype(dtype)
        self._module = self._module_for(self.dtype)
        self._runner = BucketedRunner(self._model_fn(self._module))

    @property
    def _pad_id(self) -> int:
        """Padding never reaches a result (masked, dropped on the host): a tokenizer without a
        pad token pads with 0."""
        return int(self.tokenizer.pad_token_id) if self.tokenizer.pad_token_id is not None else 0

    # ---- buckets, compiling
    @property
    def compile_count(self) -> int:
        """How many times the model function has been compiled (<= number of bucket shapes)."""
        return self._runner.compile_count

    def _bucket_config(self, batch_size: int | None) -> BucketConfig:
        if batch_size is None:
            return self.buckets
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        return dataclasses.replace(self.buckets, batch_size=int(batch_size), tokens_per_batch=None)

    def warmup(self, batch_size: int | None = None) -> int:
        """Tune the layout for this machine if not done (see autotune=), then compile every bucket
        shape now; returns the number of shapes."""
        if batch_size is None and self._autotune:
            self.autotune()
        cfg = self._bucket_config(batch_size)
        shapes = cfg.resolve(self._token_limit())
        self._runner.warmup(self.params, shapes, cfg.segments)
        return len(shapes)

    # ---- prompts
    def _init_prompts(self, stored: dict | None, prompts: dict | None = None, default_prompt_name: str | None = None):
        """Prompts of the folder's config_sentence_transformers.json (`stored`), updated by `prompts`."""
        stored = stored or {}
        self.prompts = {**{k: v or "" for k, v in (stored.get("prompts") or {}).items()}, **(prompts or {})}
        self.default_prompt_name = default_prompt_name or stored.get("default_prompt_name")

    def _resolve_prompt(self, prompt, prompt_name) -> str | None:
        """ST's rule: prompt= wins, else prompts[prompt_name], else the default prompt, else none."""
        if prompt is None and prompt_name is not None:
            if prompt_name not in self.prompts:
                raise ValueError(f"prompt_name {prompt_name!r} not in the model's prompts {sorted(self.prompts)}")
            prompt = self.prompts[prompt_name]
        elif prompt is None and self.default_prompt_name is not None:
            prompt = self.prompts.get(self.default_prompt_name)
        if prompt is not None and not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
        return prompt or None

    # ---- chunks: prepare (tokenize + bucket, background thread), then run (device)
    def _run_batches(self, batches: list, cfg: BucketConfig, any_input: bool) -> list:
        """[(Batch, outputs)] of the runner; no call when there is nothing to run, unless other
        processes need this one's part of the collective call."""
        if not any_input and jax.process_count() == 1:
            return []
        return self._runner.run(self.params, batches, show_progress=False,
                                shapes=cfg.resolve(self._token_limit())[::-1], segments=cfg.segments)

    def _chunked(self, items, what: str, example: str, *, batch_size, chunk_size, show_progress_bar, stats,
                 desc: str, unit: str, prepare: Callable, run: Callable) -> Iterator[np.ndarray]:
        """run(prepare(start, chunk, cfg), cfg) per chunk of `items`, in order, with a progress bar.
        Every output of predict, rank, encode and their streams (the CLI's too) comes back here: a
        NaN or inf in it raises runner.NonFiniteOutput naming the input, never becomes a result."""
        it = check_stream_input(items, what, example)
        if batch_size is None:
            self._maybe_tune(items)
        cfg = self._bucket_config(batch_size)
        size = check_chunk_size(self.chunk_size if chunk_size is None else chunk_size)
        bar = progress(None, len(items) if hasattr(items, "__len__") else None, desc, show_progress_bar, unit)
        try:
            yield from run_chunks(numbered_chunks(it, size),
                                  lambda start, chunk: (start, chunk, prepare(start, chunk, cfg)),
                                  lambda p: self._checked(*p, cfg, prepare, run, what), bar=bar, stats=stats)
        finally:
            bar.close()

    def _checked(self, start: int, chunk: list, prep, cfg: BucketConfig, prepare: Callable, run: Callable,
                 what: str) -> np.ndarray:
        """run(prep, cfg) through runner.check_outputs. A NaN spreads to every input packed in its
        row (attention multiplies the neighbours' zero weights by it), so a packed chunk that fails
        is run again unpacked (only then) to name the input that makes it. With several processes
        the check is agreed on by all (one all-gather per chunk): a bad row stops every process with
        its message, not a hang; that run is not repeated, and the row named may be a packed
        neighbour of the cause."""
        out = run(prep, cfg)
        if jax.process_count() > 1:
            return raise_together(check_outputs, out, start, what, self.dtype, what="checking the model's outputs")
        try:
            return check_outputs(out, start, what, self.dtype)
        except NonFiniteOutput:
            if not cfg.pack:
                raise
            alone = dataclasses.replace(cfg, pack=False)
            check_outputs(run(prepare(start, chunk, alone), alone), start, what, self.dtype)
            raise
