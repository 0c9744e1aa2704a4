#!/usr/bin/env python
"""Mesh OpenFOAM's snappyHexMesh ``flange`` tutorial (Debian's ``openfoam-examples``) small,
write its cell volumes and centres as fields, decompose it, export it with foamToVTK, and
copy the minimal case files (gzipped ASCII) into a test fixture.

    python scripts/make_openfoam_fixture.py --run-dir /tmp/flange --out tests/data/openfoam_flange

Without ``--out`` only the run is made (for the read floors, ``benchmarks/openfoam_read.py``).
The run folder holds: the case (``constant/polyMesh``, ``0/{V,C}``), ``processor0..N-1``
(``decomposePar``, hierarchical), ``VTK/`` (``foamToVTK``: internal.vtu with polyhedra, and the
legacy ``<case>_0.vtk``) and
``checkMesh.json`` (points, cells, polyhedra and the total volume ``checkMesh`` reports).
The fixture holds the case and its processors (polyMesh + ``0/``, gzipped) and
``checkMesh.json``. OpenFOAM runs with ``WM_PROJECT_DIR`` set to the package's share folder
(no ``etc/bashrc``), one process per tool.
"""
from __future__ import annotations

import argparse
import gzip
import json
import re
import shutil
import subprocess
from pathlib import Path

from geoop.data.rans import _foam_env  # WM_PROJECT_DIR and OMP_NUM_THREADS for the OpenFOAM tools

TUTORIAL = Path("/usr/share/doc/openfoam-examples/examples/mesh/snappyHexMesh/flange")
GEOMETRY = Path("/usr/share/doc/openfoam-examples/examples/resources/geometry/flange.stl.gz")
MESH_FILES = ("points", "faces", "owner", "neighbour", "boundary")
FIELDS = ("V", "C")


def _run(cmd: list, case: Path) -> str:
    r = subprocess.run(cmd + ["-case", str(case)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       env=_foam_env())
    (case / f"log.{'.'.join(c for c in cmd if not c.startswith('-'))}").write_text(r.stdout, encoding="utf-8")
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed in {case}:\n{r.stdout[-2000:]}")
    return r.stdout


def make_run(run_dir: Path, blocks=(10, 8, 6), surface_level: int = 1, inside_level: int = 1,
             n_procs: int = 2, precision: int = 6) -> dict:
    """Mesh, fields, decomposition and VTK export of the flange in ``run_dir`` (replaced)."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    shutil.copytree(TUTORIAL, run_dir)
    for p in [run_dir, *run_dir.rglob("*")]:
        p.chmod(p.stat().st_mode | 0o200)
    sh = run_dir / "system" / "snappyHexMeshDict"
    sh.write_bytes(gzip.decompress((run_dir / "system" / "snappyHexMeshDict.gz").read_bytes()))
    (run_dir / "system" / "snappyHexMeshDict.gz").unlink()
    text = sh.read_text()
    text = re.sub(r"level \(2 2\);", f"level ({surface_level} {surface_level});", text)
    text = re.sub(r"levels \(\(1E15 3\)\);", f"levels ((1E15 {inside_level}));", text)
    sh.write_text(text)
    bm = run_dir / "system" / "blockMeshDict"
    bm.write_text(bm.read_text().replace("(20 16 12)", "({} {} {})".format(*blocks)))
    cd = run_dir / "system" / "controlDict"
    cd.write_text(re.sub(r"writePrecision\s+\d+;", f"writePrecision  {precision};", cd.read_text()))
    (run_dir / "system" / "decomposeParDict").write_text(
        "FoamFile { version 2.0; format ascii; class dictionary; object decomposeParDict; }\n"
        f"numberOfSubdomains {n_procs};\nmethod hierarchical;\n"
        f"hierarchicalCoeffs {{ n ({n_procs} 1 1); order xyz; delta 0.001; }}\n"
        f"coeffs {{ n ({n_procs} 1 1); order xyz; delta 0.001; }}\n")
    (run_dir / "constant" / "triSurface").mkdir(parents=True, exist_ok=True)
    shutil.copy(GEOMETRY, run_dir / "constant" / "triSurface" / GEOMETRY.name)
    _run(["blockMesh"], run_dir)
    _run(["surfaceFeatureExtract"], run_dir)
    _run(["snappyHexMesh", "-overwrite"], run_dir)
    for func in ("writeCellVolumes", "writeCellCentres"):
        _run(["postProcess", "-func", func], run_dir)
    check = _run(["checkMesh"], run_dir)
    _run(["decomposePar", "-force"], run_dir)
    _run(["foamToVTK", "-time", "0"], run_dir)
    _run(["foamToVTK", "-legacy", "-time", "0"], run_dir)
    (run_dir / "case.foam").touch()

    def num(key):
        m = re.search(key, check)
        return m.group(1) if m else None

    info = {
        "points": int(num(r"points:\s+(\d+)")), "cells": int(num(r"\n\s+cells:\s+(\d+)")),
        "polyhedra": int(num(r"polyhedra:\s+(\d+)") or 0), "total_volume": float(num(r"Total volume = ([-+0-9.eE]*[0-9])")),
        "blocks": list(blocks), "surface_level": surface_level, "inside_level": inside_level, "n_procs": n_procs,
        "write_precision": precision,
    }
    (run_dir / "checkMesh.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


def _copy_case(src: Path, dst: Path) -> None:
    (dst / "constant" / "polyMesh").mkdir(parents=True)
    (dst / "0").mkdir()
    for f in MESH_FILES:
        _gz(src / "constant" / "polyMesh" / f, dst / "constant" / "polyMesh" / f"{f}.gz")
    for f in FIELDS:
        _gz(src / "0" / f, dst / "0" / f"{f}.gz")


def _gz(src: Path, dst: Path) -> None:
    # mtime=0: the same run gives the same bytes
    with open(src, "rb") as fi, open(dst, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw,
                                                                      mtime=0) as fo:
        fo.write(fi.read())


def make_fixture(run_dir: Path, out: Path) -> None:
    """The minimal case files of a run (reconstructed and decomposed) into ``out`` (replaced)."""
    if out.exists():
        shutil.rmtree(out)
    _copy_case(run_dir, out)
    (out / "system").mkdir()
    shutil.copy(run_dir / "system" / "decomposeParDict", out / "system" / "decomposeParDict")
    for proc in sorted(run_dir.glob("processor*")):
        _copy_case(proc, out / proc.name)
    shutil.copy(run_dir / "checkMesh.json", out / "checkMesh.json")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=None, help="fixture folder (replaced)")
    ap.add_argument("--blocks", type=int, nargs=3, default=(10, 8, 6))
    ap.add_argument("--surface-level", type=int, default=1)
    ap.add_argument("--inside-level", type=int, default=1)
    ap.add_argument("--procs", type=int, default=2)
    a = ap.parse_args()
    info = make_run(a.run_dir, tuple(a.blocks), a.surface_level, a.inside_level, a.procs)
    print(json.dumps(info))
    if a.out is not None:
        make_fixture(a.run_dir, a.out)


if __name__ == "__main__":
    main()
