"""HF record of DeBERTa-v2/v3 (DebertaV2Model, DebertaV2ForSequenceClassification;
model.py). Several tensors exist only under some configs (absolute
positions, the embedding projection, the relative table and its LayerNorm, separate position
projections): the table's `needs` says which.
"""
from __future__ import annotations

import re

from . import presets
from .model import DebertaV2Config
from ....hf.family import BUFFERS, EMB, LAYER, ConfigError, Family, FamilyTable, Rule, attention, linear, norm, require

_KEYS = {
    "vocab_size": "vocab_size", "hidden_size": "hidden_size", "num_layers": "num_hidden_layers",
    "num_heads": "num_attention_heads", "intermediate_size": "intermediate_size",
    "hidden_act": "hidden_act", "max_position_embeddings": "max_position_embeddings",
    "layer_norm_eps": "layer_norm_eps", "hidden_dropout": "hidden_dropout_prob",
    "attention_dropout": "attention_probs_dropout_prob",
}
_OPTIONAL = ("type_vocab_size", "pad_token_id", "embedding_size", "relative_attention", "max_relative_positions",
             "position_buckets", "share_att_key", "pos_att_type", "norm_rel_ebd", "position_biased_input",
             "pooler_hidden_size", "pooler_dropout", "pooler_hidden_act", "cls_dropout", "attention_head_size",
             "conv_kernel_size")


def _names(value, key: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """HF accepts "a|b" strings (lower-cased, stripped) or lists; anything else is rejected by name."""
    if value is None:
        return ()
    items = value.lower().split("|") if isinstance(value, str) else list(value)
    items = tuple(str(x).strip().lower() for x in items)
    bad = [x for x in items if x not in allowed]
    if bad:
        raise ConfigError(f"deberta-v2 config has {key}={value!r}: {bad} not supported (supported: {allowed}; "
                          "HF's DeBERTa-v2 code has no other terms)")
    return items


def _read(d: dict, family: str) -> tuple[dict, set]:
    from ...blocks.mlp import ACTIVATIONS
    v = {ours: require(d, theirs, family) for ours, theirs in _KEYS.items()}
    hidden = int(v["hidden_size"])
    conv = d.get("conv_kernel_size", 0) or 0
    if conv > 0:
        raise ConfigError(f"deberta-v2 config has conv_kernel_size={conv}: the ConvLayer after the first "
                          "layer (DeBERTa-v2-xlarge style) is not implemented (supported: 0)")
    head_size = d.get("attention_head_size")
    if head_size is not None and head_size != hidden // int(v["num_heads"]):
        raise ConfigError(f"deberta-v2 config has attention_head_size={head_size} != hidden_size / "
                          f"num_attention_heads = {hidden // int(v['num_heads'])} (supported: equal)")
    pooler = d.get("pooler_hidden_size", hidden)
    if pooler != hidden:
        raise ConfigError(f"deberta-v2 config has pooler_hidden_size={pooler} != hidden_size={hidden}: HF's "
                          "classifier reads hidden_size features, so only equal sizes run (supported: equal)")
    act = d.get("pooler_hidden_act", "gelu")
    if act not in ACTIVATIONS:
        raise ConfigError(f"deberta-v2 config has pooler_hidden_act={act!r} (supported: {tuple(ACTIVATIONS)})")
    buckets = int(d.get("position_buckets", -1))
    if buckets in (1,):   # mid = 0: HF divides by zero in make_log_bucket_position
        raise ConfigError("deberta-v2 config has position_buckets=1: log buckets need >= 2 (or <= 0 for none)")
    max_rel = int(d.get("max_relative_positions", -1))
    max_rel = int(v["max_position_embeddings"]) if max_rel < 1 else max_rel
    if buckets > 1 and max_rel - 1 == buckets // 2:
        raise ConfigError(f"deberta-v2 config has max_relative_positions={max_rel} and position_buckets={buckets}: "
                          "log(max_relative_positions - 1) / (position_buckets // 2)) is 0, HF divides by it")
    cls = d.get("cls_dropout")
    pad = d.get("pad_token_id")
    v.update(
        type_vocab_size=int(d.get("type_vocab_size", 0)),
        pad_token_id=0 if pad is None else pad,   # only the torch embedding's gradient mask reads it
        embedding_size=int(d.get("embedding_size") or hidden),
        classifier_dropout=float(v["hidden_dropout"] if cls is None else cls),
        head_activation=act, head_dropout_first=True, position_offset=0,
        relative_attention=bool(d.get("relative_attention", False)),
        pos_att_type=_names(d.get("pos_att_type"), "pos_att_type", ("c2p", "p2c")),
        position_buckets=buckets, max_relative_positions=max_rel,
        share_att_key=bool(d.get("share_att_key", False)),
        norm_rel_ebd="layer_norm" in _names(d.get("norm_rel_ebd", "none"), "norm_rel_ebd", ("layer_norm", "none")),
        position_biased_input=bool(d.get("position_biased_input", True)),
        pooler_dropout=float(d.get("pooler_dropout", 0.0)),
    )
    return v, set(_KEYS.values()) | set(_OPTIONAL)


_ATT = "encoder.layer.{i}.attention"
_ENCODER = (
    [Rule("embeddings.word_embeddings.weight", f"{EMB}/word/embedding"),
     Rule("embeddings.position_embeddings.weight", f"{EMB}/position/embedding"),
     Rule("embeddings.token_type_embeddings.weight", f"{EMB}/token_type/embedding"),
     Rule("embeddings.embed_proj.weight", f"{EMB}/project/kernel", "linear")]
    + norm("embeddings.LayerNorm", f"{EMB}/norm")
    + [Rule("encoder.rel_embeddings.weight", "encoder/rel_embeddings")]
    + norm("encoder.LayerNorm", "encoder/rel_norm")
    + attention(*(f"{_ATT}.self.{n}_proj" for n in ("query", "key", "value")), f"{_ATT}.output.dense")
    + linear(f"{_ATT}.self.pos_key_proj", f"{LAYER}/attention/pos_key", "split_heads", "split_heads_bias")
    + linear(f"{_ATT}.self.pos_query_proj", f"{LAYER}/attention/pos_query", "split_heads", "split_heads_bias")
    + norm(f"{_ATT}.output.LayerNorm", f"{LAYER}/attention_norm")
    + linear("encoder.layer.{i}.intermediate.dense", f"{LAYER}/mlp_in")
    + linear("encoder.layer.{i}.output.dense", f"{LAYER}/mlp_out")
    + norm("encoder.layer.{i}.output.LayerNorm", f"{LAYER}/mlp_norm")
)

# our param path (regex) -> when the config has that tensor (as DebertaV2Embeddings /
# DebertaV2Encoder / DisentangledSelfAttention create them); every other param always exists
_CONDITIONAL = (
    (f"{EMB}/position/.*", lambda c: c.position_biased_input),
    (f"{EMB}/project/.*", lambda c: c.embedding_size != c.hidden_size),
    ("encoder/rel_embeddings", lambda c: c.relative_attention),
    ("encoder/rel_norm/.*", lambda c: c.relative_attention and c.norm_rel_ebd),
    (r".*/attention/pos_key/.*", lambda c: c.relative_attention and not c.share_att_key and "c2p" in c.pos_att_type),
    (r".*/attention/pos_query/.*", lambda c: c.relative_attention and not c.share_att_key and "p2c" in c.pos_att_type),
)


def _needs(path: str, cfg: DebertaV2Config) -> bool:
    return all(holds(cfg) for pattern, holds in _CONDITIONAL if re.fullmatch(pattern, path))


DEBERTA_V2 = Family(
    DebertaV2Config, _read,
    FamilyTable("deberta", tuple(_ENCODER),
                tuple(linear("pooler.dense", "head/dense") + linear("classifier", "head/out")),
                BUFFERS + (
                    # HF drops these on load too (_keys_to_ignore_on_load_unexpected) when
                    # position_biased_input is false; used when the config has them
                    r"(deberta\.)?embeddings\.position_embeddings\.weight",
                    # HF creates encoder.LayerNorm for norm_rel_ebd even without relative attention, unused then
                    r"(deberta\.)?encoder\.LayerNorm\.(weight|bias)",
                    r"cls\..*", r"lm_predictions\..*", r"mask_predictions\..*"),   # pre-training heads
                needs=_needs),
    "DebertaV2",
    harmless=frozenset({"legacy", "conv_groups", "conv_act"}),   # conv_* only matter with conv_kernel_size > 0
    tokenizer="DebertaV2Tokenizer", tiny=presets.TINY, base=presets.BASE)
