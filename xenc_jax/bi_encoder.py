"""BiEncoder: embed texts with sentence-transformers' `SentenceTransformer` semantics, on JAX.

A thin convenience around a pure `embed_fn(params, arrays) -> [B, P, D]`: the encoder, pooling
(per packed segment), the Dense modules and Normalize all run inside one jitted function, once
per fixed bucket shape. Tokenization (batching.tokenize_texts) gives the same ids as ST, batches
are fixed-shape buckets (batching.make_batches), results come back in input order.

Loads an ST model folder (modules.json: Transformer, Pooling, Dense, Normalize, Dropout) or a
plain Hugging Face encoder folder (then `pooling=`, default as ST's for such folders: lasttoken
for a causal LM (architectures[0] "...ForCausalLM"), else mean).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .batching import BucketConfig, make_batches, scatter_results, unique_encodings
from .chat_format import text_encoder
from .encoders import Encoder, check_token_limit, load_model, open_model_dir
from .hf import st_folder
from .hf.st_folder import default_max_seq_length
from .hf.save import save_folder, write_sentence_transformer
from .hf.st_transformer import input_format
from .dtypes import as_dtype
from .model_fns import make_embed_fn
from .streaming import DEFAULT_CHUNK_SIZE
from .models import pooling as P
from .models.pooling import DenseSpec  # noqa: F401  (re-exported: it used to live here)
from .search import SCORE_FUNCTIONS, pairwise_similarity, similarity

log = logging.getLogger(__name__)

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def _check_sentences(sentences) -> tuple[list[str], bool]:
    if sentences is None:
        raise TypeError("sentences is None; pass a str or a list of str")
    if isinstance(sentences, str):
        return [sentences], True
    if isinstance(sentences, (bytes, dict)):
        raise TypeError(f"sentences must be a str or a list of str, got {type(sentences).__name__}")
    try:
        items = list(sentences)
    except TypeError:
        raise TypeError(f"sentences must be a str or a list of str, got {type(sentences).__name__}") from None
    for i, s in enumerate(items):
        if not isinstance(s, str):
            raise TypeError(f"sentences[{i}] is {type(s).__name__} {str(s)[:40]!r}, not a str; "
                            "every item must be a text (use '' for an empty one)")
    return [str(s) for s in items], False


class BiEncoder(Encoder):
    """Drop-in for `sentence_transformers.SentenceTransformer.encode` on JAX (text models).

    Args:
      model_name_or_path: an ST model folder (modules.json) or a plain HF encoder folder, or hub id.
      pooling: pooling mode(s) for a plain HF folder (default ST's: "lasttoken" for a ...ForCausalLM
        checkpoint, else "mean"); for an ST folder, overrides
        its 1_Pooling config when given.
      max_seq_length: token limit; None = the folder's (sentence_bert_config.json, else the
        tokenizer's model_max_length capped by the position table, as ST).
      dtype: compute dtype. param_dtype: the encoder's params ("bfloat16" halves a large model's
        memory; Dense weights stay fp32). buckets: batching.BucketConfig (default
        runner.default_buckets("texts"): packed rows, pooling per packed segment).
      compilation_cache: JAX persistent cache directory (default as CrossEncoder's: on, in the
        user cache directory; False or XENC_COMPILATION_CACHE=0: off).
      mesh / sharding: run over several devices or processes, as CrossEncoder (None, "auto",
        "data=4,model=2" or a Mesh; "dp" | "fsdp" | "tp" | "fsdp_tp"); same embeddings.
      autotune: as CrossEncoder's (autotune.py): None uses a cached tuning for this CPU and tunes
        in warmup() or before a call of >= 20000 texts, True tunes now, False keeps the defaults.
      ignore_config_keys: as CrossEncoder's: config.json attributes xenc_jax does not handle that
        you checked do not change the math (loading refuses an unknown attribute otherwise).
    """

    _tune_kind = "texts"

    def __init__(self, model_name_or_path: str | os.PathLike = DEFAULT_MODEL, *, pooling=None,
                 max_seq_length: int | None = None, truncate_dim: int | None = None, dtype="float32",
                 buckets: BucketConfig | None = None, revision: str | None = None,
                 attention_impl: str | None = None, compilation_cache: str | bool | None = None,
                 mesh=None, sharding: str = "dp", chunk_size: int = DEFAULT_CHUNK_SIZE, param_dtype="float32",
                 autotune: bool | None = None, ignore_config_keys: tuple[str, ...] = ()):
        model_dir = open_model_dir(model_name_or_path, revision, compilation_cache)
        self.model_dir = model_dir
        self.similarity_fn_name = "cosine"
        self._init_prompts(None)
        mods = st_folder.read_st_folder(model_dir, SCORE_FUNCTIONS)
        if mods.model_config is not None:
            self._read_model_config(mods.model_config)
        if pooling is not None:
            mods = mods.with_pooling(pooling, include_prompt=True)
        self._encoder_dir = mods.encoder_dir   # save() carries its pooler tensors (hf/save.carry_pooler)
        pt = load_model(mods.encoder_dir, mesh, sharding, param_dtype=param_dtype, head=False, revision=revision,
                        ignore_config_keys=ignore_config_keys)
        self.config, self.tokenizer = pt.config, pt.tokenizer
        self._dim = mods.output_dim(self.config.hidden_size)
        self.pooling_modes, self.include_prompt, self._ops = mods.pooling_modes, mods.include_prompt, mods.ops
        st_cfg = mods.transformer
        self.do_lower_case = bool(st_cfg.get("do_lower_case", False))
        if max_seq_length is None:
            max_seq_length = default_max_seq_length(st_cfg, self.tokenizer, self.config)
        self.max_seq_length = check_token_limit(max_seq_length, "max_seq_length", 2, self.config)
        # ST 6.3's modality: each text a user message through the chat template, or plain text
        self._input_format = input_format(st_cfg, self.tokenizer, self.config.raw_dict.get("model_type"),
                                          saved=mods.is_st, where=str(mods.encoder_dir))
        self._text_encoder = None
        if truncate_dim is not None and (not isinstance(truncate_dim, int) or truncate_dim < 1):
            raise ValueError(f"truncate_dim must be a positive int or None, got {truncate_dim!r}")
        self.truncate_dim = truncate_dim
        self.dtype = as_dtype(dtype)
        self.params = {"encoder": pt.params["encoder"],
                       "dense": [{k: jnp.asarray(v) for k, v in p.items()} for p in mods.dense_params]}
        self._init_runtime(pt, buckets=buckets, attention_impl=attention_impl, mesh=mesh, sharding=sharding,
                           chunk_size=chunk_size, autotune=autotune)

    # ---- reading an ST folder (hf/st_folder.py) ----
    def _read_model_config(self, cfg: dict) -> None:
        self.similarity_fn_name = cfg.get("similarity_fn_name") or "cosine"
        self._init_prompts(cfg)

    # ---- the pure function ----
    def _model_fn(self, module):
        return make_embed_fn(module, self.config.position_offset, self.pooling_modes, self._ops)

    def _token_limit(self) -> int:
        return self.max_seq_length

    def get_sentence_embedding_dimension(self) -> int:
        return self.truncate_dim or self._dim

    def _resolve_prompt(self, prompt, prompt_name):
        prompt = super()._resolve_prompt(prompt, prompt_name)
        if prompt and not self.include_prompt and not self._input_format.message:   # ST ignores it for messages
            raise NotImplementedError("this model's Pooling has include_prompt=False (prompt tokens excluded "
                                      "from pooling), which BiEncoder does not implement yet")
        return prompt

    # ---- one chunk: tokenize + bucket (background thread), then embed (device) ----
    def encode_texts(self, texts, prompt: str | None = None, offset: int = 0):
        """Token ids of each text as ST 6.3 makes them (chat_format.text_encoder): through the chat
        template when the Transformer takes messages, else the prompt prepended to the text."""
        if self._text_encoder is None or self._text_encoder[0] != self.max_seq_length:   # it may be set later
            self._text_encoder = (self.max_seq_length, text_encoder(self.tokenizer, self.max_seq_length,
                                                                    self._input_format, self.do_lower_case,
                                                                    str(self.model_dir)))
        return self._text_encoder[1](texts, prompt, offset)

    def _prepare(self, start: int, texts: list, cfg: BucketConfig, prompt: str | None):
        encodings, inverse = unique_encodings(self.encode_texts(texts, prompt, offset=start))
        # A decoder's tokenizer adds no special tokens, so "" has no tokens at all: it never
        # reaches the model (see _empty_vector).
        kept = np.flatnonzero(np.fromiter((len(e) > 0 for e in encodings), bool, len(encodings)))
        if len(kept) < len(encodings):
            self._check_empty_text(start, texts, encodings, inverse)
        batches = make_batches([encodings[i] for i in kept], cfg, self.max_seq_length, self._pad_id) if len(kept) else []
        return len(encodings), kept, inverse, batches

    def _check_empty_text(self, start: int, texts: list, encodings: list, inverse: np.ndarray) -> None:
        bad = [m for m in self.pooling_modes if m not in P.EMPTY_TEXT_MODES]
        if bad:
            i = next(k for k, j in enumerate(inverse) if len(encodings[j]) == 0)
            raise ValueError(f"texts[{start + i}] ({texts[i][:40]!r}) tokenizes to no tokens (this tokenizer "
                             f"adds no special tokens), and {bad[0]!r} pooling of an empty text is undefined; "
                             f"drop it (pooling modes {P.EMPTY_TEXT_MODES} give ST's zero vector)")

    def _empty_vector(self) -> np.ndarray:
        """The embedding of a text with no tokens, as ST computes it: its row is all padding, the
        pooled vector zero (P.EMPTY_TEXT_MODES), then the Dense / Normalize ops (Normalize keeps 0)."""
        width = len(self.pooling_modes) * self.config.hidden_size  # not cached: params may be replaced
        dense = jax.device_get(self.params["dense"])
        return np.asarray(P.sentence_ops(self._ops, dense, jnp.zeros((1, width), jnp.float32)))[0]

    def _embed_prepared(self, prep, cfg: BucketConfig, dim: int | None, normalize: bool) -> np.ndarray:
        n_unique, kept, inverse, batches = prep
        outputs = self._run_batches(batches, cfg, any_input=bool(len(kept)))
        if not n_unique:
            return np.zeros((0, dim or self._dim), np.float32)
        if len(kept) == n_unique:
            out = scatter_results(outputs, n_unique)
        else:
            out = np.empty((n_unique, self._dim), np.float32)
            out[:] = self._empty_vector()
            if len(kept):
                out[kept] = scatter_results(outputs, len(kept))
        out = out[inverse]
        if dim is not None:
            out = out[:, :dim]
        if normalize:
            out = out / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)
        return np.ascontiguousarray(out, dtype=np.float32)

    def encode_stream(self, sentences, chunk_size: int | None = None, batch_size: int | None = None,
                      normalize_embeddings: bool = False, show_progress_bar: bool | None = None,
                      prompt: str | None = None, prompt_name: str | None = None,
                      truncate_dim: int | None = None, stats: dict | None = None) -> Iterator[np.ndarray]:
        """Embeddings float32 [n, D] per chunk of `chunk_size` texts, in input order, for any
        iterable of texts: memory is bounded by the chunk size, not the input; the next chunk is
        tokenized and bucketed in a background thread while the device embeds this one. The
        concatenated chunks equal `encode(list(sentences))` bit for bit."""
        prompt = self._resolve_prompt(prompt, prompt_name)
        dim = truncate_dim if truncate_dim is not None else self.truncate_dim
        yield from self._chunked(sentences, "sentences", "'a text'", batch_size=batch_size, chunk_size=chunk_size,
                                 show_progress_bar=show_progress_bar, stats=stats, desc="Encoding", unit="text",
                                 prepare=lambda start, chunk, cfg: self._prepare(start, chunk, cfg, prompt),
                                 run=lambda prep, cfg: self._embed_prepared(prep, cfg, dim, normalize_embeddings))

    def encode(self, sentences: str | Sequence[str], batch_size: int | None = None,
               normalize_embeddings: bool = False, show_progress_bar: bool | None = None,
               prompt: str | None = None, prompt_name: str | None = None, convert_to_numpy: bool = True,
               truncate_dim: int | None = None, chunk_size: int | None = None):
        """Embeddings float32 [N, D] in input order ([D] for a single str, [0, D] for an empty list).

        batch_size: fixed rows per batch (None = the bucket config's token budget).
        prompt / prompt_name: text prepended to every sentence (as ST; the model's
        default_prompt_name applies when neither is given). convert_to_numpy=False returns a jax.Array.
        Embedded in chunks of `chunk_size` texts (default self.chunk_size), exactly as encode_stream.
        """
        texts, single = _check_sentences(sentences)
        dim = truncate_dim if truncate_dim is not None else self.truncate_dim
        parts = list(self.encode_stream(texts, chunk_size, batch_size, normalize_embeddings, show_progress_bar,
                                        prompt, prompt_name, truncate_dim))
        out = np.concatenate(parts) if parts else np.zeros((0, dim or self._dim), np.float32)
        if single:
            out = out[0]
        return out if convert_to_numpy else jnp.asarray(out)

    def similarity(self, a, b) -> np.ndarray:
        """Score matrix [len(a), len(b)] with the model's similarity_fn_name (as ST)."""
        return similarity(a, b, self.similarity_fn_name)

    def similarity_pairwise(self, a, b) -> np.ndarray:
        """Scores [n] of a[i] against b[i] with the model's similarity_fn_name (as ST)."""
        return pairwise_similarity(a, b, self.similarity_fn_name)

    def save(self, path: str | os.PathLike) -> Path:
        """Write an ST model folder that PyTorch `SentenceTransformer(path)` loads with equal embeddings.
        Atomic: an existing folder at `path` is replaced only once the new one is complete."""
        return save_folder(path, self._save_into)

    def _save_into(self, path: Path) -> None:
        mods = st_folder.SentenceModules(
            encoder_dir=path, pooling_modes=self.pooling_modes, include_prompt=self.include_prompt,
            ops=self._ops).with_dense_params(jax.device_get(self.params["dense"]))
        write_sentence_transformer(path, self.config, self.params, self.tokenizer, mods,
                                   max_seq_length=self.max_seq_length, do_lower_case=self.do_lower_case,
                                   transformer_config=self._input_format.transformer_config("feature-extraction"),
                                   source_dir=self._encoder_dir,
                                   model_config={"model_type": "SentenceTransformer",
                                                 "similarity_fn_name": self.similarity_fn_name,
                                                 "prompts": self.prompts, "default_prompt_name": self.default_prompt_name})
