"""``geoop demo``: airfoils end to end in a few minutes on a laptop CPU.

1. generate NACA 4-digit airfoil cases (:func:`geoop.data.airfoil.generate`, vortex panel
   method: surface ``Cp``, volume ``u, v, p``; the trailing-edge node is set to its
   potential-flow stagnation value, ``--no-te-stagnation`` keeps the raw panel value);
2. keep every case in the airfoil's body frame (chord along x) with the free-stream
   direction ``(cos alpha, sin alpha)`` as an input field on the surface nodes
   (``--frame wind`` instead rotates by minus the angle of attack, geometry-only input), and
   crop the volume mesh to the region around the airfoil, ``[-0.5, 1.5] x [-0.75, 0.75]``
   chords;
3. train a GINO with a 2-D box latent grid spanning that window (GNO encoder of the
   airfoil polyline with the free stream and the surface normal as input fields + the signed
   distance on the latent grid, FNO blocks, GNO decoder at the volume points with sub-grid
   features from the airfoil nodes) on ``u, v, p``, for as many epochs as fit in
   ``--minutes`` (the surface nodes are in every epoch's query subsample);
4. predict on airfoils it never saw: the volume fields on their full cropped meshes, and
   the surface pressure coefficient by querying the pressure at the surface nodes
   (``Cp = p`` there), both in physical units;
5. write ``.vtu``/``.vtp`` results (ParaView-ready, with ``*_true`` and ``*_error`` fields),
   PNG pictures and the loss curve, and print the relative L2 error per field on the
   unseen airfoils.

The settings (body frame with the free stream as an input, 320 training airfoils, a 64 x 48
latent over the crop window, sub-grid decoder features, the learning-rate schedule) and the
accuracy each of them bought are recorded in ``docs/experiments.md``.

numpy's and scipy's OpenBLAS threads are limited to ``--threads`` as well: spinning BLAS
threads on a loaded machine slow the panel solves of the data generation down many times.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from pathlib import Path

__all__ = ["add_parser", "run", "prepare_cases", "demo_config"]

log = logging.getLogger(__name__)

WINDOW = (-0.5, 1.5, -0.75, 0.75)  # chords: xmin, xmax, ymin, ymax
PREDICT_S = 15.0  # seconds of the budget kept for prediction and pictures
FRAMES = ("wind", "body")  # see prepare_cases


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("demo", help="generate airfoils, train a GINO, predict on unseen ones, render",
                              description=__doc__.splitlines()[0])
    p.add_argument("--out", default="geoop_demo", help="output folder (default: ./geoop_demo)")
    p.add_argument("--fast", action="store_true", help="a smaller run (about a minute) for smoke tests")
    p.add_argument("--train-cases", type=int, default=None, help="number of training airfoils")
    p.add_argument("--test-cases", type=int, default=None, help="number of unseen test airfoils")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: as many as fit in --minutes)")
    p.add_argument("--minutes", type=float, default=None, help="wall-clock budget of the whole demo (default 4.5; --fast 1.5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: the idle cores, at least 1; on a loaded machine spinning "
                        "OpenMP threads are much slower than one)")
    p.add_argument("--frame", choices=FRAMES, default="body",
                   help="body: airfoil frame, free-stream direction as an input field (default); wind: rotate "
                        "every case so the free stream is +x, geometry-only input")
    p.add_argument("--te-stagnation", action=argparse.BooleanOptionalAction, default=True,
                   help="trailing-edge node as a stagnation point (Cp = 1, the potential-flow value at a "
                        "finite-angle trailing edge) instead of the raw panel value, which is discretisation "
                        "noise (see geoop.data.airfoil.make_case; default: on)")
    p.add_argument("--mirror", type=float, default=0.0,
                   help="fraction of the training airfoils mirrored about the chord line (an exact symmetry; "
                        "lower-surface suction peaks at negative angles; the unseen airfoils are never mirrored)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    return p


def _limit_blas_threads(n: int) -> list:
    """Set the thread count of every BLAS loaded in this process (numpy's and scipy's bundled
    OpenBLAS copies) to ``n`` with threadpoolctl; ``torch.set_num_threads`` does not reach
    them (on a loaded machine a small panel-method solve is many times slower with spinning
    BLAS threads; docs/experiments.md). Returns the paths of the libraries limited."""
    from threadpoolctl import threadpool_info, threadpool_limits

    threadpool_limits(limits=int(n), user_api="blas")
    return [lib["filepath"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def _rotate(xy, angle):
    import numpy as np

    c, s = math.cos(angle), math.sin(angle)
    return np.stack([c * xy[:, 0] - s * xy[:, 1], s * xy[:, 0] + c * xy[:, 1]], 1)


def prepare_cases(raw_dir: Path, out_dir: Path, entries: list, window=WINDOW, frame: str = "wind", mirror=()) -> None:
    """Frame choice and cropping of generated cases.

    ``frame="wind"``: rotate every case by minus its angle of attack (the free stream is +x,
    the geometry alone determines the flow). ``frame="body"``: keep the airfoil's own frame
    (chord along x, leading edge at the origin) and write the free-stream direction
    ``(cos alpha, sin alpha)`` on every surface node as the point field ``freestream`` (an
    input of the model); the volume velocities stay in that frame. Either way the volume
    mesh is cropped to ``window`` (triangles with a node outside are dropped).

    ``mirror``: names of cases written mirrored about the chord line first (``y -> -y``,
    ``v -> -v``, ``alpha -> -alpha``: an exact symmetry of the flow; a cambered airfoil at a
    positive angle becomes a negatively cambered one at a negative angle, with its
    leading-edge suction peak on the lower surface). ``window`` must be symmetric in y.

    The surface also carries its outward unit normal as the point field ``normal``.
    ``out_dir/manifest.json`` lists per case ``freestream_deg`` (the free-stream angle in the
    case's own coordinates: alpha in the body frame, 0 in the wind frame) and the
    Kutta-Joukowski ``cl`` (sign flipped for mirrored cases): the per-case reference of the
    coefficient metrics (:mod:`geoop.train.metrics`).

    Shapes: surface ``freestream`` (N, 2) (body frame only), ``normal`` (N, 2), ``Cp`` (N, 1); volume ``u``,
    ``v``, ``p`` (M, 1) each.
    """
    import numpy as np
    import torch

    from ..data._case_io import write_manifest
    from ..errors import ConfigError
    from ..geometry.geometry import Geometry
    from ..geometry.io import read, write

    if frame not in FRAMES:
        raise ConfigError(f"demo: unknown frame {frame!r}; valid: {list(FRAMES)}")
    mirror = set(mirror)
    if mirror and window[2] != -window[3]:
        raise ConfigError(f"demo: mirrored cases need a window symmetric in y, got {window}")
    out_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for e in entries:
        flip = e["case"] in mirror
        sy = -1.0 if flip else 1.0
        alpha = sy * math.radians(float(e["params"]["alpha_deg"]))
        a = -alpha if frame == "wind" else 0.0
        s = read(raw_dir / e["surface"])
        v = read(raw_dir / e["volume"])
        sp = s.points.double().numpy() * [1.0, sy, 1.0][: s.points.shape[1]]
        sn = None if s.normals is None else s.normals.double().numpy() * [1.0, sy, 1.0][: s.normals.shape[1]]
        sfields = {"Cp": s.fields["Cp"]}
        if sn is not None:  # the outward unit normal as a point field (a possible model input)
            sfields["normal"] = _rotate(sn[:, :2], a)
        if frame == "body":
            sfields["freestream"] = np.tile([[math.cos(alpha), math.sin(alpha)]], (sp.shape[0], 1))
        surf = Geometry(
            np.concatenate([_rotate(sp[:, :2], a), sp[:, 2:]], 1), cells=s.cells,
            normals=None if sn is None else np.concatenate([_rotate(sn[:, :2], a), sn[:, 2:]], 1),
            fields=sfields, name=s.name,
        )
        vp = v.points.double().numpy() * [1.0, sy, 1.0][: v.points.shape[1]]
        xy = _rotate(vp[:, :2], a)
        vel = _rotate(np.concatenate([v.fields["u"].double().numpy(), sy * v.fields["v"].double().numpy()], 1), a)
        inside = (xy[:, 0] >= window[0]) & (xy[:, 0] <= window[1]) & (xy[:, 1] >= window[2]) & (xy[:, 1] <= window[3])
        tri = v.cells["triangle"].numpy()
        if flip:  # keep the triangles counter-clockwise
            tri = tri[:, [0, 2, 1]]
        keep = inside[tri].all(1)
        tri = tri[keep]
        used = np.unique(tri)
        remap = -np.ones(xy.shape[0], dtype=np.int64)
        remap[used] = np.arange(used.size)
        vol = Geometry(
            np.concatenate([xy[used], vp[used, 2:]], 1), cells={"triangle": remap[tri]},
            fields={"u": vel[used, 0], "v": vel[used, 1], "p": v.fields["p"].double().numpy()[used, 0]}, name=v.name,
        )
        write(surf, out_dir / e["surface"])
        write(vol, out_dir / e["volume"])
        records.append({"case": e["case"], "freestream_deg": math.degrees(alpha + a), "alpha_deg": math.degrees(alpha),
                        "cl": sy * float(e["cl"]) if "cl" in e else None, "mirrored": flip})
    write_manifest(str(out_dir), {"generator": "geoop demo", "frame": frame, "cases": records})
    del torch


def demo_config(data_dir: Path, out_dir: Path, fast: bool, epochs: int, seed: int, window=WINDOW, frame: str = "body") -> dict:
    """The run configuration of the demo (also written as ``config.json``).

    Points stay in chords (``geometry_normalization="none"``: the cases are already cropped
    to ``window``) and the box latent grid spans exactly ``window``: a 64 x 48 grid has a
    spacing of 1/32 chord (a 12 %-thick airfoil is ~4 cells thick), the encoder / decoder
    radii are 1.6 / 1.9 spacings and the NeRF embedding's finest wavelength (10 octaves,
    frequencies 2^k pi, k < 10) is 2/2^9 chord. The decoder also gets sub-grid features from
    the airfoil nodes (a 0.04-chord GNO branch, 32 channels, and the offset to the nearest
    node; GINO ``local_*``): the latent grid alone cannot resolve the leading-edge suction
    peak.
    """
    xmin, xmax, ymin, ymax = window
    return {
        "seed": seed,
        "device": "cpu",
        "data": {
            "folder": str(data_dir), "inputs": ["freestream", "normal"] if frame == "body" else ["normal"],
            "targets": ["u", "v", "p"], "train_split": "train", "val_split": "",
            "input_file": "{case}_surface.vtp", "query_file": "{case}_volume.vtu", "drop_flat_z": True,
            "latent_sdf": True, "geometry_normalization": "none",
            # 1000 of the ~1600-2800 cropped volume nodes per case and epoch: its surface nodes
            # (distance 0 to the input polyline) every time, a fresh random draw of the others
            # (more optimizer steps in the time budget, every node still seen over the epochs)
            "subsample": {"queries": 1000, "near_input": 1e-6},
            # lift and drag of the surface pressure (p = Cp: q = 1) when a split is validated
            "metrics": ["cl", "cd"],
            "metrics_reference": {"field": "p", "dynamic_pressure": 1.0, "length": 1.0, "alpha_deg": "manifest:freestream_deg"},
        },
        "model": {  # the nested sections of geoop.models.config
            "latent": {"kind": "box", "shape": [32, 24] if fast else [64, 48], "domain": [[xmin, ymin], [xmax, ymax]]},
            "encoder": {"radius": 0.1 if fast else 0.05, "mlp": [32, 32], "pos_embed": "nerf", "n_freqs": 10},
            "decoder": {"radius": 0.1 if fast else 0.06, "mlp": [32, 32], "pos_embed": "nerf", "n_freqs": 10},
            "blocks": {"kind": "fno", "width": 24 if fast else 32, "modes": [8, 8] if fast else [16, 12],
                       "layers": 3 if fast else 4},
            # sub-grid geometry for the decoder: a 0.04-chord GNO from the airfoil nodes and
            # the offset to the nearest one (GINO docstring, step 5)
            "local": {"radius": 0.04, "channels": 32, "nearest": True},
        },
        # a few epochs only: a short warm-up and a higher peak rate (docs/experiments.md)
        "optim": {"epochs": epochs, "batch_size": 4, "lr": 8e-3, "weight_decay": 1e-4, "warmup": 0.5, "clip": 1.0, "min_lr_ratio": 0.02},
        "output": {"dir": str(out_dir), "save_best": True},
    }


def _cp_plot(path, x, pred, truth, title):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(x, truth, "k.", ms=3, label="panel method")
    ax.plot(x, pred, "r.", ms=3, label="GINO")
    ax.invert_yaxis()
    ax.set_xlabel("x / chord")
    ax.set_ylabel("Cp")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def run(args) -> int:
    import numpy as np
    import torch

    from ..data import airfoil
    from ..data.folder import MeshFolderDataset, discover_cases
    from ..geometry.io import read, write
    from ..models.gino import GINO
    from ..train.config import resolve_config
    from ..train.run import build_run, load_trained
    from .predict import predict_geometry

    t_start = time.perf_counter()
    threads = args.threads
    if not threads:
        cores = os.cpu_count() or 1
        threads = max(1, min(cores, round(cores - os.getloadavg()[0])))
    torch.set_num_threads(int(threads))
    import scipy.spatial  # noqa: F401  (loads scipy's OpenBLAS, so that it is limited too)

    log.debug("OpenBLAS threads set to %d in %s", int(threads), _limit_blas_threads(int(threads)))
    fast = bool(args.fast)
    # more airfoils beat more epochs on the same ones (docs/experiments.md)
    n_train = args.train_cases or (16 if fast else 320)
    n_test = args.test_cases or (4 if fast else 8)
    budget_s = 60.0 * (args.minutes if args.minutes else (1.5 if fast else 4.5))
    epochs = args.epochs or 1000  # cut to the time budget after the first epoch
    out = Path(args.out)
    raw, data, run_dir, res = out / "raw", out / "cases", out / "run", out / "results"
    for d in (raw, data, run_dir, res):
        d.mkdir(parents=True, exist_ok=True)

    # 1-2. data
    t0 = time.perf_counter()
    n_vol = (1500, 2500) if fast else (2500, 4000)
    frame = getattr(args, "frame", "body")
    entries = airfoil.generate(str(raw), n_train + n_test, seed=args.seed, n_volume=n_vol, n_panels=(100, 140),
                               te_stagnation=bool(getattr(args, "te_stagnation", True)))
    names = [e["case"] for e in entries]
    # the unseen airfoils are the first n_test cases: the same ones whatever --train-cases
    test_names, train_names = names[:n_test], names[n_test:]
    frac = float(getattr(args, "mirror", 0.0) or 0.0)
    if not 0.0 <= frac <= 1.0:
        from ..errors import ConfigError

        raise ConfigError(f"demo: --mirror must be a fraction in [0, 1], got {frac}")
    pick = np.random.default_rng(args.seed).permutation(len(train_names))[: int(round(frac * len(train_names)))]
    mirrored = [train_names[i] for i in sorted(pick)]
    prepare_cases(raw, data, entries, frame=frame, mirror=mirrored)
    (data / "split.json").write_text(json.dumps({"train": train_names, "test": test_names}))
    t_data = time.perf_counter() - t0
    print(f"[demo] {n_train} training ({len(mirrored)} mirrored) + {n_test} unseen airfoils generated in {t_data:.0f} s -> {data} "
          f"(torch threads: {threads})", flush=True)

    # 3. train
    cfg = resolve_config(demo_config(data, run_dir, fast, epochs, args.seed, frame=frame), source="demo", dataset_cls=MeshFolderDataset, model_cls=GINO)
    t0 = time.perf_counter()
    r = build_run(cfg, progress=args.progress)
    tr = r.trainer
    if not args.epochs:
        # as many epochs as fit in the budget, less PREDICT_S for prediction and pictures;
        # the trainer re-estimates them after every epoch and the cosine schedule follows
        tr.fit(max_time=budget_s - PREDICT_S - (time.perf_counter() - t_start), min_epochs=3)
        epochs = tr.epoch
    else:
        tr.fit()
    t_train = time.perf_counter() - t0
    last = r.trainer.history[-1]
    print(f"[demo] trained {epochs} epochs in {t_train:.0f} s (train loss {last['train_loss']:.4f}) -> {run_dir / 'last.pt'}", flush=True)

    # 4-5. predict on the unseen airfoils
    trained = load_trained(run_dir / "last.pt")  # no model selection on the unseen airfoils
    cases, _ = discover_cases(data, "{case}_surface.vtp", "{case}_volume.vtu")
    errs = {k: [] for k in ("u", "v", "p", "Cp")}
    lift = {"pred": [], "true": [], "kutta": []}  # C_L from the surface Cp; Kutta-Joukowski
    from ..physics import forces
    from ..viz.render import render

    for i, name in enumerate(test_names):
        cf = cases[name]
        surf, vol = read(cf.input), read(cf.query)
        pv_, e_vol = predict_geometry(trained, surf, vol)
        write(pv_, res / f"{name}_volume_pred.vtu")
        # surface pressure coefficient = predicted pressure at the surface nodes
        ps, _ = predict_geometry(trained, surf, surf.replace(fields={}))
        cp_pred = ps.fields["p"]
        cp_true = surf.fields["Cp"]
        e_cp = float((cp_pred.double() - cp_true.double()).norm() / cp_true.double().norm())
        write(surf.with_fields(Cp_pred=cp_pred, Cp_error=cp_pred - cp_true), res / f"{name}_surface_pred.vtp")
        for k in ("u", "v", "p"):
            errs[k].append(e_vol[k])
        errs["Cp"].append(e_cp)
        # lift coefficient: the surface Cp integrated (q = 1, chord 1) in the case's free stream
        a = math.radians(float(entries[names.index(name)]["params"]["alpha_deg"])) if frame == "body" else 0.0
        ref = dict(dynamic_pressure=1.0, length=1.0, freestream=(math.cos(a), math.sin(a)))
        lift["pred"].append(forces(surf, cp_pred, **ref).coefficients["cl"])
        lift["true"].append(forces(surf, cp_true, **ref).coefficients["cl"])
        lift["kutta"].append(float(entries[names.index(name)]["cl"]))
        if i < 3:
            truth = vol
            render(pv_, "p", res / f"{name}_p.png", truth=truth, focus=(-0.3, 1.3, -0.4, 0.4), title=name)
            render(pv_, "u", res / f"{name}_u.png", truth=truth, focus=(-0.3, 1.3, -0.4, 0.4), title=name)
            _cp_plot(res / f"{name}_cp.png", surf.points[:, 0].numpy(), cp_pred[:, 0].numpy(), cp_true[:, 0].numpy(),
                     f"{name}: surface Cp, relative L2 error {100 * e_cp:.1f}%")
    summary = {k: float(np.mean(v)) for k, v in errs.items()}
    total = time.perf_counter() - t_start
    median = {k: float(np.median(v)) for k, v in errs.items()}
    cl_err = np.abs(np.array(lift["pred"]) - np.array(lift["true"]))
    report = {"relative_l2_unseen": summary, "relative_l2_unseen_median": median, "per_case": errs,
              "lift_coefficient": {**lift, "mae": float(cl_err.mean())},
              "test_case_names": list(test_names), "train_cases": n_train, "test_cases": n_test, "mirrored": len(mirrored),
              "epochs": epochs, "threads": threads, "time_s": {"data": t_data, "train": t_train, "total": total}}
    (out / "results.json").write_text(json.dumps(report, indent=2))
    print("[demo] relative L2 error on unseen airfoils (mean over cases):")
    print("  field   where     rel. L2   (median, worst case)")
    for k, where in (("u", "volume"), ("v", "volume"), ("p", "volume"), ("Cp", "surface")):
        worst = int(np.argmax(errs[k]))
        print(f"  {k:<7} {where:<9} {100 * summary[k]:6.2f} %   ({100 * median[k]:.2f} %, "
              f"{100 * errs[k][worst]:.2f} % on {test_names[worst]})")
    print(f"[demo] lift coefficient C_L of the surface Cp on unseen airfoils: mean abs. error {cl_err.mean():.4f} "
          f"(worst {cl_err.max():.4f} on {test_names[int(np.argmax(cl_err))]}; true C_L {min(lift['true']):.3f} .. "
          f"{max(lift['true']):.3f}, Kutta-Joukowski agrees with the true Cp's C_L to "
          f"{np.abs(np.array(lift['true']) - np.array(lift['kutta'])).max():.4f})")
    print(f"[demo] results (.vtu/.vtp for ParaView, PNG pictures) in {res}; total time {total:.0f} s")
    return 0
