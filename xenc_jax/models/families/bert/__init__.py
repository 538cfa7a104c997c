"""BERT, RoBERTa, XLM-RoBERTa, ELECTRA, DistilBERT (models/families/bert/model.py)."""
from .model import BertConfig, BertEncoder

__all__ = ["BertConfig", "BertEncoder"]
