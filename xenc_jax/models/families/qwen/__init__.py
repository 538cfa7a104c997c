"""Qwen2 / Qwen3 decoders (models/families/qwen/model.py)."""
from .model import DecoderLayer, QwenConfig, QwenDecoder, QwenHead

__all__ = ["DecoderLayer", "QwenConfig", "QwenDecoder", "QwenHead"]
