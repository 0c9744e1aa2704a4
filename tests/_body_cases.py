"""Tiny synthetic 3-D half-body cases in the layout of ``geoop data body --solver rans``
(analytic fields, no solver): per case ``case_XXXX_surface.vtp`` (half body on the symmetry
plane y = 0, point data ``p`` (a pressure coefficient), ``wallShearStress`` (over q; the
wall's stress on the fluid, as OpenFOAM writes it),
``Normals``) and ``case_XXXX_points.vtu`` (a volume point cloud around it with ``p`` and
``U``), and ``manifest.json`` with ``cd``, ``cl`` (full-body coefficients: the half's forces with its
symmetry plane), their pressure / friction parts, the full body's frontal ``area`` and the
split."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch


def half_body(a: float, b: float, c: float, slant: float, n_theta: int = 14, n_phi: int = 8):
    """An ellipsoid-like body (semi-axes a, b, c, a rear slant) cut at y = 0, above the ground:
    (points (N, 3) float64, triangles (M, 3) wound outward, outward normals (N, 3)). The
    surface is ``(a cos t, b sin t cos f, c sin t sin f)``, t in [0, pi] along x, f in
    [-pi/2, pi/2] (y >= 0), the two poles single nodes."""
    import trimesh

    t = np.linspace(0, np.pi, n_theta + 1)[1:-1]
    f = np.linspace(-np.pi / 2, np.pi / 2, n_phi + 1)
    T, F = np.meshgrid(t, f, indexing="ij")
    ring = np.stack([a * np.cos(T), b * np.sin(T) * np.cos(F), c * np.sin(T) * np.sin(F)], -1).reshape(-1, 3)
    ring[:, 1] = np.where(np.abs(ring[:, 1]) < 1e-12, 0.0, ring[:, 1])
    v = np.concatenate([[[a, 0, 0]], ring, [[-a, 0, 0]]])
    idx = 1 + np.arange(ring.shape[0]).reshape(len(t), len(f))
    tri = []
    for j in range(len(f) - 1):
        tri.append([0, idx[0, j + 1], idx[0, j]])
        tri.append([v.shape[0] - 1, idx[-1, j], idx[-1, j + 1]])
        for i in range(len(t) - 1):
            tri += [[idx[i, j], idx[i, j + 1], idx[i + 1, j]], [idx[i + 1, j], idx[i, j + 1], idx[i + 1, j + 1]]]
    tri = np.asarray(tri, dtype=np.int64)
    up = v[:, 2] > 0
    v[up, 2] -= slant * np.clip(v[up, 0] / a, 0, None) ** 2 * v[up, 2]  # a lower, sloping rear roof
    va = np.cross(v[tri[:, 1]] - v[tri[:, 0]], v[tri[:, 2]] - v[tri[:, 0]])
    if float((va * v[tri].mean(1)).sum()) < 0:  # wind outward
        tri = tri[:, ::-1].copy()
    v[:, 2] += c + 0.1
    m = trimesh.Trimesh(v, tri, process=False)
    return v, tri, np.array(m.vertex_normals, dtype=np.float64)


def surface_fields(pts, nrm, k: float):
    """Analytic Cp and wall shear (over q) on the surface: stagnation in front, a base
    pressure deficit behind scaled by ``k``, tangential friction along the free stream."""
    nx = nrm[:, 0]
    front = 1.0 - 1.5 * (1.0 - nx ** 2)
    rear = -0.35 - k * (0.5 + np.clip(nx, 0, None))
    t = 0.5 * (1 + np.tanh(6 * nx))
    cp = (1 - t) * front + t * rear
    ex = np.array([1.0, 0.0, 0.0])
    tang = ex[None, :] - nx[:, None] * nrm
    tau = 0.004 * (1.0 + 0.3 * (pts[:, 0] - pts[:, 0].min())) [:, None] * tang
    return cp, tau


def volume_points(rng, a, b, c, n: int):
    """Points around the half body (y >= 0), outside it, with analytic p and U."""
    lo, hi = np.array([-2.0 * a, 0.0, 0.0]), np.array([3.0 * a, 2.0 * b, 2.5 * c + 0.1])
    x = rng.uniform(lo, hi, size=(4 * n, 3))
    ctr = np.array([0.0, 0.0, c + 0.1])
    r = np.sqrt((((x - ctr) / [a, b, c]) ** 2).sum(1))
    x, r = x[r > 1.05][:n], r[r > 1.05][:n]
    d = (x - ctr) / [a, b, c]
    cos = d[:, 0] / r
    p = (1.5 * cos ** 2 - 0.5) / r ** 3
    U = np.stack([1.0 - 0.5 * (3 * cos ** 2 - 1) / r ** 3, -0.3 * d[:, 1] * cos / r ** 4, -0.3 * d[:, 2] * cos / r ** 4], 1)
    return x, p, U


def make_cases(root, n: int = 3, seed: int = 0, n_points: int = 300, n_theta: int = 14, test=(0,)) -> list:
    """Write ``n`` cases under ``root``; returns the manifest records."""
    import geoop
    from geoop import Geometry
    from geoop.physics import forces

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        a, b, c = rng.uniform(0.9, 1.1), rng.uniform(0.35, 0.45), rng.uniform(0.3, 0.4)
        slant, k = rng.uniform(0.1, 0.4), rng.uniform(0.1, 0.6)
        pts, tri, nrm = half_body(a, b, c, slant, n_theta)
        cp, tau = surface_fields(pts, nrm, k)
        name = f"case_{i:04d}"
        # wallShearStress as OpenFOAM writes it: the wall's stress on the fluid, minus the skin friction
        surf = Geometry(torch.as_tensor(pts), cells={"triangle": torch.as_tensor(tri)}, normals=torch.as_tensor(nrm),
                        fields={"p": torch.as_tensor(cp), "wallShearStress": -torch.as_tensor(tau)})
        geoop.write(surf, root / f"{name}_surface.vtp")
        x, p, U = volume_points(rng, a, b, c, n_points)
        geoop.write(Geometry(torch.as_tensor(x), fields={"p": torch.as_tensor(p), "U": torch.as_tensor(U)}),
                    root / f"{name}_points.vtu")
        area = float(np.pi * b * c)  # the full body's frontal area; forces of the half with its plane: the full body's
        half = geoop.read(root / f"{name}_surface.vtp")
        r = forces(half, "p", "wallShearStress", area=area, dynamic_pressure=1.0, symmetry=("y", 0.0),
                   wall_shear_acts_on="fluid")
        rp = forces(half, "p", area=area, dynamic_pressure=1.0, symmetry=("y", 0.0))
        records.append({"case": name, "split": "test" if i in test else "train", "aref": area,
                        "cd": r.coefficients["cd"], "cl": r.coefficients["cl"],
                        "cd_pressure": rp.coefficients["cd"], "cd_viscous": r.coefficients["cd"] - rp.coefficients["cd"],
                        "params": {"a": a, "b": b, "c": c, "slant": slant, "base": k}})
    (root / "manifest.json").write_text(json.dumps({"generator": "tests/_body_cases.py", "cases": records}, indent=1))
    return records


def tiny_body_config(tmp: Path, folder: Path, name: str = "body_rans.json", force: bool = True, **model) -> Path:
    """``configs/body_rans.toml`` shrunk to a 2-epoch CPU run on the cases in ``folder``
    (latent 8x6x6, width 8, half of the train split for validation), written as JSON to
    ``tmp/name``; ``model`` keys (``ensemble=2``) are set in its ``[model]`` table; ``force``
    turns on the force loss the recipe documents but leaves off (so the tests cover it)."""
    import tomllib

    cfg = tomllib.loads((Path(__file__).resolve().parents[1] / "configs" / "body_rans.toml").read_text())
    cfg["data"].update(folder=str(folder), val_split="val", val_fraction=0.5)
    cfg["model"].update(model)
    cfg["model"]["latent"]["shape"] = [8, 6, 6]
    cfg["model"]["blocks"].update(width=8, modes=[3, 3, 3], layers=1)
    for s in ("encoder", "decoder"):
        cfg["model"][s].update(mlp=[16], n_freqs=4)
    if force:
        cfg["loss"]["coefficients"] = {"cd": 0.5, "cl": 0.25}
    cfg["optim"].update(epochs=2, minutes=0)
    cfg["output"]["dir"] = str(tmp / "run")
    cfg["device"] = "cpu"
    path = tmp / name
    path.write_text(json.dumps(cfg))
    return path
