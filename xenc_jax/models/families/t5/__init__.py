"""T5 encoder (models/families/t5/model.py)."""
from .model import T5Config, T5Encoder

__all__ = ["T5Config", "T5Encoder"]
