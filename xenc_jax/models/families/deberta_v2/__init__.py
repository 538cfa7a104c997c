"""DeBERTa-v2/v3 (models/families/deberta_v2/model.py)."""
from .model import ContextPooler, DebertaV2Config, DebertaV2Encoder, DebertaV2Layer, log_bucket_position, \
    relative_index_table

__all__ = ["ContextPooler", "DebertaV2Config", "DebertaV2Encoder", "DebertaV2Layer", "log_bucket_position",
           "relative_index_table"]
