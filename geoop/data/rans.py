r"""2-D airfoil flow data from steady incompressible RANS (OpenFOAM ``simpleFoam``).

The viscous counterpart of :mod:`geoop.data.airfoil` (panel method): boundary layers, wakes
and separation. One case per NACA 4-digit airfoil (chord 1, leading edge at the origin) at
angle of attack ``alpha`` (the free stream is rotated, the airfoil is not), Reynolds number
``Re = U c / nu`` with ``U = 1``, ``c = 1``.

Mesh
----
A structured O-grid written directly as an OpenFOAM ``polyMesh`` (no blockMesh or
snappyHexMesh; one cell thick in z, ``empty`` front and back): ``n_around`` cells around the
airfoil (cosine-spaced nodes of :func:`geoop.data.airfoil.naca4_coordinates`) times
``n_radial`` cells outwards, layer distances growing geometrically from ``first_cell`` chords
to ``far_radius`` chords. Node ``(i, j)`` sits at

.. math::  P_{ij} = s_i + d_j \frac{(1 - w_j) n_i + w_j e_i}{\|(1 - w_j) n_i + w_j e_i\|},
           \qquad w_j = \mathrm{smoothstep}(d_j / d_b),

with :math:`s_i` the surface node, :math:`n_i` its outward normal (grid lines leave the wall
normally) and :math:`e_i = (\cos\theta_i, \sin\theta_i)`, :math:`\theta_i = -2\pi\,
\mathrm{arc}_i / \mathrm{perimeter}` (far from the body the lines are spread evenly in angle);
``d_b = 2`` chords. Patches: ``wall`` (the airfoil), ``farfield`` (free-stream conditions, any
angle), ``frontAndBack`` (empty).

Solver
------
``simpleFoam`` with Spalart-Allmaras (``turbulence="SpalartAllmaras"``, default) or
k-omega SST (``"kOmegaSST"``), Spalding wall function, free-stream boundary conditions on the
far field, second-order (linearUpwind) convection, OpenFOAM's ``forceCoeffs`` function object
for ``C_L``, ``C_D``, ``C_M`` (quarter chord) at every iteration. OpenFOAM runs as one
process per case (``OMP``/MPI free), ``WM_PROJECT_DIR`` set to the package's share folder (its
``etc/bashrc`` is not sourced).

Convergence (:func:`check_convergence`): the run stops when every initial residual is below
``residual_tol`` (SIMPLE ``residualControl``; ten times it for the turbulence fields) or at
``iterations``. A case is *converged* when
the last initial residuals of ``p`` and ``U`` are below ``converged_residual`` (default 2e-3: the pressure residual of SIMPLE plateaus at
1e-4 to 1e-3 on these grids while the forces no longer move) and the lift
coefficient varies by less than ``cl_tol`` (absolute) over the last ``cl_window``
iterations. Unconverged cases are marked in the manifest (``"converged": false``), or dropped
with ``drop_unconverged=True``.

Outputs (the layout of :mod:`geoop.data.airfoil`)
-------------------------------------------------
* ``case_XXXX_surface.vtp``: the airfoil as a closed polyline (z = 0), point data ``Cp`` and
  ``p`` (both the pressure coefficient), ``wallShearStress`` (N, 3) (OpenFOAM's ``wallShearStress`` over ``q``:
  the stress of the wall on the fluid, i.e. minus the skin-friction vector on the wall), ``Normals`` (outward);
* ``case_XXXX_volume.vtu``: the O-grid's quads at z = 0, point data ``p`` (pressure
  coefficient, ``(P - P_inf) / q``), ``U`` (N, 3) and its components ``u``, ``v`` (over
  ``U_inf``), ``nut`` (over ``nu``);
* ``manifest.json``: per case its parameters, ``cl``, ``cd``, ``cm`` (last iteration),
  ``converged``, the final residuals, the iterations, the solver's wall time.

The cell-centred solution is read from the ASCII field files and moved to the grid nodes
with inverse-distance weights of the (up to four) cells around each node, as OpenFOAM's
``volPointInterpolation`` does in the interior; wall nodes take ``U = 0`` and the wall face
values of ``p`` (zero gradient: the wall cells) and ``wallShearStress``. (Read directly rather
than through ``foamToVTK`` + a VTK reader: the grid is ours, so its node order is known.)
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass
from typing import Mapping, Optional

import numpy as np

from ..errors import BackendUnavailableError, ConfigError, GeoopError
from .airfoil import DEFAULT_RANGES as _PANEL_RANGES

__all__ = [
    "RansSettings",
    "OpenFOAMError",
    "openfoam_available",
    "require_openfoam",
    "ogrid_points",
    "write_polymesh",
    "write_case",
    "run_case",
    "check_convergence",
    "read_case",
    "make_case",
    "generate",
    "DEFAULT_RANGES",
    "INSTALL_HINT",
]

#: sampling ranges of :func:`generate` (uniform in [lo, hi]): the panel-method generator's
#: airfoil design (camber, its position, thickness, angle of attack), without its mesh sizes
DEFAULT_RANGES: dict[str, tuple[float, float]] = {k: _PANEL_RANGES[k] for k in ("m", "p", "t", "alpha_deg")}

INSTALL_HINT = (
    "OpenFOAM (simpleFoam) is needed for --solver rans. On Debian/Ubuntu: "
    "`apt-get install openfoam` (v1912; or run `GEOOP_WITH_OPENFOAM=1 bash scripts/setup_env.sh`); "
    "elsewhere install OpenFOAM and put simpleFoam on PATH (set WM_PROJECT_DIR to its share folder)."
)

TURBULENCE_MODELS = ("SpalartAllmaras", "kOmegaSST")


class OpenFOAMError(GeoopError, RuntimeError):
    """An OpenFOAM utility failed (the message names the case folder and its log)."""


@dataclass(frozen=True)
class RansSettings:
    """Mesh and solver settings of a RANS case (lengths in chords).

    n_around : cells around the airfoil (even), n_radial : cells from the wall to the far field
    first_cell : wall-normal height of the first cell, far_radius : distance of the far field
    reynolds : ``U c / nu``; turbulence : ``"SpalartAllmaras"`` or ``"kOmegaSST"``
    iterations : SIMPLE iterations at most; residual_tol : early stop (every initial residual)
    converged_residual, cl_tol, cl_window : the convergence test (module docstring)
    """

    n_around: int = 160
    n_radial: int = 80
    first_cell: float = 2e-3
    far_radius: float = 40.0
    reynolds: float = 1e6
    turbulence: str = "SpalartAllmaras"
    iterations: int = 1500
    residual_tol: float = 1e-5
    converged_residual: float = 2e-3
    cl_tol: float = 2e-3
    cl_window: int = 100

    def check(self) -> "RansSettings":
        if int(self.n_around) != self.n_around or self.n_around < 16 or self.n_around % 2:
            raise ConfigError(f"rans n_around: expected an even integer >= 16, got {self.n_around}")
        if int(self.n_radial) != self.n_radial or self.n_radial < 8:
            raise ConfigError(f"rans n_radial: expected an integer >= 8, got {self.n_radial}")
        if not (0 < self.first_cell < 0.1):
            raise ConfigError(f"rans first_cell: expected in (0, 0.1) chords, got {self.first_cell}")
        if not (self.far_radius >= 30.0):
            raise ConfigError(f"rans far_radius: expected >= 30 chords, got {self.far_radius}")
        if self.first_cell * self.n_radial >= self.far_radius:
            raise ConfigError(f"rans: first_cell * n_radial = {self.first_cell * self.n_radial} must be below far_radius")
        if self.turbulence not in TURBULENCE_MODELS:
            raise ConfigError(f"rans turbulence: unknown {self.turbulence!r}; valid: {list(TURBULENCE_MODELS)}")
        if not (self.reynolds > 0 and self.iterations >= 10 and self.cl_window >= 2):
            raise ConfigError(f"rans: need reynolds > 0, iterations >= 10, cl_window >= 2; got {self}")
        return self


# ---------------------------------------------------------------------------- OpenFOAM
def _foam_env() -> dict:
    env = dict(os.environ)
    if not env.get("WM_PROJECT_DIR"):
        for cand in ("/usr/share/openfoam", "/usr/lib/openfoam/openfoam"):
            if os.path.isdir(os.path.join(cand, "etc")):
                env["WM_PROJECT_DIR"] = cand
                break
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def openfoam_available() -> bool:
    """Whether ``simpleFoam`` is on PATH."""
    return shutil.which("simpleFoam") is not None


def require_openfoam() -> None:
    """Raise :class:`BackendUnavailableError` with install instructions when OpenFOAM is missing."""
    if not openfoam_available():
        raise BackendUnavailableError(f"geoop.data.rans: `simpleFoam` not found on PATH. {INSTALL_HINT}")


def _run(cmd: list, case_dir: str, log_name: str) -> str:
    """Run an OpenFOAM utility on ``case_dir`` (its own process group, ended if this process
    is interrupted), output to ``case_dir/log_name``; :class:`OpenFOAMError` with the log's
    tail on failure."""
    from ._case_io import run_logged

    log = os.path.join(case_dir, log_name)
    rc = run_logged(cmd + ["-case", case_dir], log, _foam_env())
    if rc != 0:
        tail = "".join(open(log).readlines()[-15:])
        raise OpenFOAMError(f"{cmd[0]} failed (exit {rc}) in {case_dir}; see {log}:\n{tail}")
    return log


# ---------------------------------------------------------------------------- mesh
def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _layer_distances(first: float, far: float, n: int) -> np.ndarray:
    """(n + 1,) distances 0, h, h(1 + r), ... with ratio r chosen so the last is ``far``."""
    lo, hi = 1.0 + 1e-9, 3.0
    for _ in range(200):  # bisection on the geometric ratio
        r = 0.5 * (lo + hi)
        if first * (r**n - 1.0) / (r - 1.0) > far:
            hi = r
        else:
            lo = r
    r = 0.5 * (lo + hi)
    d = first * (r ** np.arange(n + 1) - 1.0) / (r - 1.0)
    d[-1] = far
    return d


def ogrid_points(surface: np.ndarray, normals: np.ndarray, settings: RansSettings, blend: float = 2.0,
                 smooth: int = 20) -> np.ndarray:
    """Nodes of the O-grid (module docstring).

    Shapes
    ------
    surface, normals : (Ni, 2) distinct clockwise surface nodes (trailing edge first) and
        their outward unit normals
    returns : (n_radial + 1, Ni, 2), row 0 is ``surface``
    """
    s = np.asarray(surface, dtype=np.float64)
    n = np.asarray(normals, dtype=np.float64)
    for _ in range(int(smooth)):  # spread the trailing-edge fan over a few nodes (less skewed cells)
        n = n + 0.5 * (np.roll(n, 1, axis=0) + np.roll(n, -1, axis=0))
        n = n / np.linalg.norm(n, axis=1, keepdims=True)
    seg = np.linalg.norm(np.diff(np.vstack([s, s[:1]]), axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg)[:-1]])
    theta = -2.0 * math.pi * arc / seg.sum()
    e = np.stack([np.cos(theta), np.sin(theta)], axis=1)
    d = _layer_distances(settings.first_cell, settings.far_radius, int(settings.n_radial))
    w = _smoothstep(d / blend)[:, None, None]
    dirs = (1.0 - w) * n[None] + w * e[None]
    dirs = dirs / np.linalg.norm(dirs, axis=2, keepdims=True)
    return s[None] + d[:, None, None] * dirs


def write_polymesh(case_dir: str, grid: np.ndarray, span: float) -> dict:
    """Write ``constant/polyMesh`` of the O-grid ``grid`` (Nj + 1, Ni, 2) extruded by ``span``
    in z: points, faces (quads), owner, neighbour, boundary with patches ``wall`` (j = 0),
    ``farfield`` (j = Nj) and ``frontAndBack``. Faces are oriented by OpenFOAM's rules (normal
    from owner to neighbour, outwards on boundaries); internal faces in upper-triangular order.

    Returns ``{"n_points", "n_cells", "n_faces", "n_internal"}``.
    """
    nj1, ni, _ = grid.shape
    nj = nj1 - 1
    npl = ni * nj1
    pts2 = grid.reshape(-1, 2)
    pts = np.concatenate([np.c_[pts2, np.zeros(npl)], np.c_[pts2, np.full(npl, span)]])

    def pid(i, j, k):
        return k * npl + j * ni + (i % ni)

    I, J = np.meshgrid(np.arange(ni), np.arange(nj), indexing="xy")  # (nj, ni)
    I, J = I.ravel(), J.ravel()
    cell = lambda i, j: j * ni + (i % ni)  # noqa: E731
    ccen = pts[np.stack([pid(I, J, 0), pid(I + 1, J, 0), pid(I + 1, J + 1, 0), pid(I, J + 1, 0),
                         pid(I, J, 1), pid(I + 1, J, 1), pid(I + 1, J + 1, 1), pid(I, J + 1, 1)], 1)].mean(1)

    def orient(faces, owner, target):
        """Flip faces whose right-hand normal points away from ``target - face centre``."""
        p = pts[faces]
        nrm = np.cross(p[:, 2] - p[:, 0], p[:, 3] - p[:, 1])
        bad = np.einsum("ij,ij->i", nrm, target - p.mean(1)) < 0
        faces[bad] = faces[bad][:, ::-1]
        return faces

    # internal radial-line faces between cells (i-1, j) and (i, j)
    fa = np.stack([pid(I, J, 0), pid(I, J + 1, 0), pid(I, J + 1, 1), pid(I, J, 1)], 1)
    ca, cb = cell(I - 1, J), cell(I, J)
    own_a, nei_a = np.minimum(ca, cb), np.maximum(ca, cb)
    # internal ring faces between (i, j-1) and (i, j)
    m = J >= 1
    Ib, Jb = I[m], J[m]
    fb = np.stack([pid(Ib, Jb, 0), pid(Ib + 1, Jb, 0), pid(Ib + 1, Jb, 1), pid(Ib, Jb, 1)], 1)
    own_b, nei_b = cell(Ib, Jb - 1), cell(Ib, Jb)
    faces_i = np.concatenate([fa, fb])
    own_i = np.concatenate([own_a, own_b])
    nei_i = np.concatenate([nei_a, nei_b])
    order = np.lexsort((nei_i, own_i))
    faces_i, own_i, nei_i = faces_i[order], own_i[order], nei_i[order]
    faces_i = orient(faces_i, own_i, ccen[nei_i])
    # boundary: wall (j = 0), farfield (j = nj), front (z = 0) and back (z = span)
    i1 = np.arange(ni)
    fw = np.stack([pid(i1, 0, 0), pid(i1 + 1, 0, 0), pid(i1 + 1, 0, 1), pid(i1, 0, 1)], 1)
    ow = cell(i1, 0)
    fw = orient(fw, ow, 2 * pts[fw].mean(1) - ccen[ow])  # outwards: away from the cell centre
    ff = np.stack([pid(i1, nj, 0), pid(i1 + 1, nj, 0), pid(i1 + 1, nj, 1), pid(i1, nj, 1)], 1)
    of = cell(i1, nj - 1)
    ff = orient(ff, of, 2 * pts[ff].mean(1) - ccen[of])
    c_all = cell(I, J)
    f0 = np.stack([pid(I, J, 0), pid(I + 1, J, 0), pid(I + 1, J + 1, 0), pid(I, J + 1, 0)], 1)
    f1 = f0 + npl
    fe = np.concatenate([f0, f1])
    oe = np.concatenate([c_all, c_all])
    fe = orient(fe, oe, 2 * pts[fe].mean(1) - ccen[oe])
    faces = np.concatenate([faces_i, fw, ff, fe])
    owner = np.concatenate([own_i, ow, of, oe])
    n_int = faces_i.shape[0]
    n_cells = ni * nj
    mesh = os.path.join(case_dir, "constant", "polyMesh")
    os.makedirs(mesh, exist_ok=True)
    note = f"nPoints:{pts.shape[0]}  nCells:{n_cells}  nFaces:{faces.shape[0]}  nInternalFaces:{n_int}"

    def header(cls, obj, extra=""):
        return ("FoamFile\n{\n    version     2.0;\n    format      ascii;\n"
                f"    class       {cls};\n{extra}    location    \"constant/polyMesh\";\n    object      {obj};\n}}\n\n")

    with open(os.path.join(mesh, "points"), "w") as fh:
        fh.write(header("vectorField", "points"))
        fh.write(f"{pts.shape[0]}\n(\n")
        np.savetxt(fh, pts, fmt="(%.12g %.12g %.12g)")
        fh.write(")\n")
    with open(os.path.join(mesh, "faces"), "w") as fh:
        fh.write(header("faceList", "faces"))
        fh.write(f"{faces.shape[0]}\n(\n")
        np.savetxt(fh, faces, fmt="4(%d %d %d %d)")
        fh.write(")\n")
    for name, arr in (("owner", owner), ("neighbour", nei_i)):
        with open(os.path.join(mesh, name), "w") as fh:
            fh.write(header("labelList", name, f"    note        \"{note}\";\n"))
            fh.write(f"{arr.shape[0]}\n(\n")
            np.savetxt(fh, arr, fmt="%d")
            fh.write(")\n")
    start = n_int
    patches = []
    for name, typ, nf in (("wall", "wall", ni), ("farfield", "patch", ni), ("frontAndBack", "empty", 2 * n_cells)):
        grp = f"        inGroups        1({typ});\n" if typ != "patch" else ""
        patches.append(f"    {name}\n    {{\n        type            {typ};\n{grp}"
                       f"        nFaces          {nf};\n        startFace       {start};\n    }}\n")
        start += nf
    with open(os.path.join(mesh, "boundary"), "w") as fh:
        fh.write(header("polyBoundaryMesh", "boundary"))
        fh.write(f"3\n(\n{''.join(patches)})\n")
    return {"n_points": int(pts.shape[0]), "n_cells": n_cells, "n_faces": int(faces.shape[0]), "n_internal": n_int}


# ---------------------------------------------------------------------------- case files
def _foam_file(cls: str, obj: str, body: str, location: str) -> str:
    return ("FoamFile\n{\n    version     2.0;\n    format      ascii;\n"
            f"    class       {cls};\n    location    \"{location}\";\n    object      {obj};\n}}\n\n{body}\n")


def _bc(patches: Mapping[str, str]) -> str:
    return "boundaryField\n{\n" + "".join(f"    {k}\n    {{\n{v}    }}\n" for k, v in patches.items()) + "}\n"


def write_case(case_dir: str, surface: np.ndarray, normals: np.ndarray, alpha_deg: float,
               settings: RansSettings) -> dict:
    """Write a complete simpleFoam case (mesh, ``0/``, ``constant/``, ``system/``) to
    ``case_dir``; returns the mesh sizes plus ``min_far_distance`` (chords from the airfoil to
    the nearest far-field node) and ``span``."""
    st = settings.check()
    grid = ogrid_points(surface, normals, st)
    span = 0.1
    info = write_polymesh(case_dir, grid, span)
    far = grid[-1]
    dmin = float(np.min(np.linalg.norm(far[:, None, :] - np.asarray(surface)[None], axis=2)))
    info.update(min_far_distance=dmin, span=span)
    a = math.radians(float(alpha_deg))
    ux, uy = math.cos(a), math.sin(a)
    nu = 1.0 / float(st.reynolds)
    empty = "        type            empty;\n"
    fs = lambda kind, val: f"        type            {kind};\n        freestreamValue uniform {val};\n"  # noqa: E731
    files = {}
    files["0/U"] = ("volVectorField", f"dimensions      [0 1 -1 0 0 0 0];\ninternalField   uniform ({ux} {uy} 0);\n" + _bc({
        "wall": "        type            noSlip;\n", "farfield": fs("freestreamVelocity", f"({ux} {uy} 0)"),
        "frontAndBack": empty}))
    files["0/p"] = ("volScalarField", "dimensions      [0 2 -2 0 0 0 0];\ninternalField   uniform 0;\n" + _bc({
        "wall": "        type            zeroGradient;\n", "farfield": fs("freestreamPressure", "0"),
        "frontAndBack": empty}))
    if st.turbulence == "SpalartAllmaras":
        nut_t = 4.0 * nu  # nuTilda / nu = 4: fully turbulent free stream (Spalart & Rumsey 2007)
        chi3 = 4.0**3
        nut = nut_t * chi3 / (chi3 + 7.1**3)
        files["0/nuTilda"] = ("volScalarField", f"dimensions      [0 2 -1 0 0 0 0];\ninternalField   uniform {nut_t};\n" + _bc({
            "wall": "        type            fixedValue;\n        value           uniform 0;\n",
            "farfield": fs("freestream", nut_t), "frontAndBack": empty}))
        turb_fields = ["nuTilda"]
    else:
        k = 1.5 * (0.001 * 1.0) ** 2  # 0.1 % free-stream turbulence intensity
        nut = 0.1 * nu
        om = k / nut
        files["0/k"] = ("volScalarField", f"dimensions      [0 2 -2 0 0 0 0];\ninternalField   uniform {k};\n" + _bc({
            "wall": f"        type            kqRWallFunction;\n        value           uniform {k};\n",
            "farfield": f"        type            inletOutlet;\n        inletValue      uniform {k};\n        value           uniform {k};\n",
            "frontAndBack": empty}))
        files["0/omega"] = ("volScalarField", f"dimensions      [0 0 -1 0 0 0 0];\ninternalField   uniform {om};\n" + _bc({
            "wall": f"        type            omegaWallFunction;\n        value           uniform {om};\n",
            "farfield": f"        type            inletOutlet;\n        inletValue      uniform {om};\n        value           uniform {om};\n",
            "frontAndBack": empty}))
        turb_fields = ["k", "omega"]
    files["0/nut"] = ("volScalarField", f"dimensions      [0 2 -1 0 0 0 0];\ninternalField   uniform {nut};\n" + _bc({
        "wall": "        type            nutUSpaldingWallFunction;\n        value           uniform 0;\n",
        "farfield": "        type            calculated;\n        value           uniform %g;\n" % nut,
        "frontAndBack": empty}))
    files["constant/transportProperties"] = ("dictionary", f"transportModel  Newtonian;\nnu              {nu};\n")
    files["constant/turbulenceProperties"] = ("dictionary", "simulationType  RAS;\nRAS\n{\n"
                                              f"    RASModel        {st.turbulence};\n    turbulence      on;\n    printCoeffs     off;\n}}\n")
    it = int(st.iterations)
    files["system/controlDict"] = ("dictionary", f"""application     simpleFoam;
startFrom       startTime;
startTime       0;
stopAt          endTime;
endTime         {it};
deltaT          1;
writeControl    timeStep;
writeInterval   {it};
purgeWrite      1;
writeFormat     ascii;
writePrecision  8;
writeCompression off;
timeFormat      general;
timePrecision   6;
runTimeModifiable false;
functions
{{
    forceCoeffs1
    {{
        type            forceCoeffs;
        libs            ("libforces.so");
        writeControl    timeStep;
        writeInterval   1;
        log             false;
        patches         (wall);
        rho             rhoInf;
        rhoInf          1;
        liftDir         ({-uy} {ux} 0);
        dragDir         ({ux} {uy} 0);
        CofR            (0.25 0 0);
        pitchAxis       (0 0 1);
        magUInf         1;
        lRef            1;
        Aref            {span};
    }}
    wallShearStress1
    {{
        type            wallShearStress;
        libs            ("libfieldFunctionObjects.so");
        patches         (wall);
        writeControl    writeTime;
        log             false;
    }}
}}
""")
    div_turb = "".join(f"    div(phi,{f}) bounded Gauss linearUpwind grad({f});\n" for f in turb_fields)
    files["system/fvSchemes"] = ("dictionary", f"""ddtSchemes {{ default steadyState; }}
gradSchemes {{ default Gauss linear; grad(U) cellLimited Gauss linear 1; }}
divSchemes
{{
    default         none;
    div(phi,U)      bounded Gauss linearUpwind grad(U);
{div_turb}    div((nuEff*dev2(T(grad(U))))) Gauss linear;
}}
laplacianSchemes {{ default Gauss linear limited corrected 0.5; }}
interpolationSchemes {{ default linear; }}
snGradSchemes {{ default limited corrected 0.5; }}
wallDist {{ method meshWave; }}
""")
    sm = "".join(f"""    {f}
    {{
        solver          smoothSolver;
        smoother        GaussSeidel;
        nSweeps         2;
        tolerance       1e-10;
        relTol          0.1;
    }}
""" for f in ["U"] + turb_fields)
    # the turbulence equations stall an order of magnitude higher than p and U on these grids
    rc = "".join(f"        {f} {st.residual_tol * (1 if f in ('p', 'U') else 10)};\n" for f in ["p", "U"] + turb_fields)
    relax = "".join(f"        {f} 0.7;\n" for f in ["U"] + turb_fields)
    files["system/fvSolution"] = ("dictionary", f"""solvers
{{
    p
    {{
        solver          GAMG;
        tolerance       1e-8;
        relTol          0.05;
        smoother        GaussSeidel;
    }}
{sm}}}
SIMPLE
{{
    nNonOrthogonalCorrectors 0;
    residualControl
    {{
{rc}    }}
}}
relaxationFactors
{{
    fields {{ p 0.3; }}
    equations
    {{
{relax}    }}
}}
""")
    for rel, (cls, body) in files.items():
        path = os.path.join(case_dir, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as fh:
            fh.write(_foam_file(cls, os.path.basename(rel), body, os.path.dirname(rel)))
    return info


# ---------------------------------------------------------------------------- run + read
_RES = re.compile(r"Solving for (\w+), Initial residual = ([-+0-9.eE]+)")


def _residual_history(log: str) -> dict:
    """{field: [initial residual per iteration]} from a simpleFoam log (Ux, Uy -> U: max)."""
    hist: dict = {}
    cur: dict = {}
    for line in open(log):
        if line.startswith("Time = "):
            if cur:
                for k, v in cur.items():
                    hist.setdefault(k, []).append(v)
            cur = {}
            continue
        m = _RES.search(line)
        if m:
            f, v = m.group(1), float(m.group(2))
            f = "U" if f in ("Ux", "Uy", "Uz") else f
            cur[f] = max(cur.get(f, 0.0), v)
    if cur:
        for k, v in cur.items():
            hist.setdefault(k, []).append(v)
    return hist


def _force_history(case_dir: str) -> np.ndarray:
    """(iterations, 4) rows ``[iteration, Cd, Cl, Cm]`` from the forceCoeffs output."""
    root = os.path.join(case_dir, "postProcessing", "forceCoeffs1", "0")
    files = [os.path.join(root, f) for f in ("coefficient.dat", "forceCoeffs.dat") if os.path.exists(os.path.join(root, f))]
    if not files:
        raise OpenFOAMError(f"{case_dir}: no forceCoeffs output in {root}")
    cols = None
    rows = []
    for line in open(files[0]):
        if line.startswith("#"):
            parts = line[1:].split()
            if parts and parts[0] == "Time":
                cols = parts
            continue
        if line.strip():
            rows.append([float(v) for v in line.split()])
    if cols is None:
        raise OpenFOAMError(f"{files[0]}: no column header")
    a = np.asarray(rows)
    cm = "CmPitch" if "CmPitch" in cols else "Cm"  # v1912 writes CmRoll/CmPitch/CmYaw
    return np.stack([a[:, cols.index("Time")], a[:, cols.index("Cd")], a[:, cols.index("Cl")], a[:, cols.index(cm)]], 1)


def check_convergence(residuals: Mapping[str, list], forces: np.ndarray, settings: RansSettings) -> dict:
    """The convergence test of the module docstring; returns ``{"converged", "final_residuals",
    "cl_variation", "iterations"}`` (``cl_variation``: max - min of C_L over the last
    ``cl_window`` iterations, inf when fewer were run)."""
    final = {k: float(v[-1]) for k, v in residuals.items() if v}
    n = int(forces.shape[0])
    w = int(settings.cl_window)
    var = float(np.ptp(forces[-w:, 2])) if n >= w else float("inf")
    ok_res = all(final.get(f, 1.0) < settings.converged_residual for f in ("p", "U"))
    early = n < settings.iterations  # residualControl stopped the run
    ok_cl = var < settings.cl_tol or (early and n >= 2 and float(np.ptp(forces[-2:, 2])) < settings.cl_tol)
    return {"converged": bool(ok_res and ok_cl), "final_residuals": final, "cl_variation": var, "iterations": n}


_LIST = re.compile(r"(\d+)\s*\(\s*")


def _read_internal(path: str, ncomp: int, n: int) -> np.ndarray:
    """The ``internalField`` of an ASCII OpenFOAM field file as (n, ncomp)."""
    txt = open(path).read()
    k = txt.index("internalField")
    seg = txt[k: txt.index("boundaryField", k)]
    if "nonuniform" not in seg:
        m = re.search(r"uniform\s+\(?([^;)]*)\)?;", seg)
        vals = np.array([float(v) for v in m.group(1).split()])
        return np.tile(vals, (n, 1))
    m = _LIST.search(seg)
    body = seg[m.end(): seg.rindex(")")]
    arr = np.array(body.replace("(", " ").replace(")", " ").split(), dtype=np.float64)
    return arr.reshape(n, ncomp)


def _read_patch(path: str, patch: str, ncomp: int, n: int) -> np.ndarray:
    """The ``value`` of ``patch`` in an ASCII field file as (n, ncomp)."""
    txt = open(path).read()
    bf = txt[txt.index("boundaryField"):]
    k = re.search(r"\b" + patch + r"\s*\{", bf).end()
    seg = bf[k: bf.index("}", k)]
    m = re.search(r"value\s+nonuniform\s+List<\w+>\s*(\d+)\s*\(", seg)
    if m is None:
        m2 = re.search(r"value\s+uniform\s+\(?([^;)]*)\)?;", seg)
        return np.tile(np.array([float(v) for v in m2.group(1).split()]), (n, 1))
    body = seg[m.end(): seg.rindex(")")]
    return np.array(body.replace("(", " ").replace(")", " ").split(), dtype=np.float64).reshape(n, ncomp)


def run_case(case_dir: str, settings: RansSettings) -> dict:
    """Run simpleFoam on a written case (one process); returns the convergence record plus
    ``cl``, ``cd``, ``cm`` (last iteration) and ``solver_seconds``."""
    require_openfoam()
    t0 = time.perf_counter()
    log = _run(["simpleFoam"], case_dir, "log.simpleFoam")
    secs = time.perf_counter() - t0
    res = _residual_history(log)
    forces = _force_history(case_dir)
    rec = check_convergence(res, forces, settings)
    rec.update(cd=float(forces[-1, 1]), cl=float(forces[-1, 2]), cm=float(forces[-1, 3]), solver_seconds=secs)
    return rec


def _latest_time(case_dir: str) -> str:
    times = []
    for d in os.listdir(case_dir):
        try:
            if float(d) > 0:
                times.append((float(d), d))
        except ValueError:
            pass
    if not times:
        raise OpenFOAMError(f"{case_dir}: simpleFoam wrote no time folder")
    return max(times)[1]


def read_case(case_dir: str, grid: np.ndarray, normals: np.ndarray):
    """The solution of a finished case as ``(surface, volume)`` :class:`geoop.Geometry` (the
    output layout of the module docstring). ``grid`` (Nj + 1, Ni, 2) is the mesh's O-grid,
    ``normals`` (Ni, 2) the outward surface normals."""
    from ..geometry.geometry import Geometry

    nj1, ni, _ = grid.shape
    nj = nj1 - 1
    nc = ni * nj
    tdir = os.path.join(case_dir, _latest_time(case_dir))
    p = _read_internal(os.path.join(tdir, "p"), 1, nc)[:, 0].reshape(nj, ni)
    U = _read_internal(os.path.join(tdir, "U"), 3, nc).reshape(nj, ni, 3)
    nut = _read_internal(os.path.join(tdir, "nut"), 1, nc)[:, 0].reshape(nj, ni)
    tau = _read_patch(os.path.join(tdir, "wallShearStress"), "wall", 3, ni)  # (ni, 3) per wall face
    nu = float(re.search(r"\bnu\s+([-+0-9.eE]+);", open(os.path.join(case_dir, "constant", "transportProperties")).read()).group(1))
    # cell centres (quad vertex means) and inverse-distance weights to the nodes
    g = grid
    cen = 0.25 * (g[:-1, :] + np.roll(g[:-1, :], -1, axis=1) + g[1:, :] + np.roll(g[1:, :], -1, axis=1))  # (nj, ni, 2)

    def to_nodes(c: np.ndarray) -> np.ndarray:
        """cell values (nj, ni, C) -> node values (nj + 1, ni, C); node (i, j) averages the
        cells (i-1|i, j-1|j) that exist, weighted by 1 / distance."""
        out = np.zeros((nj1, ni, c.shape[2]))
        wsum = np.zeros((nj1, ni, 1))
        for dj in (0, 1):  # cell row j - 1 + dj... node row j touches cell rows j - 1 and j
            for di in (0, 1):
                jn = np.arange(nj) + dj  # node rows touched by cell rows
                cc = np.roll(cen, di, axis=1)  # cell (i - di) seen at node column i
                vv = np.roll(c, di, axis=1)
                dist = np.linalg.norm(g[jn] - cc, axis=2)[..., None]
                w = 1.0 / np.maximum(dist, 1e-300)
                out[jn] += w * vv
                wsum[jn] += w
        return out / wsum

    q = 0.5  # dynamic pressure of the unit free stream
    pn = to_nodes(p[..., None])[..., 0] / q
    Un = to_nodes(U)
    nutn = to_nodes(nut[..., None])[..., 0] / nu
    Un[0] = 0.0  # no slip
    # wall nodes: the average of the two wall faces next to them (face i spans nodes i, i + 1)
    p_face = p[0] / q
    pn[0] = 0.5 * (p_face + np.roll(p_face, 1))
    tau_n = 0.5 * (tau + np.roll(tau, 1, axis=0)) / q
    nutn[0] = 0.0
    s = grid[0]
    lines = np.stack([np.arange(ni), (np.arange(ni) + 1) % ni], 1)
    pad = lambda a: np.concatenate([a, np.zeros((a.shape[0], 1))], axis=1)  # noqa: E731
    surface = Geometry(pad(s), cells={"line": lines}, normals=pad(np.asarray(normals)),
                       fields={"Cp": pn[0].copy(), "p": pn[0].copy(), "wallShearStress": tau_n})
    I, J = np.meshgrid(np.arange(ni), np.arange(nj), indexing="xy")
    I, J = I.ravel(), J.ravel()
    nid = lambda i, j: j * ni + (i % ni)  # noqa: E731
    quads = np.stack([nid(I, J), nid(I + 1, J), nid(I + 1, J + 1), nid(I, J + 1)], 1)
    a, b, c = (grid.reshape(-1, 2)[quads[:, k]] for k in range(3))
    cross = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    quads[cross < 0] = quads[cross < 0][:, ::-1]  # counter-clockwise
    Uf = Un.reshape(-1, 3).copy()
    Uf[:, 2] = 0.0
    volume = Geometry(pad(grid.reshape(-1, 2)), cells={"quad": quads},
                      fields={"p": pn.reshape(-1), "U": Uf, "u": Uf[:, 0].copy(), "v": Uf[:, 1].copy(),
                              "nut": nutn.reshape(-1)})
    return surface, volume


# ---------------------------------------------------------------------------- cases
def _surface(naca, n_around: int) -> tuple[np.ndarray, np.ndarray]:
    from .airfoil import _node_normals, naca4_coordinates

    xy = naca4_coordinates(naca, int(n_around))
    return xy[:-1].copy(), _node_normals(xy[:, 0] + 1j * xy[:, 1])


def make_case(params: Mapping, case_dir: str, settings: Optional[RansSettings] = None, keep_case: bool = True):
    """Mesh, solve and read one case.

    ``params``: ``m, p, t`` (or ``naca``: a code) and ``alpha_deg``. The OpenFOAM case is
    written to ``case_dir`` (removed afterwards unless ``keep_case``).

    Returns ``(surface, volume, record)``: the two geometries of :func:`read_case` and the
    run record (``cl``, ``cd``, ``cm``, ``converged``, residuals, ``solver_seconds``, mesh
    sizes, ``min_far_distance``).
    """
    from .airfoil import NacaParams

    require_openfoam()
    st = (settings or RansSettings()).check()
    params = dict(params)
    unknown = set(params) - {"m", "p", "t", "naca", "alpha_deg"}
    if unknown:
        raise ConfigError(f"rans params: unknown keys {sorted(unknown)}; valid: ['alpha_deg', 'm', 'naca', 'p', 't']")
    naca = NacaParams.coerce(params["naca"] if "naca" in params else {k: params[k] for k in ("m", "p", "t")})
    alpha = float(params.get("alpha_deg", 0.0))
    s, n = _surface(naca, st.n_around)
    if os.path.exists(case_dir):
        shutil.rmtree(case_dir)
    info = write_case(case_dir, s, n, alpha, st)
    rec = run_case(case_dir, st)
    grid = ogrid_points(s, n, st)
    surface, volume = read_case(case_dir, grid, n)
    surface = surface.replace(name=f"NACA{naca.code}")
    volume = volume.replace(name=f"NACA{naca.code} domain")
    rec.update(info)
    if not keep_case:
        shutil.rmtree(case_dir, ignore_errors=True)
    return surface, volume, rec


def _case_files(name: str) -> dict:
    return {"surface": f"{name}_surface.vtp", "volume": f"{name}_volume.vtu"}


def _done_entry(out_dir: str, name: str) -> Optional[dict]:
    """The record of a finished case: its marker ``case_XXXX.json`` exists and so do its two
    files (or the marker says the case was dropped as unconverged); else None."""
    import json

    mark = os.path.join(out_dir, f"{name}.json")
    if not os.path.exists(mark):
        return None
    with open(mark) as fh:
        e = json.load(fh)
    if e.get("dropped"):
        return e
    if not all(os.path.exists(os.path.join(out_dir, f)) for f in _case_files(name).values()):
        return None
    return e


def _write_one(out_dir: str, i: int, prm: dict, st: RansSettings, keep_cases: bool,
               drop_unconverged: bool = False) -> dict:
    """Solve case ``i``, write its two files, then its marker ``case_XXXX.json`` (the manifest
    entry; written last and atomically, so a marker means the case is complete). An unconverged
    case with ``drop_unconverged`` writes no files and a marker with ``"dropped": true``."""
    from .._atomic import atomic_write_json
    from ._case_io import write_geometry

    name = f"case_{i:04d}"
    files = _case_files(name)
    surface, volume, rec = make_case(prm, os.path.join(out_dir, "openfoam", name), st, keep_case=keep_cases)
    entry = {"case": name, **files, "params": prm, "settings": asdict(st),
             "n_surface": surface.n_points, "n_volume": volume.n_points, **rec}
    if drop_unconverged and not rec["converged"]:
        entry["dropped"] = True
        for f in files.values():  # a previous, interrupted attempt's files
            if os.path.exists(os.path.join(out_dir, f)):
                os.remove(os.path.join(out_dir, f))
    else:
        write_geometry(surface, os.path.join(out_dir, files["surface"]))
        write_geometry(volume, os.path.join(out_dir, files["volume"]))
    atomic_write_json(os.path.join(out_dir, f"{name}.json"), entry, indent=1, sort_keys=False)
    return entry


def generate(out_dir: str, n: int, seed: int = 0, settings: Optional[RansSettings] = None,
             drop_unconverged: bool = False, keep_cases: bool = False, start: int = 0, jobs: int = 1,
             **ranges) -> list[dict]:
    """Write ``n`` RANS airfoil cases to ``out_dir`` plus ``manifest.json``.

    Parameters (``m, p, t, alpha_deg``) are drawn uniformly from :data:`DEFAULT_RANGES`,
    overridden by ``ranges`` (keys that are :class:`RansSettings` fields, e.g. ``iterations``,
    override ``settings`` instead); case ``i`` uses ``numpy.random.default_rng([seed, i])`` (the
    same design as :func:`geoop.data.airfoil.generate` for the same seed). ``settings``: a
    :class:`RansSettings` or a mapping of its fields. ``drop_unconverged``: leave unconverged
    cases out of the files and the manifest (default: keep them, marked). ``keep_cases``: keep
    the OpenFOAM case folders under ``out_dir/openfoam/``. ``start``: first case index (to
    generate a set in chunks into one folder). ``jobs``: cases solved at once, each one serial
    ``simpleFoam`` process (a case's mesh, solve and files are independent of the others', so
    the files do not depend on ``jobs``).

    Resumable: each finished case writes a marker ``case_XXXX.json`` (its manifest entry) after
    its files; a case whose marker and files exist is skipped (its parameters and settings must
    equal this call's, else :class:`~geoop.errors.DatasetError`), any other is solved from
    scratch, so an interrupted run loses at most the cases in flight. ``manifest.json`` lists
    every finished case of the folder in index order (entries of an older manifest without
    markers are kept) and is rewritten after each case.

    Returns the manifest entries of cases ``start .. start + n - 1`` (dropped ones excluded).
    """
    import json

    from ..errors import DatasetError
    from ._case_io import finished_cases, resolve_ranges, run_cases, write_manifest

    require_openfoam()
    if int(n) != n or n < 0:
        raise ConfigError(f"n: expected a non-negative integer, got {n!r}")
    if isinstance(jobs, bool) or int(jobs) != jobs or jobs < 1:
        raise ConfigError(f"jobs: expected a positive integer, got {jobs!r}")
    if isinstance(settings, Mapping):
        valid = set(RansSettings.__dataclass_fields__)
        bad = set(settings) - valid
        if bad:
            raise ConfigError(f"rans settings: unknown keys {sorted(bad)}; valid: {sorted(valid)}")
        settings = RansSettings(**settings)
    st = settings or RansSettings()
    over = {k: ranges.pop(k) for k in list(ranges) if k in RansSettings.__dataclass_fields__}
    if over:  # settings given as keyword arguments (``geoop data airfoil --solver rans -p iterations=300``)
        st = dataclasses.replace(st, **over)
    st = st.check()
    rg = resolve_ranges(ranges, DEFAULT_RANGES, "rans airfoil")
    os.makedirs(out_dir, exist_ok=True)

    mpath = os.path.join(out_dir, "manifest.json")
    legacy = {}  # entries of a manifest written before markers existed
    if os.path.exists(mpath):
        with open(mpath) as fh:
            for c in json.load(fh).get("cases", []):
                legacy[int(c["case"].split("_")[1])] = c
    st_json = json.loads(json.dumps(asdict(st)))
    entries: dict[int, dict] = {}
    todo = []
    for i in range(int(start), int(start) + int(n)):
        rng = np.random.default_rng([int(seed), i])
        prm = {k: float(rng.uniform(*rg[k])) for k in ("m", "p", "t", "alpha_deg")}
        name = f"case_{i:04d}"
        e = _done_entry(out_dir, name)
        if e is not None:
            if e.get("params") != prm or e.get("settings") != st_json:
                raise DatasetError(f"{out_dir}: {name} was made with other parameters or settings than this call "
                                   f"(seed {seed}, ranges, settings); use another folder or remove {name}*")
            entries[i] = e
        else:
            todo.append((i, prm))

    def manifest():
        done = {**legacy, **finished_cases(out_dir, _done_entry)}
        write_manifest(out_dir, {"generator": "geoop.data.rans", "seed": int(seed), "ranges": rg,
                                 "settings": asdict(st),
                                 "cases": [done[k] for k in sorted(done) if not done[k].get("dropped")]})

    def done(task, entry):
        entries[task[1]] = entry
        manifest()

    if not todo:
        manifest()
    # jobs > 1: spawned workers (no forked torch / OpenMP state); interrupted: stopped at once
    run_cases(_write_one, [(out_dir, i, prm, st, keep_cases, drop_unconverged) for i, prm in todo], jobs, done)
    if not keep_cases:
        shutil.rmtree(os.path.join(out_dir, "openfoam"), ignore_errors=True)
    return [entries[i] for i in sorted(entries) if not entries[i].get("dropped")]
