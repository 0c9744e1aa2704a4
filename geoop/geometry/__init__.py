"""Geometry type, measures, file I/O, conversions, sampling and SDF."""
from .geometry import CELL_DIM, Geometry, NormalizeTransform  # noqa: F401
