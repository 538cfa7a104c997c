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


def _num_labels(d: dict) -> int:
    if "id2label" in d and d["id2label"]:
        return len(d["id2label"])
    return int(d.get("num_labels", 2))  # PretrainedConfig's default


def config_from_dict(d: dict, *, ignore_keys: tuple[str, ...] = ()) -> EncoderConfig:
    """Validate an HF config dict and turn it into an EncoderConfig."""
    family = d.get("model_type")
    record = _family(family)
    v, used = record.read_config(d, family)
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
            f"config.json has attributes xenc_jax does not handle: {unknown}. They may change the "
            "model's math, so scores could silently differ from PyTorch. If you have checked that "
            "they do not, pass ignore_config_keys=" + repr(tuple(unknown)))
    # a reader sets only the fields its family has (a decoder leaves the BERT-only ones to their defaults)
    for k in ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
              "max_position_embeddings", "type_vocab_size", "pad_token_id", "embedding_size"):
        if k in v:
            v[k] = int(v[k])
    for k in ("layer_norm_eps", "hidden_dropout", "attention_dropout"):
        if k in v:
            v[k] = float(v[k])
    return record.config_cls(family=family, num_labels=_num_labels(d), raw_json=json.dumps(d), **v)


def load_config(model_dir: str | Path, *, ignore_keys: tuple[str, ...] = ()) -> EncoderConfig:
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"no config.json in {model_dir}: is this a Hugging Face model directory?")
    return config_from_dict(read_json(path, error=ConfigError), ignore_keys=ignore_keys)


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
