"""CrossEncoder: score text pairs jointly, with sentence-transformers' CrossEncoder semantics.

A thin convenience around a pure `score_fn(params, batch) -> logits [B, P, C]`: tokenize (same
ids as ST), cut into fixed-shape buckets (optionally packing several pairs per row), run the
jitted function (one compile per bucket shape), restore input order on the host.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .batching import BucketConfig, as_sequence, make_batches, scatter_results, tokenize_pairs, unique_encodings
from .batching.inputs import check_utf8
from .chat_format import pair_encoder
from .encoders import Encoder, check_token_limit, load_model, open_model_dir
from .hf import st_folder, st_modules
from .hf.st_folder import default_max_length  # noqa: F401  (public here too)
from .hf.model_folder import read_json
from .hf.save import save_folder, write_cross_encoder, write_sentence_transformer
from .hf.st_transformer import input_format
from .dtypes import as_dtype
from .model_fns import make_embed_fn, make_score_fn
from .runner import InputError
from .streaming import DEFAULT_CHUNK_SIZE

DEFAULT_MODEL = "cross-encoder/ms-marco-MiniLM-L6-v2"

_NP_ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "identity": lambda x: x,
    "tanh": np.tanh,
}
_ST_NAMES = st_folder.CE_ACTIVATIONS


def _resolve_activation(fn) -> tuple[str, Callable]:
    if callable(fn):
        return getattr(fn, "__name__", "custom"), fn
    name = _ST_NAMES.get(fn, fn)
    if name not in _NP_ACTIVATIONS:
        raise ValueError(f"unknown activation_fn {fn!r}: use one of {sorted(_NP_ACTIVATIONS)} or a "
                         "callable on numpy arrays")
    return name, _NP_ACTIVATIONS[name]


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _read_st_model_config(model_dir: Path) -> dict:
    path = Path(model_dir) / "config_sentence_transformers.json"
    return read_json(path) if path.is_file() else {}


def _is_single_pair(pairs) -> bool:
    # ST treats a flat list/tuple of two texts as one pair and returns one score for it.
    return (isinstance(pairs, (list, tuple)) and len(pairs) == 2
            and all(isinstance(t, str) for t in pairs))


class CrossEncoder(Encoder):
    """Drop-in for `sentence_transformers.CrossEncoder` on JAX.

    Args:
      model_name_or_path: local HF directory or hub id (default: ms-marco-MiniLM-L6-v2).
      num_labels: head size; None = the checkpoint's, or 1 for a checkpoint without a head (as ST).
      max_length: token limit per pair; None = the tokenizer's model_max_length, capped by the
        model's position table.
      activation_fn: "sigmoid" | "identity" | "tanh" | callable; None = the config's stored one,
        else sigmoid for 1 label and identity otherwise (as ST).
      dtype: compute dtype ("float32", "bfloat16"); params stay as loaded (fp32).
      buckets: a batching.BucketConfig (lengths, rows per batch or token budget, packing);
        None = runner.default_buckets("pairs"), the measured fastest for the backend.
      compilation_cache: directory for JAX's persistent compilation cache, so a second process
        starts without recompiling; default $XENC_COMPILATION_CACHE, else the user cache
        directory (compile_cache.enable_compilation_cache); False or XENC_COMPILATION_CACHE=0: off.
      mesh: None (one device), "auto" (data parallel over all devices), "data=4,model=2", or a
        jax.sharding.Mesh (see sharding.make_mesh). Bucket rows become a multiple of the
        data-parallel size; scores are the same, in input order. With several processes
        (multihost.initialize) each process passes its own pairs and gets their scores; bucket
        sizes are then per process.
      sharding: how params are split over the mesh: "dp" (replicated), "fsdp", "tp", "fsdp_tp"
        (see the rules table in sharding.py).
      chunk_size: pairs per chunk in predict / predict_stream: each chunk is tokenized and
        bucketed while the device scores the previous one; host memory grows with it.
      autotune: on CPU without a mesh and without `buckets`, the layout, stream count and (for
        bf16) compute dtype are measured for this machine and model (autotune.py) and cached per
        CPU: None (default) uses a cached result, and tunes in warmup() or before a call of
        >= 20000 pairs; True tunes now (if not cached); False keeps the defaults. `self.tuning`
        says what runs; XENC_AUTOTUNE=0 turns it off everywhere.
      allow_new_head: a folder without a trained classification head (a bare encoder, a
        bi-encoder) is an error by default, since a random head scores meaninglessly; True
        initialises a new head (seeded by `seed`, with a warning), e.g. to train it.
    """

    _tune_kind = "pairs"

    def __init__(self, model_name_or_path: str | os.PathLike = DEFAULT_MODEL, num_labels: int | None = None,
                 max_length: int | None = None, activation_fn=None, *, dtype="float32",
                 buckets: BucketConfig | None = None, revision: str | None = None,
                 ignore_config_keys: tuple[str, ...] = (), seed: int = 0,
                 attention_impl: str | None = None, compilation_cache: str | bool | None = None,
                 mesh=None, sharding: str = "dp", chunk_size: int = DEFAULT_CHUNK_SIZE,
                 prompts: dict[str, str] | None = None, default_prompt_name: str | None = None,
                 param_dtype="float32", autotune: bool | None = None, allow_new_head: bool = False):
        model_dir = open_model_dir(model_name_or_path, revision, compilation_cache)
        # modules.json's chain (hf/st_modules.py): a module we do not compute is refused by name
        self._chain = chain = st_modules.read_chain(model_dir)
        raw = read_json(chain.encoder_dir / "config.json") if (chain.encoder_dir / "config.json").is_file() else {}
        archs = raw.get("architectures") or []
        if chain.kind == "pooled":   # Transformer -> Pooling -> Dense "scores": the trained head is the Dense
            pt = self._load_pooled(chain, num_labels, mesh, sharding, param_dtype, revision, ignore_config_keys)
        else:
            if num_labels is None and not any(a.endswith("ForSequenceClassification") for a in archs):
                num_labels = 1  # a bare encoder becomes a 1-label cross-encoder, as in ST
            pt = load_model(model_dir, mesh, sharding, param_dtype=param_dtype, head=True, num_labels=num_labels,
                            revision=revision, ignore_config_keys=ignore_config_keys, seed=seed,
                            allow_new_head=allow_new_head)
            self.params = pt.params
        self.model_dir, self.config, self.tokenizer = model_dir, pt.config, pt.tokenizer
        self.dtype = as_dtype(dtype)
        if chain.transformer.get("do_lower_case"):
            raise ValueError(f"{chain.encoder_dir}: do_lower_case in its Transformer config is not supported for "
                             "cross-encoders")
        if max_length is None:   # a Transformer config's max_seq_length is ST's model_max_length
            max_length = (st_folder.default_max_seq_length(chain.transformer, self.tokenizer, self.config)
                          if chain.transformer.get("max_seq_length") else default_max_length(self.tokenizer, self.config))
        self.max_length = check_token_limit(max_length, "max_length", 3, self.config)
        st_cfg = _read_st_model_config(model_dir)
        self._init_prompts(st_cfg, prompts, default_prompt_name)
        if self.default_prompt_name is not None and self.default_prompt_name not in self.prompts:
            raise ValueError(f"default_prompt_name {self.default_prompt_name!r} is not one of the prompts "
                             f"{sorted(self.prompts)}")
        # ST 6.3's modality: pairs as query/document messages through the chat template, or text pairs
        self._input_format = input_format(chain.transformer, self.tokenizer, raw.get("model_type"), saved=chain.is_st,
                                          where=str(chain.encoder_dir))
        self._encode = pair_encoder(model_dir, self.tokenizer, self.config, self.max_length, fmt=self._input_format)
        if activation_fn is None:   # the stored one (ST 6.3's order), else ST's default
            activation_fn = (st_modules.stored_activation(st_cfg, raw, model_dir)
                             or ("sigmoid" if self.num_labels == 1 else "identity"))
        self.activation_name, self.activation_fn = _resolve_activation(activation_fn)
        self._init_runtime(pt, buckets=buckets, attention_impl=attention_impl, mesh=mesh, sharding=sharding,
                           chunk_size=chunk_size, autotune=autotune)

    def _load_pooled(self, chain, num_labels, mesh, sharding, param_dtype, revision, ignore_config_keys):
        """The encoder (no head) and the chain's Dense weights; self.params = {"encoder", "dense"}."""
        pt = load_model(chain.encoder_dir, mesh, sharding, param_dtype=param_dtype, head=False, revision=revision,
                        ignore_config_keys=ignore_config_keys)
        chain.pooled.output_dim(pt.config.hidden_size)   # Pooling's dimension and each Dense's in_features
        if num_labels is not None and num_labels != chain.num_labels:
            raise ValueError(f"num_labels={num_labels}, but the score head of {chain.model_dir} (its last Dense) "
                             f"gives {chain.num_labels} scores per pair")
        self.params = {"encoder": pt.params["encoder"],
                       "dense": [{k: jnp.asarray(v) for k, v in p.items()} for p in chain.pooled.dense_params]}
        return dataclasses.replace(pt, config=pt.config.with_num_labels(chain.num_labels))

    # ---- the pure function ----
    def _model_fn(self, module):
        if self._chain.kind == "pooled":   # the bi-encoder's pooling and Dense ops give the logits
            pooled = self._chain.pooled
            return make_embed_fn(module, self.config.position_offset, pooled.pooling_modes, pooled.ops)
        return make_score_fn(module, self.config.position_offset)

    def _resolve_prompt(self, prompt, prompt_name):
        prompt = super()._resolve_prompt(prompt, prompt_name)
        pooled = self._chain.pooled
        if prompt and pooled is not None and not pooled.include_prompt and not self._input_format.message:
            raise NotImplementedError("this model's Pooling has include_prompt=False (prompt tokens excluded "
                                      "from pooling), which xenc_jax does not implement yet")
        return prompt

    def _token_limit(self) -> int:
        return self.max_length

    @property
    def num_labels(self) -> int:
        return self.config.num_labels

    # ---- one chunk: tokenize + bucket (background thread), then score (device) ----
    def encode_pairs(self, pairs, prompt: str | None = None, offset: int = 0):
        """Token ids of each pair as ST 6.3 makes them: through the chat template when the
        Transformer takes messages (chat_format.py), else as a text pair with the prompt before the query."""
        return self._encode(pairs, prompt, offset)

    def _prepare(self, start: int, pairs: list, cfg: BucketConfig, prompt: str | None = None):
        encodings, inverse = unique_encodings(self.encode_pairs(pairs, prompt, offset=start))
        if any(len(e) == 0 for e in encodings):
            # A decoder's tokenizer adds no special tokens: ("", "") without a template has no
            # tokens at all. ST scores an all-padding row there (HF reads a pad's logits), a number
            # that says nothing about the pair, so it is an error here, never a score.
            i = next(k for k, j in enumerate(inverse) if len(encodings[j]) == 0)
            label = f"pairs[{start + i}]"
            raise InputError(f"{label} ({tuple(pairs[i])!r}) tokenizes to no tokens (empty texts, and this tokenizer "
                             "adds no special tokens), so there is nothing to score; drop the pair or give it text",
                             start + i, label)
        return encodings, inverse, (make_batches(encodings, cfg, self.max_length, self._pad_id) if encodings else [])

    def _score_prepared(self, prep, cfg: BucketConfig) -> np.ndarray:
        encodings, inverse, batches = prep
        outputs = self._run_batches(batches, cfg, any_input=bool(encodings))
        if not encodings:
            return np.zeros((0, self.num_labels), np.float32)
        return scatter_results(outputs, len(encodings))[inverse]

    def logits_stream(self, pairs, batch_size: int | None = None, chunk_size: int | None = None,
                      show_progress_bar: bool | None = None, stats: dict | None = None, *,
                      prompt: str | None = None, prompt_name: str | None = None) -> Iterator[np.ndarray]:
        """Raw fp32 logits [n, num_labels] per chunk of `chunk_size` pairs, in input order. `pairs`:
        any iterable (a generator, a file reader), read one chunk at a time; the next chunk is
        tokenized and bucketed in a background thread while the device scores this one. `stats`
        (a dict) gets "host_wait_s": how long scoring waited for the host's next chunk."""
        prompt = self._resolve_prompt(prompt, prompt_name)
        yield from self._chunked(pairs, "pairs", "(query, passage)", batch_size=batch_size, chunk_size=chunk_size,
                                 show_progress_bar=show_progress_bar, stats=stats, desc="Scoring", unit="pair",
                                 prepare=lambda start, chunk, cfg: self._prepare(start, chunk, cfg, prompt),
                                 run=self._score_prepared)

    def logits(self, pairs, batch_size: int | None = None, show_progress_bar: bool | None = None,
               chunk_size: int | None = None, *, prompt: str | None = None,
               prompt_name: str | None = None) -> np.ndarray:
        """Raw fp32 logits [N, num_labels] in input order."""
        pairs = as_sequence(pairs, "pairs", "[(query, passage), ...]")
        if len(pairs) == 2 and all(isinstance(x, str) for x in pairs):
            tokenize_pairs(self.tokenizer, pairs, self.max_length)  # raises: one pair, not a list
        parts = list(self.logits_stream(pairs, batch_size, chunk_size, show_progress_bar, prompt=prompt,
                                        prompt_name=prompt_name))
        return np.concatenate(parts) if parts else np.zeros((0, self.num_labels), np.float32)

    def _activate(self, logits: np.ndarray, activation_fn, apply_softmax: bool) -> np.ndarray:
        act = self.activation_fn if activation_fn is None else _resolve_activation(activation_fn)[1]
        scores = np.asarray(act(logits), np.float32)
        if self.num_labels == 1:
            return scores[:, 0]
        return _softmax(scores).astype(np.float32) if apply_softmax else scores

    def predict(self, pairs, batch_size: int | None = None, activation_fn=None, apply_softmax: bool = False,
                show_progress_bar: bool | None = None, convert_to_numpy: bool = True,
                chunk_size: int | None = None, *, prompt: str | None = None, prompt_name: str | None = None):
        """Scores in input order: [N] for 1 label, [N, C] otherwise (a single pair -> one score).
        Scored in chunks of `chunk_size` pairs (default self.chunk_size), exactly as predict_stream."""
        single = _is_single_pair(pairs)
        logits = self.logits([tuple(pairs)] if single else pairs, batch_size, show_progress_bar, chunk_size,
                             prompt=prompt, prompt_name=prompt_name)
        scores = self._activate(logits, activation_fn, apply_softmax)
        if single:
            return scores[0]
        return scores if convert_to_numpy else list(scores)

    def predict_stream(self, pairs, chunk_size: int | None = None, batch_size: int | None = None,
                       activation_fn=None, apply_softmax: bool = False,
                       show_progress_bar: bool | None = None, stats: dict | None = None, *,
                       prompt: str | None = None, prompt_name: str | None = None) -> Iterator[np.ndarray]:
        """Scores per chunk, in input order, for any iterable of pairs: memory is bounded by the
        chunk size, not the input. The concatenated chunks equal `predict(list(pairs))` bit for
        bit (predict scores in the same chunks)."""
        for logits in self.logits_stream(pairs, batch_size, chunk_size, show_progress_bar, stats, prompt=prompt,
                                         prompt_name=prompt_name):
            yield self._activate(logits, activation_fn, apply_softmax)

    def rank(self, query: str, documents: Sequence[str], top_k: int | None = None, return_documents: bool = False,
             batch_size: int | None = None, activation_fn=None, show_progress_bar: bool | None = None, *,
             prompt: str | None = None, prompt_name: str | None = None) -> list[dict]:
        """[{"corpus_id", "score"(, "text")}] sorted by score, highest first (as ST)."""
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, got {_what(query)}")
        check_utf8(query, "query")
        documents = _text_list(documents, "documents")
        try:
            return self.rank_many([query], [documents], top_k, return_documents, batch_size, activation_fn,
                                  show_progress_bar, prompt=prompt, prompt_name=prompt_name)[0]
        except InputError as e:   # rank_many named it (queries[0], documents[0][i]): i is e.index
            raise e.relabeled(f"(query, documents[{e.index}])") from None

    def rank_many(self, queries: Sequence[str], documents: Sequence[Sequence[str]], top_k: int | None = None,
                  return_documents: bool = False, batch_size: int | None = None, activation_fn=None,
                  show_progress_bar: bool | None = None, *, prompt: str | None = None,
                  prompt_name: str | None = None) -> list[list[dict]]:
        """Several queries, each with its own candidates, scored in one bucketed stream."""
        if self.num_labels != 1:
            raise ValueError(f"rank() needs a model with num_labels=1, this one has {self.num_labels}; "
                             "use predict() on pairs instead")
        top_k = _check_top_k(top_k)
        if isinstance(queries, str) or isinstance(documents, str):
            raise TypeError("rank_many takes a list of queries and a list of document lists; "
                            "for one query use rank(query, documents)")
        queries = _text_list(queries, "queries")
        documents = [_text_list(d, f"documents[{qi}]")
                     for qi, d in enumerate(_text_list(documents, "documents", of="document lists"))]
        if len(queries) != len(documents):
            raise ValueError(f"{len(queries)} queries but {len(documents)} document lists; give one list per query")
        pairs, owner = [], []
        for qi, (q, docs) in enumerate(zip(queries, documents)):
            pairs.extend((q, d) for d in docs)
            owner.extend([qi] * len(docs))
        try:
            scores = (self.predict(pairs, batch_size, activation_fn, show_progress_bar=show_progress_bar,
                                   prompt=prompt, prompt_name=prompt_name) if pairs else np.zeros(0))
        except InputError as e:   # named pairs[k], a list the caller never saw: name their own arguments
            if e.index is None:
                raise
            qi = owner[e.index]
            di = e.index - owner.index(qi)   # owner.index(qi): the first pair of query qi
            raise e.relabeled(f"(queries[{qi}], documents[{qi}][{di}])") from None
        results, start = [], 0
        for qi, docs in enumerate(documents):
            s = scores[start:start + len(docs)]
            start += len(docs)
            order = np.argsort(-s, kind="stable")[:top_k]
            results.append([{"corpus_id": int(i), "score": float(s[i]), **({"text": docs[i]} if return_documents else {})}
                            for i in order])
        return results

    def save(self, path: str | os.PathLike) -> Path:
        """HF directory (config, safetensors, tokenizer) that PyTorch sentence-transformers loads.
        Atomic: an existing directory at `path` is replaced only once the new one is complete."""
        if self._chain.kind == "pooled":   # the same modules.json chain, Dense weights from self.params
            activation = st_folder.CE_ACTIVATION_PATHS.get(self.activation_name)
            return save_folder(
                path, write_sentence_transformer, self.config, self.params, self.tokenizer,
                self._chain.pooled.with_dense_params(jax.device_get(self.params["dense"])),
                max_seq_length=self.max_length, do_lower_case=False,
                model_config={"model_type": "CrossEncoder", "prompts": self.prompts,
                              "default_prompt_name": self.default_prompt_name,
                              **({"activation_fn": activation} if activation else {})},
                transformer_config=self._input_format.transformer_config("feature-extraction"))
        return save_folder(path, write_cross_encoder, self.config, self.params, self.tokenizer,
                           max_length=self.max_length, activation=self.activation_name, source_dir=self.model_dir,
                           prompts=self.prompts, default_prompt_name=self.default_prompt_name)


# ----------------------------------------------------------------------------- rank() arguments

def _what(x) -> str:
    return "None" if x is None else f"{type(x).__name__} {repr(x)[:60]}"


def _text_list(items, what: str, of: str = "strings") -> list:
    """items as a list, each a str (unless `of` names lists); a clear TypeError for None, a bare
    string or a non-list, instead of a raw "'NoneType' object is not iterable" from deep inside."""
    if items is None or isinstance(items, (str, bytes, dict)):
        wrap = "; wrap it in a list" if isinstance(items, (str, bytes)) else ""
        raise TypeError(f"{what} must be a list of {of}, got {_what(items)}{wrap}")
    try:
        items = list(items)  # tuples, generators (read once, used twice below), numpy arrays
    except TypeError:
        raise TypeError(f"{what} must be a list of {of}, got {_what(items)}") from None
    if of == "strings":
        for i, x in enumerate(items):
            if not isinstance(x, str):
                raise TypeError(f"{what}[{i}] is {_what(x)}, not a str")
            check_utf8(x, f"{what}[{i}]")   # else the tokenizer names it pairs[k][0] / pairs[k][1]
    return items


def _check_top_k(top_k) -> int | None:
    if top_k is None:
        return None
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise ValueError(f"top_k must be an int >= 1, or None for all documents; got {top_k!r}")
    return int(top_k)
