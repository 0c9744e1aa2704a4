#!/usr/bin/env python
"""Read floors for polyhedral OpenFOAM meshes: a snappyHexMesh run of the ``flange``
tutorial (Debian's ``openfoam-examples``) read four ways, foamToVTK's ``.vtu`` and legacy ``.vtk``, the case
folder and the decomposed case (``processor*``), compared point by point and cell by cell,
and the sum of the cell volumes against ``checkMesh``'s total.

    python benchmarks/openfoam_read.py [--blocks 20 16 12 --surface-level 2 --inside-level 3]

Prints one JSON line per mesh; needs OpenFOAM (blockMesh, snappyHexMesh, foamToVTK) on PATH.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from make_openfoam_fixture import make_run  # noqa: E402

import geoop  # noqa: E402


def _rows(a: np.ndarray) -> np.ndarray:
    return np.lexsort(a.T[::-1])


def openfoam_style_volumes(g) -> np.ndarray:
    """Cell volumes the way OpenFOAM computes them (``primitiveMesh``): each face's area
    vector S_f and area-weighted centre C_f from triangles about its vertex mean, the cell
    estimate c the mean of its face centres, V = sum_f S_f . (C_f - c) / 3: warped faces are
    treated as if planar. Cells in ``g``'s cell order (fixed types, then polyhedra)."""
    from geoop.geometry.polyhedra import cell_faces

    parts = [cell_faces(t, c) + (c.shape[0],) for t, c in g.cells.items()]
    ph = g.polyhedra
    parts.append((ph.face_points, ph.face_offsets, ph.face_cell(), ph.n_cells))
    p = g.points.double().numpy()
    out = []
    for fp, fo, fc, m in parts:
        fp, fo, fc = fp.numpy(), fo.numpy(), fc.numpy()
        sizes = np.diff(fo)
        face = np.repeat(np.arange(sizes.size), sizes)
        x = p[fp]
        nxt = np.arange(1, fp.size + 1)
        nxt[fo[1:] - 1] = fo[:-1]
        mean = np.zeros((sizes.size, 3))
        np.add.at(mean, face, x)
        mean /= sizes[:, None]
        n = np.cross(p[fp[nxt]] - x, mean[face] - x)
        a = np.linalg.norm(n, axis=1)
        c = x + p[fp[nxt]] + mean[face]
        S = np.zeros((sizes.size, 3))
        np.add.at(S, face, 0.5 * n)
        A = np.bincount(face, a, sizes.size)
        Cf = np.zeros((sizes.size, 3))
        np.add.at(Cf, face, a[:, None] * c)
        Cf /= 3 * A[:, None]
        cest = np.zeros((m, 3))
        np.add.at(cest, fc, Cf)
        cest /= np.bincount(fc, minlength=m)[:, None]
        out.append(np.abs(np.bincount(fc, np.einsum("ij,ij->i", S, Cf - cest[fc]), m)) / 3)
    return np.concatenate(out)


def measure(run: Path, info: dict) -> dict:
    t0 = time.perf_counter()
    vtu = geoop.read(next((run / "VTK").glob("*_0/internal.vtu")))
    t1 = time.perf_counter()
    legacy = geoop.read(next((run / "VTK").glob("*_0.vtk")))
    rec = geoop.read(run)
    t2 = time.perf_counter()
    dec = geoop.read(run, decomposed=True)
    t3 = time.perf_counter()
    out = dict(info)
    out.update(read_s={"vtu": round(t1 - t0, 3), "case": round(t2 - t1, 3), "decomposed": round(t3 - t2, 3)})
    p_r = rec.points.numpy()
    out["max_point_diff_vtu_case"] = float(np.abs(vtu.points.numpy() - p_r).max())
    out["max_point_diff_legacy_case"] = float(np.abs(legacy.points.numpy() - p_r).max())
    out["max_point_diff_decomposed_case"] = float(np.abs(dec.points.numpy()[_rows(dec.points.numpy())]
                                                         - p_r[_rows(p_r)]).max())
    cr, cd = _rows(rec.cell_fields["C"].numpy()), _rows(dec.cell_fields["C"].numpy())
    for k in ("V", "C"):
        a = rec.cell_fields[k].numpy()
        out[f"max_{k}_diff_vtu_case"] = float(np.abs(vtu.cell_fields[k].numpy() - a).max())
        out[f"max_{k}_diff_legacy_case"] = float(np.abs(legacy.cell_fields[k].numpy() - a).max())
        out[f"max_{k}_diff_decomposed_case"] = float(np.abs(dec.cell_fields[k].numpy()[cd] - a[cr]).max())
    vols = {}
    for name, g in (("vtu", vtu), ("legacy", legacy), ("case", rec), ("decomposed", dec)):
        vols[name] = float(g.weights.double().sum())
    out["volume_sum"] = vols
    out["volume_rel_diff_vs_checkMesh"] = {k: (v - info["total_volume"]) / info["total_volume"] for k, v in vols.items()}
    out["openfoam_V_sum"] = float(rec.cell_fields["V"].double().sum())
    poly = rec.cell_measures()["polyhedron"].numpy()
    n_fixed = rec.n_cells - rec.polyhedra.n_cells
    v_foam = rec.cell_fields["V"][:, 0].numpy()
    out["polyhedra_volume_rel_diff_vs_openfoam_V_max"] = float(np.abs(poly - v_foam[n_fixed:]).max()
                                                               / v_foam[n_fixed:].min())
    out["polyhedra_volume_fraction"] = float(poly.sum() / vols["case"])
    # the gap to checkMesh is OpenFOAM's planar-face approximation: its formula on the same
    # faces gives OpenFOAM's V cell by cell and checkMesh's total
    vf = openfoam_style_volumes(rec)
    out["openfoam_formula_vs_V_rel_max"] = float((np.abs(vf - v_foam) / v_foam).max())
    out["openfoam_formula_total_rel_diff_vs_checkMesh"] = float((vf.sum() - info["total_volume"]) / info["total_volume"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, nargs=3, default=(10, 8, 6))
    ap.add_argument("--surface-level", type=int, default=1)
    ap.add_argument("--inside-level", type=int, default=1)
    ap.add_argument("--procs", type=int, default=2)
    a = ap.parse_args()
    torch.set_default_dtype(torch.float64)
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "flange"
        t0 = time.perf_counter()
        info = make_run(run, tuple(a.blocks), a.surface_level, a.inside_level, a.procs)
        info["openfoam_s"] = round(time.perf_counter() - t0, 1)
        print(json.dumps(measure(run, info)))


if __name__ == "__main__":
    main()
