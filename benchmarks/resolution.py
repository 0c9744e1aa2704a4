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
``n_panels`` 800-1400, refinements at ``k`` times the panels (two surface resolutions:
``--factors 1 2``; a 4x panel solve is slow and the coarser base is too faceted); a 20 x 14
x 12 latent box over [-0.6, 0.6] x [-0.35, 0.35] x [-0.3, 0.3], FNO modes 6.

    python benchmarks/resolution.py --work /tmp/res [--cases 48] [--test 8] [--minutes 3]
        [--factors 1 2 4] [--threads 1] [--no-nearest] [--body] [--out report.json]
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
    ``split.json`` with the first ``n_test`` as test."""
    from geoop.data import body3d

    if not (raw / "manifest.json").exists():
        body3d.generate(str(raw), n, seed=seed, volume=False, yaw_deg=0.0,
                        n_panels=tuple(factor * v for v in BODY_PANELS))
    entries = json.loads((raw / "manifest.json").read_text())["cases"]
    names = [e["case"] for e in entries]
    (raw / "split.json").write_text(json.dumps({"test": names[:n_test], "train": names[n_test:]}))
    return {"cases": len(names), "test": n_test, "panels": [min(e["n_panels"] for e in entries),
                                                             max(e["n_panels"] for e in entries)]}


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
    ap.add_argument("--factors", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--body", action="store_true", help="3-D bodies (surface Cp) instead of airfoils")
    ap.add_argument("--nearest", action=argparse.BooleanOptionalAction, default=True,
                    help="the decoder's offset to the nearest input node (local.nearest, the demo's default)")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    import torch
    from incremental import config, prepare

    from geoop.data.folder import MeshFolderDataset
    from geoop.models.gino import GINO
    from geoop.train.config import resolve_config
    from geoop.train.run import build_run

    torch.set_num_threads(a.threads)
    work = a.work or Path(tempfile.mkdtemp(prefix="geoop-resolution-"))
    info, folders = {}, {}
    if a.body:
        for k in sorted(set([1] + a.factors)):
            t0 = time.perf_counter()
            info[f"{k}x"] = {**generate_body(work / f"body{k}x", a.cases, k, a.test, a.seed),
                             "generate_s": time.perf_counter() - t0}
            folders[k] = work / f"body{k}x"
        raw = body_config(folders[1], work / "run-body", a.seed, a.minutes)
    for k in ([] if a.body else sorted(set([1] + a.factors))):
        t0 = time.perf_counter()
        generate(work / f"raw{k}x", a.cases, k, a.seed)
        info[f"{k}x"] = {**prepare(work / f"raw{k}x", work / f"cases{k}x", a.test), "prepare_s": time.perf_counter() - t0}
        folders[k] = work / f"cases{k}x"
    if not a.body:
        raw = config(folders[1], work / "run", a.seed, a.minutes, (32, 24), (8, 8))
        raw["model"]["local"]["nearest"] = bool(a.nearest)
    cfg = resolve_config(raw, source="benchmark", dataset_cls=MeshFolderDataset, model_cls=GINO)
    run = build_run(cfg, progress=False)
    hist = run.trainer.fit()
    errors = {f"{k}x": test_errors(run, folders[k], cfg) for k in sorted(set([1] + a.factors))}
    base = errors["1x"]["rel_l2"]
    ratios = {k: e["rel_l2"] / base for k, e in errors.items()}
    area_ratios = {k: e["area/rel_l2"] / errors["1x"]["area/rel_l2"] for k, e in errors.items()}
    report = {"data": info, "epochs": len(hist), "minutes": a.minutes, "threads": a.threads,
              "nearest": None if a.body else a.nearest, "case": "body3d" if a.body else "airfoil",
              "errors": errors,
              "ratio_to_base": ratios, "area_ratio_to_base": area_ratios}
    text = json.dumps(report, indent=1)
    print(text)
    if a.out:
        a.out.write_text(text)
    fields = [k for k in errors["1x"] if k.startswith("rel_l2/")]
    if a.body:
        print("\n| resolution | surface panels | Cp rel L2 (nodes) | / base | area-weighted | / base |\n"
              "| --- | --- | ---: | ---: | ---: | ---: |")
        for k, e in errors.items():
            print(f"| {k} | {info[k]['panels'][0]}-{info[k]['panels'][1]} | {e['rel_l2']:.4f} | {ratios[k]:.3f} | "
                  f"{e['area/rel_l2']:.4f} | {area_ratios[k]:.3f} |")
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
