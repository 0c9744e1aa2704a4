"""Build the small meshes bundled in ``meshes/`` (deterministic: no random numbers).

Run from the repository root::

    python scripts/make_meshes.py [--out meshes]

Writes

* ``naca0012.vtp``        closed NACA 0012 polyline (chord 1), counter-clockwise, normals
* ``naca0012_domain.vtu`` 2-D triangulated flow domain around it (z = 0), far field r = 5
* ``car_body.stl``        closed, watertight car-like body (star-shaped superellipsoid)
* ``sphere.vtp``          unit icosphere with analytic fields

and checks each (closed / watertight / boundary edges / size < 1 MB) before writing.
See ``meshes/README.md`` for the construction of each.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np


# ----------------------------------------------------------------------------- airfoil
def naca4_thickness(x: np.ndarray, t: float = 0.12) -> np.ndarray:
    """Half thickness of a symmetric NACA 4-digit airfoil with a closed trailing edge:
    ``y_t = 5 t (0.2969 sqrt(x) - 0.1260 x - 0.3516 x^2 + 0.2843 x^3 - 0.1036 x^4)``."""
    return 5 * t * (0.2969 * np.sqrt(x) - 0.1260 * x - 0.3516 * x**2 + 0.2843 * x**3 - 0.1036 * x**4)


def naca0012(n_side: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Closed counter-clockwise polyline (TE -> upper -> LE -> lower -> TE) with
    cosine-clustered x. Returns points (2 n_side - 2, 2) and segments (same count, 2)."""
    beta = np.linspace(0.0, np.pi, n_side)
    x = 0.5 * (1 + np.cos(beta))  # 1 -> 0
    yt = naca4_thickness(x)
    yt[0] = 0.0
    upper = np.stack([x, yt], 1)  # TE -> LE
    lower = np.stack([x[::-1], -yt[::-1]], 1)[1:-1]  # LE -> TE, without both ends
    pts = np.concatenate([upper, lower])
    n = len(pts)
    seg = np.stack([np.arange(n), (np.arange(n) + 1) % n], 1)
    return pts, seg


def airfoil_domain(pts: np.ndarray, normals: np.ndarray, far: float = 5.0):
    """Graded 2-D point set around the airfoil (normal-offset layers near the wall, then
    circles of geometrically growing radius, 64 points each), Delaunay-triangulated by
    scipy, triangles inside the airfoil removed. Returns points (P, 2), triangles (T, 3)
    counter-clockwise, and the number of points on the far-field circle."""
    from matplotlib.path import Path
    from scipy.spatial import Delaunay

    layers = [pts]
    d, h = 0.0, 0.004
    while d + h < 0.12:
        d += h
        layers.append(pts + d * normals)
        h *= 1.25
    center = np.array([0.5, 0.0])
    radii = [0.5 + d + 0.08]
    while radii[-1] * 1.22 < far:
        radii.append(radii[-1] * 1.22)
    radii.append(far)
    m = 64  # points per circle: spacing grows with the radius
    for k, r in enumerate(radii):
        th = np.linspace(0, 2 * np.pi, m, endpoint=False) + (np.pi / m) * (k % 2)
        layers.append(center + r * np.stack([np.cos(th), np.sin(th)], 1))
    allp = np.concatenate(layers)
    tri = Delaunay(allp).simplices
    cent = allp[tri].mean(1)
    keep = ~Path(pts).contains_points(cent)
    tri = tri[keep]
    # counter-clockwise orientation
    a, b, c = allp[tri[:, 0]], allp[tri[:, 1]], allp[tri[:, 2]]
    cross = (b - a)[:, 0] * (c - a)[:, 1] - (b - a)[:, 1] * (c - a)[:, 0]
    tri[cross < 0] = tri[cross < 0][:, [0, 2, 1]]
    return allp, tri, m


# ----------------------------------------------------------------------------- car body
def car_body(subdivisions: int = 4):
    """Star-shaped car body: the unit icosphere's directions ``u`` scaled to the radius of
    a rounded box (superellipsoid, exponent 4)
    ``r(u) = ((|ux|/a)^4 + (|uy|/b)^4 + (|uz|/c)^4)^(-1/4)``, where the half-height
    ``c = c0 + h(x) s(uz)`` grows over the cabin: ``h(x) = 0.45 exp(-((x - 0.3)/1.0)^4)`` of
    the position ``x = ux r0`` along the length of the lower body (radius ``r0`` with
    ``c = c0``) and
    ``s(uz) = 1 / (1 + exp(-10 uz))`` keeps the floor flat. The radius is a function of the
    direction only, so the surface is embedded and watertight by construction."""
    import trimesh

    s = trimesh.creation.icosphere(subdivisions=subdivisions)
    u = s.vertices / np.linalg.norm(s.vertices, axis=1, keepdims=True)
    a, b, c0 = 2.2, 0.9, 0.42  # half length, half width, half height of the lower body
    side = 1.0 / (1.0 + np.exp(-10 * u[:, 2]))

    def radius(c):
        return ((np.abs(u[:, 0]) / a) ** 4 + (np.abs(u[:, 1]) / b) ** 4 + (np.abs(u[:, 2]) / c) ** 4) ** (-0.25)

    x = u[:, 0] * radius(c0)  # position along the length on the lower body
    c = c0 + 0.45 * np.exp(-(((x - 0.3) / 1.0) ** 4)) * side
    r = radius(c)
    v = u * r[:, None]
    v[:, 2] += c0 + 0.18  # ground clearance: the floor is at z = 0.18
    return trimesh.Trimesh(v, s.faces, process=False)


# ----------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="meshes")
    args = ap.parse_args(argv)
    sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))
    import torch
    import trimesh

    import geoop
    from geoop.geometry.sdf import _edges_count, sdf

    os.makedirs(args.out, exist_ok=True)
    out = lambda name: os.path.join(args.out, name)  # noqa: E731

    # airfoil curve
    pts, seg = naca0012()
    foil = geoop.Geometry(torch.tensor(pts), torch.tensor(seg), name="naca0012").compute_normals()
    foil = foil.with_fields(y_t=torch.tensor(naca4_thickness(np.clip(pts[:, 0], 0, 1))),
                            x_over_c=torch.tensor(pts[:, 0]))
    geoop.write(foil, out("naca0012.vtp"))

    # 2-D domain
    dp, tri, n_far = airfoil_domain(pts, foil.normals.numpy())
    dom = geoop.Geometry(torch.tensor(dp), torch.tensor(tri), name="naca0012_domain")
    _, counts = _edges_count(dom.cells["triangle"])
    bnd = int((counts == 1).sum())
    assert bnd == len(seg) + n_far, f"domain boundary has {bnd} edges, expected {len(seg)} + {n_far}"
    wall = sdf(foil, dom.points)
    dom = dom.with_fields(wall_distance=wall.abs())
    geoop.write(dom, out("naca0012_domain.vtu"))

    # car body
    car = car_body()
    assert car.is_watertight and car.is_winding_consistent and car.volume > 0, "car body not closed"
    geoop.write(geoop.Geometry(torch.tensor(car.vertices), torch.tensor(car.faces)), out("car_body.stl"))

    # sphere with analytic fields
    s = trimesh.creation.icosphere(subdivisions=4)
    v = s.vertices / np.linalg.norm(s.vertices, axis=1, keepdims=True)
    sph = geoop.Geometry(torch.tensor(v), torch.tensor(s.faces), normals=torch.tensor(v), name="sphere",
                         fields={"xz": torch.tensor(v[:, 0] * v[:, 2]), "z": torch.tensor(v[:, 2])})
    geoop.write(sph, out("sphere.vtp"))

    for f in ("naca0012.vtp", "naca0012_domain.vtu", "car_body.stl", "sphere.vtp"):
        size = os.path.getsize(out(f))
        assert size < 1 << 20, f"{f} is {size} bytes (> 1 MB)"
        g = geoop.read(out(f))
        print(f"{f:22s} {size / 1024:7.1f} KiB  {g}")
    print(f"domain boundary edges: {bnd} = airfoil {len(seg)} + far field {n_far}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
