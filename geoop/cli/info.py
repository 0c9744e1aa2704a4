"""``geoop info FILE``: what a mesh or point-cloud file holds.

Prints the number of points, the cells by type, the point fields (name, width, min, max),
the cell fields, the bounds, the embedding dimension, whether the geometry is 2-D
(d = 2 or z = 0) and its total weight (length / area / volume, or 1 for a bare point
cloud whose weights are uniform 1/N). ``--json`` prints the same as one JSON object.
"""
from __future__ import annotations

import argparse
import json
import sys

__all__ = ["add_parser", "run", "describe"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("info", help="describe a mesh / point-cloud file",
                              description=__doc__.splitlines()[0])
    p.add_argument("file", help="mesh or point cloud (vtu, vtp, vtk, stl, obj, ply, off, msh, xyz, pts, pcd, npz)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def describe(geometry) -> dict:
    """A JSON-able summary of a :class:`~geoop.Geometry`."""
    lo, hi = geometry.bounds

    def stats(fd):
        out = {}
        for k, v in fd.items():
            v64 = v.double()
            out[k] = {"width": int(v.shape[1]), "min": [float(x) for x in v64.min(0).values],
                      "max": [float(x) for x in v64.max(0).values]}
        return out

    return {
        "file": geometry.source,
        "points": geometry.n_points,
        "cells": {**{k: int(v.shape[0]) for k, v in geometry.cells.items()},
                  **({"polyhedron": geometry.polyhedra.n_cells} if geometry.polyhedra is not None else {})},
        "point_fields": stats(geometry.fields),
        "cell_fields": stats(geometry.cell_fields),
        "normals": geometry.normals is not None,
        "bounds": {"min": [float(x) for x in lo], "max": [float(x) for x in hi]},
        "dimension": geometry.dim,
        "topological_dimension": geometry.topological_dim,
        "is_2d": geometry.is_2d,
        "total_weight": float(geometry.weights.double().sum()),
    }


def _origin(g, name: str) -> str:
    """Where a point field comes from: the file's point data, or its cell data averaged onto
    the points (renamed ``<name>_cell`` when point data of the same name exist)."""
    if name.endswith("_cell") and name[:-5] in g.cell_fields:
        return f"  (cell data {name[:-5]!r} averaged onto the points; the point data of that name win)"
    if name in g.cell_fields and f"{name}_cell" not in g.fields:
        return "  (cell data averaged onto the points)"
    return ""


def _fmt(x) -> str:
    return "[" + ", ".join(f"{v:.6g}" for v in x) + "]"


def run(args) -> int:
    from ..geometry.io import read

    g = read(args.file)
    info = describe(g)
    if args.json:
        json.dump(info, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    kind = {0: "point cloud", 1: "length", 2: "area", 3: "volume"}[g.topological_dim]
    lines = [
        f"file        {info['file']}",
        f"points      {info['points']}",
        "cells       " + (", ".join(f"{k}: {v}" for k, v in info["cells"].items()) or "none (point cloud)"),
        f"dimension   {info['dimension']} (topological {info['topological_dimension']}), "
        f"2-D: {'yes' if info['is_2d'] else 'no'}",
        f"bounds      min {_fmt(info['bounds']['min'])}  max {_fmt(info['bounds']['max'])}",
        f"normals     {'yes' if info['normals'] else 'no'}",
        f"total weight {info['total_weight']:.6g} ({kind})",
    ]
    for title, key in (("point fields", "point_fields"), ("cell fields", "cell_fields")):
        fields = info[key]
        lines.append(f"{title:12s}{' none' if not fields else ''}")
        for k, v in fields.items():
            lines.append(f"  {k:20s} width {v['width']:<3d} min {_fmt(v['min'])}  max {_fmt(v['max'])}"
                         f"{_origin(g, k) if key == 'point_fields' else ''}")
    print("\n".join(lines))
    return 0
