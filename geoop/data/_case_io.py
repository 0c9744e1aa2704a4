"""Writing generated CFD-like cases: geometry files and ``manifest.json`` (atomic writes).

Used by the physics generators (:mod:`geoop.data.airfoil`, :mod:`geoop.data.body3d`).
Geometries go through :func:`geoop.write`; the manifest is written to a temporary file in
the target folder first and then moved into place with :func:`os.replace`.
"""
from __future__ import annotations

import json
import os
import tempfile

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
    fd, tmp = tempfile.mkstemp(prefix=".tmp_manifest_", suffix=".json", dir=out_dir)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(manifest, f, indent=1, sort_keys=False)
        os.replace(tmp, path)
    except Exception as exc:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise GeometryWriteError(f"{path}: could not write manifest ({type(exc).__name__}: {exc})") from exc
    return path
