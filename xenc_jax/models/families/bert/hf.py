"""HF records of the BERT-like families (BERT, RoBERTa, XLM-RoBERTa, ELECTRA, DistilBERT): one
module (model.py), their config.json names, weight tables and HF classes."""
from __future__ import annotations


from . import presets
from .model import BertConfig
from ....hf.family import (BUFFERS, EMB, LAYER, ConfigError, Family, FamilyTable, Rule, attention, linear, norm,
                     require)

_BERT_KEYS = {
    "vocab_size": "vocab_size", "hidden_size": "hidden_size", "num_layers": "num_hidden_layers",
    "num_heads": "num_attention_heads", "intermediate_size": "intermediate_size",
    "hidden_act": "hidden_act", "max_position_embeddings": "max_position_embeddings",
    "type_vocab_size": "type_vocab_size", "layer_norm_eps": "layer_norm_eps",
    "hidden_dropout": "hidden_dropout_prob", "attention_dropout": "attention_probs_dropout_prob",
}


def _bert_reader(*, pad_default: int, offset_positions: bool, head_activation: str,
                 head_dropout_first: bool, projects_embeddings: bool):
    def read(d: dict, family: str) -> tuple[dict, set]:
        v = {ours: require(d, theirs, family) for ours, theirs in _BERT_KEYS.items()}
        v["pad_token_id"] = _pad_id(d, family, pad_default, offset_positions)
        v["embedding_size"] = d.get("embedding_size", v["hidden_size"]) if projects_embeddings else v["hidden_size"]
        cd = d.get("classifier_dropout")
        v["classifier_dropout"] = float(v["hidden_dropout"] if cd is None else cd)
        v["head_activation"] = head_activation
        v["head_dropout_first"] = head_dropout_first
        v["position_offset"] = int(v["pad_token_id"]) + 1 if offset_positions else 0
        if "embedding_size" in d and not projects_embeddings and d["embedding_size"] != v["hidden_size"]:
            raise ConfigError(f"{family!r} config has embedding_size={d['embedding_size']} != hidden_size; "
                              "only ELECTRA projects embeddings")
        return v, set(_BERT_KEYS.values()) | {"pad_token_id", "classifier_dropout", "embedding_size"}
    return read


def _pad_id(d: dict, family: str, default: int, offset_positions: bool) -> int:
    """config.json's pad_token_id. null is valid in HF (nn.Embedding(padding_idx=None)): BERT, ELECTRA
    and DistilBERT read it only there (gradients, init), so it runs as any id. RoBERTa-style models
    number positions from it (pad_token_id + 1 on) and transformers fails without one (5.25:
    `input_ids.ne(None)` in create_position_ids_from_input_ids), so that is an error here too."""
    pad = d.get("pad_token_id", default)
    if pad is not None:
        return pad
    if offset_positions:
        raise ConfigError(f"{family!r} config has pad_token_id=null, but {family} numbers its positions from the "
                          "pad id (pad_token_id + 1 on; transformers fails without one): set pad_token_id to the "
                          f"tokenizer's pad token id ({default} for <pad> in RoBERTa-style vocabularies)")
    return default


_DISTILBERT_KEYS = {
    "vocab_size": "vocab_size", "hidden_size": "dim", "num_layers": "n_layers",
    "num_heads": "n_heads", "intermediate_size": "hidden_dim", "hidden_act": "activation",
    "max_position_embeddings": "max_position_embeddings",
    "hidden_dropout": "dropout", "attention_dropout": "attention_dropout",
}


def _read_distilbert(d: dict, family: str) -> tuple[dict, set]:
    v = {ours: require(d, theirs, family) for ours, theirs in _DISTILBERT_KEYS.items()}
    v.update(pad_token_id=_pad_id(d, family, 0, False), type_vocab_size=0, layer_norm_eps=1e-12,
             embedding_size=v["hidden_size"], classifier_dropout=float(d.get("seq_classif_dropout", 0.2)),
             head_activation="relu", head_dropout_first=False, position_offset=0)
    return v, set(_DISTILBERT_KEYS.values()) | {"pad_token_id", "seq_classif_dropout"}


_BERT_LIKE_ENCODER = (
    [Rule("embeddings.word_embeddings.weight", f"{EMB}/word/embedding"),
     Rule("embeddings.position_embeddings.weight", f"{EMB}/position/embedding"),
     Rule("embeddings.token_type_embeddings.weight", f"{EMB}/token_type/embedding")]
    + norm("embeddings.LayerNorm", f"{EMB}/norm")
    + attention(*(f"encoder.layer.{{i}}.attention.self.{n}" for n in ("query", "key", "value")),
                "encoder.layer.{i}.attention.output.dense")
    + norm("encoder.layer.{i}.attention.output.LayerNorm", f"{LAYER}/attention_norm")
    + linear("encoder.layer.{i}.intermediate.dense", f"{LAYER}/mlp_in")
    + linear("encoder.layer.{i}.output.dense", f"{LAYER}/mlp_out")
    + norm("encoder.layer.{i}.output.LayerNorm", f"{LAYER}/mlp_norm")
)

_DISTILBERT_ENCODER = (
    [Rule("embeddings.word_embeddings.weight", f"{EMB}/word/embedding"),
     Rule("embeddings.position_embeddings.weight", f"{EMB}/position/embedding")]
    + norm("embeddings.LayerNorm", f"{EMB}/norm")
    + attention(*(f"transformer.layer.{{i}}.attention.{n}" for n in ("q_lin", "k_lin", "v_lin", "out_lin")))
    + norm("transformer.layer.{i}.sa_layer_norm", f"{LAYER}/attention_norm")
    + linear("transformer.layer.{i}.ffn.lin1", f"{LAYER}/mlp_in")
    + linear("transformer.layer.{i}.ffn.lin2", f"{LAYER}/mlp_out")
    + norm("transformer.layer.{i}.output_layer_norm", f"{LAYER}/mlp_norm")
)

_ROBERTA_HEAD = tuple(linear("classifier.dense", "head/dense") + linear("classifier.out_proj", "head/out"))
_ABSOLUTE = {"position_embedding_type": ("absolute",)}

BERT = Family(
    BertConfig,
    _bert_reader(pad_default=0, offset_positions=False, head_activation="tanh", head_dropout_first=False,
                 projects_embeddings=False),
    FamilyTable("bert", tuple(_BERT_LIKE_ENCODER),
                tuple(linear("{p}pooler.dense", "head/dense") + linear("classifier", "head/out")),
                BUFFERS + (r"cls\..*",)),  # pre-training heads (MLM/NSP) of bert-base-style checkpoints
    "Bert", _ABSOLUTE, tokenizer="BertTokenizer", tiny=presets.TINY)

ROBERTA = Family(
    BertConfig,
    _bert_reader(pad_default=1, offset_positions=True, head_activation="tanh", head_dropout_first=True,
                 projects_embeddings=False),
    # RobertaModel's pooler is not used by RobertaForSequenceClassification; lm_head = MLM head
    FamilyTable("roberta", tuple(_BERT_LIKE_ENCODER), _ROBERTA_HEAD,
                BUFFERS + (r"(roberta\.)?pooler\..*", r"lm_head\..*")),
    "Roberta", _ABSOLUTE, tokenizer="RobertaTokenizer", tiny=presets.ROBERTA_TINY)

ELECTRA = Family(
    BertConfig,
    _bert_reader(pad_default=0, offset_positions=False, head_activation="gelu", head_dropout_first=True,
                 projects_embeddings=True),
    FamilyTable("electra", tuple(_BERT_LIKE_ENCODER + linear("embeddings_project", "encoder/embeddings_project")),
                _ROBERTA_HEAD,
                BUFFERS + (r"discriminator_predictions\..*", r"generator_predictions\..*",
                           r"generator_lm_head\..*")),
    "Electra", _ABSOLUTE, tokenizer="BertTokenizer", tiny=presets.ELECTRA_TINY)

DISTILBERT = Family(
    BertConfig, _read_distilbert,
    FamilyTable("distilbert", tuple(_DISTILBERT_ENCODER),
                tuple(linear("pre_classifier", "head/dense") + linear("classifier", "head/out")),
                BUFFERS + (r"vocab_transform\..*", r"vocab_layer_norm\..*", r"vocab_projector\..*")),
    "DistilBert",
    {"sinusoidal_pos_embds": (False, True)},  # HF stores the (fixed) table as a weight either way
    tokenizer="BertTokenizer", tiny=presets.DISTILBERT_TINY)
