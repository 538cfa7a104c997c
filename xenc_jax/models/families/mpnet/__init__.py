"""MPNet (models/families/mpnet/model.py)."""
from .model import MPNetConfig, MPNetEncoder

__all__ = ["MPNetConfig", "MPNetEncoder"]
