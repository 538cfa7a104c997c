"""Load a Hugging Face model (directory or hub id) into (config, params, tokenizer), and save back."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ..models.encoder import BareEncoder, SequenceClassifier
from .causal_score import logit_score_config, score_token_ids
from .checkpoint_files import lazy_checkpoint, write_safetensors
from .configs import EncoderConfig, config_to_dict, load_config
from .hub import resolve_model_dir
from .model_folder import (ModelFolderError, check_cross_encoder_modules, check_tokenizer_files,
                           check_tokenizer_vocab, missing_head_error, read_json)
from .registry import FAMILIES, family
from .weights import flat_paths, params_from_hf, params_to_hf

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Pretrained:
    config: EncoderConfig
    params: dict              # {"encoder": ..., ["head": ...]}, arrays in param_dtype
    tokenizer: Any            # transformers PreTrainedTokenizerBase (or None)
    model_dir: Path
    head: bool

    def module(self, dtype=jnp.float32, attention_impl: str | None = None) -> nn.Module:
        return build_module(self.config, head=self.head, dtype=dtype,
                            param_dtype=jax.tree.leaves(self.params)[0].dtype, attention_impl=attention_impl)


def build_module(cfg: EncoderConfig, *, head: bool, dtype=jnp.float32, param_dtype=jnp.float32,
                 attention_impl: str | None = None) -> nn.Module:
    """The bare encoder module wraps its params as {"encoder": ...} too, so one tree serves both."""
    if head:
        return SequenceClassifier(cfg, dtype, param_dtype, attention_impl)
    return BareEncoder(cfg, dtype, param_dtype, attention_impl)


def param_shapes(cfg: EncoderConfig, *, head: bool, param_dtype=jnp.float32) -> dict[str, tuple]:
    """Our param path -> shape, without allocating anything."""
    module = build_module(cfg, head=head, param_dtype=param_dtype)
    ids = jnp.zeros((1, 2), jnp.int32)
    abstract = jax.eval_shape(lambda: nn.meta.unbox(module.init(jax.random.key(0), ids, ids)["params"]))
    return {k: tuple(v.shape) for k, v in flat_paths(abstract).items()}


def init_head_params(cfg: EncoderConfig, seed: int, param_dtype=jnp.float32) -> dict:
    """A freshly initialised head, as HF does for a checkpoint without one (N(0, 0.02), zero bias)."""
    head = cfg.head_module(cfg, param_dtype=param_dtype)
    return nn.meta.unbox(head.init(jax.random.key(seed), jnp.zeros((1, cfg.hidden_size), param_dtype))["params"])


def _placer(plan, cfg: EncoderConfig, head: bool, param_dtype):
    """(our param path, numpy array) -> a global array in that param's sharding on plan's mesh."""
    module = build_module(cfg, head=head, param_dtype=param_dtype)
    ids = np.zeros((1, 2), np.int32)
    by_path = flat_paths(plan.module_param_shardings(module, ids, ids))
    dtype = np.dtype(jnp.dtype(param_dtype))

    def place(path: str, value) -> jax.Array:
        host = np.asarray(value).astype(dtype, copy=False)
        sharding = by_path.get(path, plan.replicated)
        return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])
    return place


def _place_subtree(tree: dict, prefix: str, place) -> dict:
    return {k: _place_subtree(v, f"{prefix}/{k}", place) if isinstance(v, dict) else place(f"{prefix}/{k}", v)
            for k, v in tree.items()}


def _scores_lm_tokens(cfg: EncoderConfig) -> bool:
    """A causal-LM reranker (head kind "lm", a kind its family's record declares): it scores the
    logits of tokens that loading resolves from its folder (hf/causal_score.py)."""
    return "lm" in family(cfg.family).head_kinds and getattr(cfg, "head_kind", None) == "lm"


def direct_tokenizers() -> dict[str, str]:
    """model_type -> the tokenizer class transformers' AutoTokenizer registers for it, from each
    family's record (Family.tokenizer; checked against TOKENIZER_MAPPING_NAMES by
    tests/test_hf_loading.py). When a folder's tokenizer_config.json names exactly that class,
    AutoTokenizer loads that class, so we load it directly: importing AutoTokenizer pulls in
    transformers' config machinery and with it torch when torch is installed (~1.8 s of a fresh
    process's start, more than the rest of loading a MiniLM)."""
    return {name: record.tokenizer for name, record in FAMILIES.items() if record.tokenizer}


def _direct_tokenizer_class(model_dir: Path):
    """The class AutoTokenizer would pick, when that is certain without asking it (else None)."""
    try:
        tok_cfg = json.loads((model_dir / "tokenizer_config.json").read_text())
        model_type = json.loads((model_dir / "config.json").read_text()).get("model_type")
    except (OSError, ValueError):
        return None
    name = tok_cfg.get("tokenizer_class")
    if not isinstance(name, str) or "auto_map" in tok_cfg:
        return None
    if model_type in GENERIC_TOKENIZERS:
        chosen = _generic_choice(model_dir, model_type, name)
    elif direct_tokenizers().get(model_type) == name.removesuffix("Fast"):
        chosen = name.removesuffix("Fast")
    else:
        return None
    import transformers
    return None if chosen is None else getattr(transformers, chosen, None)


# model_type -> what transformers 5's AutoTokenizer registers for it where that is no class of its
# own (TOKENIZER_MAPPING_NAMES: None, or the generic TokenizersBackend; the family record's
# tokenizer is ""). Checked against transformers by tests/test_tokenizer_kinds.py.
GENERIC_TOKENIZERS = {"llama": None, "mistral": "TokenizersBackend", "modernbert": "TokenizersBackend"}
# registered as MistralCommonBackend instead where mistral_common is installed: AutoTokenizer decides
_MISTRAL_COMMON_TYPES = frozenset({"mistral"})


def _generic_choice(model_dir: Path, model_type: str, name: str) -> str | None:
    """AutoTokenizer's pick (transformers 5's tokenization_auto) for the folder class names the
    Llama 2/3, Mistral and ModernBERT folders ship, for a model_type of GENERIC_TOKENIZERS:
    PreTrainedTokenizerFast (Llama 3, ModernBERT) -> TokenizersBackend (the same class);
    LlamaTokenizer(Fast) (Llama 2, Mistral) -> TokenizersBackend when tokenizer.json is byte-level
    or the model_type registers TokenizersBackend, else LlamaTokenizer, which rebuilds the
    SentencePiece pre-tokenizer itself (ids differ from tokenizer.json's pipeline, e.g. on leading
    spaces). Other names: None (ask AutoTokenizer)."""
    import importlib.util
    if model_type in _MISTRAL_COMMON_TYPES and importlib.util.find_spec("mistral_common") is not None:
        return None
    if name in ("PreTrainedTokenizerFast", "TokenizersBackend"):
        return "TokenizersBackend"
    if name.removesuffix("Fast") != "LlamaTokenizer":
        return None
    try:
        byte_level = '"ByteLevel"' in (model_dir / "tokenizer.json").read_text(encoding="utf-8")
    except OSError:
        byte_level = False
    return "TokenizersBackend" if byte_level or GENERIC_TOKENIZERS[model_type] else "LlamaTokenizer"


# The tokenizer's JSON files: a damaged one is named (model_folder.read_json) rather than
# reported as transformers' parse error.
TOKENIZER_JSON = ("tokenizer_config.json", "tokenizer.json", "special_tokens_map.json", "added_tokens.json",
                  "vocab.json")


def load_tokenizer(model_dir: Path):
    """The folder's tokenizer, as AutoTokenizer loads it; a folder without tokenizer files is an
    error (transformers 5 would build an empty tokenizer that maps every word to [UNK])."""
    model_dir = Path(model_dir)
    check_tokenizer_files(model_dir)
    if (model_dir / "tokenizer_config.json").is_file():
        read_json(model_dir / "tokenizer_config.json")
    cls = _direct_tokenizer_class(model_dir)
    if cls is not None:
        try:
            return cls.from_pretrained(str(model_dir))
        except Exception:  # noqa: BLE001 - AutoTokenizer below gives the error message
            pass
    from transformers import AutoTokenizer
    try:
        # trust_remote_code stays False: we never execute code shipped with a model.
        return AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=False)
    except Exception as e:
        for name in TOKENIZER_JSON:   # a damaged JSON file: say which (checked only on failure, they can be large)
            if (model_dir / name).is_file():
                read_json(model_dir / name, expect=None)
        raise OSError(f"could not load a tokenizer from {model_dir} ({type(e).__name__}: {e}); "
                      "the directory needs tokenizer.json or the vocab files of its tokenizer") from e


def check_pair_token_types(tokenizer, cfg: EncoderConfig, model_dir: Path) -> None:
    """A pair's token types fit the model: a model with token-type embeddings (type_vocab_size > 1,
    BERT-style cross-encoders) gets them from the tokenizer, and no type has no embedding row.

    A tokenizer_config.json whose tokenizer_class transformers lacks ("NoSuchTokenizer") or is the
    generic PreTrainedTokenizerFast makes AutoTokenizer fall back to TokenizersBackend, whose
    model_input_names leave out token_type_ids: every pair would silently get all-zero types and
    other scores. sentence-transformers 6.3 (AutoTokenizer too) scores that folder so, silently;
    we refuse it. Types beyond the table would be clamped by JAX's gather (PyTorch raises)."""
    n = int(cfg.type_vocab_size)
    if n == 0:        # no token-type embeddings: the model never reads types (DistilBERT, MPNet, decoders)
        return
    from ..batching.tokenization import TOKENIZER_LOCK
    with TOKENIZER_LOCK:
        types = tokenizer("a", "b").get("token_type_ids")
    name = None
    if (model_dir / "tokenizer_config.json").is_file():
        name = read_json(model_dir / "tokenizer_config.json").get("tokenizer_class")
    import transformers
    if not isinstance(name, str):
        named = "tokenizer_config.json names no tokenizer_class"
    else:
        named = (f"tokenizer_config.json names tokenizer_class {name!r}"
                 + ("" if hasattr(transformers, name) else ", which transformers does not have"))
    want = direct_tokenizers().get(cfg.family) or "the tokenizer class of the model these weights come from"
    if types is None and n > 1:
        raise ModelFolderError(
            f"{model_dir}: the model has token-type embeddings (config.json type_vocab_size={n}: a pair's "
            f"second text gets type 1) but its tokenizer ({type(tokenizer).__name__}; {named}) returns no "
            "token_type_ids, so every pair would get all-zero types and wrong scores (sentence-transformers "
            f"6.3 loads the same tokenizer with AutoTokenizer and scores so, silently); set tokenizer_class in "
            f"tokenizer_config.json to {want!r}")
    if types is not None and max(types, default=0) >= n:
        raise ModelFolderError(
            f"{model_dir}: its tokenizer ({type(tokenizer).__name__}; {named}) gives a pair's tokens type "
            f"{max(types)} but the model has only {n} token-type embedding(s) (config.json type_vocab_size); "
            f"the tokenizer files do not belong to these weights: set tokenizer_class to {want!r} or copy "
            "the tokenizer of the model they come from")


def load_pretrained(name_or_path: str | os.PathLike, *, head: bool = True, num_labels: int | None = None,
                    param_dtype=jnp.float32, revision: str | None = None,
                    ignore_config_keys: tuple[str, ...] = (), seed: int = 0,
                    with_tokenizer: bool = True, plan=None, allow_new_head: bool = True) -> Pretrained:
    """Load config, weights (strictly) and tokenizer, after checking the folder (hf/model_folder.py:
    tokenizer files present and fitting the embedding table; a CrossEncoder folder's modules).

    head=True builds the sequence-classification model; a checkpoint without a classification
    head (a bare encoder) gets a freshly initialised one, as HF does, with a warning, when
    allow_new_head (training does this); otherwise that is a MissingHeadError (CrossEncoder's
    default: a random head must never score).
    num_labels overrides the config's; a checkpoint head of another size is then an error.

    plan (a sharding.ShardingPlan): each param goes straight into its sharding on the plan's
    mesh as soon as it is converted, and safetensors are read one tensor at a time, so the host
    holds about one tensor beyond what its own devices keep (each device gets only its slice).
    """
    model_dir = resolve_model_dir(name_or_path, revision)
    cfg = load_config(model_dir, ignore_keys=ignore_config_keys)
    if head:
        check_cross_encoder_modules(model_dir)   # a head in modules we do not run: refused, never random
    if num_labels is not None:
        if int(num_labels) < 1:
            raise ValueError(f"num_labels must be >= 1, got {num_labels}")
        cfg = cfg.with_num_labels(num_labels)
    tokenizer = load_tokenizer(model_dir) if with_tokenizer else None
    if head and _scores_lm_tokens(cfg):   # a causal-LM reranker: which tokens it scores
        if tokenizer is None and logit_score_config(model_dir) is None:
            tokenizer = load_tokenizer(model_dir)
    if tokenizer is not None:
        check_tokenizer_vocab(tokenizer, cfg, model_dir)
        if head:   # a cross-encoder: it tokenizes pairs, whose second text has its own token type
            check_pair_token_types(tokenizer, cfg, model_dir)
    if head and _scores_lm_tokens(cfg):
        cfg = dataclasses.replace(cfg, score_token_ids=score_token_ids(model_dir, tokenizer))
    tensors = lazy_checkpoint(model_dir)
    place = None if plan is None else _placer(plan, cfg, head, param_dtype)
    conv = params_from_hf(tensors, cfg, head=head, shapes=param_shapes(cfg, head=head), place=place,
                          source=model_dir)
    params = conv.params
    if conv.ignored:
        log.info("ignored checkpoint tensors (harmless by name): %s", conv.ignored)
    if head and conv.missing_head and _scores_lm_tokens(cfg):
        from .weights import WeightsError
        raise WeightsError(f"{model_dir} is a causal LM with untied embeddings but its checkpoint has no "
                           f"LM head ({conv.missing_head}); an LM head cannot be initialised fresh")
    if head and conv.missing_head and not allow_new_head:
        raise missing_head_error(model_dir, conv.missing_head_keys or conv.missing_head)
    if head and conv.missing_head:
        log.warning("%s has no trained classification head (%s missing): initialised a new one with "
                    "seed %d; train it before trusting its scores", model_dir,
                    conv.missing_head_keys or conv.missing_head, seed)
        fresh = init_head_params(cfg, seed)
        if place is not None:
            fresh = _place_subtree(fresh, "head", place)
        present = params.get("head", {})
        params["head"] = {k: present[k] if set(present.get(k, {})) == set(fresh[k]) else fresh[k]
                          for k in fresh}
    if place is None:
        params = jax.tree.map(lambda x: jnp.asarray(x, dtype=param_dtype), params)
    return Pretrained(cfg, params, tokenizer, model_dir, head)


def save_pretrained(path: str | os.PathLike, cfg: EncoderConfig, params: dict, tokenizer=None, *,
                    head: bool = True) -> Path:
    """Write config.json, model.safetensors and tokenizer files that PyTorch transformers loads."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    host = jax.tree.map(lambda x: np.asarray(jax.device_get(x), dtype=np.float32), params)
    write_safetensors(params_to_hf(host, cfg, head=head), path / "model.safetensors")
    (path / "config.json").write_text(json.dumps(config_to_dict(cfg, head=head), indent=2, sort_keys=True) + "\n")
    if tokenizer is not None:
        tokenizer.save_pretrained(str(path))
    return path
