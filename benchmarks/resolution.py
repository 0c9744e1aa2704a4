"""Resolution transfer: train on coarse airfoil discretisations, evaluate on 2x and 4x finer ones.

The same airfoils (same seed: the generator draws the shape and angle of attack of case
``i`` before its point counts, so scaling ``n_panels`` and ``n_volume`` changes only the
discretisation) are generated at the base resolution (``n_panels`` 100-140 surface nodes,
``n_volume`` 1500-2500 volume nodes, the demo's) and at ``k`` = 2 and 4 times both counts,
then prepared as in ``benchmarks/incremental.py`` (body frame, free stream and normal as
surface fields, volume cropped to the window). One GINO (the demo's architecture) trains for
``--minutes`` on the base training cases; the test cases are evaluated at every resolution
with all their volume nodes as queries and all their surface nodes as inputs. Reported:
relative L2 per field and its mean, and the ratio of each refinement's error to the base
error (the floor: <= 1.1 at 4x).

``--body``: the same on 3-D car-like bodies (``geoop.data.body3d``, panel method, yaw 0, so
the shape alone sets the flow): surface ``Cp`` from the surface points, the base at
``n_panels`` 800-1400 requested (720-1280 panels: the geodesic mesh has ``20 nu^2``), the
refinements at ``k`` times the panels (only the test cases, except the finest factor under
``--truth finest``); a 20 x 14 x 12 latent box over [-0.6, 0.6] x [-0.35, 0.35] x [-0.3, 0.3],
FNO modes 6. The panel solution of a car is not converged at these panel counts: the suction
peaks at its creases (roof/slant junctions, the sharper corners of low ``roundness``) deepen
with every refinement (a convex edge is a potential-flow singularity), so each resolution's
own ``Cp`` is a different function of the same shape (the "truth gap", relative L2 of the own
``Cp`` against the finest solution sampled at the same nodes, reported per resolution).
``--truth finest`` (default) therefore trains on and scores every resolution against one
function, the finest factor's panel solution sampled at the nodes (closest point on its mesh,
barycentric), as the neural-operator literature subsamples one fine solution for its coarse
data; ``--truth own`` uses each resolution's own solution (then the model, trained on the
base's solution, is scored at 4x against a different field). The report has both columns
for the one trained model.

    python benchmarks/resolution.py --work /tmp/res [--cases 48] [--test 8] [--minutes 3]
        [--epochs 0] [--factors 1 2 4] [--threads 1] [--no-nearest] [--out report.json]
    python benchmarks/resolution.py --work /tmp/res --body --cases 20 --test 4 [--truth finest|own]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

BASE_PANELS = (100, 140)
BASE_VOLUME = (1500, 2500)


def generate(raw: Path, n: int, factor: int, seed: int = 0) -> None:
    """``n`` panel-method airfoils at ``factor`` times the base surface and volume node counts."""
    from geoop.data import airfoil

    if (raw / "manifest.json").exists():
        return
    airfoil.generate(str(raw), n, seed=seed, n_panels=tuple(factor * v for v in BASE_PANELS),
                     n_volume=tuple(factor * v for v in BASE_VOLUME), te_stagnation=True)


BODY_PANELS = (800, 1400)
BODY_DOMAIN = [[-0.6, -0.35, -0.3], [0.6, 0.35, 0.3]]


def generate_body(raw: Path, n: int, factor: int, n_test: int, seed: int = 0) -> dict:
    """``n`` car-like bodies (yaw 0, no volume) at ``factor`` times the base panel count, and
    ``split.json`` with the first ``n_test`` as test (case ``i`` is the same shape for every
    ``n`` and ``factor``: :func:`geoop.data.body3d.generate` draws it from ``[seed, i]``)."""
    from geoop.data import body3d

    if not (raw / "manifest.json").exists():
        body3d.generate(str(raw), n, seed=seed, volume=False, yaw_deg=0.0,
                        n_panels=tuple(factor * v for v in BODY_PANELS))
    entries = json.loads((raw / "manifest.json").read_text())["cases"]
    names = [e["case"] for e in entries]
    (raw / "split.json").write_text(json.dumps({"test": names[:n_test], "train": names[n_test:]}))
    return {"cases": len(names), "test": n_test, "panels": [min(e["n_panels"] for e in entries),
                                                             max(e["n_panels"] for e in entries)]}


def resample_surface_field(points, vertices, faces, values):
    """Values of a piecewise-linear surface field at ``points`` (the closest point on the
    triangle mesh, ``trimesh.proximity.closest_point``, and its barycentric weights).

    Shapes: points (Q, 3), vertices (V, 3), faces (F, 3), values (V,) or (V, C) -> (Q,) or (Q, C)."""
    import numpy as np
    import trimesh

    mesh = trimesh.Trimesh(np.asarray(vertices, dtype=np.float64), np.asarray(faces), process=False)
    closest, _, tri = trimesh.proximity.closest_point(mesh, np.asarray(points, dtype=np.float64))
    bary = trimesh.triangles.points_to_barycentric(mesh.triangles[tri], closest)
    vals = np.asarray(values, dtype=np.float64)[np.asarray(faces)[tri]]  # (Q, 3[, C])
    return np.einsum("qk,qk...->q...", bary, vals)


def reference_truth(src: Path, ref: Path, out: Path, cases) -> dict:
    """``out``: the cases of ``src`` (same files, points and cells) with their ``Cp`` replaced
    by the finer panel solution of the same shapes in ``ref`` sampled at their nodes (point
    data) and centroids (cell data), and ``split.json``; returns the truth gap per case, the
    relative L2 of ``src``'s own ``Cp`` against it over the nodes and area-weighted."""
    import numpy as np

    from geoop import read
    from geoop._atomic import atomic_write_json
    from geoop.data._case_io import write_geometry

    out.mkdir(parents=True, exist_ok=True)
    split = json.loads((src / "split.json").read_text())
    atomic_write_json(out / "split.json", {s: [c for c in names if c in cases] for s, names in split.items()})
    gaps = {}
    for case in cases:
        name = f"{case}_surface.vtp"
        g, r = read(str(src / name)), read(str(ref / name))
        v, f = g.points.double().numpy(), g.cells["triangle"].numpy()
        rv, rf, rcp = r.points.double().numpy(), r.cells["triangle"].numpy(), r.fields["Cp"].double().numpy()
        cp = resample_surface_field(v, rv, rf, rcp)
        own = g.fields["Cp"].double().numpy()
        w = g.weights.double().numpy().reshape(-1, 1)
        gaps[case] = {"nodes": float(np.linalg.norm(own - cp) / np.linalg.norm(cp)),
                      "area": float(np.sqrt(np.sum(w * (own - cp) ** 2) / np.sum(w * cp**2)))}
        if not (out / name).exists():
            cell_cp = resample_surface_field(v[f].mean(axis=1), rv, rf, rcp)
            write_geometry(g.replace(fields={"Cp": cp}, cell_fields={"Cp": cell_cp}), str(out / name))
    return gaps


def body_config(data: Path, out: Path, seed: int, minutes: float) -> dict:
    return {
        "seed": seed, "device": "cpu",
        "data": {"folder": str(data), "inputs": [], "targets": ["Cp"], "train_split": "train", "val_split": "val",
                 "val_fraction": 0.1, "input_file": "{case}_surface.vtp", "geometry_normalization": "none"},
        "model": {"coord_dim": 3, "latent": {"kind": "box", "shape": [20, 14, 12], "domain": BODY_DOMAIN},
                  "encoder": {"radius_cells": 1.6, "mlp": [32, 32]}, "decoder": {"radius_cells": 1.6, "mlp": [32, 32]},
                  "blocks": {"kind": "fno", "width": 24, "modes": [6, 6, 6], "layers": 3}},
        "optim": {"epochs": 10000, "batch_size": 2, "lr": 3e-3, "weight_decay": 1e-4, "warmup": 0.5, "clip": 1.0,
                  "min_lr_ratio": 0.02, "minutes": minutes},
        "output": {"dir": str(out), "save_best": False},
    }


def test_errors(run, folder: Path, cfg) -> dict:
    """Relative L2 of the trained run on the test split of ``folder`` (all nodes): over the
    nodes (``rel_l2``) and weighted by the nodes' quadrature weights (``area/rel_l2``: the
    discretisation's approximation of the L2 norm of the field, which does not change with the
    node distribution)."""
    from geoop.data.folder import MeshFolderDataset
    from geoop.train.run import data_kwargs, input_fields, model_config

    d = cfg["data"]
    test = MeshFolderDataset(str(folder), inputs=input_fields(model_config(cfg), d["inputs"]), targets=d["targets"],
                             split="test", neighbors=run.train_data.neighbors,
                             **{**data_kwargs(cfg), "normalize": run.train_data.normalizers, "subsample": None})
    err = run.trainer.evaluate(test)
    was, run.trainer.weighted_loss = run.trainer.weighted_loss, True
    area = run.trainer.evaluate(test)
    run.trainer.weighted_loss = was
    return {**err, **{f"area/{k}": v for k, v in area.items()}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--cases", type=int, default=48)
    ap.add_argument("--test", type=int, default=8)
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--epochs", type=int, default=0,
                    help="train this many epochs instead of --minutes (runs comparable on a loaded machine)")
    ap.add_argument("--factors", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--body", action="store_true", help="3-D bodies (surface Cp) instead of airfoils")
    ap.add_argument("--nearest", action=argparse.BooleanOptionalAction, default=None,
                    help="airfoils: the decoder's offset to the nearest input node (local.nearest, the demo's "
                         "default: on); bodies predict at their input nodes, where it is 0: not used")
    ap.add_argument("--truth", choices=("finest", "own"), default="finest",
                    help="--body: the Cp every resolution is trained on and scored against: the finest factor's "
                         "panel solution sampled at its nodes (default) or its own panel solution")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    if a.body and a.nearest is not None:
        ap.error("--nearest/--no-nearest: airfoils only (a body's queries are its input nodes)")
    import torch
    from incremental import config, prepare

    from geoop.data.folder import MeshFolderDataset
    from geoop.models.gino import GINO
    from geoop.train.config import resolve_config
    from geoop.train.run import build_run

    torch.set_num_threads(a.threads)
    work = a.work or Path(tempfile.mkdtemp(prefix="geoop-resolution-"))
    info, folders = {}, {}
    refs, gaps = {}, {}
    if a.body:
        ks = sorted(set([1] + a.factors))
        fine = ks[-1]
        for k in ks:  # the training cases at 1x (and at the finest factor for --truth finest), else the test cases
            n = a.cases if k == 1 or (k == fine and a.truth == "finest") else a.test
            t0 = time.perf_counter()
            info[f"{k}x"] = {**generate_body(work / f"body{k}x", n, k, a.test, a.seed), "generate_s": time.perf_counter() - t0}
            folders[k] = work / f"body{k}x"
        have_fine = {p.name[: -len("_surface.vtp")] for p in folders[fine].glob("*_surface.vtp")}
        for k in ks:
            cases = sorted(have_fine & {p.name[: -len("_surface.vtp")] for p in folders[k].glob("*_surface.vtp")})
            refs[k] = work / f"body{k}x-truth{fine}x"
            gaps[f"{k}x"] = reference_truth(folders[k], folders[fine], refs[k], cases)
        raw = body_config(refs[1] if a.truth == "finest" else folders[1], work / f"run-body-{a.truth}", a.seed, a.minutes)
    for k in ([] if a.body else sorted(set([1] + a.factors))):
        t0 = time.perf_counter()
        generate(work / f"raw{k}x", a.cases, k, a.seed)
        info[f"{k}x"] = {**prepare(work / f"raw{k}x", work / f"cases{k}x", a.test), "prepare_s": time.perf_counter() - t0}
        folders[k] = work / f"cases{k}x"
    if not a.body:
        raw = config(folders[1], work / "run", a.seed, a.minutes, (32, 24), (8, 8))
        raw["model"]["local"]["nearest"] = a.nearest is not False
    if a.epochs > 0:
        raw["optim"].update(epochs=a.epochs, minutes=0.0)
    cfg = resolve_config(raw, source="benchmark", dataset_cls=MeshFolderDataset, model_cls=GINO)
    run = build_run(cfg, progress=False)
    hist = run.trainer.fit()
    ks = sorted(set([1] + a.factors))
    train = refs if a.body and a.truth == "finest" else folders
    errors = {f"{k}x": test_errors(run, train[k], cfg) for k in ks}
    base = errors["1x"]["rel_l2"]
    ratios = {k: e["rel_l2"] / base for k, e in errors.items()}
    area_ratios = {k: e["area/rel_l2"] / errors["1x"]["area/rel_l2"] for k, e in errors.items()}
    report = {"data": info, "epochs": len(hist), "minutes": a.minutes if a.epochs <= 0 else None, "threads": a.threads,
              "nearest": None if a.body else a.nearest is not False, "case": "body3d" if a.body else "airfoil",
              "truth": a.truth if a.body else "own", "errors": errors,
              "ratio_to_base": ratios, "area_ratio_to_base": area_ratios}
    if a.body:  # the other truth, the same model; and how far each resolution's own truth is from the finest
        other = folders if a.truth == "finest" else refs
        oerr = {f"{k}x": test_errors(run, other[k], cfg) for k in ks}
        test = json.loads((folders[1] / "split.json").read_text())["test"]
        report["other_truth"] = {"truth": "own" if a.truth == "finest" else "finest", "errors": oerr,
                                 "ratio_to_base": {k: e["rel_l2"] / oerr["1x"]["rel_l2"] for k, e in oerr.items()},
                                 "area_ratio_to_base": {k: e["area/rel_l2"] / oerr["1x"]["area/rel_l2"] for k, e in oerr.items()}}
        report["truth_gap"] = {k: {m: sum(g[c][m] for c in test) / len(test) for m in ("nodes", "area")} | {"cases": {c: g[c] for c in test}}
                               for k, g in gaps.items()}
    text = json.dumps(report, indent=1)
    print(text)
    if a.out:
        a.out.write_text(text)
    fields = [k for k in errors["1x"] if k.startswith("rel_l2/")]
    if a.body:
        o = report["other_truth"]
        print(f"\ntrained on truth {a.truth!r}; columns: Cp rel L2 over the nodes (area-weighted) against each truth\n"
              f"| resolution | surface panels | truth gap own vs finest | vs {a.truth} | / base | vs {o['truth']} | / base |\n"
              "| --- | --- | ---: | ---: | ---: | ---: | ---: |")
        for k, e in errors.items():
            oe, g = o["errors"][k], report["truth_gap"][k]
            print(f"| {k} | {info[k]['panels'][0]}-{info[k]['panels'][1]} | {g['nodes']:.4f} ({g['area']:.4f}) | "
                  f"{e['rel_l2']:.4f} ({e['area/rel_l2']:.4f}) | {ratios[k]:.3f} ({area_ratios[k]:.3f}) | "
                  f"{oe['rel_l2']:.4f} ({oe['area/rel_l2']:.4f}) | {o['ratio_to_base'][k]:.3f} ({o['area_ratio_to_base'][k]:.3f}) |")
        return 0
    print("\n| resolution | surface nodes | volume nodes (cropped) | " + " | ".join(fields)
          + " | mean | / base | area-weighted mean | / base |")
    print("| --- | --- | --- | " + " | ".join("---:" for _ in fields) + " | ---: | ---: | ---: | ---: |")
    for k, e in errors.items():
        print(f"| {k} | {info[k]['surface_nodes'][0]}-{info[k]['surface_nodes'][1]} | "
              f"{info[k]['volume_nodes'][0]}-{info[k]['volume_nodes'][1]} | "
              + " | ".join(f"{e[f]:.4f}" for f in fields) + f" | {e['rel_l2']:.4f} | {ratios[k]:.3f} | "
              f"{e['area/rel_l2']:.4f} | {area_ratios[k]:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
