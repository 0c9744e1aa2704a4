"""Off-screen PyVista pictures of fields on geometries.

``render(geometry, "p", "p.png")`` draws one field; with ``truth=`` it draws three views side
by side: the prediction, the truth (one shared colour range and colour bar) and the absolute
error (its own colour bar), with the relative L2 error

.. math::  e = \\frac{\\lVert \\hat f - f \\rVert_2}{\\lVert f \\rVert_2}

(over the points, optionally weighted by the quadrature weights) in the title. 2-D meshes
(``Geometry.is_2d``) are viewed from +z, 3-D ones from an isometric camera. Vector fields are
shown by their magnitude unless ``component`` is given. Nothing global is changed:
the plotter is created with ``off_screen=True``.

Shapes
------
geometry.points : (N, d)      field : (N,) or (N, C)      truth field : same as field
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from .._atomic import atomic_path
from .._optional import require
from ..errors import FieldError, ShapeError
from ..geometry.geometry import Geometry

__all__ = ["render", "surface_plot", "field_values", "relative_l2_error", "colour_limits", "CMAPS", "CLIM_MODES"]

#: colour maps accepted by name (resolved in one place)
CMAPS = ("viridis", "coolwarm", "plasma", "magma", "inferno", "turbo", "jet", "RdBu_r", "cividis")


def _resolve_cmap(cmap: str) -> str:
    if cmap not in CMAPS:
        raise ShapeError(f"render: colour map {cmap!r} is unknown; valid: {list(CMAPS)}")
    return cmap


#: how colour limits are chosen (resolved in :func:`colour_limits`)
CLIM_MODES = ("robust", "full")


def colour_limits(values: np.ndarray, mode: Union[str, Sequence[float]] = "robust") -> list:
    """Colour range of ``values``: ``"full"`` = min/max; ``"robust"`` = the 1st-99th
    percentiles (a stagnation point or a suction peak does not flatten the rest of the
    picture; values outside are drawn in the end colours); or an explicit ``(lo, hi)``."""
    if not isinstance(mode, str):
        lo, hi = (float(x) for x in mode)
    elif mode == "full":
        lo, hi = float(np.min(values)), float(np.max(values))
    elif mode == "robust":
        lo, hi = (float(x) for x in np.percentile(values, [1.0, 99.0]))
    else:
        raise ShapeError(f"render: clim {mode!r} is unknown; valid: {list(CLIM_MODES)} or (lo, hi)")
    if not hi > lo:
        lo, hi = lo - 0.5 * max(abs(lo), 1e-12), hi + 0.5 * max(abs(hi), 1e-12)
    return [lo, hi]


def field_values(geometry: Geometry, field: str, component: Optional[int] = None, what: str = "geometry") -> np.ndarray:
    """The values drawn for ``field``: (N,) float64 (magnitude of a vector field unless
    ``component`` is given). Missing field -> :class:`FieldError` listing the available ones."""
    where = geometry.source or geometry.name or what
    if field not in geometry.fields:
        raise FieldError(f"{where}: no point field {field!r} to render; available: {sorted(geometry.fields)}")
    v = geometry.fields[field].detach().cpu().double().numpy()
    v = v[:, None] if v.ndim == 1 else v
    if component is not None:
        if not 0 <= component < v.shape[1]:
            raise FieldError(f"{where}: field {field!r} has {v.shape[1]} components; component {component} is out of range")
        return v[:, component]
    return v[:, 0] if v.shape[1] == 1 else np.linalg.norm(v, axis=1)


def relative_l2_error(pred: np.ndarray, truth: np.ndarray, weights: Optional[np.ndarray] = None) -> float:
    """``||pred - truth|| / ||truth||`` over the points (weighted when ``weights`` given)."""
    w = np.ones_like(truth) if weights is None else np.asarray(weights, dtype=np.float64)
    num = math.sqrt(float(np.sum(w * (pred - truth) ** 2)))
    den = math.sqrt(float(np.sum(w * truth**2)))
    return num / den if den > 0 else float("inf") if num > 0 else 0.0


def _pyvista():
    """PyVista for off-screen pictures. Without an X display (``DISPLAY`` unset on Linux)
    VTK is told to use its off-screen OSMesa window (when libOSMesa is installed, as
    scripts/setup_env.sh does), so it never tries (and warns about) an X server connection."""
    import ctypes.util
    import sys

    # read by VTK's render-window factory when a window is created (also after import)
    if sys.platform.startswith("linux") and not os.environ.get("DISPLAY") and ctypes.util.find_library("OSMesa"):
        os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkOSOpenGLRenderWindow")
    pv = require("pyvista", "rendering")
    pv.OFF_SCREEN = True
    return pv


def surface_plot(
    geometry: Union[Geometry, str, os.PathLike],
    field: str,
    out_png: Union[str, os.PathLike],
    truth: Union[Geometry, str, os.PathLike, None] = None,
    *,
    truth_field: Optional[str] = None,
    title: Optional[str] = None,
    invert: Optional[bool] = None,
) -> Optional[Path]:
    """The field along a 2-D body versus x / chord (prediction and truth), e.g. surface
    pressure of an airfoil. The body is ``geometry`` itself when it is a polyline, or the
    holes of a 2-D domain mesh (:func:`geoop.viz.framing.body_nodes`); returns None (and
    draws nothing) when there is no 2-D body. ``invert``: y axis downwards (default for
    pressure-like names: p, Cp, pressure). Matplotlib Agg, no global state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ..geometry.io import read
    from .framing import body_nodes

    g = geometry if isinstance(geometry, Geometry) else read(geometry)
    if not g.is_2d:
        return None
    if g.topological_dim == 1:
        idx = np.arange(g.n_points)
    else:
        idx = body_nodes(g)
        if idx is None:
            return None
    pred = field_values(g, field, None, "prediction")[idx]
    tvals = None
    if truth is not None:
        tg = truth if isinstance(truth, Geometry) else read(truth)
        tvals = field_values(tg, truth_field or field, None, "truth")[idx]
    elif f"{field}_true" in g.fields:
        tvals = field_values(g, f"{field}_true", None, "prediction")[idx]
    x = g.points[idx, 0].detach().cpu().double().numpy()
    chord = float(x.max() - x.min()) or 1.0
    xc = (x - x.min()) / chord
    fig = Figure(figsize=(6.4, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if tvals is not None:
        ax.plot(xc, tvals, "k.", ms=3.5, label="truth")
    ax.plot(xc, pred, "r.", ms=3.5, label="prediction")
    if invert if invert is not None else field.lower() in ("p", "cp", "pressure", "p_pred", "cp_pred"):
        ax.invert_yaxis()
    ax.set_xlabel("x / chord")
    ax.set_ylabel(field)
    t = title or f"{field} along the body"
    if tvals is not None:
        t += f": relative L2 error {100 * relative_l2_error(pred, tvals):.2f}%"
    ax.set_title(t, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp)
    return out


def _mesh(pv, geometry: Geometry, name: str, values: np.ndarray):
    mesh = geometry.replace(fields={}, cell_fields={}, normals=None).to_pyvista()
    mesh.point_data[name] = values
    return mesh


def _add(plotter, pv, geometry: Geometry, mesh, name: str, clim, cmap: str, point_size: float, line_width: float):
    """Add the coloured mesh to the current subplot (its colour bar goes into its own row)."""
    td = geometry.topological_dim
    kw = dict(scalars=name, clim=clim, cmap=cmap, show_scalar_bar=False)
    if td == 0:
        return plotter.add_mesh(mesh, style="points", point_size=point_size, render_points_as_spheres=True, **kw)
    if td == 1:
        return plotter.add_mesh(mesh, line_width=line_width, render_lines_as_tubes=False, **kw)
    return plotter.add_mesh(mesh, show_edges=False, **kw)


def _bar(plotter, actor, title: str):
    """A horizontal colour bar in the current (bar-row) subplot, its labels below the bar and
    its title to the left of it, so labels and title never run into each other; bars with
    the same title are one shared bar (PyVista keys them by title)."""
    bars = getattr(plotter.scalar_bars, "_scalar_bar_actors", {})
    new = title not in bars
    plotter.add_scalar_bar(title=title, mapper=actor.mapper, vertical=False, position_x=0.3, position_y=0.5, width=0.62,
                           height=0.32, label_font_size=13, n_labels=3, fmt="%.3g", color="black")
    sb = bars.get(title)
    if new and sb is not None:
        sb.SetTitle("")  # drawn beside the bar instead (the key stays for sharing)
        sb.SetTextPositionToPrecedeScalarBar()
        plotter.add_text(title, position=(0.02, 0.55), viewport=True, font_size=11, color="black")


def _camera(plotter, geometry: Geometry, zoom: float):
    if geometry.is_2d:
        plotter.view_xy()
        plotter.reset_camera()
        plotter.camera.tight(padding=0.06, adjust_render_window=False)
    else:
        plotter.view_isometric()
        plotter.reset_camera()
    if zoom != 1.0:
        plotter.camera.zoom(zoom)


def render(
    geometry: Union[Geometry, str, os.PathLike],
    field: str,
    out_png: Union[str, os.PathLike],
    truth: Union[Geometry, str, os.PathLike, None] = None,
    *,
    component: Optional[int] = None,
    truth_field: Optional[str] = None,
    cmap: str = "viridis",
    error_cmap: str = "magma",
    window_size: Optional[Sequence[int]] = None,
    title: Optional[str] = None,
    zoom: float = 1.0,
    focus: Optional[Sequence[float]] = None,
    point_size: float = 6.0,
    line_width: float = 6.0,
    weighted: bool = False,
    clim: Union[str, Sequence[float]] = "robust",
    far_field: bool = False,
    body: Union[Geometry, str, os.PathLike, None] = None,
) -> Path:
    """Draw ``field`` of ``geometry`` to ``out_png`` (with ``truth``, or a ``<field>_true``
    companion field in ``geometry`` as ``geoop predict`` writes: prediction | truth | abs
    error). ``focus = (xmin, xmax, ymin, ymax[, zmin, zmax])`` crops the picture to a box;
    by default a domain much larger than its body (a 2-D mesh with holes, or ``body`` given,
    which is then drawn in grey) is cropped to the body's surroundings (:func:`geoop.viz.framing.view_box`),
    ``far_field=True`` shows everything. The colour range and the title's error come from
    the points in view. ``zoom`` zooms the camera. ``weighted`` uses the quadrature weights
    in the relative L2 error. ``clim``: see :func:`colour_limits` (the error view always
    uses the robust range from 0). Returns the path.
    """
    pv = _pyvista()
    from ..geometry.io import read
    from .framing import in_box, view_box

    if not isinstance(geometry, Geometry):
        geometry = read(geometry)
    g = geometry
    pred = field_values(g, field, component, "prediction")
    tvals = None
    if truth is None and truth_field is None and f"{field}_true" in g.fields:
        truth, truth_field = g, f"{field}_true"  # the companion written by geoop predict
    if truth is not None:
        if not isinstance(truth, Geometry):
            truth = read(truth)
        tvals = field_values(truth, truth_field or field, component, "truth")
        if tvals.shape != pred.shape:
            raise ShapeError(
                f"render: prediction {g.source or g.name or ''} has {pred.shape[0]} points but truth "
                f"{truth.source or truth.name or ''} has {tvals.shape[0]}; they must be on the same points"
            )
    std_name = f"{field}_std"  # an ensemble's standard deviation, written by geoop predict
    svals = field_values(g, std_name, component, "std") if std_name in g.fields else None
    _resolve_cmap(cmap)
    _resolve_cmap(error_cmap)
    if body is not None and not isinstance(body, Geometry):
        body = read(body)
    if focus is None and not far_field:
        focus = view_box(g, body)
    if focus is not None and len(focus) not in (4, 6):
        raise ShapeError(f"render: focus must have 4 or 6 numbers, got {len(focus)}")
    # colour range and error from the points in view
    view = np.ones(pred.shape[0], dtype=bool) if focus is None else in_box(g.points.detach().cpu().double().numpy(), focus)
    if not view.any():
        raise ShapeError(f"render: focus box {list(focus)} contains no part of the geometry")
    label = field if component is None else f"{field}[{component}]"
    if component is None and g.fields[field].dim() == 2 and g.fields[field].shape[1] > 1:
        label = f"|{field}|"
    n_views = (1 if tvals is None else 3) + (svals is not None)
    if window_size is None:
        window_size = (800, 640) if n_views == 1 else (600 * n_views, 640)
    # a title row spanning all columns above the views, a colour-bar row below them (bars
    # never cover the geometry)
    plotter = pv.Plotter(off_screen=True, shape=(3, n_views), row_weights=[0.09, 0.77, 0.14], groups=[(0, np.s_[:])],
                         window_size=list(window_size), border=False)
    plotter.set_background("white")
    try:
        meshes = []
        if tvals is None:
            clim = colour_limits(pred[view], clim)
            meshes.append((_mesh(pv, g, label, pred), label, clim, cmap, label, ""))
        else:
            lo, hi = colour_limits(np.concatenate([pred[view], tvals[view]]), clim)
            err = np.abs(pred - tvals)
            emax = colour_limits(err[view], "robust")[1] if isinstance(clim, str) else float(err[view].max())
            # one colour bar title for prediction and truth: PyVista shares the bar
            meshes.append((_mesh(pv, g, label, pred), label, [lo, hi], cmap, label, "prediction"))
            meshes.append((_mesh(pv, g, label, tvals), label, [lo, hi], cmap, label, "truth"))
            if svals is not None:  # the std beside the error, on one colour range: where is the model unsure, where wrong
                emax = max(emax, colour_limits(svals[view], "robust")[1])
            ename = f"abs. error {label}"
            meshes.append((_mesh(pv, g, ename, err), ename, [0.0, emax if emax > 0 else 1.0], error_cmap, ename, "absolute error"))
        if svals is not None:
            smax = emax if tvals is not None else colour_limits(svals[view], "robust")[1]
            sname = f"std {label}"
            meshes.append((_mesh(pv, g, sname, svals), sname, [0.0, smax if smax > 0 else 1.0], error_cmap, sname,
                           "ensemble std"))
        for i, (mesh, name, clim, cm, bar, sub) in enumerate(meshes):
            plotter.subplot(1, i)
            if focus is not None:
                b = list(focus) + [-1e30, 1e30] if len(focus) == 4 else list(focus)
                if len(b) != 6:
                    raise ShapeError(f"render: focus must have 4 or 6 numbers, got {len(focus)}")
                mesh = mesh.clip_box(b, invert=False)
                if mesh.n_points == 0:
                    raise ShapeError(f"render: focus box {list(focus)} contains no part of the geometry")
            actor = _add(plotter, pv, g, mesh, name, clim, cm, point_size, line_width)
            if body is not None:  # the body itself, in grey, for orientation
                plotter.add_mesh(body.replace(fields={}, cell_fields={}, normals=None).to_pyvista(), color="lightgrey")
            if sub:
                plotter.add_text(sub, position="upper_edge", font_size=12, color="black")
            _camera(plotter, g, zoom)
            plotter.subplot(2, i)
            _bar(plotter, actor, bar)
        top = title or (None if tvals is not None else label)
        if tvals is not None:
            w = g.weights.detach().cpu().double().numpy() if weighted else None
            e = relative_l2_error(pred[view], tvals[view], None if w is None else w[view])
            top = f"{title + ' - ' if title else ''}{label}: relative L2 error {100 * e:.2f}%{' in view' if focus is not None else ''}"
        plotter.subplot(0, 0)
        if top:
            plotter.add_text(top, position="upper_edge", font_size=14, color="black")
        out = Path(out_png)
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out, suffix=".png") as tmp:
            plotter.screenshot(tmp)
    finally:
        plotter.close()
    return out
