"""Hugging Face config.json <-> our frozen, validated EncoderConfig.

Strict on purpose (DESIGN principle 4): an attribute that changes the math and that we do not
implement is an error naming the attribute, its value and what we support. Attributes that only
matter to PyTorch (initialisation, generation, caching, bookkeeping) are listed by name as
harmless. Anything else is unknown and also an error, because we cannot tell whether it changes
the scores; `ignore_keys=` lets a user who checked it load anyway.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

FAMILIES = ("bert", "roberta", "xlm-roberta", "electra", "distilbert")

# HF activation names we implement exactly (see models/layers.py:ACTIVATIONS).
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

# Keys that change the math: value must be one we implement.
_MUST_EQUAL = {
    "position_embedding_type": ("absolute",),
    "is_decoder": (False,),
    "add_cross_attention": (False,),
    "sinusoidal_pos_embds": (False, True),  # HF stores the (fixed) table as a weight either way
}


class ConfigError(ValueError):
    """config.json cannot be represented exactly by our modules."""


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    family: str                 # HF model_type
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    hidden_act: str
    max_position_embeddings: int
    type_vocab_size: int        # 0: no token-type embeddings (DistilBERT)
    layer_norm_eps: float
    pad_token_id: int
    embedding_size: int         # == hidden_size except ELECTRA-small-style projection
    num_labels: int
    hidden_dropout: float
    attention_dropout: float
    classifier_dropout: float
    head_activation: str        # tanh (BERT pooler, RoBERTa), gelu (ELECTRA), relu (DistilBERT)
    raw_json: str = dataclasses.field(default="", compare=False, repr=False)  # the original config.json

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def position_offset(self) -> int:
        """Added to 0-based positions: RoBERTa-style models start at padding_idx + 1."""
        return self.pad_token_id + 1 if self.family in ("roberta", "xlm-roberta") else 0

    @property
    def raw_dict(self) -> dict[str, Any]:
        return json.loads(self.raw_json) if self.raw_json else {}

    def with_num_labels(self, num_labels: int) -> "EncoderConfig":
        return dataclasses.replace(self, num_labels=int(num_labels))


def _num_labels(d: dict) -> int:
    if "id2label" in d and d["id2label"]:
        return len(d["id2label"])
    return int(d.get("num_labels", 2))  # PretrainedConfig's default


def _require(d: dict, key: str, family: str):
    if key not in d:
        raise ConfigError(f"config.json of a {family!r} model lacks the required attribute {key!r}")
    return d[key]


def config_from_dict(d: dict, *, ignore_keys: tuple[str, ...] = ()) -> EncoderConfig:
    """Validate an HF config dict and turn it into an EncoderConfig."""
    family = d.get("model_type")
    if family is None:
        raise ConfigError("config.json has no 'model_type'; cannot tell which architecture this is")
    if family not in FAMILIES:
        raise ConfigError(f"unknown model_type {family!r}: xenc_jax supports {', '.join(FAMILIES)}")
    if family == "distilbert":
        keys = {
            "vocab_size": "vocab_size", "hidden_size": "dim", "num_layers": "n_layers",
            "num_heads": "n_heads", "intermediate_size": "hidden_dim", "hidden_act": "activation",
            "max_position_embeddings": "max_position_embeddings", "pad_token_id": "pad_token_id",
            "hidden_dropout": "dropout", "attention_dropout": "attention_dropout",
        }
        v = {ours: _require(d, theirs, family) if theirs != "pad_token_id" else d.get(theirs, 0)
             for ours, theirs in keys.items()}
        v.update(type_vocab_size=0, layer_norm_eps=1e-12, embedding_size=v["hidden_size"],
                 classifier_dropout=float(d.get("seq_classif_dropout", 0.2)), head_activation="relu")
        used = set(keys.values()) | {"seq_classif_dropout"}
    else:
        keys = {
            "vocab_size": "vocab_size", "hidden_size": "hidden_size", "num_layers": "num_hidden_layers",
            "num_heads": "num_attention_heads", "intermediate_size": "intermediate_size",
            "hidden_act": "hidden_act", "max_position_embeddings": "max_position_embeddings",
            "type_vocab_size": "type_vocab_size", "layer_norm_eps": "layer_norm_eps",
            "hidden_dropout": "hidden_dropout_prob", "attention_dropout": "attention_probs_dropout_prob",
        }
        v = {ours: _require(d, theirs, family) for ours, theirs in keys.items()}
        v["pad_token_id"] = d.get("pad_token_id", 1 if family in ("roberta", "xlm-roberta") else 0)
        v["embedding_size"] = d.get("embedding_size", v["hidden_size"]) if family == "electra" else v["hidden_size"]
        cd = d.get("classifier_dropout")
        v["classifier_dropout"] = float(v["hidden_dropout"] if cd is None else cd)
        v["head_activation"] = "gelu" if family == "electra" else "tanh"
        used = set(keys.values()) | {"pad_token_id", "classifier_dropout", "embedding_size"}
        if "embedding_size" in d and family != "electra" and d["embedding_size"] != v["hidden_size"]:
            raise ConfigError(f"{family!r} config has embedding_size={d['embedding_size']} != hidden_size; "
                              "only ELECTRA projects embeddings")

    for key, allowed in _MUST_EQUAL.items():
        if key in d and d[key] not in allowed and d[key] is not None:
            raise ConfigError(f"config attribute {key}={d[key]!r} changes the math and is not supported "
                              f"(supported: {allowed}); this model cannot be run exactly by xenc_jax")
    if v["hidden_act"] not in SUPPORTED_ACTIVATIONS:
        raise ConfigError(f"hidden_act={v['hidden_act']!r} is not supported (supported: {SUPPORTED_ACTIVATIONS})")
    if v["hidden_size"] % v["num_heads"]:
        raise ConfigError(f"hidden_size={v['hidden_size']} is not divisible by num_attention_heads={v['num_heads']}")
    unknown = sorted(set(d) - used - _HARMLESS - set(_MUST_EQUAL) - set(ignore_keys))
    if unknown:
        raise ConfigError(
            f"config.json has attributes xenc_jax does not handle: {unknown}. They may change the "
            "model's math, so scores could silently differ from PyTorch. If you have checked that "
            "they do not, pass ignore_config_keys=" + repr(tuple(unknown)))
    for k in ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
              "max_position_embeddings", "type_vocab_size", "pad_token_id", "embedding_size"):
        v[k] = int(v[k])
    for k in ("layer_norm_eps", "hidden_dropout", "attention_dropout"):
        v[k] = float(v[k])
    return EncoderConfig(family=family, num_labels=_num_labels(d),
                         raw_json=json.dumps(d), **v)


def load_config(model_dir: str | Path, *, ignore_keys: tuple[str, ...] = ()) -> EncoderConfig:
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"no config.json in {model_dir}: is this a Hugging Face model directory?")
    with open(path, encoding="utf-8") as f:
        try:
            d = json.load(f)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path} is not valid JSON: {e}") from e
    return config_from_dict(d, ignore_keys=ignore_keys)


_ARCH = {"bert": "Bert", "roberta": "Roberta", "xlm-roberta": "XLMRoberta", "electra": "Electra",
         "distilbert": "DistilBert"}


def config_to_dict(cfg: EncoderConfig, *, head: bool) -> dict[str, Any]:
    """The HF config.json for `cfg`: the original attributes, with architecture and labels updated."""
    d = cfg.raw_dict
    if not d:
        raise ConfigError("this EncoderConfig was not made from a config.json; cannot write one")
    d["architectures"] = [_ARCH[cfg.family] + ("ForSequenceClassification" if head else "Model")]
    if head:
        old = d.get("id2label") or {}
        if len(old) != cfg.num_labels:
            old = {str(i): f"LABEL_{i}" for i in range(cfg.num_labels)}
        d["id2label"] = {str(k): v for k, v in old.items()}
        d["label2id"] = {v: int(k) for k, v in d["id2label"].items()}
    d.pop("num_labels", None)
    return d
