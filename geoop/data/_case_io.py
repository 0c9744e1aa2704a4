"""Writing generated CFD-like cases: geometry files and ``manifest.json`` (atomic writes).

Used by the physics generators (:mod:`geoop.data.airfoil`, :mod:`geoop.data.body3d`).
Geometries go through :func:`geoop.write`; the manifest through :mod:`geoop._atomic`.
Also the parameter-range resolver both generators use.
"""
from __future__ import annotations

import os
from typing import Mapping

from .._atomic import atomic_write_json
from ..errors import ConfigError, GeometryWriteError

__all__ = ["write_geometry", "write_manifest", "resolve_ranges"]


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


def resolve_ranges(ranges: Mapping, defaults: Mapping, what: str) -> dict:
    """Merge user parameter ranges into ``defaults``: each value is ``(lo, hi)`` with
    ``lo <= hi`` or a number (a fixed value); unknown keys list the valid ones."""
    unknown = set(ranges) - set(defaults)
    if unknown:
        raise ConfigError(f"{what} ranges: unknown keys {sorted(unknown)}; valid: {sorted(defaults)}")
    out = dict(defaults)
    for k, v in ranges.items():
        if isinstance(v, (int, float)):
            v = (v, v)
        v = tuple(v)
        if len(v) != 2 or not v[0] <= v[1]:
            raise ConfigError(f"{what} range {k!r}: expected (lo, hi) with lo <= hi or a number, got {v!r}")
        out[k] = (float(v[0]), float(v[1]))
    return out
