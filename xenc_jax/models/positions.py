"""Deprecated home of the position parts, kept as re-exports for callers outside models/ (tests);
new code imports from models.blocks (blocks/positions.py)."""
from .blocks import RelativePositionBias, RotaryPositions, Rotation, relative_position_buckets

__all__ = ["RelativePositionBias", "RotaryPositions", "Rotation", "relative_position_buckets"]
