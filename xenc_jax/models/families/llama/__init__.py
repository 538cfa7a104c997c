"""Llama and Mistral decoders (models/families/llama/model.py; modules in models/decoder.py)."""
from .model import LlamaConfig

__all__ = ["LlamaConfig"]
