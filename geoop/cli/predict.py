"""``geoop predict``: a trained model's fields on a new geometry, in its own coordinates.

``geoop predict --checkpoint C --geometry FILE [--query POINTS | --on MESH] --out OUT.vtu``
``geoop predict --checkpoint C --geometry STORE --case NAME --out OUT.vtu`` (a packed case)

The input geometry (FILE, with the model's input fields) and the queries are prepared by
the checkpoint's :class:`~geoop.data.preprocess.Preprocessor`, the code that prepared the
training cases (coordinate normalisation: one dataset-wide transform, one per case fitted
on the input and query bounds, or none; field normalisation), the model answers at the query points
(``--query``: any point file; ``--on``: a mesh whose cells are kept; neither: the points of
FILE), the fields are decoded to physical units and written onto the query points in their
ORIGINAL coordinates. When the query file already holds a target field (a ground truth),
``<name>_true`` and ``<name>_error`` are written too and the relative L2 error is printed.

Memory stays bounded at any number of queries: they are answered in chunks of
``--chunk-size`` and decoded into one array per field, written once. Under
``torchrun --nproc_per_node N -m geoop predict ...`` the N ranks split the input geometry
(domain parallelism, :class:`geoop.distributed.DomainParallel`) and the queries; rank 0
writes the file.

When the checkpoint's config names coefficient metrics (``data.metrics``, see
:mod:`geoop.train.metrics`), the coefficients of the predicted field on the input surface
(and of the true field, with their errors, when the queries hold it) are printed and written
to ``OUT.coefficients.json`` beside the field file. Per-case reference values
(``"manifest:..."``) come from the ``manifest.json`` beside the geometry file, for the case
named by ``--case`` or found from the file name.

Extrapolation is reported as training reports it (:mod:`geoop.models.extrapolation`): the
fractions of query and input points outside the latent window and of latent nodes with empty
encoder balls are in the output JSON (``"extrapolation"``); above the threshold a warning is
printed on stderr and listed under ``"warnings"``. A prediction with NaN/Inf values is an
error (nothing is written); the memory of the latent grid and the neighbourhoods is
estimated first and refused above the machine's available memory.

An ensemble checkpoint (``[model] ensemble = K``) writes the ensemble mean as ``<name>``, its
standard deviation (temperature-calibrated by ``geoop calibrate``) as ``<name>_std``, and the
coefficients' std over the members (``coefficients_std``, ``coefficients_members``).

A model trained on several query sets per case (``data.queries``) answers with the fields of
one set (``--query-set NAME``; default: the set read from the same file pattern as the
input), written under their own names (``p``, ``U``...; an ensemble's ``p_std``...).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Optional

import torch

__all__ = ["add_parser", "run", "predict_geometry"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("predict", help="predict fields on a geometry with a trained checkpoint",
                              description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="checkpoint written by geoop train (last.pt / best.pt)")
    p.add_argument("--geometry", required=True, help="input geometry file (with the model's input fields), or a packed "
                                                     "store with --case (its queries: the case's query points)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--query", help="file of query points (xyz, npz, vtp, ...)")
    g.add_argument("--on", help="mesh to write the prediction on (its cells are kept)")
    p.add_argument("--out", required=True, help="output file (.vtu, .vtp, .vtk, ...)")
    p.add_argument("--chunk-size", type=int, default=65536, help="queries decoded at a time")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar over the queries (default: when stderr is a terminal)")
    p.add_argument("--query-set", default=None, help="a model trained on several query sets per case: the set whose "
                                                     "fields to predict (default: the set read from the input file)")
    p.add_argument("--case", default=None, help="case name in the manifest beside --geometry (per-case reference values "
                                                "of the coefficient metrics; default: found from the file name)")
    return p


def predict_coefficients(trained, geometry, result, geometry_path, case=None, members=None, manifest_dir=None):
    """Coefficients of the prediction (and truth) in ``result`` on the input surface
    ``geometry``, or None when the checkpoint names no metrics. Returns a JSON-able dict.
    The per-case reference values come from ``manifest_dir`` (default: the folder of
    ``geometry_path``)."""
    from ..train.metrics import CoefficientMetrics
    from .evaluate import _stacked

    dcfg = dict(trained.config.get("data") or {})
    if not dcfg.get("metrics"):
        return None
    gpath = Path(geometry_path)
    root = gpath.parent if manifest_dir is None else Path(manifest_dir)
    metrics = CoefficientMetrics(dcfg["metrics"], dcfg.get("metrics_reference") or {}, root, trained.targets)
    if case is None:
        case = metrics.case_for_file(gpath)
    pred, true, cols = _stacked(result, trained.targets)
    pp, tp = metrics.case_coefficients(str(case), geometry, result.points, pred, true, cols)
    out = {"case": case, "coefficients": pp, "reference": metrics.case_reference(str(case))}
    if members:  # an ensemble: the coefficients of every member, their mean and std
        from ..train.calibration import field_temperature, member_coefficients

        T = field_temperature(trained.model, trained.targets, members, metrics.field)
        dist = member_coefficients(metrics, str(case), geometry, result.points, members, trained.targets, T)
        out["coefficients_std"], out["coefficients_members"] = dist["std"], dist["members"]
    if tp is not None:
        out["true"] = tp
        out["abs_error"] = {k: abs(pp[k] - tp[k]) for k in pp}
    return out


def _stream_fields(model, trained, gin, qpts, x, lf, chunk_size, dtype, progress):
    """The target fields at ``qpts`` in physical units, ``{name: (Q, c)}``: the queries are
    answered chunk by chunk (:func:`geoop.distributed.stream_query`) and each chunk is decoded
    straight into one preallocated array per field (no second copy of all outputs). None on
    the ranks of a domain-parallel run that do not write."""
    from ..distributed.stream import stream_query

    norm = trained.normalizers
    widths = [norm[n].channels if norm and n in norm else 1 for n in trained.targets]
    writer = getattr(model, "rank", 0) == 0
    out = {n: torch.empty((qpts.shape[0], c), dtype=dtype) for n, c in zip(trained.targets, widths)} if writer else None

    def write(q0, q1, v):
        c0 = 0
        for n, c in zip(trained.targets, widths):
            f = v[:, c0:c0 + c]
            out[n][q0:q1] = norm.decode(n, f) if norm and n in norm else f
            c0 += c

    stream_query(model, gin, qpts, x, chunk_size=chunk_size, latent_features=lf, write=write, progress=progress, desc="predict")
    return out


def predict_geometry(trained, geometry, queries=None, chunk_size: int = 65536, model=None, progress=None,
                     members_out=None, extrapolation: Optional[dict] = None):
    """Prediction of ``trained`` (:class:`geoop.train.run.TrainedModel`) on ``geometry``
    (input fields required) at ``queries`` (a Geometry; default: ``geometry``). Returns
    ``queries`` (original coordinates, cells kept) with the predicted target fields, plus
    ``<name>_true``/``<name>_error`` when ``queries`` held the target already, and a dict of
    relative L2 errors for those. ``model``: what answers (default ``trained.model``; a
    :class:`geoop.distributed.DomainParallel` under torchrun, then only its rank 0 gets the
    result, the others ``(None, {})``); ``progress``: a progress bar (None: on a TTY).

    The geometries are prepared by the checkpoint's
    :class:`~geoop.data.preprocess.Preprocessor` (coordinates, fields), the very code that
    prepared the training cases; the model's inputs by name and latent features are
    assembled from the prepared input geometry; the prediction is decoded by its normalisers.

    An ensemble checkpoint (``[model] ensemble = K``) writes the ensemble mean as ``<name>`` and
    its (calibrated) standard deviation as ``<name>_std``; ``members_out`` (a dict), when
    given, receives every member's fields ``{name: (K, Q, c)}`` in physical units.

    ``extrapolation``: a dict that receives the extrapolation report of the prepared input
    and query points (:func:`geoop.models.extrapolation.extrapolation_report`) and its
    ``"warnings"`` (:func:`~geoop.models.extrapolation.extrapolation_messages`).

    Raises :class:`~geoop.errors.MemoryBudgetError` before any allocation when the latent
    grid and the neighbourhoods would not fit, and :class:`~geoop.errors.ShapeError` when the
    prediction holds NaN/Inf (a broken model is never written out)."""
    from ..errors import FieldError, ShapeError
    from ..train.resources import check_memory, model_plan

    q = geometry if queries is None else queries
    where = geometry.source or geometry.name or "geometry"
    pre = trained.preprocessor
    for n in pre.inputs:
        if n not in geometry.fields and n not in geometry.cell_fields:
            raise FieldError(f"{where}: the model needs the input field {n!r}, which the file lacks; "
                             f"available: {sorted(geometry.fields)}")
    sample, _ = pre.prepare(geometry, q)
    gin, m = sample.geometry, trained.model
    qpts = sample.queries.points
    check_memory(model_plan(m), f"predicting {where}", "cpu", batch_size=1, training=False, n_points=gin.n_points,
                 n_queries=min(int(qpts.shape[0]), max(int(chunk_size), 1)))
    if extrapolation is not None:
        from ..models.extrapolation import extrapolation_messages, extrapolation_report

        extrapolation.update(extrapolation_report(m, gin.points, qpts))
        extrapolation["warnings"] = extrapolation_messages(extrapolation, where)
    if trained.inputs:  # features the trainer assembled (a checkpoint of a flat model config)
        x = torch.cat([gin.fields[n] if gin.fields[n].dim() == 2 else gin.fields[n][:, None] for n in trained.inputs], 1).float()
    else:  # the model's inputs by name (None when it takes none)
        x = m.point_features(gin)
    lf = None
    if m.latent_feature_names:
        lf = m.latent_features(gin)[0]
    elif trained.data.get("latent_sdf"):  # a hand-given SDF channel (flat model config)
        from ..models.features import LatentSDF

        lf = LatentSDF(m).features(gin)
    if getattr(m, "is_ensemble", False) and model is None:  # mean, <name>_std and the members (geoop.train.calibration)
        from ..train.calibration import ensemble_fields

        out, std, members = ensemble_fields(m, trained.normalizers, trained.targets, gin, sample.queries.points, x, lf,
                                            chunk_size, q.dtype)
        out.update({f"{n}_std": v for n, v in std.items()})
        if members_out is not None:
            members_out.update(members)
    else:
        out = _stream_fields(model or m, trained, gin, sample.queries.points, x, lf, chunk_size, q.dtype, progress)
    if out is None:  # a non-writing rank of a domain-parallel prediction
        return None, {}
    for n, v in out.items():
        if not bool(torch.isfinite(v).all()):
            bad = int((~torch.isfinite(v)).any(1).sum()) if v.dim() == 2 else int((~torch.isfinite(v)).sum())
            raise ShapeError(f"{where}: the prediction of {n!r} is non-finite (NaN/Inf) at {bad} of {v.shape[0]} points; "
                             f"the model {trained.checkpoint} or the input fields are broken; nothing was written")
    errors = {}
    for n in trained.targets:
        c = out[n].shape[1]
        if n in q.fields and q.fields[n].shape[1] == c:
            t = q.fields[n]
            out[f"{n}_true"] = t
            out[f"{n}_error"] = out[n] - t
            den = float(t.double().norm())
            errors[n] = float((out[n].double() - t.double()).norm()) / den if den > 0 else math.inf
    keep = {k: v for k, v in q.fields.items() if k not in out}
    return q.replace(fields={**keep, **out}), errors


def _choose_set(trained, name):
    """The query set ``name`` of a multi-set model, or the one read from the input-file pattern."""
    from ..errors import ConfigError

    pre = trained.preprocessor
    if name is None:
        inp = (trained.config.get("data") or {}).get("input_file")
        same = [q["name"] for q in pre.query_sets if q["file"] == inp]
        if len(same) != 1:
            raise ConfigError(f"the model predicts the query sets {pre.set_names}; choose one with --query-set")
        return same[0]
    if name not in pre.set_names:
        raise ConfigError(f"--query-set {name!r}: the model's query sets are {pre.set_names}")
    return name


def run(args) -> int:
    from .._atomic import atomic_write_json
    from ..data.store import CaseStore, is_store
    from ..geometry.io import read, write
    from ..train.distributed import cleanup_distributed, init_distributed
    from ..train.run import load_trained

    qfile = args.query or args.on
    manifest_dir = None
    if is_store(args.geometry):  # a case of a packed store: its input geometry, and its queries unless given
        from ..errors import ConfigError

        store = CaseStore(args.geometry)
        if not args.case:
            raise ConfigError(f"geoop predict: --geometry {args.geometry} is a packed store; name the case with --case "
                              f"(cases: {list(store.cases)[:5]}...)")
        trained = load_trained(args.checkpoint)
        geometry, packed_queries = store.read_case(args.case, trained.preprocessor.inputs, trained.preprocessor.targets)
        queries = read(qfile) if qfile else packed_queries
        manifest_dir = args.geometry
    else:
        geometry = read(args.geometry)  # the user's files first: a bad one fails before any model work
        queries = read(qfile) if qfile else None
        trained = load_trained(args.checkpoint)
    if args.query and queries is not None:
        queries = queries.replace(cells={}, cell_fields={})  # points only
    chosen = None
    pre = trained.preprocessor
    if pre is not None and pre.set_names:
        if pre.geometry_normalization == "case":
            from ..errors import ConfigError

            raise ConfigError(f"{args.checkpoint}: a model of several query sets trained with geometry_normalization="
                              f"'case' (fitted on the input and ALL the sets' bounds) cannot be applied to one query file; "
                              f"use geoop evaluate on the case folder, or train with 'dataset', 'body' or 'body_case'")
        chosen = _choose_set(trained, args.query_set)
        spec = pre.query_sets[pre.set_names.index(chosen)]
        q = geometry if queries is None else queries
        # a truth in the query file, under the set's qualified names
        queries = q.replace(fields={**q.fields, **{f"{chosen}/{t}": q.fields[t] for t in spec["targets"] if t in q.fields}})
    elif args.query_set is not None:
        from ..errors import ConfigError

        raise ConfigError(f"--query-set {args.query_set!r}: the model {args.checkpoint} has one query set")
    info = init_distributed(torch.device("cpu"))  # under torchrun: the ranks share the geometry and the queries
    try:
        model = None
        if info.is_distributed:
            from ..distributed.domain import DomainParallel

            model = DomainParallel(trained.model)
        extra_report: dict = {}
        members = {}
        result, errors = predict_geometry(trained, geometry, queries, chunk_size=args.chunk_size, model=model,
                                          progress=args.progress, members_out=members, extrapolation=extra_report)
        if result is None:
            return 0
        for w in extra_report.get("warnings", []):
            print(f"geoop predict: warning: {w}", file=sys.stderr)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        coef = None
        if chosen is not None:
            metrics_field = str((trained.config.get("data") or {}).get("metrics_reference", {}).get("field", ""))
            if metrics_field.partition("/")[0] == chosen:  # the coefficients of the surface set
                coef = predict_coefficients(trained, queries, result, args.geometry, getattr(args, "case", None), members,
                                            manifest_dir=manifest_dir)
            pre_ = f"{chosen}/"
            names = set(pre.set_names)
            result = result.replace(fields={(k[len(pre_):] if k.startswith(pre_) else k): v for k, v in result.fields.items()
                                            if k.startswith(pre_) or k.partition("/")[0] not in names})
            errors = {k[len(pre_):]: v for k, v in errors.items() if k.startswith(pre_)}
        else:
            coef = predict_coefficients(trained, geometry, result, args.geometry, getattr(args, "case", None), members,
                                        manifest_dir=manifest_dir)
        write(result, out)
        extra = {}
        if coef is not None:
            cpath = out.with_name(out.stem + ".coefficients.json")
            atomic_write_json(cpath, coef)
            extra = {"coefficients": coef["coefficients"], **({"coefficients_std": coef["coefficients_std"]} if members else {}),
                     **({"coefficient_abs_error": coef["abs_error"]} if "abs_error" in coef else {}),
                     "coefficients_file": str(cpath)}
        fields = trained.targets if chosen is None else [t.partition("/")[2] for t in trained.targets if t.startswith(f"{chosen}/")]
        print(json.dumps({"out": str(out), "points": result.n_points, "fields": fields,
                          **({"query_set": chosen} if chosen is not None else {}),
                          **({"rel_l2": errors} if errors else {}), **({"ranks": info.world_size} if info.is_distributed else {}),
                          **extra, "extrapolation": {k: v for k, v in extra_report.items() if k != "warnings"},
                          **({"warnings": extra_report["warnings"]} if extra_report.get("warnings") else {})}))
        return 0
    finally:
        cleanup_distributed(info)
