"""One preprocessing path from files to model-ready samples, shared by training and prediction.

:class:`Preprocessor` owns everything between a case's files and a normalised
:class:`~geoop.batch.Sample`:

1. **reading** a case (:meth:`Preprocessor.read_case`): the input geometry with the input
   fields and the query geometry with the target fields; cell data are averaged onto the
   points; NaN/Inf and missing fields raise a :class:`~geoop.errors.DatasetError` naming the
   file; points are stored as 3-D (a 2-D file gets z = 0);
2. **coordinates** (:meth:`Preprocessor.transform_for`): ``x' = (x - shift) / scale`` with one
   transform fitted on the training cases (``geometry_normalization="dataset"``), one per case
   from its own input and query bounds (``"case"``), one fitted to the BODY (``"body"``: the
   union over the training cases of the input geometry's bounds extended by margins in
   body lengths, :func:`body_box`; ``"body_case"``: each case's own body box), or none
   (``"none"``); 2-D cases then drop the flat z;
3. **fields** (:meth:`Preprocessor.apply`): each input and target field normalised per
   channel, ``(f - mean) / std``, with statistics of the training cases
   (:class:`~geoop.data.normalize.DatasetNormalizers`); :meth:`Preprocessor.decode` maps
   predictions back.

:class:`~geoop.data.MeshFolderDataset` builds its items with it, the
:class:`~geoop.train.Trainer` stores its :meth:`~Preprocessor.state_dict` in every checkpoint,
and ``geoop predict`` / :func:`geoop.train.run.load_trained` rebuild it from the checkpoint
alone (:meth:`Preprocessor.from_state_dict`), so a trained model sees new files exactly as
it saw the training files.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import torch
from torch import Tensor

from ..batch import Sample
from ..errors import DatasetError, GeoopError
from ..geometry.geometry import Geometry, NormalizeTransform
from ..geometry.symmetry import is_surface
from .normalize import DatasetNormalizers, FieldNormalizer, fit_box_transform

__all__ = ["Preprocessor", "GEOMETRY_NORMALIZATIONS", "DEFAULT_BODY_MARGINS", "body_box", "check_body_margins",
           "QUERY_SET_FIELD", "COEF_P_FIELD", "COEF_TAU_FIELD", "is_reserved", "combine_query_sets", "split_query_sets",
           "set_of_target"]

#: valid ``geometry_normalization`` rules
GEOMETRY_NORMALIZATIONS = ("dataset", "case", "none", "body", "body_case")
#: rules whose transform is fitted once on the training cases (and saved with the normalisers)
FITTED_RULES = ("dataset", "body")
#: margins of the ``"body"`` rules in body lengths, ``axis: [before, after]`` (before: towards
#: -axis, e.g. upstream for a free stream in +x; after: towards +axis, e.g. the wake)
DEFAULT_BODY_MARGINS = {"x": (1.0, 2.0), "y": (1.0, 1.0), "z": (1.0, 1.0)}

#: reserved query fields (names starting with ``"__"``), never normalised and never targets:
#: the query set of each query (several query sets per case), (Q, 1) float index
QUERY_SET_FIELD = "__query_set__"
#: the coefficient operator rows of each query (:func:`geoop.physics.coefficient_weights`):
#: dc_k/dp (Q, K) and dc_k/dtau (Q, 3K), zero off the force surface
COEF_P_FIELD = "__coef_p__"
COEF_TAU_FIELD = "__coef_tau__"


def is_reserved(name: str) -> bool:
    """A reserved (bookkeeping) field, not a physical one."""
    return name.startswith("__")


def set_of_target(target: str) -> tuple[str, str]:
    """``"surface/p"`` -> ``("surface", "p")``; a plain name -> ``("", name)``."""
    a, sep, b = target.partition("/")
    return (a, b) if sep else ("", target)


def combine_query_sets(parts: Sequence[Geometry], names: Sequence[str], weighting: Sequence[str] = ()) -> Geometry:
    """One query geometry from the query sets of a case (each with its bare target fields):
    points side by side (set order), field ``f`` of set ``s`` as ``"s/f"`` (zero on the other
    sets' rows), :data:`QUERY_SET_FIELD` the set index of each row, weights per set from
    ``weighting`` (``"points"``: 1; ``"quadrature"``: the set's quadrature weights;
    ``"surface"``: quadrature on a surface set, 1 otherwise); cells are dropped.

    Shapes: parts[s].points (Q_s, d) -> points (ΣQ_s, d); fields "s/f" (ΣQ_s, C_f)."""
    weighting = list(weighting) or ["points"] * len(parts)
    q = sum(g.n_points for g in parts)
    dtype = parts[0].points.dtype
    fields: dict[str, Tensor] = {}
    ws, sid, r0 = [], [], 0
    for i, (g, name, wt) in enumerate(zip(parts, names, weighting)):
        rows = slice(r0, r0 + g.n_points)
        for f, v in g.fields.items():
            v = v[:, None] if v.dim() == 1 else v
            full = torch.zeros(q, v.shape[1], dtype=dtype)
            full[rows] = v.to(dtype)
            fields[f"{name}/{f}"] = full
        quad = wt == "quadrature" or (wt == "surface" and is_surface(g))  # None / "points": 1 per query
        ws.append(g.weights.to(dtype) if quad else torch.ones(g.n_points, dtype=dtype))
        sid.append(torch.full((g.n_points, 1), float(i), dtype=dtype))
        r0 += g.n_points
    fields[QUERY_SET_FIELD] = torch.cat(sid)
    normals = torch.cat([g.normals.to(dtype) for g in parts]) if all(g.normals is not None for g in parts) else None
    return Geometry(torch.cat([g.points for g in parts]), normals=normals, weights=torch.cat(ws), fields=fields,
                    name=parts[0].name, source=parts[0].source, validate=False)


def split_query_sets(g: Geometry, names: Sequence[str]) -> dict[str, Geometry]:
    """The inverse of :func:`combine_query_sets` on points and fields: ``{set name: the rows
    of that set with its fields under their bare names}`` (other fields whose name has no
    set prefix, e.g. ``"p_true"`` of ``"surface/p_true"``, follow the same rule)."""
    sid = g.fields[QUERY_SET_FIELD][:, 0].round().long()
    out = {}
    for i, name in enumerate(names):
        rows = (sid == i).nonzero()[:, 0]
        pre = f"{name}/"
        fields = {k[len(pre):]: v[rows] for k, v in g.fields.items() if k.startswith(pre)}
        out[name] = Geometry(g.points[rows], normals=None if g.normals is None else g.normals[rows],
                             weights=g.weights[rows] if g._weights is not None else None, fields=fields, name=g.name,
                             source=g.source, validate=False)
    return out


def read_file(path: Path) -> Geometry:
    """Read with :func:`geoop.read`; raise a GeoopError naming the file on any failure."""
    from ..geometry.io import read

    try:
        return read(path)
    except GeoopError:
        raise
    except (KeyboardInterrupt, MemoryError):
        raise
    except BaseException as e:  # noqa: BLE001  readers raise anything, SystemExit included
        raise DatasetError(f"{path}: cannot read the file ({type(e).__name__}: {e})") from None


_COMPONENTS = re.compile(r"^(.+)\[(\d+)(?::(\d+))?\]$")


def pick_fields(g: Geometry, names: Sequence[str], path, role: str, required: bool = True) -> dict[str, Tensor]:
    """The named fields as point fields (cell fields averaged onto the points); with
    ``required=False`` missing ones are left out. ``"U[0:2]"`` / ``"U[2]"`` select components
    of field ``U`` (e.g. the x and y velocity of a 2-D case whose files carry a dead z
    component), under that name. Point data win over cell data of the same
    name: ``Normals``/``normals`` is the file's point normals when it has them (the cell
    normals averaged onto the points are ``Normals_cell``, see
    :meth:`Geometry.cell_data_to_point_data`)."""
    out = {}
    to_convert = []
    selected = {}  # "U[0:2]" -> ("U", 0, 2): components of a vector field
    for n in names:
        m = _COMPONENTS.match(n)
        if n not in g.fields and n not in g.cell_fields and m:
            base, a, b = m.group(1), int(m.group(2)), int(m.group(3)) if m.group(3) else int(m.group(2)) + 1
            sub_ = pick_fields(g, [base], path, role, required)
            if base in sub_:
                c = sub_[base].shape[1]
                if not 0 <= a < b <= c:
                    raise DatasetError(f"{path}: {role} {n!r} selects components [{a}:{b}] of {base!r}, which has {c}")
                selected[n] = sub_[base][:, a:b]
            continue
        if n in g.fields:
            out[n] = g.fields[n]
        elif n in ("Normals", "normals") and g.normals is not None:
            out[n] = g.normals
        elif n in g.cell_fields:
            to_convert.append(n)
        elif required:
            raise DatasetError(
                f"{path}: {role} field {n!r} is missing; point fields: {sorted(g.fields)}, "
                f"cell fields: {sorted(g.cell_fields)}"
            )
    if to_convert:
        if not g.cells and g.polyhedra is None:
            raise DatasetError(f"{path}: {role} fields {to_convert} are cell data but the file has no cells")
        conv = g.replace(fields={}, normals=None).cell_data_to_point_data(to_convert)
        out.update({n: conv.fields[n] for n in to_convert})
    out.update(selected)
    for n, v in out.items():
        bad = ~torch.isfinite(v)
        if bad.any():
            rows = int(bad.any(dim=1).sum())
            raise DatasetError(f"{path}: {role} field {n!r} has NaN/Inf values at {rows} of {v.shape[0]} points")
    return out


def pad_z(g: Geometry) -> Geometry:
    """(N, 2) points -> (N, 3) with z = 0 (normals too; given weights kept); 3-D geometries unchanged."""
    if g.dim == 3:
        return g
    z = lambda t: None if t is None else torch.cat([t, t.new_zeros(t.shape[0], 1)], 1)  # noqa: E731
    return Geometry(z(g.points), cells=g.cells, polyhedra=g.polyhedra, normals=z(g.normals), weights=g._weights,
                    fields=g.fields, name=g.name, source=g.source, validate=False,
                    symmetry=None if g.symmetry is None else g.symmetry.with_dim(3))


def drop_z(g: Geometry) -> Geometry:
    """(N, 3) points of a flat 2-D case -> (N, 2) (normals too; given weights kept)."""
    return Geometry(g.points[:, :2], cells=g.cells, polyhedra=g.polyhedra,
                    normals=None if g.normals is None else g.normals[:, :2], weights=g._weights,
                    fields=g.fields, name=g.name, source=g.source, validate=False,
                    symmetry=None if g.symmetry is None else g.symmetry.with_dim(2))


def fixed_rule(rule: Mapping) -> dict:
    """Validate a fixed coordinate rule ``{"scale": L or [L_x, ...], "shift": x0 or [x0, ...]}``
    (``shift`` default 0) and return it as plain lists."""
    unknown = sorted(set(rule) - {"scale", "shift"})
    if unknown or "scale" not in rule:
        raise DatasetError(f"geometry_normalization: a fixed rule needs 'scale' (and optionally 'shift'); got keys "
                           f"{sorted(rule)}; valid keys: ['scale', 'shift']")
    scale = [float(v) for v in (rule["scale"] if isinstance(rule["scale"], (list, tuple)) else [rule["scale"]])]
    shift = [float(v) for v in (rule.get("shift", 0.0) if isinstance(rule.get("shift", 0.0), (list, tuple)) else [rule.get("shift", 0.0)])]
    if not all(v > 0 for v in scale):
        raise DatasetError(f"geometry_normalization: scale must be > 0, got {rule['scale']!r}")
    return {"scale": scale, "shift": shift}


def fixed_transform(rule: Mapping, d: int) -> NormalizeTransform:
    """The fixed rule as a (d,) transform: one value broadcasts to every axis; a 2-value
    shift/scale of 2-D cases gets z shift 0 / scale 1 (their points are stored with z = 0)."""
    def vec(v, fill):
        v = list(v)
        if len(v) == 1:
            v = v * d
        if len(v) == 2 and d == 3:
            v = v + [fill]
        if len(v) != d:
            raise DatasetError(f"geometry_normalization: {v} has {len(v)} values for {d}-D points")
        return torch.tensor(v, dtype=torch.float64)

    return NormalizeTransform(vec(rule["shift"], 0.0), vec(rule["scale"], 1.0))


def check_body_margins(margins: Optional[Mapping] = None) -> dict:
    """Validated margins of the ``"body"`` rules: ``{"x": [before, after], ...}`` in body
    lengths (a number means the same on both sides); axes not given keep
    :data:`DEFAULT_BODY_MARGINS`. Returns ``{axis: (before, after)}`` for x, y, z."""
    out = dict(DEFAULT_BODY_MARGINS)
    if margins is None:
        return out
    if not isinstance(margins, Mapping):
        raise DatasetError(f"body_margins: expected a mapping like {{x = [1.0, 3.0], y = [0.0, 1.0]}}, got {margins!r}")
    for axis, v in margins.items():
        if axis not in out:
            raise DatasetError(f"body_margins: unknown axis {axis!r}; valid: ['x', 'y', 'z']")
        pair = [v, v] if isinstance(v, (int, float)) and not isinstance(v, bool) else v
        ok = isinstance(pair, (list, tuple)) and len(pair) == 2 and all(
            isinstance(a, (int, float)) and not isinstance(a, bool) and 0 <= a < float("inf") for a in pair)
        if not ok:
            raise DatasetError(f"body_margins[{axis!r}]: expected [before, after] body lengths >= 0 (or one number), "
                               f"got {v!r}")
        out[axis] = (float(pair[0]), float(pair[1]))
    return out


def body_box(body: Geometry, margins: Optional[Mapping] = None) -> tuple[Tensor, Tensor]:
    """The latent box of a body: its bounds extended by margins in body lengths.

    ``L`` is the body length, the largest extent of the FULL body's bounding box (a half body
    with a ``symmetry`` plane is mirrored first). Per axis ``k`` with margins
    ``(a_k, b_k)`` (:func:`check_body_margins`): ``[lo_k - a_k L, hi_k + b_k L]``; an axis on which
    the body is flat (the z = 0 of 2-D cases) gets no margin; with a coordinate symmetry
    plane the box starts at the plane (the side of the box facing the plane is the plane,
    whatever its margin), an oblique plane is an error. Returns (lower (d,), upper (d,))
    float64 corners in the body's coordinates."""
    m = check_body_margins(margins)
    lo, hi = (t.double().cpu() for t in body.bounds)
    full_lo, full_hi = lo.clone(), hi.clone()
    sym = body.symmetry
    if sym is not None:
        k = sym.axis
        if k is None:
            raise DatasetError(f"{body.source or body.name}: the 'body' normalisation needs a coordinate symmetry plane, "
                               f"got {sym.describe()}")
        c = sym.offset * sym.normal[k]
        full_lo[k], full_hi[k] = min(float(lo[k]), 2 * c - float(hi[k])), max(float(hi[k]), 2 * c - float(lo[k]))
    ext = full_hi - full_lo
    length = float(ext.max())
    if not length > 0:
        raise DatasetError(f"{body.source or body.name}: the body has zero size; cannot fit a latent box to it")
    flat = ext <= 1e-12 * length
    a = torch.tensor([m[ax][0] for ax in "xyz"[: body.dim]], dtype=torch.float64)
    b = torch.tensor([m[ax][1] for ax in "xyz"[: body.dim]], dtype=torch.float64)
    box_lo = torch.where(flat, lo, lo - a * length)
    box_hi = torch.where(flat, hi, hi + b * length)
    if sym is not None:  # the box starts at the plane, on the side where the half body lies
        if float(lo[k] + hi[k]) / 2 >= c:
            box_lo[k] = c
        else:
            box_hi[k] = c
    return box_lo, box_hi


def crop_geometry(g: Geometry, lower: Sequence[float], upper: Sequence[float]) -> Geometry:
    """The part of ``g`` inside the box ``[lower, upper]`` (file units; 2 values for 2-D
    cases, z is then not cropped): the points inside, and the cells whose nodes are all
    inside (renumbered); quadrature weights are recomputed from the kept cells."""
    lo = torch.as_tensor(list(lower), dtype=torch.float64)
    hi = torch.as_tensor(list(upper), dtype=torch.float64)
    k = lo.numel()
    if hi.numel() != k or k > g.dim or bool((hi <= lo).any()):
        raise DatasetError(f"crop: expected lower < upper corners with at most {g.dim} values each, got {list(lower)}, {list(upper)}")
    p = g.points[:, :k].double()
    inside = ((p >= lo) & (p <= hi)).all(1)
    new_id = torch.full((g.n_points,), -1, dtype=torch.long)
    keep = inside.nonzero()[:, 0]
    new_id[keep] = torch.arange(keep.numel())
    cells = {}
    for kind, c in g.cells.items():
        full = inside[c].all(1)
        if full.any():
            cells[kind] = new_id[c[full]]
    poly = g.polyhedra
    if poly is not None:  # the polyhedra with every point inside
        out = torch.zeros(poly.n_cells, dtype=torch.bool)
        out[poly.point_cell()[~inside[poly.face_points]]] = True
        poly = poly.subset(~out).remap(new_id)
    return Geometry(g.points[keep], cells=cells, polyhedra=poly, normals=None if g.normals is None else g.normals[keep],
                    fields={n: v[keep] for n, v in g.fields.items()}, name=g.name, source=g.source, validate=False)


def _with_fields(g: Geometry, fields: Mapping, name: Optional[str], symmetry) -> Geometry:
    """``g``'s mesh with ``fields`` only, named ``name`` (default its own) and ``symmetry``,
    not yet validated."""
    return Geometry(g.points, cells=g.cells, polyhedra=g.polyhedra, normals=g.normals, fields=fields, name=name or g.name,
                    source=g.source, validate=False, symmetry=symmetry)


class Preprocessor:
    """Reading, coordinate and field normalisation of cases (see the module docstring).

    Parameters
    ----------
    inputs, targets : field names on the input / query geometry
    geometry_normalization : ``"dataset"``, ``"case"``, ``"none"``, ``"body"``,
        ``"body_case"``, or a fixed rule ``{"scale": L, "shift": [...]}`` (:func:`fixed_rule`).
        ``"body"``: the unit box is the union over the training cases of :func:`body_box` of
        the input geometry (the body surface): one fixed frame for every case, so positions
        and sizes mean the same in every case (as with ``"dataset"``), but the latent
        resolution goes to the body and its near field instead of the whole domain; with
        ``isotropic=False`` the box maps exactly onto ``[0, 1]^d``, with ``isotropic=True``
        its longest side does and the others are centred. ``"body_case"``: each case's own
        body box (every body fills the window; sizes are then relative).
    body_margins : margins of the body rules in body lengths, ``{"x": [before, after], ...}``
        (:func:`check_body_margins`; default :data:`DEFAULT_BODY_MARGINS`)
    symmetry : None (keep what the files say), ``"auto"`` or a plane spec such as
        ``("y", 0.0)``: the symmetry plane given to every input geometry when read (a half
        body; see :class:`Geometry`); the latent SDF and the body box then use it
    isotropic, margin : of the unit-box transform (see :meth:`Geometry.normalization`)
    dim : point dimension of the prepared samples (2: flat 2-D cases drop z; 3), None until
        :meth:`fit` or the dataset sets it
    normalizers : fitted :class:`DatasetNormalizers` (fields and the dataset transform), or
        None (fit them with :meth:`fit`)
    crop : ``[lower corner, upper corner]`` in file units: the training cases' query
        geometries are cut to this box when read (:meth:`read_case` / the dataset;
        :func:`crop_geometry`); prediction answers wherever it is asked
    """

    def __init__(self, inputs: Sequence[str] = (), targets: Sequence[str] = (), geometry_normalization: str = "dataset",
                 isotropic: bool = True, margin: float = 0.0, dim: Optional[int] = None,
                 normalizers: Optional[DatasetNormalizers] = None, crop: Optional[Sequence[Sequence[float]]] = None,
                 body_margins: Optional[Mapping] = None, symmetry=None, query_sets: Optional[Sequence[Mapping]] = None):
        if isinstance(geometry_normalization, Mapping):
            geometry_normalization = fixed_rule(geometry_normalization)
        elif geometry_normalization not in GEOMETRY_NORMALIZATIONS:
            raise DatasetError(f"Preprocessor: unknown geometry_normalization {geometry_normalization!r}; "
                               f"valid: {list(GEOMETRY_NORMALIZATIONS)} or {{'scale': L, 'shift': [...]}}")
        self.body_margins = check_body_margins(body_margins)
        if symmetry is not None and not (isinstance(symmetry, str) and symmetry == "auto"):
            from ..geometry.symmetry import SymmetryPlane

            symmetry = SymmetryPlane.from_spec(symmetry, 3).to_list()
        self.symmetry = symmetry
        self.inputs = [inputs] if isinstance(inputs, str) else list(inputs)
        self.targets = [targets] if isinstance(targets, str) else list(targets)
        self.geometry_normalization = geometry_normalization
        self.isotropic, self.margin = bool(isotropic), float(margin)
        self.dim = None if dim is None else int(dim)
        self.normalizers = normalizers if normalizers is not None else DatasetNormalizers()
        if crop is not None and (len(crop) != 2 or len(crop[0]) != len(crop[1])):
            raise DatasetError(f"Preprocessor: crop must be [lower corner, upper corner] in file units, got {crop!r}")
        self.crop = None if crop is None else [[float(v) for v in c] for c in crop]
        #: several query sets per case (``[{"name", "file", "targets", "weighting"}, ...]``), or None
        self.query_sets = None
        if query_sets:
            from .specs import query_set_specs

            self.query_sets = [q.to_dict() for q in query_set_specs(list(query_sets))]
            self.targets = [f"{q['name']}/{t}" for q in self.query_sets for t in q["targets"]]

    @property
    def set_names(self) -> list:
        """Names of the query sets (empty: one query geometry)."""
        return [q["name"] for q in self.query_sets or ()]

    def read_sets(self, g: Geometry, parts: Sequence[Geometry], name: Optional[str] = None,
                  targets_required: bool = True) -> tuple[Geometry, Geometry, list]:
        """Read geometries of a case with query sets -> (input geometry, combined query
        geometry (:func:`combine_query_sets`), the set geometries with their bare fields,
        cells kept, cropped), 3-D, in file coordinates."""
        if len(parts) != len(self.query_sets):
            raise DatasetError(f"{name or g.source}: {len(parts)} query geometries for {len(self.query_sets)} query sets")
        gin = self._input_geometry(g, name)
        gin.validate()
        sets = []
        for spec, q in zip(self.query_sets, parts):
            gq = _with_fields(q, pick_fields(q, spec["targets"], q.source or name or spec["name"],
                                             f"target (query set {spec['name']!r})", required=targets_required),
                              name, gin.symmetry if q is g else q.symmetry)
            gq.validate()
            sets.append(self.crop_queries(gin, pad_z(gq))[1])
        combined = combine_query_sets(sets, self.set_names, [spec.get("weighting") for spec in self.query_sets])
        return pad_z(gin), combined, sets

    # ------------------------------------------------------------------ 1. reading
    def _input_geometry(self, g: Geometry, name: Optional[str]) -> Geometry:
        """``g`` with the input fields only and the dataset's symmetry plane (when one is
        set), not yet validated."""
        fin = pick_fields(g, self.inputs, g.source or name or "input", "input")
        return _with_fields(g, fin, name, g.symmetry if self.symmetry is None else self.symmetry)

    def split_geometries(self, g: Geometry, q: Optional[Geometry], name: Optional[str] = None,
                         targets_required: bool = True) -> tuple[Geometry, Geometry]:
        """(input geometry with the input fields, query geometry with the target fields) from
        read geometries (``q`` None: the same one), 3-D, validated."""
        gin = self._input_geometry(g, name)
        same = q is None
        q = g if q is None else q
        fq = pick_fields(q, self.targets, q.source or name or "query", "target", required=targets_required)
        gq = _with_fields(q, fq, name, gin.symmetry if same else q.symmetry)
        for gg in (gin, gq):
            gg.validate()
        return pad_z(gin), pad_z(gq)

    def read_case(self, input_file: Union[str, Path], query_file: Union[str, Path, None] = None,
                  name: Optional[str] = None) -> tuple[Geometry, Geometry]:
        """Read one case's files (``query_file`` None or equal: one file): raw 3-D geometries
        in file coordinates with the input / target fields."""
        g = read_file(Path(input_file))
        q = None if query_file is None or Path(query_file) == Path(input_file) else read_file(Path(query_file))
        return self.crop_queries(*self.split_geometries(g, q, name))

    def crop_queries(self, gin: Geometry, gq: Geometry) -> tuple[Geometry, Geometry]:
        """``gq`` cut to the crop box (when one is set); the input geometry is kept whole."""
        if self.crop is None:
            return gin, gq
        out = crop_geometry(gq, *self.crop)
        if out.n_points == 0:
            raise DatasetError(f"{gq.source or gq.name}: no query point inside the crop box {self.crop}")
        return gin, out

    # ------------------------------------------------------------------ fitting
    def fit(self, cases: Sequence[tuple[Geometry, Geometry]], fields: bool = True, geometry: bool = True) -> "Preprocessor":
        """Fit the field normalisers and (``"dataset"``/``"body"`` rules) the coordinate transform
        on raw training cases ``[(input geometry, query geometry), ...]`` from :meth:`read_case`."""
        norms = self.normalizers
        if fields:
            norms.fields = {n: FieldNormalizer(name=n) for n in dict.fromkeys(self.inputs + self.targets)}
        bounds = []
        for gin, gq in cases:
            if geometry and self.geometry_normalization == "dataset":
                bounds += [gin.bounds, gq.bounds]
            elif geometry and self.geometry_normalization == "body":
                bounds.append(body_box(gin, self.body_margins))
            if fields:
                for n in self.inputs:
                    norms.fields[n].update(gin.fields[n])
                for n in self.targets:
                    v = gq.fields[n]
                    if self.query_sets:  # only the rows of the target's own query set
                        v = v[gq.fields[QUERY_SET_FIELD][:, 0].round().long() == self.set_names.index(set_of_target(n)[0])]
                    norms.fields[n].update(v)
        if bounds:
            norms.transform = fit_box_transform(bounds, isotropic=self.isotropic, margin=self.margin)
        elif self.geometry_normalization not in FITTED_RULES:
            norms.transform = None
        return self

    # ------------------------------------------------------------------ 2.-3. applying
    def transform_for(self, gin: Geometry, gq: Geometry) -> NormalizeTransform:
        """The coordinate transform of a case (raw 3-D geometries)."""
        if self.geometry_normalization in FITTED_RULES:
            if self.normalizers.transform is None:
                raise DatasetError("Preprocessor: the dataset coordinate transform is not fitted (call fit() on the "
                                   "training cases, or load a fitted state)")
            return self.normalizers.transform
        if self.geometry_normalization == "case":
            return fit_box_transform([gin.bounds, gq.bounds], isotropic=self.isotropic, margin=self.margin)
        if self.geometry_normalization == "body_case":
            return fit_box_transform([body_box(gin, self.body_margins)], isotropic=self.isotropic, margin=self.margin)
        d = gin.dim
        if isinstance(self.geometry_normalization, Mapping):
            return fixed_transform(self.geometry_normalization, d)
        return NormalizeTransform(torch.zeros(d, dtype=torch.float64), torch.ones(d, dtype=torch.float64))

    def apply(self, gin: Geometry, gq: Geometry, meta: Optional[dict] = None,
              transform: Optional[NormalizeTransform] = None) -> tuple[Sample, NormalizeTransform]:
        """Raw 3-D geometries of a case -> (normalised Sample, its transform (d,)).
        ``transform``: the case's transform when ``gin``/``gq`` are parts of the case (rows of
        a packed store) whose own bounds must not define it."""
        T = self.transform_for(gin, gq) if transform is None else transform
        gin, gq = T.apply_geometry(gin), T.apply_geometry(gq)
        if self.dim == 2:  # 2-D cases: drop the flat z (raw geometries are always 3-D)
            if not (gin.is_2d and gq.is_2d):
                raise DatasetError(f"{gin.source or gin.name}: the model takes 2-D points; this case is 3-D")
            gin, gq = drop_z(gin), drop_z(gq)
            T = NormalizeTransform(T.shift[:2], T.scale[:2])
        if self.normalizers.fields:
            gin = gin.replace(fields={n: self.normalizers.encode(n, v) for n, v in gin.fields.items()})
            gq = gq.replace(fields={n: v if is_reserved(n) else self.normalizers.encode(n, v) for n, v in gq.fields.items()})
        gin.weights, gq.weights  # noqa: B018  computed once here, not every epoch
        return Sample(gin, gq, meta=dict(meta or {})), T

    def prepare(self, geometry: Geometry, queries: Optional[Geometry] = None) -> tuple[Sample, NormalizeTransform]:
        """A read geometry (with the input fields) and optional query geometry (default: the
        same points; target fields optional) -> (normalised Sample, transform), as in training."""
        gin, gq = self.split_geometries(geometry, queries, targets_required=False)
        return self.apply(gin, gq)

    def decode(self, values: Tensor, names: Optional[Sequence[str]] = None) -> Tensor:
        """Normalised values of the fields ``names`` (default: the targets) side by side,
        (Q, ΣC) -> physical values."""
        names = self.targets if names is None else list(names)
        if not self.normalizers.fields:
            return values
        return self.normalizers.decode_concat(names, values)

    def target_widths(self) -> list[int]:
        """Channels of each target (from the fitted normalisers; 1 when not normalised)."""
        return [self.normalizers[n].channels if n in self.normalizers else 1 for n in self.targets]

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Plain types and tensors only (loads with ``torch.load(weights_only=True)``)."""
        return {"inputs": list(self.inputs), "targets": list(self.targets),
                "geometry_normalization": self.geometry_normalization, "isotropic": self.isotropic,
                "margin": self.margin, "dim": self.dim, "normalizers": self.normalizers.state_dict(),
                **({"crop": self.crop} if self.crop is not None else {}),
                "body_margins": {k: list(v) for k, v in self.body_margins.items()},
                **({"symmetry": self.symmetry} if self.symmetry is not None else {}),
                **({"query_sets": [dict(q) for q in self.query_sets]} if self.query_sets else {})}

    @classmethod
    def from_state_dict(cls, state: Mapping) -> "Preprocessor":
        return cls(state["inputs"], state["targets"], state["geometry_normalization"], state["isotropic"],
                   state["margin"], state["dim"], DatasetNormalizers.from_state_dict(state["normalizers"]), state.get("crop"),
                   body_margins=state.get("body_margins"), symmetry=state.get("symmetry"), query_sets=state.get("query_sets"))

    def __repr__(self) -> str:
        return (f"Preprocessor(inputs={self.inputs}, targets={self.targets}, geometry_normalization="
                f"{self.geometry_normalization!r}, dim={self.dim}, {self.normalizers!r})")
