"""geoop: neural operators on arbitrary geometry.

Load any mesh or point cloud into a :class:`Geometry`, batch geometries of different sizes
into a :class:`GeometryBatch`, build radius-ball :class:`Neighborhoods`, and train GINO-style
operators (GNO encoder -> FNO/SFNO latent -> GNO decoder) that answer at any query point.

Public names are imported lazily so ``import geoop`` stays fast and never imports the heavy
optional libraries (open3d, pyvista, torch-harmonics) before they are needed.
"""
from __future__ import annotations

import importlib

from .errors import (  # noqa: F401  (cheap, always imported)
    BackendUnavailableError,
    CheckpointError,
    ConfigError,
    DatasetError,
    FieldError,
    GeometryReadError,
    GeometryWriteError,
    GeoopError,
    NeighborhoodTooLargeError,
    ShapeError,
    SymmetryError,
    UnsignedSDFWarning,
    UnsupportedFormatError,
)

__version__ = "0.1.0"

_LAZY = {
    "Geometry": "geoop.geometry.geometry",
    "NormalizeTransform": "geoop.geometry.geometry",
    "SymmetryPlane": "geoop.geometry.symmetry",
    "read": "geoop.geometry.io",
    "write": "geoop.geometry.io",
    "from_pyvista": "geoop.geometry.convert",
    "to_pyvista": "geoop.geometry.convert",
    "to_trimesh": "geoop.geometry.convert",
    "to_open3d": "geoop.geometry.convert",
    "Neighborhoods": "geoop.neighbors.neighborhoods",
    "radius_search": "geoop.neighbors.search",
    "GeometryBatch": "geoop.batch",
    "Sample": "geoop.batch",
    "collate": "geoop.batch",
    "GINO": "geoop.models.gino",
    "GraphedGINO": "geoop.models.graphed",
}

__all__ = sorted(list(_LAZY) + ["physics"] + [
    "GeoopError", "GeometryReadError", "GeometryWriteError", "UnsupportedFormatError", "ShapeError",
    "FieldError", "BackendUnavailableError", "NeighborhoodTooLargeError", "ConfigError",
    "CheckpointError", "DatasetError", "SymmetryError", "UnsignedSDFWarning",
])


#: sub-packages reachable as attributes (``geoop.physics.forces``) without an explicit import
_SUBPACKAGES = ("physics",)


def __getattr__(name: str):
    if name in _SUBPACKAGES:
        value = importlib.import_module(f"geoop.{name}")
        globals()[name] = value
        return value
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'geoop' has no attribute {name!r}")
    value = getattr(importlib.import_module(mod), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
