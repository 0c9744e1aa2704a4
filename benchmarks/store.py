"""Packed case store against the VTK folder it was packed from (``geoop data pack``).

Run: ``python benchmarks/store.py [--cases 32] [--points 1000000] [--k 4000] [--big-cases 4]
[--big-points 10000000] [--data /work/bench_data/store]``. Prints a short table and one JSON
object (last line; also written to ``--json``). Everything is measured in one run:

1. ``--cases`` surface meshes of ``--points`` points each (``case_XXXX.vtp``: a bumpy
   ellipsoid per case, a UV grid of triangles, analytic fields: a potential-flow-like
   pressure coefficient ``p`` from the normals and the free stream, and a wall-shear-like
   vector ``wss``, the free stream projected on the tangent plane, scaled with height);
2. ``MeshFolderDataset`` over the folder as it works today (building reads and checks every
   case; ``memory_cache_mb=0`` so an epoch parses every case again) and over the store
   (``pack_folder``, then ``MeshFolderDataset(STORE)``), both with ``subsample=k`` points and
   queries per case (training-sized items):

   * build time of each dataset (split ``"all"``, normalisation fitted);
   * one epoch (every case once, item by item): wall time and bytes read.

   The page cache is dropped (``/proc/sys/vm/drop_caches``, needs root) before each timed
   phase, so bytes come from the disk: ``read_bytes`` of ``/proc/self/io``. The store's own
   counter (``CaseStore.bytes_read``, compressed bytes of the chunk files decoded) is
   reported too; without root the folder's bytes are the sizes of the files parsed.
   Floors: epoch bytes <= 0.05x and epoch time <= 0.1x of the folder's, build time <= 0.05x.
3. ``--big-cases`` point clouds of ``--big-points`` points (``.npz``: points, normals, the
   same fields) packed, then ``geoop train`` (one epoch, ``subsample`` ``k``, a small GINO)
   on the store in a subprocess: its peak RSS (``VmHWM`` the child reads at its end). Floor: < 4 GB.

Benchmark data live under ``--data`` (outside the repository) and are removed at the end
unless ``--keep``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from geoop.geometry.geometry import Geometry  # noqa: E402

FIELDS = {"inputs": [], "targets": ["p", "wss"]}


# ---------------------------------------------------------------------------- data
def body(i: int, n_points: int, seed: int = 0, cells: bool = True) -> Geometry:
    """A bumpy ellipsoid (UV grid) with analytic ``p`` and ``wss``, about ``n_points`` points."""
    rng = np.random.default_rng([seed, i])
    n_t = int(round(np.sqrt(n_points)))
    n_p = n_points // n_t
    axes = rng.uniform([1.5, 0.6, 0.5], [3.0, 1.0, 0.9])
    k, m, amp = int(rng.integers(2, 6)), int(rng.integers(1, 5)), rng.uniform(0.02, 0.1)
    t = np.linspace(0, np.pi, n_t + 2)[1:-1]
    p = np.linspace(0, 2 * np.pi, n_p, endpoint=False)
    T, P = np.meshgrid(t, p, indexing="ij")
    r = 1 + amp * np.sin(k * T) * np.cos(m * P)
    st = np.sin(T)
    pts = np.stack([axes[0] * r * st * np.cos(P), axes[1] * r * st * np.sin(P), axes[2] * r * np.cos(T)], -1)
    # normals: the cross product of the grid tangents (d/dtheta x d/dphi), outward
    dt = np.gradient(pts, t, axis=0)
    dp = np.roll(pts, -1, axis=1) - np.roll(pts, 1, axis=1)
    nrm = np.cross(dt, dp)
    nrm /= np.linalg.norm(nrm, axis=-1, keepdims=True).clip(1e-30)
    pts, nrm = pts.reshape(-1, 3), nrm.reshape(-1, 3)
    u = np.array([1.0, 0.0, 0.0])
    un = nrm @ u
    cp = 1.0 - 2.25 * (1.0 - un**2) + 0.1 * pts[:, 2]  # potential flow around a sphere, tilted with height
    tang = u[None] - un[:, None] * nrm
    wss = tang * (0.01 * (1.0 + 0.2 * pts[:, 2:3]))
    cell = {}
    if cells:
        idx = np.arange(n_t * n_p).reshape(n_t, n_p)
        a, b = idx[:-1], np.roll(idx[:-1], -1, 1)
        c, d = idx[1:], np.roll(idx[1:], -1, 1)
        cell = {"triangle": np.concatenate([np.stack([a, b, d], -1).reshape(-1, 3), np.stack([a, d, c], -1).reshape(-1, 3)])}
    return Geometry(pts.astype(np.float32), cells=cell, normals=nrm.astype(np.float32),
                    fields={"p": cp.astype(np.float32), "wss": wss.astype(np.float32)})


def make_folder(folder: Path, n_cases: int, n_points: int, ext: str = ".vtp") -> None:
    import geoop

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_cases):
        path = folder / f"case_{i:04d}{ext}"
        if path.exists():
            continue
        g = body(i, n_points, cells=ext != ".npz")
        if ext == ".npz":
            np.savez(path, points=g.points.numpy(), normals=g.normals.numpy(),
                     **{f"fields/{k}": v.numpy() for k, v in g.fields.items()})
        else:
            geoop.write(g, path)


# ---------------------------------------------------------------------------- measuring
def drop_caches() -> bool:
    """Drop the page cache (root only); True when it worked."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1\n")
        return True
    except OSError:
        return False


def read_bytes() -> int:
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("read_bytes:"):
                return int(line.split()[1])
    return 0


def timed(fn):
    """(seconds, bytes read from disk, result) of ``fn()`` after dropping the page cache."""
    dropped = drop_caches()
    b0, t0 = read_bytes(), time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, (read_bytes() - b0) if dropped else None, out


def epoch(ds) -> int:
    n = 0
    for i in range(len(ds)):
        s = ds[i]
        n += s.geometry.n_points + s.queries.n_points
    return n


def compare(folder: Path, store: Path, k: int) -> dict:
    from geoop.data import MeshFolderDataset
    from geoop.data.store import pack_folder

    kw = dict(split="all", subsample=k, memory_cache_mb=0, **FIELDS)
    out = {}
    t, b, ds_f = timed(lambda: MeshFolderDataset(folder, **kw))
    out["folder_build_s"], out["folder_build_bytes"] = t, b
    t, b, n = timed(lambda: epoch(ds_f))
    out["folder_epoch_s"], out["folder_epoch_bytes"] = t, b
    out["folder_files_bytes"] = sum(p.stat().st_size for p in folder.glob("case_*"))
    shutil.rmtree(store, ignore_errors=True)
    t, _, rep = timed(lambda: pack_folder(folder, store, **FIELDS))
    out["pack_s"], out["packed_cases"] = t, len(rep.packed)
    out["store_disk_bytes"] = sum(p.stat().st_size for p in store.rglob("*") if p.is_file())
    t, b, ds_s = timed(lambda: MeshFolderDataset(store, **kw))
    out["store_build_s"], out["store_build_bytes"] = t, b
    out["store_build_chunks_read"] = ds_s.store.chunks_read
    t, b, n_s = timed(lambda: epoch(ds_s))
    out["store_epoch_s"], out["store_epoch_bytes"] = t, b
    out["store_epoch_bytes_counted"] = ds_s.store.bytes_read
    out["store_epoch_chunks_read"] = ds_s.store.chunks_read
    out["items_points"] = [n, n_s]
    # the statistics: from the stored moments vs fitted on every value
    out["stats_max_rel_diff"] = max(
        float(((ds_f.normalizers.fields[f].std - ds_s.normalizers.fields[f].std).abs() / ds_f.normalizers.fields[f].std).max())
        for f in FIELDS["targets"])
    fb = out["folder_epoch_bytes"] if out["folder_epoch_bytes"] is not None else out["folder_files_bytes"]
    sb = out["store_epoch_bytes"] if out["store_epoch_bytes"] is not None else out["store_epoch_bytes_counted"]
    out["ratio_epoch_bytes"] = sb / fb
    out["ratio_epoch_bytes_counted"] = out["store_epoch_bytes_counted"] / out["folder_files_bytes"]
    out["ratio_epoch_time"] = out["store_epoch_s"] / out["folder_epoch_s"]
    out["ratio_build_time"] = out["store_build_s"] / out["folder_build_s"]
    return out


TRAIN_CONFIG = """
seed = 0
device = "cpu"
[data]
folder = "{store}"
inputs = []
targets = ["p", "wss"]
subsample = {k}
[model]
coord_dim = 3
latent = {{kind = "box", shape = [12, 12, 12]}}
encoder = {{radius_cells = 1.5}}
decoder = {{radius_cells = 1.5}}
blocks = {{kind = "fno", width = 16, modes = 4, layers = 2}}
[optim]
epochs = 1
batch_size = 2
lr = 1e-3
[output]
dir = "{run}"
"""


def big_train(data: Path, n_cases: int, n_points: int, k: int) -> dict:
    from geoop.data.store import pack_folder

    folder, store, run = data / "big", data / "big_store", data / "big_run"
    t0 = time.perf_counter()
    make_folder(folder, n_cases, n_points, ext=".npz")
    gen_s = time.perf_counter() - t0
    shutil.rmtree(store, ignore_errors=True)
    t0 = time.perf_counter()
    pack_folder(folder, store, **FIELDS)
    pack_s = time.perf_counter() - t0
    cfg = data / "big.toml"
    cfg.write_text(TRAIN_CONFIG.format(store=store, run=run, k=k))
    env = {**os.environ, "PYTHONPATH": os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    t0 = time.perf_counter()
    # the child reports its own high-water mark: ru_maxrss of a child started by (v)fork also
    # holds the parent's resident memory at exec (here: the packing of the big cases)
    code = ("import sys; from geoop.cli.main import main; rc = main(['train', sys.argv[1], '--no-progress']); "
            "print('VMHWM_KIB', [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0]); "
            "sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, str(cfg)], env=env, capture_output=True, text=True)
    train_s = time.perf_counter() - t0
    hwm = [ln.split()[1] for ln in proc.stdout.splitlines() if ln.startswith("VMHWM_KIB")]
    rss_mb = int(hwm[0]) / 1024 if hwm else float("nan")
    return {"cases": n_cases, "points": n_points, "generate_s": gen_s, "pack_s": pack_s, "train_epoch_s": train_s,
            "train_rc": proc.returncode, "train_peak_rss_mb": rss_mb,
            "train_log_tail": proc.stdout[-600:],
            "case_bytes_float32": n_points * 4 * (3 + 3 + 1 + 1 + 3),
            **({"stderr_tail": proc.stderr[-2000:]} if proc.returncode else {})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=32)
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--k", type=int, default=4000)
    ap.add_argument("--big-cases", type=int, default=4)
    ap.add_argument("--big-points", type=int, default=10_000_000)
    ap.add_argument("--data", default="/work/bench_data/store")
    ap.add_argument("--json", default=None, help="also write the report here")
    ap.add_argument("--keep", action="store_true", help="keep the generated data")
    ap.add_argument("--only", choices=("all", "epoch", "big"), default="all", help="run one part")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    data = Path(args.data)
    data.mkdir(parents=True, exist_ok=True)
    report = {"cases": args.cases, "points": args.points, "k": args.k, "torch": torch.__version__,
              "drop_caches": drop_caches()}
    try:
        if args.only in ("all", "epoch"):
            t0 = time.perf_counter()
            make_folder(data / "folder", args.cases, args.points)
            report["generate_s"] = time.perf_counter() - t0
            report["epoch"] = compare(data / "folder", data / "store", args.k)
        if args.big_cases and args.only in ("all", "big"):
            report["big"] = big_train(data, args.big_cases, args.big_points, args.k)
    finally:
        if not args.keep:
            shutil.rmtree(data, ignore_errors=True)
    e = report.get("epoch")
    rows = [] if e is None else [("dataset build (s)", e["folder_build_s"], e["store_build_s"], e["ratio_build_time"], "<= 0.05"),
            ("epoch time (s)", e["folder_epoch_s"], e["store_epoch_s"], e["ratio_epoch_time"], "<= 0.1"),
            ("epoch bytes read (MB)", (e["folder_epoch_bytes"] or e["folder_files_bytes"]) / 1e6,
             (e["store_epoch_bytes"] or e["store_epoch_bytes_counted"]) / 1e6, e["ratio_epoch_bytes"], "<= 0.05")]
    print(f"{'':24s}{'folder':>12s}{'store':>12s}{'ratio':>10s}  floor" if rows else "")
    for name, a, b, r, floor in rows:
        print(f"{name:24s}{a:12.3f}{b:12.3f}{r:10.4f}  {floor}")
    if "big" in report:
        bg = report["big"]
        print(f"geoop train epoch, {bg['cases']} cases of {bg['points']:,} points from the store: peak RSS "
              f"{bg['train_peak_rss_mb']:.0f} MB (floor < 4096), rc {bg['train_rc']}")
    text = json.dumps(report)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
