"""Writing generated CFD-like cases: geometry files and ``manifest.json`` (atomic writes).

Used by the physics generators (:mod:`geoop.data.airfoil`, :mod:`geoop.data.body3d`).
Geometries go through :func:`geoop.write`; the manifest is written to a temporary file in
the target folder first and then moved into place with :func:`os.replace`.
"""
from __future__ import annotations

import os

from .._atomic import atomic_write_json
from ..errors import GeometryWriteError

__all__ = ["write_geometry", "write_manifest"]


def write_geometry(geometry, path: str) -> None:
    """Write ``geometry`` to ``path`` with :func:`geoop.write` (atomic, format from the
    extension: ``.vtp`` polylines/triangles, ``.vtu`` unstructured meshes)."""
    from ..geometry.io import write

    write(geometry, path)


def write_manifest(out_dir: str, manifest: dict) -> str:
    """Write ``manifest`` as ``out_dir/manifest.json`` atomically; returns the path."""
    path = os.path.join(out_dir, "manifest.json")
    try:
        atomic_write_json(path, manifest, indent=1, sort_keys=False)
    except Exception as exc:
        raise GeometryWriteError(f"{path}: could not write manifest ({type(exc).__name__}: {exc})") from exc
    return path
