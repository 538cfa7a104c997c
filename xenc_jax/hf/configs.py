"""Hugging Face config.json <-> the family's frozen, validated config (models/config.py).

Generic checks live here; what each family reads from config.json is its record's read_config
(models/families/<name>/hf.py, found through hf/registry.py).

Strict on purpose (DESIGN principle 4): an attribute that changes the math and that we do not
implement is an error naming the attribute, its value and what we support. Attributes that only
matter to PyTorch (initialisation, generation, caching, bookkeeping) are listed by name as
harmless. Anything else is unknown and also an error, because we cannot tell whether it changes
the scores; `ignore_keys=` lets a user who checked it load anyway.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..models.config import EncoderConfig
from .family import ConfigError
from .model_folder import read_json
from .registry import family as _family

__all__ = ["ConfigError", "EncoderConfig", "SUPPORTED_ACTIVATIONS", "config_from_dict",
           "config_to_dict", "load_config"]


# HF activation names we implement exactly (see models/blocks/mlp.py:ACTIVATIONS).
SUPPORTED_ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "relu", "silu", "swish", "tanh")

# Keys that never change the forward pass of an encoder or its classification head.
_HARMLESS = {
    "_name_or_path", "architectures", "model_type", "transformers_version", "dtype", "torch_dtype",
    "id2label", "label2id", "num_labels", "problem_type", "finetuning_task", "initializer_range",
    "initializer_factor", "output_attentions", "output_hidden_states", "return_dict", "use_cache",
    "gradient_checkpointing", "chunk_size_feed_forward", "is_encoder_decoder", "tie_word_embeddings",
    "bos_token_id", "eos_token_id", "sep_token_id", "cls_token_id", "unk_token_id", "mask_token_id",
    "decoder_start_token_id", "prefix", "task_specific_params", "tokenizer_class", "pruned_heads",
    "torchscript", "use_bfloat16", "tf_legacy_loss", "xla_device", "layer_norm_type_legacy",
    "sentence_transformers", "directionality", "pooler_fc_size", "pooler_num_attention_heads",
    "pooler_num_fc_layers", "pooler_size_per_head", "pooler_type", "output_past", "language",
    "summary_type", "summary_use_proj", "summary_activation", "summary_last_dropout",
    "summary_proj_to_labels", "tie_weights_", "qa_dropout", "max_length", "min_length",
    "do_sample", "early_stopping", "num_beams", "num_return_sequences", "temperature", "top_k",
    "top_p", "repetition_penalty", "length_penalty", "no_repeat_ngram_size", "bad_words_ids",
    "num_beam_groups", "diversity_penalty", "typical_p", "encoder_no_repeat_ngram_size",
    "forced_bos_token_id", "forced_eos_token_id", "remove_invalid_values", "exponential_decay_length_penalty",
    "suppress_tokens", "begin_suppress_tokens", "return_dict_in_generate", "output_scores",
    "cross_attention_hidden_size", "is_decoder_only", "add_pooling_layer",
}

# Keys that change the math in any family: value must be one we implement. Family-specific
# ones are in the family's record (must_equal).
_MUST_EQUAL = {
    "is_decoder": (False,),
    "add_cross_attention": (False,),
}


# config.json keys every family reads alike (under its own names: DistilBERT's n_layers, T5's
# d_model) -> what a value must be. Checked here, once, before any reader does arithmetic on them,
# so a hand-edited or truncated config.json gives one line naming the file, the key and the fix
# instead of a TypeError deep in a reader or a weights error that blames the checkpoint.
# "?": null is allowed too (the readers then take HF's default).
_POSITIVE_INT = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                 "max_position_embeddings", "dim", "n_layers", "n_heads", "hidden_dim", "d_model", "d_ff", "d_kv",
                 "num_layers", "num_heads", "num_labels", "?num_key_value_heads", "?head_dim", "?embedding_size",
                 # MPNet's and T5's relative-position bias rows (HF: nn.Embedding(num_buckets, heads), so
                 # null fails there too); the family readers add their lower bounds (MPNet 32, T5 4)
                 "relative_attention_num_buckets")
_NON_NEGATIVE_INT = ("type_vocab_size",)
_INT = ("?pad_token_id",)   # some Llama conversions write -1
# DeBERTa-v2: < 1 means max_position_embeddings (HF compares it with 1, so null fails in PyTorch)
_ANY_INT = ("max_relative_positions",)
# DeBERTa-v2's log buckets: HF's make_log_bucket_position divides by position_buckets // 2, which is
# 0 for 1; <= 0 turns bucketing off (HF tests position_buckets > 0, so null fails in PyTorch too)
_BUCKETS = ("position_buckets",)
_POSITIVE_FLOAT = ("layer_norm_eps", "rms_norm_eps", "norm_eps", "layer_norm_epsilon")
_PROBABILITY = ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout",
                "seq_classif_dropout", "dropout_rate", "embedding_dropout", "mlp_dropout", "pooler_dropout",
                "?classifier_dropout", "?cls_dropout")


def _value_rules() -> dict[str, tuple[bool, Any, str]]:
    """key -> (null allowed, check(value) -> bool, what is expected)."""
    is_int = lambda x: isinstance(x, int) and not isinstance(x, bool)       # noqa: E731 (JSON true is an int)
    is_num = lambda x: isinstance(x, (int, float)) and not isinstance(x, bool)  # noqa: E731
    kinds = ((_POSITIVE_INT, lambda x: is_int(x) and x >= 1, "an integer >= 1"),
             (_NON_NEGATIVE_INT, lambda x: is_int(x) and x >= 0, "an integer >= 0"),
             (_INT, is_int, "an integer token id"),
             (_ANY_INT, is_int, "an integer (< 1: max_position_embeddings)"),
             (_BUCKETS, lambda x: is_int(x) and x != 1, "an integer: >= 2 log buckets, or <= 0 for none"),
             (_POSITIVE_FLOAT, lambda x: is_num(x) and 0 < x < 1, "a number > 0 and < 1 (e.g. 1e-12)"),
             (_PROBABILITY, lambda x: is_num(x) and 0 <= x <= 1, "a number from 0 to 1 (a dropout probability)"))
    return {k.lstrip("?"): (k.startswith("?"), check, want) for keys, check, want in kinds for k in keys}


_VALUE_RULES = _value_rules()


def _check_values(d: dict, source: str) -> None:
    """Each known numeric key's type and range (see _POSITIVE_INT), and the labels."""
    for key, (nullable, check, want) in _VALUE_RULES.items():
        if key in d and not (d[key] is None and nullable) and not check(d[key]):
            raise ConfigError(f"{source}: {key}={d[key]!r} is not valid, expected {want}; fix the value "
                              "(it must match the checkpoint the folder was saved with)")
    labels = d.get("id2label")
    if labels is not None and not isinstance(labels, dict):
        raise ConfigError(f"{source}: id2label={labels!r} is not valid, expected an object of label index -> "
                          'name (e.g. {"0": "LABEL_0"}); fix or remove it')


def _num_labels(d: dict) -> int:
    if "id2label" in d and d["id2label"]:
        return len(d["id2label"])
    return int(d.get("num_labels", 2))  # PretrainedConfig's default


def config_from_dict(d: dict, *, ignore_keys: tuple[str, ...] = (), source: str = "config.json") -> EncoderConfig:
    """Validate an HF config dict and turn it into an EncoderConfig. source: the file, for errors."""
    if not isinstance(d, dict):
        raise ConfigError(f"{source} holds a JSON {type(d).__name__}, expected an object of attributes")
    _check_values(d, source)
    family = d.get("model_type")
    record = _family(family)
    try:
        v, used = record.read_config(d, family, read_nested=config_from_dict) if record.reads_nested \
            else record.read_config(d, family)
    except (TypeError, ValueError) as e:   # a key no rule above knows, of the wrong type
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{source}: a value has the wrong type or form ({type(e).__name__}: {e}); "
                          "compare the file with the model's original config.json") from e
    v = _typed(v, source)
    must_equal = {**_MUST_EQUAL, **record.must_equal}
    for key, allowed in must_equal.items():
        if key in d and d[key] not in allowed and d[key] is not None:
            raise ConfigError(f"config attribute {key}={d[key]!r} changes the math and is not supported "
                              f"(supported: {allowed}); this model cannot be run exactly by xenc_jax")
    if v["hidden_act"] not in SUPPORTED_ACTIVATIONS:
        raise ConfigError(f"hidden_act={v['hidden_act']!r} is not supported (supported: {SUPPORTED_ACTIVATIONS})")
    if not v.get("attn_head_dim") and v["hidden_size"] % v["num_heads"]:   # an explicit head dim need not divide
        raise ConfigError(f"hidden_size={v['hidden_size']} is not divisible by num_attention_heads={v['num_heads']}")
    unknown = sorted(set(d) - used - _HARMLESS - record.harmless - set(must_equal) - set(ignore_keys))
    if unknown:
        raise ConfigError(
            f"{source} has attributes xenc_jax does not handle: {unknown}. They may change the "
            "model's math, so scores could silently differ from PyTorch. If you have checked that "
            "they do not, pass ignore_config_keys=" + repr(tuple(unknown))
            + f" (CLI: --ignore-config-keys {','.join(unknown)})")
    return record.config_cls(family=family, num_labels=_num_labels(d), raw_json=json.dumps(d), **v)


def _typed(v: dict, source: str) -> dict:
    """The shared fields as int / float. A reader sets only the fields its family has (a decoder
    leaves the BERT-only ones to their defaults)."""
    kinds = {**dict.fromkeys(("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                              "max_position_embeddings", "type_vocab_size", "pad_token_id", "embedding_size"), int),
             **dict.fromkeys(("layer_norm_eps", "hidden_dropout", "attention_dropout"), float)}
    for k, kind in kinds.items():
        if k in v:
            try:
                v[k] = kind(v[k])
            except (TypeError, ValueError):   # read from a key _VALUE_RULES does not know (or a null)
                raise ConfigError(f"{source}: the {k.replace('_', ' ')} read from it is {v[k]!r}, expected "
                                  f"{'an integer' if kind is int else 'a number'}; fix the value") from None
    return v


def load_config(model_dir: str | Path, *, ignore_keys: tuple[str, ...] = ()) -> EncoderConfig:
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"no config.json in {model_dir}: is this a Hugging Face model directory?")
    try:
        return config_from_dict(read_json(path, error=ConfigError), ignore_keys=ignore_keys, source=str(path))
    except ConfigError as e:
        if str(path) in str(e):
            raise
        # a family reader's or a generic check's message: which of the (maybe two) models it is about
        raise ConfigError(f"{path}: {e}") from e


def config_to_dict(cfg: EncoderConfig, *, head: bool) -> dict[str, Any]:
    """The HF config.json for `cfg`: the original attributes, with architecture and labels updated."""
    d = cfg.raw_dict
    if not d:
        raise ConfigError("this EncoderConfig was not made from a config.json; cannot write one")
    d["architectures"] = [_family(cfg.family).class_name(cfg.head_class_suffix if head else "Model")]
    if head:
        old = d.get("id2label") or {}
        if len(old) != cfg.num_labels:
            old = {str(i): f"LABEL_{i}" for i in range(cfg.num_labels)}
        d["id2label"] = {str(k): v for k, v in old.items()}
        d["label2id"] = {v: int(k) for k, v in d["id2label"].items()}
    d.pop("num_labels", None)
    d["transformers_version"] = _transformers_version(d.get("transformers_version"))
    return d


def _transformers_version(old: str | None) -> str | None:
    """The installed transformers' version: the file is written in the format it reads (a copied
    source's "4.8.2" would claim otherwise). From the package metadata: importing transformers
    to ask costs seconds where torch is installed."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("transformers")
    except PackageNotFoundError:
        return old
