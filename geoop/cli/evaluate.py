"""``geoop evaluate --checkpoint C CASES/ [--split test]``: a trained model on a folder of cases
(or a packed store, ``geoop data pack``: its cases are read whole from the store).

The model is loaded once and every case is predicted in this one process (no per-case
start-up): cases are found with the checkpoint's ``input_file``/``query_file`` patterns
(:func:`geoop.data.folder.discover_cases`), the split comes from the folder's
``split.json``/``manifest.json`` (``--split all``: every case), each case goes through the
same path as ``geoop predict`` (:func:`geoop.cli.predict.predict_geometry`) and its
prediction is written to ``OUT/<case>_pred.<ext>`` with ``<name>_true``/``<name>_error``.

Reported per case and as the mean over cases (printed, and written to
``OUT/evaluation.json`` and ``OUT/evaluation.csv``): the relative L2 error of every target
field, and, when the checkpoint's config names coefficient metrics
(``data.metrics``, :mod:`geoop.train.metrics`), the predicted and true coefficients, their
absolute errors, and over the cases their MAE and R^2. Extrapolation is reported per case as
``geoop predict`` reports it (``"extrapolation"`` in ``evaluation.json``, a warning on stderr
and under ``"warnings"`` for every case above the threshold).

For a 3-D body with ``cd`` among the metrics, the drag error of every case is split exactly over the body regions of
:func:`geoop.physics.body_regions` (front, roof, slant/rear, base, underbody) and the share
of the summed absolute drag error from each region is reported.

A model trained on several query sets per case (``data.queries``) predicts all sets at
once; each set's prediction is written to ``OUT/<case>_<set>_pred.<ext>`` (the set's cells
kept) with the set's fields under their own names. ``--split train test`` evaluates
several splits, each in ``OUT/<split>``.

An ensemble checkpoint adds each field's ``<name>_std`` (with query sets: in each set's
file, beside the set's fields) and a ``calibration`` section (interval coverage, CRPS,
Spearman of std vs error; :mod:`geoop.train.calibration`; with query sets per target
``<set>/<field>`` over its own set's points), the coefficients' std and the coverage of
``mean ± 2 std``, and ``OUT/reliability.png``.
"""
from __future__ import annotations

import argparse
import csv
import io
import math
import sys
from pathlib import Path

__all__ = ["add_parser", "run", "evaluate_folder"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("evaluate", help="predict every case of a folder and tabulate field and coefficient errors",
                              description=__doc__.splitlines()[0])
    p.add_argument("cases", help="folder of cases (the layout the model was trained on), or a packed store")
    p.add_argument("--checkpoint", required=True, help="checkpoint written by geoop train (last.pt / best.pt)")
    p.add_argument("--split", default=["test"], nargs="+", choices=("train", "val", "test", "all"),
                   help="which cases (from split.json / manifest.json; default test); several: one report each")
    p.add_argument("--out", default=None, help="folder for predictions and tables (default: CASES/evaluation)")
    p.add_argument("--chunk-size", type=int, default=65536, help="queries decoded at a time")
    return p


def _split(root: Path, names, split: str, trained_split=None) -> list:
    """The cases of ``split``: from the folder's split.json / manifest.json, else from the split
    the checkpoint was trained with (``trained_split``, recorded by ``geoop train``: a seeded
    split reproduced exactly, whatever cases were added to the folder since; new cases belong
    to no split)."""
    from ..data.folder import _load_manifest, resolve_split
    from ..errors import DatasetError

    if split == "all":
        return list(names)
    man = _load_manifest(root, None)
    if man is None and trained_split:
        man = dict(trained_split)
    if man is None:
        raise DatasetError(f"{root}: no split.json / manifest.json with a split, and the checkpoint records none; "
                           "use --split all to evaluate every case")
    part = resolve_split(list(names), manifest=man)
    chosen = [c for c in names if part.get(c) == split]
    if not chosen:
        raise DatasetError(f"{root}: no {split!r} case in the split (cases: {len(names)}; splits: {sorted(set(part.values()))})")
    return chosen


def evaluate_folder(checkpoint, cases_dir, split: str = "test", out_dir=None, chunk_size: int = 65536, log=print) -> dict:
    """Predict every case of ``split`` in ``cases_dir`` with one loaded model; returns the
    report ``{"cases": [row, ...], "mean": {...}, "coefficients": {...}}`` (also written)."""
    import numpy as np

    from .._atomic import atomic_write_json, atomic_write_text
    from ..data.folder import CaseFiles, discover_cases
    from ..data.store import CaseStore, is_store
    from ..errors import DatasetError
    from ..geometry.io import read, write
    from ..train.metrics import CoefficientMetrics
    from ..train.run import load_trained
    from .predict import predict_geometry

    root = Path(cases_dir)
    trained = load_trained(checkpoint)
    dcfg = dict(trained.config.get("data") or {})
    pre = trained.preprocessor
    set_names = pre.set_names if pre is not None else []
    store = None
    if is_store(root):  # a packed store: its cases, read whole from their arrays
        if set_names:
            raise DatasetError(f"{root}: a packed store holds one query geometry per case; the model has query sets "
                               f"{set_names}: evaluate it on the case folder")
        store = CaseStore(root)
        cases, problems = {n: CaseFiles(n, Path(i.files["input"]), Path(i.files["query"])) for n, i in store.cases.items()}, []
    elif set_names:
        from ..data.folder import discover_set_cases

        cases, problems = discover_set_cases(root, dcfg.get("input_file"), [q["file"] for q in pre.query_sets])
    else:
        cases, problems = discover_cases(root, dcfg.get("input_file"), dcfg.get("query_file"))
    if not cases:
        raise DatasetError(f"{root}: no case found with input_file={dcfg.get('input_file')!r}, query_file={dcfg.get('query_file')!r}")
    names = _split(root, list(cases), split, (trained.data or {}).get("split"))
    out = Path(out_dir) if out_dir is not None else root / "evaluation"
    out.mkdir(parents=True, exist_ok=True)
    metrics = None
    if dcfg.get("metrics"):
        metrics = CoefficientMetrics(dcfg["metrics"], dcfg.get("metrics_reference") or {}, root, trained.targets)
    rows, warnings_, extrapolation = [], [], {}
    uq = _Uncertainty(trained, metrics) if getattr(trained.model, "is_ensemble", False) else None
    for name in names:
        cf = cases[name]
        if store is not None:
            geometry, queries = store.read_case(name, pre.inputs, pre.targets)
        else:
            geometry = read(cf.input)
        surface, surface_rows, set_parts = geometry, None, None
        members = {} if uq is not None else None
        ex: dict = {}
        if set_names:  # every set at once, written per set
            from ..data.preprocess import split_query_sets

            parts = [geometry if f == cf.input else read(f) for f in cf.sets]
            _, queries, sets = pre.read_sets(geometry, parts, name, targets_required=False)
            result, _ = predict_geometry(trained, geometry, queries, chunk_size=chunk_size, members_out=members,
                                             extrapolation=ex)
            errors = {}
            set_parts = split_query_sets(result, set_names)
            for (sname, part), g, f in zip(set_parts.items(), sets, cf.sets):
                ext = Path(f).suffix if Path(f).suffix in (".vtu", ".vtp", ".vtk") else ".vtu"
                write(g.replace(fields=part.fields, cell_fields={}), out / f"{name}_{sname}_pred{ext}")
                for k in part.fields:
                    t = part.fields.get(f"{k}_true")
                    if t is not None and not k.endswith(("_true", "_error", "_std")):
                        den = float(t.double().norm())
                        errors[f"{sname}/{k}"] = float((part.fields[k].double() - t.double()).norm()) / den if den else math.inf
            if metrics is not None:  # the coefficients' surface: the set of their pressure field
                i = set_names.index(metrics.field.partition("/")[0])
                surface = sets[i]
                r0 = sum(g.n_points for g in sets[:i])
                surface_rows = slice(r0, r0 + surface.n_points)
        else:
            if store is None:
                queries = geometry if cf.same_file else read(cf.query)
            result, errors = predict_geometry(trained, geometry, queries, chunk_size=chunk_size, members_out=members,
                                              extrapolation=ex)
            ext = Path(cf.query).suffix if Path(cf.query).suffix in (".vtu", ".vtp", ".vtk") else ".vtu"
            write(result, out / f"{name}_pred{ext}")
        for w in ex.get("warnings", []):
            warnings_.append(f"{name}: {w}")
            print(f"geoop evaluate: warning: {name}: {w}", file=sys.stderr)
        extrapolation[name] = {k: v for k, v in ex.items() if k != "warnings"}
        row = {"case": name, **{f"rel_l2_{k}": v for k, v in errors.items()}}
        if metrics is not None:
            pred, true, cols = _stacked(result, trained.targets)
            qpts = result.points
            if surface_rows is not None:
                pred, true, qpts = pred[surface_rows], None if true is None else true[surface_rows], qpts[surface_rows]
            pp, tp = metrics.case_coefficients(name, surface, qpts, pred, true, cols)
            if tp is not None and "cd" in metrics.names and surface.dim == 3 and not surface.is_2d:
                for region, v in metrics.drag_regions(name, surface, qpts, pred, true, cols).items():
                    row[f"cd_error_{region}"] = v
            if tp is not None:
                metrics.add(name, pp, tp)
            for c in metrics.names:
                row[f"{c}_pred"] = pp[c]
                if tp is not None:
                    row[f"{c}_true"] = tp[c]
                    row[f"{c}_abs_error"] = abs(pp[c] - tp[c])
        if uq is not None:
            uq.add(name, surface, result, members, row, set_parts, surface_rows)
        rows.append(row)
    keys = [k for k in rows[0] if k != "case"]
    mean = {k: float(np.mean([r[k] for r in rows if k in r])) for k in keys if any(k in r for r in rows)}
    report = {"checkpoint": str(checkpoint), "cases_dir": str(root), "split": split, "n_cases": len(rows), "cases": rows,
              "mean": mean, "skipped": [list(p) for p in problems], "extrapolation": extrapolation,
              **({"warnings": warnings_} if warnings_ else {})}
    if metrics is not None:
        report["coefficients"] = metrics.summary()
        shares = _region_shares(rows)
        if shares:
            report["drag_error_share"] = shares
    if uq is not None:
        report.update(uq.report(out / "reliability.png"))
    atomic_write_json(out / "evaluation.json", report)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["case"] + keys)
    w.writeheader()
    for r in rows:
        w.writerow(r)
    w.writerow({"case": "mean", **mean})
    atomic_write_text(out / "evaluation.csv", buf.getvalue())
    log(f"split {split!r}: {len(rows)} cases")
    log(_table(rows, mean, keys, report.get("coefficients")))
    if report.get("drag_error_share"):
        log("share of the drag error by body region (sum over cases of |cd error| in the region / sum over regions): "
            + ", ".join(f"{k} {100 * v:.1f}%" for k, v in report["drag_error_share"].items()))
    if uq is not None:
        log(uq.summary(report))
    log(f"predictions, evaluation.json and evaluation.csv in {out}")
    return report


class _Uncertainty:
    """Calibration of an ensemble over the evaluated cases (:mod:`geoop.train.calibration`):
    per field, and for the metrics' pressure field on the surface nodes (``p@surface``); the
    coefficients' member spread and the coverage of ``mean ± 2 std``. With query sets each
    target ``<set>/<field>`` is scored on its own set's points only, and the coefficients'
    surface is the rows of their field's set."""

    def __init__(self, trained, metrics):
        self.trained, self.metrics, self.fields, self.coef = trained, metrics, {}, []

    def _put(self, key, err, std, true):
        d = self.fields.setdefault(key, {"err": [], "std": [], "true": []})
        for k, v in (("err", err), ("std", std), ("true", true)):
            d[k].append(v.detach().double().cpu().numpy())

    def add(self, name, surface, result, members, row, set_parts=None, surface_rows=None) -> None:
        """One case: ``result`` (all queries, fields ``<target>``, ``_std``, ``_true``,
        ``_error``), ``members`` {target: (K, Q, c)}; with query sets ``set_parts`` (the
        result split by :func:`~geoop.data.preprocess.split_query_sets`) and the coefficients'
        ``surface`` at rows ``surface_rows`` of the result."""
        from ..train.calibration import field_temperature, member_coefficients
        from ..train.metrics import match_surface_nodes

        if set_parts is None:
            per = [(n, result.fields, n) for n in self.trained.targets]
        else:
            per = [(n, set_parts[n.partition("/")[0]].fields, n.partition("/")[2]) for n in self.trained.targets]
        for n, f, k in per:
            if f"{k}_error" in f:
                self._put(n, f[f"{k}_error"], f[f"{k}_std"], f[f"{k}_true"])
                row[f"mean_std_{n}"] = float(f[f"{k}_std"].double().mean())
        m = self.metrics
        if m is None:
            return
        f, pts = result.fields, result.points
        if surface_rows is not None:  # the set of the metrics' field: its rows are the surface's nodes
            members = {n: v[:, surface_rows] for n, v in members.items()}
            pts = pts[surface_rows]
        elif f"{m.field}_error" in f:
            rows = match_surface_nodes(surface.points, pts, where=f"{name} (surface nodes)")
            self._put(f"{m.field}@surface", f[f"{m.field}_error"][rows], f[f"{m.field}_std"][rows], f[f"{m.field}_true"][rows])
        T = field_temperature(self.trained.model, self.trained.targets, members, m.field)
        dist = member_coefficients(m, name, surface, pts, members, self.trained.targets, T)
        for c in m.names:
            row[f"{c}_std"] = dist["std"][c]
            if f"{c}_true" in row:
                self.coef.append((c, row[f"{c}_pred"], row[f"{c}_true"], dist["std"][c]))

    def report(self, png) -> dict:
        from ..train.calibration import calibration_metrics, reliability_diagram

        out = {"calibration": calibration_metrics(self.fields),
               "temperature": [float(t) for t in self.trained.model.temperature]}
        cov = {}
        for c in dict.fromkeys(k for k, *_ in self.coef):
            hits = [abs(p - t) <= 2 * s for k, p, t, s in self.coef if k == c]
            cov[c] = float(sum(hits) / len(hits))
        if cov:
            out["coefficient_coverage_2std"] = cov
        if self.fields:
            out["reliability_diagram"] = str(reliability_diagram(self.fields, png, "ensemble: observed vs nominal coverage"))
        return out

    @staticmethod
    def summary(report) -> str:
        lines = ["calibration (coverage of the 50/90/95 % intervals, CRPS, Spearman(std, |error|) points / cases):"]
        for n, r in report.get("calibration", {}).items():
            lines.append(f"  {n}: {_fmt(r['coverage_50'])} / {_fmt(r['coverage_90'])} / {_fmt(r['coverage_95'])}, "
                         f"CRPS {_fmt(r['crps'])}, Spearman {_fmt(r['spearman_points'])} / {_fmt(r['spearman_cases'])}")
        for c, v in report.get("coefficient_coverage_2std", {}).items():
            lines.append(f"  {c}: true value inside mean ± 2 std in {_fmt(v)} of the cases")
        if "reliability_diagram" in report:
            lines.append(f"  reliability diagram: {report['reliability_diagram']}")
        return "\n".join(lines)


def _stacked(result, targets):
    """(Q, ΣC) prediction and truth (None when the query file had no truth) and columns."""
    import torch

    cols, c0, preds, trues = {}, 0, [], []
    for n in targets:
        v = result.fields[n]
        cols[n] = slice(c0, c0 + v.shape[1])
        c0 += v.shape[1]
        preds.append(v.double())
        trues.append(result.fields.get(f"{n}_true"))
    true = None if any(t is None for t in trues) else torch.cat([t.double() for t in trues], 1)
    return torch.cat(preds, 1), true, cols


def _region_shares(rows) -> dict:
    """``{region: sum_cases |cd error in region| / sum_cases sum_regions |cd error in region|}``."""
    keys = [k for k in rows[0] if k.startswith("cd_error_")] if rows else []
    tot = {k[len("cd_error_"):]: sum(abs(r.get(k, 0.0)) for r in rows) for k in keys}
    s = sum(tot.values())
    return {k: v / s for k, v in tot.items()} if s > 0 else {}


def _fmt(v) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def _table(rows, mean, keys, coef) -> str:
    head = ["case"] + keys
    body = [[r["case"]] + [_fmt(r.get(k, "")) for k in keys] for r in rows] + [["mean"] + [_fmt(mean.get(k, "")) for k in keys]]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths)) for b in body]
    if coef:
        lines.append("coefficients over the cases: " + ", ".join(f"{k} {_fmt(v)}" for k, v in coef.items()))
    return "\n".join(lines)


def run(args) -> int:
    splits = [args.split] if isinstance(args.split, str) else list(dict.fromkeys(args.split))
    for split in splits:
        out = args.out
        if len(splits) > 1:
            out = str(Path(args.out if args.out is not None else Path(args.cases) / "evaluation") / split)
        evaluate_folder(args.checkpoint, args.cases, split, out, args.chunk_size)
    return 0
