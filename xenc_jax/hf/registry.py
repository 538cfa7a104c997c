"""HF model_type -> the family's record (hf/tables/common.py:Family). Adding a family: its model
file (models/families/<name>.py), its HF file (hf/tables/<name>.py) and one line here. A pure
alias (same math, same weight names, other class names) is one line: alias(RECORD, "ClassStem").
"""
from __future__ import annotations

from .tables.bert import BERT, DISTILBERT, ELECTRA, ROBERTA
from .tables.common import ConfigError, Family, alias
from .tables.deberta_v2 import DEBERTA_V2
from .tables.modernbert import MODERNBERT
from .tables.mpnet import MPNET
from .tables.qwen import QWEN2, QWEN3

FAMILIES: dict[str, Family] = {
    "bert": BERT,
    "roberta": ROBERTA,
    "xlm-roberta": alias(ROBERTA, "XLMRoberta"),
    "camembert": alias(ROBERTA, "Camembert"),
    "electra": ELECTRA,
    "distilbert": DISTILBERT,
    "mpnet": MPNET,
    "deberta-v2": DEBERTA_V2,
    "modernbert": MODERNBERT,
    "qwen2": QWEN2,
    "qwen3": QWEN3,
}


def family(model_type: str | None) -> Family:
    if model_type is None:
        raise ConfigError("config.json has no 'model_type'; cannot tell which architecture this is")
    if model_type not in FAMILIES:
        raise ConfigError(f"unknown model_type {model_type!r}: xenc_jax supports {', '.join(FAMILIES)}")
    return FAMILIES[model_type]
