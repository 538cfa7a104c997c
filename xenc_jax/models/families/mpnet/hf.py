"""HF record of MPNet (MPNetModel, MPNetForSequenceClassification; model.py)."""
from __future__ import annotations

from . import presets
from .model import MPNetConfig
from ....hf.family import BUFFERS, EMB, LAYER, ConfigError, Family, FamilyTable, Rule, attention, linear, norm, require

_KEYS = {
    "vocab_size": "vocab_size", "hidden_size": "hidden_size", "num_layers": "num_hidden_layers",
    "num_heads": "num_attention_heads", "intermediate_size": "intermediate_size",
    "hidden_act": "hidden_act", "max_position_embeddings": "max_position_embeddings",
    "layer_norm_eps": "layer_norm_eps", "hidden_dropout": "hidden_dropout_prob",
    "attention_dropout": "attention_probs_dropout_prob",
}
_HF_BUCKETS = 32  # MPNetEncoder.compute_position_bias buckets with its default 32, whatever the config


def _read(d: dict, family: str) -> tuple[dict, set]:
    v = {ours: require(d, theirs, family) for ours, theirs in _KEYS.items()}
    # MPNetEmbeddings hard-codes padding_idx = 1 for its position ids (positions start at 2).
    pad = d.get("pad_token_id", 1)
    if pad != 1:
        raise ConfigError(f"mpnet config has pad_token_id={pad!r}; HF MPNet derives position ids from "
                          "token id 1 whatever the config says, so only pad_token_id=1 runs exactly")
    buckets = int(d.get("relative_attention_num_buckets", 32))
    if buckets < _HF_BUCKETS:
        raise ConfigError(f"mpnet config has relative_attention_num_buckets={buckets}: HF MPNet always "
                          f"computes {_HF_BUCKETS} buckets and indexes its table with them, so a table of "
                          f"fewer than {_HF_BUCKETS} rows fails in PyTorch too (supported: >= {_HF_BUCKETS})")
    v.update(pad_token_id=1, type_vocab_size=0, embedding_size=v["hidden_size"],
             classifier_dropout=float(v["hidden_dropout"]), head_activation="tanh", head_dropout_first=True,
             position_offset=2, relative_attention_num_buckets=buckets)
    return v, set(_KEYS.values()) | {"pad_token_id", "relative_attention_num_buckets"}


_ENCODER = (
    [Rule("embeddings.word_embeddings.weight", f"{EMB}/word/embedding"),
     Rule("embeddings.position_embeddings.weight", f"{EMB}/position/embedding")]
    + norm("embeddings.LayerNorm", f"{EMB}/norm")
    + [Rule("encoder.relative_attention_bias.weight", "encoder/relative_bias/embedding")]
    + attention(*(f"encoder.layer.{{i}}.attention.attn.{n}" for n in ("q", "k", "v", "o")))
    + norm("encoder.layer.{i}.attention.LayerNorm", f"{LAYER}/attention_norm")
    + linear("encoder.layer.{i}.intermediate.dense", f"{LAYER}/mlp_in")
    + linear("encoder.layer.{i}.output.dense", f"{LAYER}/mlp_out")
    + norm("encoder.layer.{i}.output.LayerNorm", f"{LAYER}/mlp_norm")
)

MPNET = Family(
    MPNetConfig, _read,
    # MPNetModel's pooler is not used by MPNetForSequenceClassification; lm_head = MLM head
    FamilyTable("mpnet", tuple(_ENCODER),
                tuple(linear("classifier.dense", "head/dense") + linear("classifier.out_proj", "head/out")),
                BUFFERS + (r"(mpnet\.)?pooler\..*", r"lm_head\..*")),
    "MPNet", tokenizer="MPNetTokenizer", tiny=presets.TINY, base=presets.BASE)
