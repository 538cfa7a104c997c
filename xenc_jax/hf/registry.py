"""HF model_type -> the family's record (hf/family.py:Family). Each record lives in its family's
folder, models/families/<name>/hf.py; this file is the one place that lists them: one line per
model_type. A pure alias (same math, same weight names, other class names) is one line too:
alias(RECORD, "ClassStem", "TokenizerClass"). register() adds one at run time (docs/model_families.md).
"""
from __future__ import annotations

from ..models.families.bert.hf import BERT, DISTILBERT, ELECTRA, ROBERTA
from ..models.families.bert.presets import XLM_ROBERTA_TINY
from ..models.families.deberta_v2.hf import DEBERTA_V2
from ..models.families.gemma.hf import GEMMA, GEMMA2, GEMMA3, GEMMA3_TEXT
from ..models.families.llama.hf import LLAMA, MISTRAL
from ..models.families.modernbert.hf import MODERNBERT
from ..models.families.mpnet.hf import MPNET
from ..models.families.qwen.hf import QWEN2, QWEN3
from ..models.families.t5.hf import T5
from .family import ConfigError, Family, alias

__all__ = ["FAMILIES", "alias", "family", "register"]

FAMILIES: dict[str, Family] = {
    "bert": BERT,
    "roberta": ROBERTA,
    "xlm-roberta": alias(ROBERTA, "XLMRoberta", "XLMRobertaTokenizer", tiny=XLM_ROBERTA_TINY),
    "camembert": alias(ROBERTA, "Camembert", "CamembertTokenizer"),
    "electra": ELECTRA,
    "distilbert": DISTILBERT,
    "mpnet": MPNET,
    "deberta-v2": DEBERTA_V2,
    "modernbert": MODERNBERT,
    "qwen2": QWEN2,
    "qwen3": QWEN3,
    "llama": LLAMA,
    "mistral": MISTRAL,
    "t5": T5,
    "mt5": alias(T5, "MT5Encoder"),   # mT5: T5 v1.1's math, a larger vocabulary
    "gemma": GEMMA,
    "gemma2": GEMMA2,
    "gemma3_text": GEMMA3_TEXT,
    "gemma3": GEMMA3,   # Gemma 3 4B+ (text_config + vision_config): its text tower
}


def register(model_type: str, record: Family) -> None:
    """Add a family (or an alias of one) under an HF model_type; a taken model_type is an error
    (replacing a record would silently change how existing checkpoints load)."""
    if not isinstance(record, Family):
        raise TypeError(f"register({model_type!r}, ...) needs an hf.family.Family record, got {type(record).__name__}")
    if model_type in FAMILIES:
        raise ValueError(f"model_type {model_type!r} is already registered")
    FAMILIES[model_type] = record


def family(model_type: str | None) -> Family:
    if model_type is None:
        raise ConfigError("config.json has no 'model_type'; cannot tell which architecture this is")
    if model_type not in FAMILIES:
        raise ConfigError(f"unknown model_type {model_type!r}: xenc_jax supports {', '.join(FAMILIES)}")
    return FAMILIES[model_type]
