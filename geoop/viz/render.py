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

__all__ = ["render", "field_values", "relative_l2_error", "colour_limits", "CMAPS", "CLIM_MODES"]

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


def _mesh(pv, geometry: Geometry, name: str, values: np.ndarray):
    mesh = geometry.replace(fields={}, cell_fields={}, normals=None).to_pyvista()
    mesh.point_data[name] = values
    return mesh


def _add(plotter, pv, geometry: Geometry, mesh, name: str, clim, cmap: str, bar_title: str, point_size: float, line_width: float, bar_pos):
    td = geometry.topological_dim
    if bar_pos is None:  # single view: vertical bar on the right
        bar = dict(vertical=True, position_x=0.86, position_y=0.15, width=0.08, height=0.7)
    else:
        bar = dict(vertical=False, position_x=bar_pos[0], position_y=0.03, width=bar_pos[1], height=0.1)
    kw = dict(scalars=name, clim=clim, cmap=cmap, show_scalar_bar=True,
              scalar_bar_args=dict(title=bar_title, title_font_size=16, label_font_size=13, n_labels=3, fmt="%.3g", color="black", **bar))
    if td == 0:
        plotter.add_mesh(mesh, style="points", point_size=point_size, render_points_as_spheres=True, **kw)
    elif td == 1:
        plotter.add_mesh(mesh, line_width=line_width, render_lines_as_tubes=False, **kw)
    else:
        plotter.add_mesh(mesh, show_edges=False, **kw)


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
) -> Path:
    """Draw ``field`` of ``geometry`` to ``out_png`` (with ``truth``: prediction | truth |
    abs error). ``focus = (xmin, xmax, ymin, ymax[, zmin, zmax])`` crops the picture to a box
    (e.g. the region around an airfoil in a large domain); ``zoom`` zooms the camera.
    ``weighted`` uses the quadrature weights in the relative L2 error. ``clim``: see
    :func:`colour_limits` (the error view always uses the robust range from 0). Returns the
    path.
    """
    pv = require("pyvista", "rendering")
    from ..geometry.io import read

    if not isinstance(geometry, Geometry):
        geometry = read(geometry)
    g = geometry
    pred = field_values(g, field, component, "prediction")
    tvals = None
    if truth is not None:
        if not isinstance(truth, Geometry):
            truth = read(truth)
        tvals = field_values(truth, truth_field or field, component, "truth")
        if tvals.shape != pred.shape:
            raise ShapeError(
                f"render: prediction {g.source or g.name or ''} has {pred.shape[0]} points but truth "
                f"{truth.source or truth.name or ''} has {tvals.shape[0]}; they must be on the same points"
            )
    _resolve_cmap(cmap)
    _resolve_cmap(error_cmap)
    label = field if component is None else f"{field}[{component}]"
    if component is None and g.fields[field].dim() == 2 and g.fields[field].shape[1] > 1:
        label = f"|{field}|"
    n_views = 1 if tvals is None else 3
    if window_size is None:
        window_size = (800, 640) if n_views == 1 else (1800, 640)
    # a title row spanning all columns above the views
    plotter = pv.Plotter(off_screen=True, shape=(2, n_views), row_weights=[0.09, 0.91], groups=[(0, np.s_[:])],
                         window_size=list(window_size), border=False)
    plotter.set_background("white")
    try:
        meshes = []
        if tvals is None:
            clim = colour_limits(pred, clim)
            meshes.append((_mesh(pv, g, label, pred), label, clim, cmap, label, None, ""))
        else:
            lo, hi = colour_limits(np.concatenate([pred, tvals]), clim)
            err = np.abs(pred - tvals)
            emax = colour_limits(err, "robust")[1] if isinstance(clim, str) else float(err.max())
            # one colour bar title for prediction and truth: PyVista shares the bar
            meshes.append((_mesh(pv, g, label, pred), label, [lo, hi], cmap, label, (0.2, 0.6), "prediction"))
            meshes.append((_mesh(pv, g, label, tvals), label, [lo, hi], cmap, label, (0.2, 0.6), "truth"))
            ename = f"abs. error {label}"
            meshes.append((_mesh(pv, g, ename, err), ename, [0.0, emax if emax > 0 else 1.0], error_cmap, ename, (0.2, 0.6), "absolute error"))
        for i, (mesh, name, clim, cm, bar, pos, sub) in enumerate(meshes):
            plotter.subplot(1, i)
            if focus is not None:
                b = list(focus) + [-1e30, 1e30] if len(focus) == 4 else list(focus)
                if len(b) != 6:
                    raise ShapeError(f"render: focus must have 4 or 6 numbers, got {len(focus)}")
                mesh = mesh.clip_box(b, invert=False)
                if mesh.n_points == 0:
                    raise ShapeError(f"render: focus box {list(focus)} contains no part of the geometry")
            _add(plotter, pv, g, mesh, name, clim, cm, bar, point_size, line_width, pos)
            if sub:
                plotter.add_text(sub, position="upper_edge", font_size=12, color="black")
            _camera(plotter, g, zoom)
        top = title or (None if tvals is not None else label)
        if tvals is not None:
            w = g.weights.detach().cpu().double().numpy() if weighted else None
            e = relative_l2_error(pred, tvals, w)
            top = f"{title + ' - ' if title else ''}{label}: relative L2 error {100 * e:.2f}%"
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
