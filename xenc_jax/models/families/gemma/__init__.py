"""Gemma and Gemma 2 decoders (models/families/gemma/model.py; modules in models/decoder.py)."""
from .model import GemmaConfig

__all__ = ["GemmaConfig"]
