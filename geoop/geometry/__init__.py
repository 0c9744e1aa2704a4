"""Geometry type, measures, file I/O, conversions, sampling and SDF."""
from .geometry import CELL_DIM, Geometry, NormalizeTransform  # noqa: F401
from .symmetry import (  # noqa: F401
    SymmetryPlane,
    detect_symmetry,
    full_body,
    is_symmetry_patch,
    mirror,
    plane_from_points,
    symmetry_from_patches,
)
