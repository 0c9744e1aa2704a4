r"""3-D car-like body flow data from steady incompressible RANS (OpenFOAM ``simpleFoam``).

The viscous counterpart of :mod:`geoop.data.body3d` (panel method): boundary layers, wakes,
separation and drag. One case per car-like body of :func:`geoop.data.shapes.car_body`
(length 1 along x, nose at ``x = -0.5``) above a moving ground, in a unit stream along +x,
Reynolds number ``Re = U L / nu`` with ``U = 1``, ``L = 1``.

Domain and boundary conditions (half domain, symmetry plane ``y = 0``)
---------------------------------------------------------------------
The box ``[-upstream, downstream] x [0, domain_half_width] x [0, domain_height]`` (body lengths); the body
sits ``clearance`` above the ground ``z = 0``. Patches: ``inlet`` (x min: ``U = (1, 0, 0)``),
``outlet`` (x max: ``p = 0``), ``ground`` (z = 0: a wall moving with the free stream,
``U = (1, 0, 0)``, wall functions), ``top`` and ``side`` (``slip``), ``symmetry`` (y = 0:
``symmetry``) and ``body`` (no-slip wall, wall functions). Only the half body ``y >= 0`` is
meshed; the full body is its mirror image in ``y = 0``.

Mesh
----
``blockMesh`` background of cubes of size ``cell_size``; ``snappyHexMesh`` (castellated +
snap, ``layers`` prism layers when > 0) refines to level ``surface_level`` on the body (cells
of ``cell_size / 2**surface_level``), ``near_level`` in a box around the body and ``wake_level``
in a longer box around body and wake. The body is written as a binary STL
(``constant/triSurface/body.stl``, ``n_panels`` triangles). Cells at level changes are
polyhedra (split hexahedra): the volume output keeps them.

Solver
------
``simpleFoam`` (SIMPLEC), k-omega SST with wall functions, linearUpwind convection for ``U``,
upwind for ``k`` and ``omega``; ``n_procs`` MPI ranks (``decomposePar`` with the
``hierarchical`` method, ``mpirun -np n_procs``; 1: serial), exactly ``iterations``
iterations. The steady solver often oscillates on bluff bodies: every field written is the
mean over the last ``average`` iterations (``fieldAverage`` of ``p``, ``U``, ``nut`` and
``wallShearStress``), and the coefficients are the mean of ``forceCoeffs`` over the same
iterations (the manifest records the window, the standard deviation and the range of C_D
and C_L in it). OpenFOAM is run without sourcing its ``etc/bashrc`` (``WM_PROJECT_DIR`` is the
package's share folder).

Coefficients (full body)
------------------------
``C_D = F_x / (q A)``, ``C_L = F_z / (q A)`` with ``q = 1/2`` (``rho = U = 1``) and ``A`` the
frontal area of the *full* body (:func:`frontal_area`). The half body carries half the full
body's drag and lift, so OpenFOAM's ``forceCoeffs`` runs with ``Aref = A / 2``: the same as
doubling the half body's force over the full area. ``forces`` gives the pressure / viscous
split (``cd_pressure + cd_viscous = cd``). Side force and roll/yaw moments cancel on the
full body and are not reported.

Outputs (``case_XXXX_*``; fields non-dimensional: lengths in body lengths, ``U / U_inf``,
``p = (P - P_inf) / q`` = ``Cp``)
------------------------------------------------------------------------------------------
* ``_surface.vtp``: the half body's ``body`` patch, triangulated (OpenFOAM's polygonal faces
  split into triangles of the same vector area); cell data (per triangle, the face value)
  and point data (VTK's cell-to-point average over the patch) ``p`` and ``Cp`` (both the
  pressure coefficient) and ``wallShearStress`` (N, 3) (OpenFOAM's: the stress of the wall
  on the fluid, i.e. minus the traction on the body, over ``q``); ``Normals`` outward (out
  of the body) point data; the symmetry plane ``y = 0`` as field data ``geoop_symmetry`` =
  ``[0, 1, 0, 0]`` (read into ``Geometry.symmetry``; also on the two volume files).
* ``_volume.vtu``: the fluid cells as OpenFOAM has them (hexahedra, prisms, pyramids,
  tetrahedra and ``VTK_POLYHEDRON`` cells), cell data ``p``, ``U`` (3), ``nut`` (over
  ``nu``), ``cell_volume``; point data ``p`` and ``U`` (VTK's cell-to-point interpolation).
* ``_points.vtu``: ``n_points`` cells drawn by :func:`sample_cells` (seeded, stratified by
  refinement level, so as concentrated near the body as the mesh) as ``vertex`` cells at the
  OpenFOAM cell centroids; point data ``p``, ``U``, ``cell_volume`` and ``weight`` (the
  quadrature weight of the subsample: ``sum weight * f`` estimates the volume integral of f).
* ``manifest.json``: per case its parameters, ``cd``, ``cl``, ``cd_pressure``,
  ``cd_viscous``, ``cl_pressure``, ``cl_viscous``, the reference area (full and OpenFOAM's),
  the convergence record (final initial residuals, C_D/C_L mean, std and range over the
  averaging window, ``converged``), ``n_cells``, the mesh quality summary, wall times.

A finished case is marked by its ``case_XXXX.json`` (written last, atomically, after the three
files); :func:`generate` skips finished cases with the same parameters and redoes the rest
from scratch, so an interrupted set resumes where it stopped.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass
from typing import Mapping, Optional

import numpy as np

from ..errors import ConfigError, DatasetError
from .rans import INSTALL_HINT, OpenFOAMError, _foam_env, _latest_time, _residual_history, openfoam_available, require_openfoam

__all__ = [
    "Rans3DSettings",
    "DEFAULT_RANGES",
    "body_surface",
    "frontal_area",
    "write_case",
    "mesh_case",
    "solve_case",
    "read_case",
    "sample_cells",
    "make_case",
    "generate",
    "openfoam_available",
    "require_openfoam",
    "INSTALL_HINT",
    "PATCHES",
]

#: sampling ranges of :func:`generate` (uniform in [lo, hi]): the car-body shape
#: (:data:`geoop.data.shapes.CAR_DEFAULTS`, length fixed to 1) and the ground clearance
DEFAULT_RANGES: dict[str, tuple[float, float]] = {
    "width": (0.38, 0.5),
    "height": (0.26, 0.38),
    "nose_slant": (0.2, 0.7),
    "rear_slant": (0.1, 0.7),
    "roundness": (0.0, 1.0),
    "clearance": (0.04, 0.1),
}

#: the patches of a case (module docstring)
PATCHES = ("inlet", "outlet", "ground", "top", "side", "symmetry", "body")


@dataclass(frozen=True)
class Rans3DSettings:
    """Mesh, solver and output settings of a 3-D RANS case (lengths in body lengths).

    upstream, downstream, domain_half_width, domain_height : the domain (module docstring)
    cell_size : background cube size; surface_level, near_level, wake_level : refinement
        levels (cell size ``cell_size / 2**level``) on the body, near it, in the wake box
    layers : prism layers on the body (0: none); n_panels : STL triangles of the body
    reynolds : ``U L / nu``; iterations : SIMPLE iterations; average : the last iterations
        averaged (fields and coefficients)
    n_procs : MPI ranks per case (1: serial)
    converged_residual : final initial residuals of ``p`` and ``U`` below it, and
    cd_tol : standard deviation of C_D over the window below ``cd_tol * |mean C_D|``: converged
    n_points : size of the sampled volume point cloud
    """

    upstream: float = 2.5
    downstream: float = 6.0
    domain_half_width: float = 2.0
    domain_height: float = 2.0
    cell_size: float = 0.25
    surface_level: int = 5
    near_level: int = 3
    wake_level: int = 2
    layers: int = 0
    n_panels: int = 5000
    reynolds: float = 1e6
    iterations: int = 250
    average: int = 100
    n_procs: int = 2
    converged_residual: float = 1e-2
    cd_tol: float = 0.02
    n_points: int = 32768

    def check(self) -> "Rans3DSettings":
        def integer(name, lo, hi=None):
            v = getattr(self, name)
            if isinstance(v, bool) or int(v) != v or v < lo or (hi is not None and v > hi):
                rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
                raise ConfigError(f"rans3d {name}: expected an integer {rng}, got {v!r}")

        if not (self.upstream >= 1.5 and self.downstream >= 2.0 and self.domain_half_width >= 1.0 and self.domain_height >= 1.0):
            raise ConfigError(f"rans3d domain: expected upstream >= 1.5, downstream >= 2, domain_half_width >= 1, domain_height >= 1 "
                              f"body lengths, got {self.upstream}, {self.downstream}, {self.domain_half_width}, {self.domain_height}")
        if not (0.02 <= self.cell_size <= 0.5):
            raise ConfigError(f"rans3d cell_size: expected in [0.02, 0.5] body lengths, got {self.cell_size}")
        for name in ("upstream", "downstream", "domain_half_width", "domain_height"):
            n = getattr(self, name) / self.cell_size
            if abs(n - round(n)) > 1e-6:
                raise ConfigError(f"rans3d {name} = {getattr(self, name)}: expected a multiple of cell_size = {self.cell_size}")
        integer("wake_level", 0, 6)
        integer("near_level", 0, 7)
        integer("surface_level", 0, 8)
        if not self.wake_level <= self.near_level <= self.surface_level:
            raise ConfigError(f"rans3d levels: expected wake_level <= near_level <= surface_level, got "
                              f"{self.wake_level}, {self.near_level}, {self.surface_level}")
        integer("layers", 0, 5)
        integer("n_panels", 500)
        integer("iterations", 20)
        integer("average", 1)
        if self.average > self.iterations:
            raise ConfigError(f"rans3d average: expected <= iterations = {self.iterations}, got {self.average}")
        integer("n_procs", 1, 64)
        integer("n_points", 1)
        if not self.reynolds > 0:
            raise ConfigError(f"rans3d reynolds: expected > 0, got {self.reynolds}")
        if not (self.converged_residual > 0 and self.cd_tol > 0):
            raise ConfigError(f"rans3d converged_residual, cd_tol: expected > 0, got {self.converged_residual}, {self.cd_tol}")
        return self


def _coerce_settings(settings) -> Rans3DSettings:
    if settings is None:
        return Rans3DSettings()
    if isinstance(settings, Rans3DSettings):
        return settings
    if isinstance(settings, Mapping):
        valid = set(Rans3DSettings.__dataclass_fields__)
        bad = set(settings) - valid
        if bad:
            raise ConfigError(f"rans3d settings: unknown keys {sorted(bad)}; valid: {sorted(valid)}")
        return Rans3DSettings(**settings)
    raise ConfigError(f"rans3d settings: expected a Rans3DSettings or a mapping, got {type(settings).__name__}")


# ---------------------------------------------------------------------------- body
_BODY_KEYS = ("width", "height", "nose_slant", "rear_slant", "roundness")


def body_surface(params: Mapping, n_panels: int = 5000) -> tuple[np.ndarray, np.ndarray]:
    """The closed car body of a case in the domain's frame: :func:`~geoop.data.shapes.car_body`
    (length 1, ``params``: width, height, nose_slant, rear_slant, roundness) moved up so that
    its lowest point is ``clearance`` above the ground ``z = 0``.

    Shapes: returns vertices (V, 3), outward triangles (F, 3)."""
    from .shapes import car_body

    unknown = set(params) - set(DEFAULT_RANGES)
    if unknown:
        raise ConfigError(f"rans3d params: unknown keys {sorted(unknown)}; valid: {sorted(DEFAULT_RANGES)}")
    clearance = float(params.get("clearance", 0.06))
    if not clearance > 0:
        raise ConfigError(f"rans3d clearance: expected > 0 body lengths, got {clearance}")
    v, f = car_body(int(n_panels), length=1.0, **{k: float(params[k]) for k in _BODY_KEYS if k in params})
    v = v.copy()
    v[:, 2] += clearance - v[:, 2].min()
    return v, f


def frontal_area(vertices: np.ndarray, faces: np.ndarray, direction=(1.0, 0.0, 0.0)) -> float:
    r"""Projected area of a closed body seen along ``direction``:
    :math:`A = \tfrac12 \sum_f |n_f \cdot d|\,A_f`, exact for bodies that every line along
    ``direction`` crosses at most twice (the car family; shapely, the usual polygon-union
    route, is not a geoop dependency).

    Shapes: vertices (V, 3), faces (F, 3) -> float."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    d = np.asarray(direction, dtype=np.float64)
    d = d / np.linalg.norm(d)
    va = 0.5 * np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    return float(0.5 * np.abs(va @ d).sum())


# ---------------------------------------------------------------------------- case files
def _foam_file(cls: str, obj: str, body: str, location: str) -> str:
    return ("FoamFile\n{\n    version     2.0;\n    format      ascii;\n"
            f"    class       {cls};\n    location    \"{location}\";\n    object      {obj};\n}}\n\n{body}\n")


def _field(dims: str, internal: str, patches: Mapping[str, str]) -> str:
    bc = "".join(f"    {k}\n    {{\n{v}    }}\n" for k, v in patches.items())
    return (f"dimensions      {dims};\ninternalField   uniform {internal};\nboundaryField\n{{\n"
            f"    #includeEtc \"caseDicts/setConstraintTypes\"\n{bc}}}\n")


def _t(kind: str, **kw) -> str:
    return f"        type            {kind};\n" + "".join(f"        {k:<15} {v};\n" for k, v in kw.items())


def write_case(case_dir: str, params: Mapping, settings: Optional[Rans3DSettings] = None) -> dict:
    """Write a complete case (STL, ``system/``, ``constant/``, ``0/``) to ``case_dir`` (the
    folder must not exist or be empty). Returns ``{"aref", "aref_openfoam", "lref",
    "body_bounds", "n_panels", "nu"}``."""
    import trimesh

    st = (settings or Rans3DSettings()).check()
    v, f = body_surface(params, st.n_panels)
    aref = frontal_area(v, f)  # full body
    lo, hi = v.min(0), v.max(0)
    if hi[2] >= 0.8 * st.domain_height or hi[1] >= 0.8 * st.domain_half_width:
        raise ConfigError(f"rans3d: the body (top {hi[2]:.3g}, half width {hi[1]:.3g}) does not fit the domain "
                          f"(height {st.domain_height}, half_width {st.domain_half_width})")
    os.makedirs(os.path.join(case_dir, "constant", "triSurface"), exist_ok=True)
    trimesh.Trimesh(v, f, process=False).export(os.path.join(case_dir, "constant", "triSurface", "body.stl"), file_type="stl")
    nu = 1.0 / float(st.reynolds)
    h = st.cell_size
    x0, x1, y1, z1 = -st.upstream, st.downstream, st.domain_half_width, st.domain_height
    nx, ny, nz = (int(round(a / h)) for a in (x1 - x0, y1, z1))
    files = {}
    files["system/blockMeshDict"] = ("dictionary", f"""scale 1;
vertices
(
    ({x0} 0 0) ({x1} 0 0) ({x1} {y1} 0) ({x0} {y1} 0)
    ({x0} 0 {z1}) ({x1} 0 {z1}) ({x1} {y1} {z1}) ({x0} {y1} {z1})
);
blocks ( hex (0 1 2 3 4 5 6 7) ({nx} {ny} {nz}) simpleGrading (1 1 1) );
edges ();
boundary
(
    inlet {{ type patch; faces ((0 4 7 3)); }}
    outlet {{ type patch; faces ((1 2 6 5)); }}
    ground {{ type wall; faces ((0 3 2 1)); }}
    top {{ type patch; faces ((4 5 6 7)); }}
    side {{ type patch; faces ((3 7 6 2)); }}
    symmetry {{ type symmetry; faces ((0 1 5 4)); }}
);
mergePatchPairs ();
""")
    # refinement boxes: near the body (a margin of a few surface cells) and body + wake
    m = 0.08
    near = (lo - [m, 0, 0], hi + [0.3, m, m])
    wake = (lo - [0.3, 0, 0], hi + [1.5, 0.25, 0.25])
    box = lambda b: f"min ({b[0][0]:.6g} -1 -1); max ({b[1][0]:.6g} {b[1][1]:.6g} {b[1][2]:.6g});"  # noqa: E731
    loc = (x0 + 0.5 * h + 0.0123, y1 - 0.5 * h + 0.0071, z1 - 0.5 * h + 0.0093)  # inside a background cell, fluid
    files["system/snappyHexMeshDict"] = ("dictionary", f"""castellatedMesh true;
snap            true;
addLayers       {"true" if st.layers > 0 else "false"};
geometry
{{
    body.stl {{ type triSurfaceMesh; name body; }}
    nearBox {{ type searchableBox; {box(near)} }}
    wakeBox {{ type searchableBox; {box(wake)} }}
}}
castellatedMeshControls
{{
    maxLocalCells 2000000;
    maxGlobalCells 4000000;
    minRefinementCells 0;
    maxLoadUnbalance 0.10;
    nCellsBetweenLevels 3;
    features ();
    refinementSurfaces {{ body {{ level ({st.surface_level} {st.surface_level}); patchInfo {{ type wall; }} }} }}
    resolveFeatureAngle 30;
    refinementRegions
    {{
        nearBox {{ mode inside; levels ((1e15 {st.near_level})); }}
        wakeBox {{ mode inside; levels ((1e15 {st.wake_level})); }}
    }}
    locationInMesh ({loc[0]:.6g} {loc[1]:.6g} {loc[2]:.6g});
    allowFreeStandingZoneFaces false;
}}
snapControls
{{
    nSmoothPatch 3;
    tolerance 2.0;
    nSolveIter 30;
    nRelaxIter 5;
    nFeatureSnapIter 10;
    implicitFeatureSnap true;
    explicitFeatureSnap false;
    multiRegionFeatureSnap false;
}}
addLayersControls
{{
    relativeSizes true;
    layers {{ body {{ nSurfaceLayers {max(int(st.layers), 1)}; }} }}
    expansionRatio 1.2;
    finalLayerThickness 0.5;
    minThickness 0.1;
    nGrow 0;
    featureAngle 60;
    slipFeatureAngle 30;
    nRelaxIter 3;
    nSmoothSurfaceNormals 1;
    nSmoothNormals 3;
    nSmoothThickness 10;
    maxFaceThicknessRatio 0.5;
    maxThicknessToMedialRatio 0.3;
    minMedialAxisAngle 90;
    nBufferCellsNoExtrude 0;
    nLayerIter 50;
}}
meshQualityControls
{{
    #includeEtc "caseDicts/meshQualityDict"
    nSmoothScale 4;
    errorReduction 0.75;
}}
mergeTolerance 1e-6;
""")
    files["system/decomposeParDict"] = ("dictionary", f"""numberOfSubdomains {int(st.n_procs)};
method          hierarchical;
coeffs {{ n ({int(st.n_procs)} 1 1); order xyz; }}
""")
    # turbulence at the inlet: 1 % intensity, eddy viscosity 10 nu
    k_in = 1.5 * 0.01**2
    om_in = k_in / (10.0 * nu)
    U_in = "(1 0 0)"
    wallU = _t("fixedValue", value="uniform (1 0 0)")
    files["0/U"] = ("volVectorField", _field("[0 1 -1 0 0 0 0]", U_in, {
        "inlet": _t("fixedValue", value=f"uniform {U_in}"),
        "outlet": _t("inletOutlet", inletValue="uniform (0 0 0)", value=f"uniform {U_in}"),
        "ground": wallU, "top": _t("slip"), "side": _t("slip"), "symmetry": _t("symmetry"),
        "body": _t("noSlip")}))
    files["0/p"] = ("volScalarField", _field("[0 2 -2 0 0 0 0]", "0", {
        "inlet": _t("zeroGradient"), "outlet": _t("fixedValue", value="uniform 0"),
        "ground": _t("zeroGradient"), "top": _t("slip"), "side": _t("slip"), "symmetry": _t("symmetry"),
        "body": _t("zeroGradient")}))
    for name, val, wall in (("k", k_in, "kqRWallFunction"), ("omega", om_in, "omegaWallFunction")):
        dims = "[0 2 -2 0 0 0 0]" if name == "k" else "[0 0 -1 0 0 0 0]"
        files[f"0/{name}"] = ("volScalarField", _field(dims, f"{val:.8g}", {
            "inlet": _t("fixedValue", value=f"uniform {val:.8g}"),
            "outlet": _t("inletOutlet", inletValue=f"uniform {val:.8g}", value=f"uniform {val:.8g}"),
            "ground": _t(wall, value=f"uniform {val:.8g}"), "top": _t("slip"), "side": _t("slip"),
            "symmetry": _t("symmetry"), "body": _t(wall, value=f"uniform {val:.8g}")}))
    files["0/nut"] = ("volScalarField", _field("[0 2 -1 0 0 0 0]", "0", {
        "inlet": _t("calculated", value="uniform 0"), "outlet": _t("calculated", value="uniform 0"),
        "ground": _t("nutkWallFunction", value="uniform 0"), "top": _t("slip"), "side": _t("slip"),
        "symmetry": _t("symmetry"), "body": _t("nutkWallFunction", value="uniform 0")}))
    files["constant/transportProperties"] = ("dictionary", f"transportModel  Newtonian;\nnu              {nu:.10g};\n")
    files["constant/turbulenceProperties"] = ("dictionary", "simulationType  RAS;\nRAS\n{\n    RASModel        kOmegaSST;\n"
                                              "    turbulence      on;\n    printCoeffs     off;\n}\n")
    it, avg = int(st.iterations), int(st.average)
    aref_of = 0.5 * aref  # the half body: half the full body's force over half its area
    common = """        libs            (forces);
        writeControl    timeStep;
        writeInterval   1;
        log             false;
        patches         (body);
        rho             rhoInf;
        rhoInf          1;
        CofR            (0 0 0);
"""
    files["system/controlDict"] = ("dictionary", f"""application     simpleFoam;
startFrom       startTime;
startTime       0;
stopAt          endTime;
endTime         {it};
deltaT          1;
writeControl    timeStep;
writeInterval   {it};
purgeWrite      0;
writeFormat     binary;
writePrecision  10;
writeCompression off;
timeFormat      general;
timePrecision   6;
runTimeModifiable false;
functions
{{
    forceCoeffs1
    {{
        type            forceCoeffs;
{common}        liftDir         (0 0 1);
        dragDir         (1 0 0);
        pitchAxis       (0 1 0);
        magUInf         1;
        lRef            1;
        Aref            {aref_of:.12g};
    }}
    forces1
    {{
        type            forces;
{common}    }}
    wallShearStress1
    {{
        type            wallShearStress;
        libs            (fieldFunctionObjects);
        patches         (body);
        executeControl  timeStep;
        writeControl    writeTime;
        log             false;
    }}
    fieldAverage1
    {{
        type            fieldAverage;
        libs            (fieldFunctionObjects);
        timeStart       {it - avg};
        restartOnRestart false;
        restartOnOutput false;
        writeControl    writeTime;
        log             false;
        fields
        (
            U {{ mean on; prime2Mean off; base iteration; }}
            p {{ mean on; prime2Mean off; base iteration; }}
            nut {{ mean on; prime2Mean off; base iteration; }}
            wallShearStress {{ mean on; prime2Mean off; base iteration; }}
        );
    }}
    cellCentres1
    {{
        type            writeCellCentres;
        libs            (fieldFunctionObjects);
        writeControl    writeTime;
    }}
    cellVolumes1
    {{
        type            writeCellVolumes;
        libs            (fieldFunctionObjects);
        writeControl    writeTime;
    }}
}}
""")
    files["system/fvSchemes"] = ("dictionary", """ddtSchemes { default steadyState; }
gradSchemes
{
    default         Gauss linear;
    grad(U)         cellLimited Gauss linear 1;
    grad(k)         cellLimited Gauss linear 1;
    grad(omega)     cellLimited Gauss linear 1;
}
divSchemes
{
    default         none;
    div(phi,U)      bounded Gauss linearUpwindV grad(U);
    div(phi,k)      bounded Gauss upwind;
    div(phi,omega)  bounded Gauss upwind;
    div((nuEff*dev2(T(grad(U))))) Gauss linear;
}
laplacianSchemes { default Gauss linear limited corrected 0.33; }
interpolationSchemes { default linear; }
snGradSchemes { default limited corrected 0.33; }
wallDist { method meshWave; }
""")
    files["system/fvSolution"] = ("dictionary", """solvers
{
    p
    {
        solver          GAMG;
        smoother        GaussSeidel;
        tolerance       1e-7;
        relTol          0.05;
    }
    "(U|k|omega)"
    {
        solver          smoothSolver;
        smoother        symGaussSeidel;
        tolerance       1e-8;
        relTol          0.1;
        nSweeps         1;
    }
}
SIMPLE
{
    nNonOrthogonalCorrectors 0;
    consistent      yes;
}
relaxationFactors
{
    fields { p 1; }
    equations
    {
        U               0.8;
        k               0.7;
        omega           0.7;
    }
}
""")
    for rel, (cls, body) in files.items():
        path = os.path.join(case_dir, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as fh:
            fh.write(_foam_file(cls, os.path.basename(rel), body, os.path.dirname(rel)))
    open(os.path.join(case_dir, "case.foam"), "w").close()
    return {"aref": aref, "aref_openfoam": aref_of, "lref": 1.0, "nu": nu, "n_panels": int(f.shape[0]),
            "body_bounds": [lo.tolist(), hi.tolist()]}


# ---------------------------------------------------------------------------- running
def _mpi_env() -> dict:
    env = _foam_env()
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_btl_vader_single_copy_mechanism="none")
    return env


def _run(cmd: list, case_dir: str, log_name: str, n_procs: int = 1) -> str:
    """Run an OpenFOAM utility on ``case_dir`` (``n_procs > 1``: under ``mpirun -np`` with
    ``-parallel``), its output to ``case_dir/log_name``, in a process group of its own that is
    ended if this process is interrupted (mpirun and its ranks with it);
    :class:`OpenFOAMError` with the log's tail on failure."""
    from ._case_io import run_logged

    log = os.path.join(case_dir, log_name)
    full = list(cmd) + ["-case", case_dir]
    if n_procs > 1:
        full = ["mpirun", "-np", str(int(n_procs)), "--oversubscribe", "--bind-to", "none"] + full + ["-parallel"]
    rc = run_logged(full, log, _mpi_env())
    if rc != 0:
        tail = "".join(open(log).readlines()[-20:])
        raise OpenFOAMError(f"{cmd[0]} failed (exit {rc}) in {case_dir}; see {log}:\n{tail}")
    return log


_CHECK = {
    "n_cells": re.compile(r"^\s*cells:\s+(\d+)", re.M),
    "n_mesh_points": re.compile(r"^\s*points:\s+(\d+)", re.M),
    "max_non_orthogonality": re.compile(r"Mesh non-orthogonality Max:\s*([-+0-9.eE]+)"),
    "max_skewness": re.compile(r"Max skewness = ([-+0-9.eE]+)"),
    "mesh_volume": re.compile(r"Total volume = ([-+0-9.eE]+)"),
}


def _mesh_report(log: str) -> dict:
    txt = open(log).read()
    out = {}
    for k, rx in _CHECK.items():
        m = rx.search(txt)
        if m:
            out[k] = int(m.group(1)) if k.startswith("n_") else float(m.group(1).rstrip("."))
    poly = re.search(r"^\s*polyhedra:\s+(\d+)", txt, re.M)
    out["n_polyhedra"] = int(poly.group(1)) if poly else 0
    out["failed_checks"] = int(re.search(r"Failed (\d+) mesh checks", txt).group(1)) if "Failed" in txt and "mesh checks" in txt else 0
    return out


def mesh_case(case_dir: str, settings: Optional[Rans3DSettings] = None) -> dict:
    """``blockMesh``, ``snappyHexMesh -overwrite`` and ``checkMesh`` on a written case (serial:
    the mesh of a case takes seconds); returns the checkMesh summary (``n_cells``,
    ``n_polyhedra``, ``max_non_orthogonality``, ``max_skewness``, ``mesh_volume``,
    ``failed_checks``) and ``mesh_seconds``."""
    require_openfoam()
    t0 = time.perf_counter()
    _run(["blockMesh"], case_dir, "log.blockMesh")
    _run(["snappyHexMesh", "-overwrite"], case_dir, "log.snappyHexMesh")
    log = _run(["checkMesh", "-constant"], case_dir, "log.checkMesh")
    rep = _mesh_report(log)
    rep["mesh_seconds"] = time.perf_counter() - t0
    return rep


def _force_table(path: str) -> tuple[list, np.ndarray]:
    """Columns and rows of a ``postProcessing`` ``.dat`` file (brackets dropped)."""
    cols, rows = None, []
    for line in open(path):
        if line.startswith("#"):
            parts = line[1:].replace("(", " ").replace(")", " ").split()
            if parts and parts[0] == "Time":
                cols = parts
            continue
        if line.strip():
            rows.append([float(v) for v in line.replace("(", " ").replace(")", " ").split()])
    if cols is None or not rows:
        raise OpenFOAMError(f"{path}: no column header or no rows")
    return cols, np.asarray(rows)


def _post_file(case_dir: str, fo: str, names: tuple) -> str:
    root = os.path.join(case_dir, "postProcessing", fo, "0")
    for n in names:
        if os.path.exists(os.path.join(root, n)):
            return os.path.join(root, n)
    raise OpenFOAMError(f"{case_dir}: no {fo} output ({' or '.join(names)}) in {root}")


def _coefficients(case_dir: str, st: Rans3DSettings, aref_of: float) -> dict:
    """C_D, C_L (forceCoeffs) and their pressure / viscous split (forces) averaged over the
    last ``average`` iterations, with the window's statistics."""
    cols, a = _force_table(_post_file(case_dir, "forceCoeffs1", ("coefficient.dat", "forceCoeffs.dat")))
    it = a[:, cols.index("Time")]
    win = it > st.iterations - st.average
    if int(win.sum()) != st.average or it.max() != st.iterations:
        raise OpenFOAMError(f"{case_dir}: forceCoeffs has {int(win.sum())} rows in the averaging window "
                            f"(expected {st.average}, last iteration {it.max():g} of {st.iterations})")
    cd, cl = a[win, cols.index("Cd")], a[win, cols.index("Cl")]
    fcols, f = _force_table(_post_file(case_dir, "forces1", ("force.dat", "forces.dat")))
    # v1912 force.dat: Time total_(x y z) pressure_(x y z) viscous_(x y z)
    fw = f[f[:, 0] > st.iterations - st.average, 1:10].mean(0)
    q = 0.5
    rec = {
        "cd": float(cd.mean()), "cl": float(cl.mean()),
        "cd_pressure": float(fw[3] / (q * aref_of)), "cd_viscous": float(fw[6] / (q * aref_of)),
        "cl_pressure": float(fw[5] / (q * aref_of)), "cl_viscous": float(fw[8] / (q * aref_of)),
        "cd_last": float(cd[-1]), "cl_last": float(cl[-1]),
        "cd_std": float(cd.std()), "cl_std": float(cl.std()),
        "cd_range": float(np.ptp(cd)), "cl_range": float(np.ptp(cl)),
        "average_window": [int(st.iterations - st.average + 1), int(st.iterations)],
    }
    return rec


def solve_case(case_dir: str, settings: Optional[Rans3DSettings] = None) -> dict:
    """Run simpleFoam on a meshed case (``n_procs`` ranks: decomposePar, mpirun, reconstructPar);
    returns the coefficients (module docstring), the convergence record
    (``final_residuals``, ``converged``, ``iterations``) and ``solver_seconds``."""
    require_openfoam()
    st = (settings or Rans3DSettings()).check()
    info = json.load(open(os.path.join(case_dir, "geoop_case.json")))
    t0 = time.perf_counter()
    if st.n_procs > 1:
        _run(["decomposePar", "-force"], case_dir, "log.decomposePar")
    log = _run(["simpleFoam"], case_dir, "log.simpleFoam", n_procs=st.n_procs)
    if st.n_procs > 1:
        _run(["reconstructPar", "-latestTime"], case_dir, "log.reconstructPar")
        for d in os.listdir(case_dir):
            if d.startswith("processor"):
                shutil.rmtree(os.path.join(case_dir, d), ignore_errors=True)
    secs = time.perf_counter() - t0
    cpu = re.findall(r"^ExecutionTime = ([-+0-9.eE]+) s", open(log).read(), re.M)
    res = _residual_history(log)
    rec = _coefficients(case_dir, st, info["aref_openfoam"])
    final = {k: float(v[-1]) for k, v in res.items() if v}
    ok_res = all(final.get(k, 1.0) < st.converged_residual for k in ("p", "U"))
    ok_cd = rec["cd_std"] < st.cd_tol * abs(rec["cd"])
    rec.update(final_residuals=final, iterations=int(len(res.get("p", []))), converged=bool(ok_res and ok_cd),
               solver_seconds=secs, solver_cpu_seconds=float(cpu[-1]) if cpu else None)
    return rec


# ---------------------------------------------------------------------------- reading
def read_case(case_dir: str, n_points: int = 32768, seed: int = 0) -> dict:
    """The solution of a finished case as pyvista datasets ``{"surface", "volume", "points"}``
    in the output layout of the module docstring (VTK's OpenFOAM reader; polyhedra kept)."""
    import pyvista as pv

    from ..geometry.convert import SYMMETRY_FIELD

    info = json.load(open(os.path.join(case_dir, "geoop_case.json")))
    nu = float(info["nu"])
    q = 0.5
    r = pv.OpenFOAMReader(os.path.join(case_dir, "case.foam"))
    r.set_active_time_value(float(_latest_time(case_dir)))
    if hasattr(r.reader, "SetDecomposePolyhedra"):  # VTK < 9.3 splits polyhedra unless told not to
        r.decompose_polyhedra = False
    r.cell_to_point_creation = True
    r.disable_all_patch_arrays()
    r.enable_patch_array("internalMesh")
    r.enable_patch_array("patch/body")
    r.disable_all_cell_arrays()
    for a in ("pMean", "UMean", "nutMean", "wallShearStressMean", "C", "V"):
        r.enable_cell_array(a)
    mb = r.read()
    vol_of = mb["internalMesh"]
    body = mb["boundary"]["body"]
    for need, ds, what in ((("pMean", "UMean", "nutMean", "C", "V"), vol_of, "internalMesh"),
                           (("pMean", "wallShearStressMean"), body, "patch body")):
        miss = [a for a in need if a not in ds.cell_data]
        if miss:
            raise OpenFOAMError(f"{case_dir}: the {what} of time {_latest_time(case_dir)} has no {miss} "
                                f"(has {sorted(ds.cell_data.keys())})")
    # surface: triangulated patch, Cp and wall shear over q, outward normals
    surf = pv.PolyData(body.points.copy(), body.faces.copy()) if isinstance(body, pv.PolyData) else body.extract_surface()
    surf.cell_data["p"] = np.asarray(body.cell_data["pMean"], dtype=np.float64) / q
    surf.cell_data["wallShearStress"] = np.asarray(body.cell_data["wallShearStressMean"], dtype=np.float64) / q
    surf = surf.triangulate()
    surf = surf.cell_data_to_point_data(pass_cell_data=True)
    surf.cell_data["Cp"] = surf.cell_data["p"].copy()
    surf.point_data["Cp"] = surf.point_data["p"].copy()
    # OpenFOAM's boundary faces point out of the fluid (into the body): flip for outward normals
    nrm = surf.compute_normals(cell_normals=False, point_normals=True, split_vertices=False, flip_normals=True,
                               consistent_normals=False, auto_orient_normals=False)
    surf.point_data["Normals"] = np.asarray(nrm.point_data["Normals"], dtype=np.float64)
    surf.field_data[SYMMETRY_FIELD] = np.array([0.0, 1.0, 0.0, 0.0])  # the plane y = 0 (Geometry.symmetry)
    # volume: the fluid cells as they are, non-dimensional fields
    vol = vol_of.copy(deep=True)  # the cells as they are (polyhedra kept)
    vol.clear_data()
    vol.cell_data["p"] = np.asarray(vol_of.cell_data["pMean"], dtype=np.float64) / q
    vol.cell_data["U"] = np.asarray(vol_of.cell_data["UMean"], dtype=np.float64)
    vol.cell_data["nut"] = np.asarray(vol_of.cell_data["nutMean"], dtype=np.float64) / nu
    vol.cell_data["cell_volume"] = np.asarray(vol_of.cell_data["V"], dtype=np.float64)
    vol.point_data["p"] = np.asarray(vol_of.point_data["pMean"], dtype=np.float64) / q
    vol.point_data["U"] = np.asarray(vol_of.point_data["UMean"], dtype=np.float64)
    # point cloud: a seeded subsample of the cell centroids (sample_cells)
    C = np.asarray(vol_of.cell_data["C"], dtype=np.float64)
    V = np.asarray(vol_of.cell_data["V"], dtype=np.float64)
    idx, w = sample_cells(V, n_points, seed)
    cloud = pv.PolyData(C[idx])
    cloud.point_data["p"] = vol.cell_data["p"][idx]
    cloud.point_data["U"] = vol.cell_data["U"][idx]
    cloud.point_data["cell_volume"] = V[idx]
    cloud.point_data["weight"] = w
    cloud = cloud.cast_to_unstructured_grid()
    for ds in (vol, cloud):  # mirrored in y = 0 they give the full domain
        ds.field_data[SYMMETRY_FIELD] = np.array([0.0, 1.0, 0.0, 0.0])
    return {"surface": surf, "volume": vol, "points": cloud}


def sample_cells(volumes: np.ndarray, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    r"""A seeded subsample of ``n`` cells stratified by refinement level, with quadrature weights.

    Strata: cells whose volumes agree within a factor 8 (one octree level,
    :math:`s = \lfloor \log_8 (V / V_{min}) \rceil`); stratum ``s`` (``N_s`` cells) gets
    ``K_s`` of the ``n`` samples in proportion to ``N_s`` (largest remainders, at least one each),
    drawn uniformly without replacement; a sampled cell's weight is ``V_i N_s / K_s``, so
    ``sum w_i f_i`` is an unbiased estimate of :math:`\int f\,dV` and ``sum w_i`` is close
    to the fluid volume (exact when the cells of a stratum have equal volumes). The mesh is finest
    near the body, so the sample is too. With ``n >= N`` every cell is kept with ``w = V``.

    Shapes: volumes (N,) -> indices (K,) sorted, weights (K,), ``K = min(n, N)``.
    """
    V = np.asarray(volumes, dtype=np.float64)
    N = V.shape[0]
    if N == 0 or not np.all(V > 0):
        raise ConfigError(f"sample_cells: expected positive cell volumes, got {N} cells (min {V.min() if N else None})")
    if int(n) >= N:
        return np.arange(N), V.copy()
    n = int(n)
    level = np.rint(np.log(V / V.min()) / math.log(8.0)).astype(np.int64)
    strata, counts = np.unique(level, return_counts=True)
    if n < strata.shape[0]:
        raise ConfigError(f"sample_cells: n = {n} is fewer than the {strata.shape[0]} refinement levels of the mesh")
    exact = n * counts / N
    k = np.maximum(np.floor(exact).astype(np.int64), 1)
    while k.sum() > n:  # the at-least-one rule overshot: take from the largest
        k[np.argmax(k)] -= 1
    rem = exact - np.floor(exact)
    for j in np.argsort(-rem):
        if k.sum() >= n:
            break
        if k[j] < counts[j]:
            k[j] += 1
    rng = np.random.default_rng(seed)
    idx, w = [], []
    for s_, ns, ks in zip(strata, counts, k):
        members = np.nonzero(level == s_)[0]
        pick = rng.choice(members, int(ks), replace=False)
        idx.append(pick)
        w.append(V[pick] * (ns / ks))
    idx, w = np.concatenate(idx), np.concatenate(w)
    order = np.argsort(idx)
    return idx[order], w[order]


def _write_vtk(ds, path: str) -> None:
    from .._atomic import atomic_path

    with atomic_path(path, suffix=os.path.splitext(path)[1]) as tmp:
        ds.save(tmp, binary=True)


# ---------------------------------------------------------------------------- cases
def make_case(params: Mapping, case_dir: str, settings: Optional[Rans3DSettings] = None, seed: int = 0,
              keep_case: bool = True):
    """Write, mesh, solve and read one case in ``case_dir`` (removed first; removed afterwards
    unless ``keep_case``). ``params``: keys of :data:`DEFAULT_RANGES` (missing ones: the car
    defaults, clearance 0.06). ``seed``: the point-cloud subsample.

    Returns ``(datasets, record)``: the pyvista datasets of :func:`read_case` and the record
    (mesh report, coefficients, convergence, wall times)."""
    require_openfoam()
    st = _coerce_settings(settings).check()
    t0 = time.perf_counter()
    if os.path.exists(case_dir):
        shutil.rmtree(case_dir)
    os.makedirs(case_dir)
    info = write_case(case_dir, params, st)
    with open(os.path.join(case_dir, "geoop_case.json"), "w") as fh:
        json.dump(info, fh)
    rec = dict(info)
    rec.update(mesh_case(case_dir, st))
    rec.update(solve_case(case_dir, st))
    t1 = time.perf_counter()
    data = read_case(case_dir, st.n_points, seed)
    rec["read_seconds"] = time.perf_counter() - t1
    rec["n_sampled_points"] = int(data["points"].n_points)
    rec["wall_seconds"] = time.perf_counter() - t0
    if not keep_case:
        shutil.rmtree(case_dir, ignore_errors=True)
    return data, rec


def _design(i: int, seed: int, rg: Mapping) -> tuple[dict, int]:
    rng = np.random.default_rng([int(seed), int(i)])
    prm = {k: float(rng.uniform(*rg[k])) for k in DEFAULT_RANGES}
    return prm, int(rng.integers(2**31))


def _files(name: str) -> dict:
    return {"surface": f"{name}_surface.vtp", "volume": f"{name}_volume.vtu", "points": f"{name}_points.vtu"}


def _done_entry(out_dir: str, name: str) -> Optional[dict]:
    """The record of a finished case (its marker and its three files exist), else None."""
    mark = os.path.join(out_dir, f"{name}.json")
    if not os.path.exists(mark):
        return None
    e = json.load(open(mark))
    if not all(os.path.exists(os.path.join(out_dir, f)) for f in _files(name).values()):
        return None
    return e


def _write_one(out_dir: str, i: int, prm: dict, case_seed: int, st: Rans3DSettings, keep_cases: bool) -> dict:
    """Solve case ``i`` and write its three files, then its marker ``case_XXXX.json``."""
    from .._atomic import atomic_write_json

    name = f"case_{i:04d}"
    files = _files(name)
    data, rec = make_case(prm, os.path.join(out_dir, "openfoam", name), st, seed=case_seed, keep_case=keep_cases)
    for key, f in files.items():
        _write_vtk(data[key], os.path.join(out_dir, f))
    entry = {"case": name, **files, "params": prm, "seed": case_seed, "settings": asdict(st),
             "symmetry": ["y", 0.0], **rec}
    atomic_write_json(os.path.join(out_dir, f"{name}.json"), entry, indent=1, sort_keys=False)
    return entry


def generate(out_dir: str, n: int, seed: int = 0, settings=None, jobs: int = 1, keep_cases: bool = False,
             **ranges) -> list[dict]:
    """Write ``n`` RANS body cases (``case_0000`` ... ) to ``out_dir`` plus ``manifest.json``.

    Parameters (:data:`DEFAULT_RANGES` keys) are drawn uniformly, overridden by ``ranges``
    (keys that are :class:`Rans3DSettings` fields, e.g. ``iterations``, override ``settings``
    instead); case ``i`` uses ``numpy.random.default_rng([seed, i])``. ``settings``: a
    :class:`Rans3DSettings` or a mapping of its fields. ``jobs``: cases solved at once (each with
    ``n_procs`` MPI ranks; ``jobs * n_procs`` should not exceed the cores). ``keep_cases``: keep
    the OpenFOAM folders under ``out_dir/openfoam/``.

    Resumable: a case whose marker ``case_XXXX.json`` and three files exist is skipped (its
    parameters and settings must equal this call's, else :class:`DatasetError`); any other is
    (re)done from scratch. ``manifest.json`` lists every finished case of the folder, in index
    order, and is rewritten after each case.

    Returns the manifest entries of cases ``0 .. n-1``.
    """
    from ._case_io import finished_cases, resolve_ranges, run_cases, write_manifest

    require_openfoam()
    if isinstance(n, bool) or int(n) != n or n < 0:
        raise ConfigError(f"n: expected a non-negative integer, got {n!r}")
    if isinstance(jobs, bool) or int(jobs) != jobs or jobs < 1:
        raise ConfigError(f"jobs: expected a positive integer, got {jobs!r}")
    st = _coerce_settings(settings)
    over = {k: ranges.pop(k) for k in list(ranges) if k in Rans3DSettings.__dataclass_fields__}
    if over:
        st = dataclasses.replace(st, **over)
    st = st.check()
    rg = resolve_ranges(ranges, DEFAULT_RANGES, "rans3d body")
    os.makedirs(out_dir, exist_ok=True)
    entries: dict[int, dict] = {}
    todo = []
    for i in range(int(n)):
        prm, cseed = _design(i, seed, rg)
        name = f"case_{i:04d}"
        e = _done_entry(out_dir, name)
        if e is not None:
            if e.get("params") != prm or e.get("settings") != json.loads(json.dumps(asdict(st))) or e.get("seed") != cseed:
                raise DatasetError(f"{out_dir}: {name} was made with other parameters or settings than this call "
                                   f"(seed {seed}, ranges, settings); use another folder or remove {name}*")
            entries[i] = e
        else:
            todo.append((i, prm, cseed))

    def manifest():
        done = finished_cases(out_dir, _done_entry)
        write_manifest(out_dir, {"generator": "geoop.data.rans3d", "seed": int(seed), "ranges": rg,
                                 "settings": asdict(st), "symmetry": ["y", 0.0],
                                 "reference": "full-body coefficients: half-body force over half the full frontal area",
                                 "averaging": "fields (p, U, nut, wallShearStress) and cd, cl are means over each "
                                              "case's average_window (fieldAverage, forceCoeffs)",
                                 "cases": [done[k] for k in sorted(done)]})

    def done(task, entry):
        entries[task[1]] = entry
        manifest()

    if not todo:
        manifest()
    # jobs > 1: spawned workers (no forked torch / OpenMP state); interrupted: stopped at once
    run_cases(_write_one, [(out_dir, i, prm, cseed, st, keep_cases) for i, prm, cseed in todo], jobs, done)
    if not keep_cases:
        shutil.rmtree(os.path.join(out_dir, "openfoam"), ignore_errors=True)
    return [entries[i] for i in sorted(entries)]
