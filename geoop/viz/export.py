"""ParaView-ready VTK files of geometries with (predicted) fields.

``export_vtk(geometry, "out.vtu")`` writes through :func:`geoop.write` (atomic): ``.vtp`` for
point clouds, polylines and surfaces, ``.vtu`` for anything (volume meshes need it), ``.vtk``
legacy. ``with_error(pred, truth, names)`` adds ``<name>_true`` and ``<name>_error`` fields so
one file shows prediction, truth and error in ParaView.

Shapes: point fields (N, C); errors (N, C) = prediction - truth.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Optional, Union

from ..errors import FieldError, ShapeError, UnsupportedFormatError
from ..geometry.geometry import Geometry

__all__ = ["export_vtk", "with_error", "VTK_EXTENSIONS"]

VTK_EXTENSIONS = (".vtp", ".vtu", ".vtk")


def with_error(pred: Geometry, truth: Geometry, names: Optional[Iterable[str]] = None) -> Geometry:
    """``pred`` plus fields ``<name>_true`` and ``<name>_error`` (prediction - truth) for
    each name (default: the fields both have)."""
    names = [n for n in pred.fields if n in truth.fields] if names is None else list(names)
    if truth.n_points != pred.n_points:
        raise ShapeError(f"with_error: prediction has {pred.n_points} points, truth {truth.n_points}")
    extra = {}
    for n in names:
        for g, what in ((pred, "prediction"), (truth, "truth")):
            if n not in g.fields:
                raise FieldError(f"with_error: {what} has no field {n!r}; available: {sorted(g.fields)}")
        extra[f"{n}_true"] = truth.fields[n]
        extra[f"{n}_error"] = pred.fields[n] - truth.fields[n].to(pred.fields[n])
    return pred.with_fields(**extra)


def export_vtk(geometry: Geometry, path: Union[str, os.PathLike]) -> Path:
    """Write ``geometry`` (points, cells, point fields) as ``.vtp``/``.vtu``/``.vtk``."""
    from ..geometry.io import write

    ext = Path(path).suffix.lower()
    if ext not in VTK_EXTENSIONS:
        raise UnsupportedFormatError(f"export_vtk: {path} has extension {ext!r}; valid: {list(VTK_EXTENSIONS)}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return write(geometry, path)
