"""Incremental FNO modes against fixed modes, at equal wall-clock budget, over several seeds.

Takes any generated airfoil set (``geoop data airfoil --out RAW`` for the panel method,
``geoop data airfoil --solver rans --out RAW`` for OpenFOAM RANS): the cases are prepared
once into ``--work/cases`` (body frame: the free-stream direction ``(cos a, sin a)`` and the
outward normal as surface point fields; the volume cropped to the window
``[-0.5, 1.5] x [-0.75, 0.75]`` chords, cells with a node outside dropped; the first
``--test`` cases are the unseen test split, 10 % of the others validate).

For every seed, one GINO (the demo's, box latent ``--latent``, FNO ``--modes``) is trained
with fixed modes and once per ``--rules`` with ``blocks.incremental = {start = --start,
rule = ...}``, each for ``--minutes`` of wall clock (``Trainer(minutes=)``: the epochs and
the cosine schedule fit the budget). Reported per run: the test relative L2 (mean over
u, v, p, final weights), the final validation error, and the time (cumulative epoch time,
evaluation included) at which the validation error first reached the fixed-modes model's
final validation error (None: never), and its ratio to the fixed model's own time to that
value. The issue's floors: incremental test error <= fixed, time ratio <= 0.8.

    python benchmarks/incremental.py --raw RAW --work /tmp/inc [--minutes 1] [--seeds 0 1 2]
        [--rules loss_plateau energy] [--start 2] [--modes 12 10] [--threads 1] [--out report.json]

Prints one JSON object and a table.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WINDOW = (-0.5, 1.5, -0.75, 0.75)


def prepare(raw: Path, out: Path, n_test: int) -> dict:
    """Body-frame cases with ``freestream`` and ``normal`` surface fields, volume cropped to
    :data:`WINDOW` (any cell type), ``split.json`` with the first ``n_test`` cases as test."""
    import numpy as np

    from geoop.geometry.geometry import Geometry
    from geoop.geometry.io import read, write

    man = json.loads((raw / "manifest.json").read_text())
    entries = man["cases"]
    out.mkdir(parents=True, exist_ok=True)
    x0, x1, y0, y1 = WINDOW
    sizes = []
    for e in entries:
        alpha = math.radians(float(e["params"]["alpha_deg"]))
        s, v = read(raw / e["surface"]), read(raw / e["volume"])
        n = s.normals.double().numpy()[:, :2]
        fs = np.tile([[math.cos(alpha), math.sin(alpha)]], (s.points.shape[0], 1))
        write(Geometry(s.points.double().numpy(), cells={k: c.numpy() for k, c in s.cells.items()},
                       normals=s.normals.double().numpy(), fields={"freestream": fs, "normal": n}, name=s.name),
              out / e["surface"])
        xy = v.points.double().numpy()
        inside = (xy[:, 0] >= x0) & (xy[:, 0] <= x1) & (xy[:, 1] >= y0) & (xy[:, 1] <= y1)
        cells = {k: c.numpy() for k, c in v.cells.items()}
        cells = {k: c[inside[c].all(1)] for k, c in cells.items()}
        used = np.unique(np.concatenate([c.reshape(-1) for c in cells.values()]))
        remap = -np.ones(xy.shape[0], dtype=np.int64)
        remap[used] = np.arange(used.size)
        fields = {k: v.fields[k].double().numpy().reshape(xy.shape[0], -1)[used, 0] for k in ("u", "v", "p")}
        write(Geometry(xy[used], cells={k: remap[c] for k, c in cells.items()}, fields=fields, name=v.name),
              out / e["volume"])
        sizes.append((s.points.shape[0], int(used.size)))
    names = [e["case"] for e in entries]
    (out / "split.json").write_text(json.dumps({"test": names[:n_test], "train": names[n_test:]}))
    return {"cases": len(names), "test": n_test, "generator": man.get("generator"),
            "surface_nodes": [min(a for a, _ in sizes), max(a for a, _ in sizes)],
            "volume_nodes": [min(b for _, b in sizes), max(b for _, b in sizes)]}


def config(data: Path, out: Path, seed: int, minutes: float, latent, modes, incremental=None) -> dict:
    blocks = {"kind": "fno", "width": 24, "modes": list(modes), "layers": 3}
    if incremental:
        blocks["incremental"] = incremental
    return {
        "seed": seed, "device": "cpu",
        "data": {"folder": str(data), "inputs": ["freestream", "normal"], "targets": ["u", "v", "p"],
                 "train_split": "train", "val_split": "val", "val_fraction": 0.1,
                 "input_file": "{case}_surface.vtp", "query_file": "{case}_volume.vtu", "drop_flat_z": True,
                 "latent_sdf": True, "geometry_normalization": "none",
                 "subsample": {"queries": 1000, "near_input": 1e-6}},
        "model": {"latent": {"kind": "box", "shape": list(latent), "domain": [[WINDOW[0], WINDOW[2]], [WINDOW[1], WINDOW[3]]]},
                  "encoder": {"radius": 0.1, "mlp": [32, 32], "pos_embed": "nerf", "n_freqs": 10},
                  "decoder": {"radius": 0.1, "mlp": [32, 32], "pos_embed": "nerf", "n_freqs": 10},
                  "blocks": blocks, "local": {"radius": 0.04, "channels": 32, "nearest": True}},
        "optim": {"epochs": 10000, "batch_size": 4, "lr": 8e-3, "weight_decay": 1e-4, "warmup": 0.5, "clip": 1.0,
                  "min_lr_ratio": 0.02, "minutes": minutes},
        "output": {"dir": str(out), "save_best": False},
    }


def train_once(data: Path, work: Path, seed: int, minutes: float, latent, modes, incremental) -> dict:
    from geoop.data.folder import MeshFolderDataset
    from geoop.models.gino import GINO
    from geoop.train.config import resolve_config
    from geoop.train.run import build_run, data_kwargs, input_fields, model_config

    name = "fixed" if not incremental else f"incremental-{incremental['rule']}"
    cfg = resolve_config(config(data, work / f"{name}-s{seed}", seed, minutes, latent, modes, incremental),
                         source="benchmark", dataset_cls=MeshFolderDataset, model_cls=GINO)
    r = build_run(cfg, progress=False)
    t0 = time.perf_counter()
    hist = r.trainer.fit()
    wall = time.perf_counter() - t0
    d = cfg["data"]
    test = MeshFolderDataset(d["folder"], inputs=input_fields(model_config(cfg), d["inputs"]), targets=d["targets"],
                             split="test", neighbors=r.train_data.neighbors,
                             **{**data_kwargs(cfg), "normalize": r.train_data.normalizers, "subsample": None})
    err = r.trainer.evaluate(test)
    t, curve = 0.0, []
    for h in hist:
        t += h["time_s"]
        curve.append((t, h["val/rel_l2"], h.get("modes")))
    return {"run": name, "seed": seed, "epochs": len(hist), "wall_s": wall, "test_rel_l2": err["rel_l2"],
            "test": {k: v for k, v in err.items() if k.startswith("rel_l2/")}, "val_final": curve[-1][1],
            "curve": curve, "final_modes": hist[-1].get("modes", list(modes))}


def time_to(curve, target: float):
    """Cumulative time of the first epoch whose validation error is <= ``target``."""
    for t, v, _ in curve:
        if v <= target:
            return t
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--raw", type=Path, default=None, help="a generated airfoil folder (geoop data airfoil); "
                    "default: generate --cases panel-method cases into WORK/raw")
    ap.add_argument("--cases", type=int, default=48, help="cases to generate without --raw")
    ap.add_argument("--test", type=int, default=8, help="unseen test cases (the first ones)")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--minutes", type=float, default=1.0, help="wall-clock budget of every run")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rules", nargs="+", default=["loss_plateau", "energy"])
    ap.add_argument("--start", type=int, default=2)
    ap.add_argument("--modes", type=int, nargs=2, default=[12, 10])
    ap.add_argument("--latent", type=int, nargs=2, default=[32, 24])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    work = a.work or Path(tempfile.mkdtemp(prefix="geoop-incremental-"))
    raw = a.raw
    if raw is None:
        from geoop.data import airfoil

        raw = work / "raw"
        if not (raw / "manifest.json").exists():
            airfoil.generate(str(raw), a.cases, seed=0, n_volume=(1500, 2500), n_panels=(100, 140), te_stagnation=True)
    data = work / "cases"
    info = prepare(raw, data, a.test)
    runs = []
    for seed in a.seeds:
        runs.append(train_once(data, work, seed, a.minutes, a.latent, a.modes, None))
        for rule in a.rules:
            runs.append(train_once(data, work, seed, a.minutes, a.latent, a.modes, {"start": a.start, "rule": rule}))
    rows = []
    for r in runs:
        fixed = next(f for f in runs if f["seed"] == r["seed"] and f["run"] == "fixed")
        target = fixed["val_final"]
        t_fixed, t = time_to(fixed["curve"], target), time_to(r["curve"], target)
        r["time_to_fixed_val_s"] = t
        r["time_ratio"] = None if t is None or not t_fixed else t / t_fixed
        r["test_ratio"] = r["test_rel_l2"] / fixed["test_rel_l2"]
        rows.append(r)
    summary = {}
    for name in ["fixed"] + [f"incremental-{rule}" for rule in a.rules]:
        rs = [r for r in rows if r["run"] == name]
        ratios = [r["time_ratio"] for r in rs if r["time_ratio"] is not None]
        summary[name] = {"test_rel_l2_mean": statistics.mean(r["test_rel_l2"] for r in rs),
                         "test_ratio_mean": statistics.mean(r["test_ratio"] for r in rs),
                         "time_ratio_mean": statistics.mean(ratios) if ratios else None,
                         "reached_fixed_val": f"{len(ratios)}/{len(rs)}",
                         "epochs_mean": statistics.mean(r["epochs"] for r in rs)}
    report = {"data": {**info, "raw": str(raw)}, "minutes": a.minutes, "seeds": a.seeds, "modes": a.modes,
              "start": a.start, "latent": a.latent, "threads": a.threads, "runs": rows, "summary": summary}
    text = json.dumps(report, indent=1)
    print(text)
    if a.out:
        a.out.write_text(text)
    print("\n| run | seed | epochs | final modes | test rel L2 | vs fixed | val final | t to fixed val [s] | t ratio |")
    print("| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        tt = "never" if r["time_to_fixed_val_s"] is None else f"{r['time_to_fixed_val_s']:.0f}"
        tr = "-" if r["time_ratio"] is None else f"{r['time_ratio']:.2f}"
        print(f"| {r['run']} | {r['seed']} | {r['epochs']} | {r['final_modes']} | {r['test_rel_l2']:.4f} | "
              f"{r['test_ratio']:.3f} | {r['val_final']:.4f} | {tt} | {tr} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
