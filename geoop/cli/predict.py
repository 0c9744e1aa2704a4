"""``geoop predict``: a trained model's fields on a new geometry, in its own coordinates.

``geoop predict --checkpoint C --geometry FILE [--query POINTS | --on MESH] --out OUT.vtu``

The input geometry (FILE, with the model's input fields) is mapped with the geometry
normalisation used in training (stored in the checkpoint: one dataset-wide transform, or one
per case fitted on the input and query bounds), the model answers at the query points
(``--query``: any point file; ``--on``: a mesh whose cells are kept; neither: the points of
FILE), the fields are decoded to physical units and written onto the query points in their
ORIGINAL coordinates. When the query file already holds a target field (a ground truth),
``<name>_true`` and ``<name>_error`` are written too and the relative L2 error is printed.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

__all__ = ["add_parser", "run", "predict_geometry"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("predict", help="predict fields on a geometry with a trained checkpoint",
                              description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="checkpoint written by geoop train (last.pt / best.pt)")
    p.add_argument("--geometry", required=True, help="input geometry file (with the model's input fields)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--query", help="file of query points (xyz, npz, vtp, ...)")
    g.add_argument("--on", help="mesh to write the prediction on (its cells are kept)")
    p.add_argument("--out", required=True, help="output file (.vtu, .vtp, .vtk, ...)")
    p.add_argument("--chunk-size", type=int, default=65536, help="queries decoded at a time")
    return p


def predict_geometry(trained, geometry, queries=None, chunk_size: int = 65536):
    """Prediction of ``trained`` (:class:`geoop.train.run.TrainedModel`) on ``geometry``
    (input fields required) at ``queries`` (a Geometry; default: ``geometry``). Returns
    ``queries`` (original coordinates, cells kept) with the predicted target fields, plus
    ``<name>_true``/``<name>_error`` when ``queries`` held the target already, and a dict of
    relative L2 errors for those."""
    from ..data.normalize import fit_box_transform
    from ..errors import FieldError, ShapeError
    from ..geometry.geometry import NormalizeTransform

    q = geometry if queries is None else queries
    where = geometry.source or geometry.name or "geometry"
    for n in trained.inputs:
        if n not in geometry.fields:
            raise FieldError(f"{where}: the model needs the input field {n!r}, which the file lacks; "
                             f"available: {sorted(geometry.fields)}")
    data = trained.data
    mode = data.get("geometry_normalization", "none")
    if mode == "dataset":
        if trained.normalizers is None or trained.normalizers.transform is None:
            raise FieldError(f"{trained.checkpoint}: the checkpoint lacks the dataset geometry transform")
        T = trained.normalizers.transform
    elif mode == "case":
        T = fit_box_transform([geometry.bounds, q.bounds], isotropic=bool(data.get("isotropic", True)), margin=float(data.get("margin", 0.0)))
    else:
        d = geometry.dim
        T = NormalizeTransform(torch.zeros(d, dtype=torch.float64), torch.ones(d, dtype=torch.float64))
    dim = int(data.get("dim", geometry.dim))

    def prep(g):
        pts = T.apply(g.points.double()).float()
        if pts.shape[1] != dim:
            if dim == 2 and pts.shape[1] == 3 and g.is_2d:
                pts = pts[:, :2]
            else:
                raise ShapeError(f"{g.source or g.name or 'geometry'}: the model takes {dim}-D points, the file has {g.dim}-D points")
        return pts

    # cells are kept: quadrature weights and the latent SDF come from them, as in training
    gin = geometry.replace(points=prep(geometry), normals=None, fields={}, cell_fields={},
                           weights=T.apply_geometry(geometry).weights.float())
    x = None
    if trained.inputs:
        parts = [trained.normalizers.encode(n, geometry.fields[n]) if trained.normalizers and n in trained.normalizers
                 else geometry.fields[n] for n in trained.inputs]
        x = torch.cat(parts, 1).float()
    lf = None
    if data.get("latent_sdf"):
        from ..train.run import LatentSDF

        lf = LatentSDF(trained.model).features(gin)
    with torch.no_grad():
        pred = trained.model.query(gin, prep(q), x=x, chunk_size=chunk_size, latent_features=lf)
    out, errors, c0 = {}, {}, 0
    for n in trained.targets:
        c = trained.normalizers[n].channels if trained.normalizers and n in trained.normalizers else 1
        v = pred[:, c0:c0 + c]
        if trained.normalizers and n in trained.normalizers:
            v = trained.normalizers.decode(n, v)
        c0 += c
        out[n] = v.to(q.dtype)
        if n in q.fields and q.fields[n].shape[1] == c:
            t = q.fields[n]
            out[f"{n}_true"] = t
            out[f"{n}_error"] = out[n] - t
            den = float(t.double().norm())
            errors[n] = float((out[n].double() - t.double()).norm()) / den if den > 0 else math.inf
    keep = {k: v for k, v in q.fields.items() if k not in out}
    return q.replace(fields={**keep, **out}), errors


def run(args) -> int:
    from ..geometry.io import read, write
    from ..train.run import load_trained

    geometry = read(args.geometry)  # the user's files first: a bad one fails before any model work
    qfile = args.query or args.on
    queries = read(qfile) if qfile else None
    trained = load_trained(args.checkpoint)
    if args.query and queries is not None:
        queries = queries.replace(cells={}, cell_fields={})  # points only
    result, errors = predict_geometry(trained, geometry, queries, chunk_size=args.chunk_size)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write(result, out)
    print(json.dumps({"out": str(out), "points": result.n_points, "fields": trained.targets,
                      **({"rel_l2": errors} if errors else {})}))
    return 0
