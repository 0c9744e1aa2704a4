"""One self-contained interactive HTML page: prediction | truth | error, a field picker and
colour bars, that works offline (no server, no network).

The page is a plotly figure written with plotly.js inlined (``include_plotlyjs=True``,
about 4.6 MB): PyVista 0.49's ``export_html`` needs the trame stack (trame, trame-vtk,
trame-pyvista) and exports one vtk.js scene without widgets, while plotly gives 3-D meshes
with per-vertex colours, colour bars, side-by-side scenes and a dropdown out of the box.
Surfaces and 2-D domains are drawn as ``Mesh3d`` (triangles; quads split), polylines as
coloured lines, point clouds as markers. The three views share one camera (a few lines of
JavaScript forward every camera change to the other scenes); prediction and truth share
one colour range and bar, the error has its own. The colour range and the error in the
title come from the points in view (see :mod:`geoop.viz.framing`: by default a 2-D domain
much larger than its body is cropped to the body).

Shapes: geometry.points (N, d); fields (N,) / (N, C) (vector fields: magnitude).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from .._atomic import atomic_path
from .._optional import require
from ..errors import FieldError, ShapeError
from ..geometry.geometry import Geometry
from .framing import body_camera, in_box, view_box
from .render import colour_limits, field_values, relative_l2_error

__all__ = ["render_html"]

_SYNC_JS = """
var gd = document.getElementById('{plot_id}');
var scenes = %s, busy = false;
gd.on('plotly_relayout', function(ev) {
  if (busy) return;
  for (var i = 0; i < scenes.length; i++) {
    var cam = ev[scenes[i] + '.camera'];
    if (cam) {
      var upd = {};
      for (var j = 0; j < scenes.length; j++) if (j !== i) upd[scenes[j] + '.camera'] = cam;
      busy = true;
      Plotly.relayout(gd, upd).then(function() { busy = false; });
      return;
    }
  }
});
"""


def _triangles(g: Geometry) -> Optional[np.ndarray]:
    f = g.faces
    return None if f is None else f.cpu().numpy()


def _subset(g: Geometry, keep: np.ndarray):
    """Points ``keep`` (bool) of ``g``, its triangles / lines with every node kept, renumbered."""
    new = -np.ones(g.n_points, dtype=np.int64)
    new[keep] = np.arange(int(keep.sum()))
    tri = _triangles(g)
    if tri is not None:
        tri = new[tri[keep[tri].all(1)]]
    lines = g.cells.get("line")
    if lines is not None:
        ln = lines.cpu().numpy()
        lines = new[ln[keep[ln].all(1)]]
    return tri, lines


def render_html(
    geometry: Union[Geometry, str, os.PathLike],
    out_html: Union[str, os.PathLike],
    fields: Optional[Sequence[str]] = None,
    truth: Union[Geometry, str, os.PathLike, None] = None,
    *,
    title: Optional[str] = None,
    cmap: str = "Viridis",
    error_cmap: str = "Magma",
    clim: Union[str, Sequence[float]] = "robust",
    focus: Optional[Sequence[float]] = None,
    far_field: bool = False,
    body: Union[Geometry, str, os.PathLike, None] = None,
    point_size: float = 3.0,
    initial: Optional[str] = None,
    camera: str = "iso",
) -> Path:
    """Write the interactive page to ``out_html``; returns its path.

    fields : the fields offered in the picker (default: every point field of ``geometry``
        that ``truth`` has too, or all of them without truth; ``<name>_true`` /
        ``<name>_error`` companions written by ``geoop predict`` serve as the truth when
        ``truth`` is None); ``initial``: the one shown first.
    focus : crop box ``(xmin, xmax, ymin, ymax[, zmin, zmax])``; default: the body's
        surroundings when the domain is much larger (:func:`~geoop.viz.framing.view_box`,
        ``body`` gives the body explicitly), everything with ``far_field=True``.
    camera : ``"iso"`` (3-D: an isometric view) or ``"body"`` (3-D: a three-quarter view of
        the body from upstream, above and the side away from its symmetry plane:
        :func:`~geoop.viz.framing.body_camera`); 2-D geometries are always seen from +z.
    """
    require("plotly", "the HTML viewer")
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from ..geometry.io import read

    g = geometry if isinstance(geometry, Geometry) else read(geometry)
    tg = None if truth is None else (truth if isinstance(truth, Geometry) else read(truth))
    if body is not None and not isinstance(body, Geometry):
        body = read(body)
    if tg is not None and tg.n_points != g.n_points:
        raise ShapeError(f"render_html: prediction {g.source or ''} has {g.n_points} points but truth {tg.source or ''} has "
                         f"{tg.n_points}; they must be on the same points")
    if fields is None:
        base = [k for k in g.fields if not k.endswith(("_true", "_error", "_std"))]
        if tg is not None:
            fields = [k for k in base if k in tg.fields]
        else:
            with_truth = [k for k in base if f"{k}_true" in g.fields]
            fields = with_truth or base
    fields = list(fields)
    if initial is not None:  # the field shown first
        if initial not in g.fields:
            raise FieldError(f"render_html: no point field {initial!r}; available: {sorted(g.fields)}")
        fields = [initial] + [f for f in fields if f != initial]
    if not fields:
        raise FieldError(f"render_html: {g.source or g.name or 'geometry'} has no point field to show; available: {sorted(g.fields)}")

    def truth_of(name):
        if tg is not None:
            return field_values(tg, name, None, "truth")
        if f"{name}_true" in g.fields:
            return field_values(g, f"{name}_true", None, "prediction")
        return None

    data = [(f, field_values(g, f, None, "prediction"), truth_of(f)) for f in fields]
    has_truth = all(t is not None for _, _, t in data)
    if not has_truth and any(t is not None for _, _, t in data):
        data = [(f, v, None) for f, v, _ in data]
    pts = g.points.detach().cpu().double().numpy()
    if pts.shape[1] == 2:
        pts = np.concatenate([pts, np.zeros((pts.shape[0], 1))], 1)
    box = None if far_field else (list(focus) if focus is not None else view_box(g, body))
    keep = np.ones(g.n_points, dtype=bool) if box is None else in_box(pts, box)
    if not keep.any():
        raise ShapeError(f"render_html: the view box {box} contains no point of the geometry")
    tri, lines = _subset(g, keep)
    p = pts[keep]
    flat = g.is_2d

    views = ["prediction", "truth", "|error|"] if has_truth else ["prediction"]
    has_std = all(f"{f}_std" in g.fields for f, _, _ in data)  # an ensemble's std (geoop predict), beside the error
    if has_std:
        views.append("std")
    fig = make_subplots(rows=1, cols=len(views), specs=[[{"type": "scene"}] * len(views)], subplot_titles=views,
                        horizontal_spacing=0.02)
    vis, titles = [], []
    for fi, (name, pred, tv) in enumerate(data):
        pv_, tv_ = pred[keep], None if tv is None else tv[keep]
        vals = [pv_] if tv_ is None else [pv_, tv_, np.abs(pv_ - tv_)]
        lo, hi = colour_limits(np.concatenate(vals[:2]), clim)
        elo, ehi = (0.0, colour_limits(vals[2], "robust")[1]) if tv_ is not None else (0.0, 1.0)
        if has_std:  # on the error's colour range (or its own without truth)
            sv = field_values(g, f"{name}_std", None, "std")[keep]
            ehi = max(ehi, colour_limits(sv, "robust")[1]) if tv_ is not None else colour_limits(sv, "robust")[1]
            vals.append(sv)
        label = name if g.fields[name].shape[1] == 1 else f"|{name}|"
        t = f"{title + ' - ' if title else ''}{label}"
        if tv_ is not None:
            e = relative_l2_error(pv_, tv_)
            t += f": relative L2 error {100 * e:.2f}%{' (in view)' if box is not None else ''}"
        titles.append(t)
        for vi, v in enumerate(vals):
            err = vi >= 2 if tv_ is not None else vi == 1  # the error and std views: the error colour map and range
            cmin, cmax = (elo, ehi if ehi > 0 else 1.0) if err else (lo, hi)
            # one bar for prediction + truth (beside the truth), one for the error, apart
            bar = None
            if vi == len(vals) - 1 or (vi == 1 and not err) or (vi == 0 and tv_ is None):
                x_end = (vi + 1) / len(views) - 0.01
                what = ("|error|, std" if tv_ is not None else "std") if has_std else "|error|"
                bar = dict(title=dict(text=f"{what} {label}" if err else label, side="right"), x=x_end, len=0.75,
                           thickness=14, tickformat=".3g", nticks=5)
            common = dict(name=f"{label} {views[vi]}", visible=fi == 0, showlegend=False, hoverinfo="text+name",
                          hovertext=[f"{x:.4g}" for x in v] if v.shape[0] <= 20000 else None)
            if tri is not None and tri.shape[0]:
                tr = go.Mesh3d(x=p[:, 0], y=p[:, 1], z=p[:, 2], i=tri[:, 0], j=tri[:, 1], k=tri[:, 2], intensity=v,
                               intensitymode="vertex", colorscale=error_cmap if err else cmap, cmin=cmin, cmax=cmax,
                               showscale=bar is not None, colorbar=bar, flatshading=flat,
                               lighting=dict(ambient=1.0, diffuse=0.0, specular=0.0) if flat else None, **common)
            else:
                mode = "lines+markers" if lines is not None and lines.shape[0] else "markers"
                order = _polyline_order(lines, p.shape[0]) if mode == "lines+markers" else np.arange(p.shape[0])
                tr = go.Scatter3d(x=p[order, 0], y=p[order, 1], z=p[order, 2], mode=mode,
                                  marker=dict(size=point_size, color=v[order], colorscale=error_cmap if err else cmap,
                                              cmin=cmin, cmax=cmax, showscale=bar is not None, colorbar=bar),
                                  line=dict(color=v[order], colorscale=error_cmap if err else cmap, cmin=cmin, cmax=cmax,
                                            width=6) if mode != "markers" else None, **common)
            fig.add_trace(tr, row=1, col=vi + 1)
            vis.append(fi)
    if body is not None and body.faces is not None:  # the body in grey in every view, always visible
        bp = body.points.detach().cpu().double().numpy()
        bf = body.faces.cpu().numpy()
        for vi in range(len(views)):
            fig.add_trace(go.Mesh3d(x=bp[:, 0], y=bp[:, 1], z=bp[:, 2] if bp.shape[1] == 3 else 0 * bp[:, 0], i=bf[:, 0],
                                   j=bf[:, 1], k=bf[:, 2], color="lightgrey", name="body", showlegend=False, hoverinfo="skip"),
                          row=1, col=vi + 1)
            vis.append(-1)
    n_tr = len(vis)
    buttons = [dict(label=name, method="update",
                    args=[{"visible": [vis[i] in (fi, -1) for i in range(n_tr)]}, {"title.text": titles[fi]}])
               for fi, (name, _, _) in enumerate(data)]
    if camera not in ("iso", "body"):
        raise ShapeError(f"render_html: unknown camera {camera!r}; valid: ['iso', 'body']")
    if flat:
        camera = dict(eye=dict(x=0.0, y=0.0, z=1.6), up=dict(x=0, y=1, z=0), projection=dict(type="orthographic"))
    elif camera == "body":
        bpts = (body if body is not None else g).points.detach().cpu().double().numpy()
        camera = body_camera(bpts)
    else:
        camera = dict(eye=dict(x=1.8, y=-1.8, z=1.2))
    scene = dict(aspectmode="data", camera=camera, xaxis=dict(visible=not flat), yaxis=dict(visible=not flat),
                 zaxis=dict(visible=False) if flat else dict(visible=True), dragmode="pan" if flat else "turntable")
    fig.update_layout(**{("scene" if i == 0 else f"scene{i + 1}"): scene for i in range(len(views))})
    fig.update_layout(title=dict(text=titles[0], x=0.5, y=0.95, font=dict(size=16)), paper_bgcolor="white", height=620,
                      margin=dict(l=10, r=10, t=110, b=10),
                      updatemenus=[dict(buttons=buttons, direction="down", x=0.045, xanchor="left", y=1.2, yanchor="middle",
                                        showactive=True)],
                      annotations=list(fig.layout.annotations) + [dict(text="field:", x=0.0, xref="paper", y=1.2,
                                                                       yref="paper", yanchor="middle", showarrow=False,
                                                                       xanchor="left", font=dict(size=14))])
    out = Path(out_html)
    out.parent.mkdir(parents=True, exist_ok=True)
    scenes = json.dumps(["scene" if i == 0 else f"scene{i + 1}" for i in range(len(views))])
    with atomic_path(out, suffix=".html") as tmp:
        fig.write_html(tmp, include_plotlyjs=True, full_html=True, post_script=_SYNC_JS % scenes,
                       config={"displaylogo": False, "responsive": True})
    return out


def _polyline_order(lines: np.ndarray, n: int) -> np.ndarray:
    """Nodes in the order of the line cells (closing a closed loop), so one coloured line
    trace draws the polyline; disconnected pieces are separated by a repeated node."""
    nxt = -np.ones(n, dtype=np.int64)
    nxt[lines[:, 0]] = lines[:, 1]
    start = lines[0, 0]
    order, seen, cur = [start], {int(start)}, start
    while nxt[cur] >= 0 and int(nxt[cur]) not in seen:
        cur = nxt[cur]
        order.append(cur)
        seen.add(int(cur))
    if nxt[cur] == start:
        order.append(start)
    rest = np.setdiff1d(np.arange(n), np.array(sorted(seen)))
    return np.concatenate([np.array(order), rest]).astype(np.int64)
