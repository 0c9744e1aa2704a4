"""SDF backends side by side: open3d RaycastingScene vs trimesh on one mesh.

A watertight UV sphere of 9984 triangles (trimesh.creation.uv_sphere, count=[50, 52]),
4096 random queries in [-1.3, 1.3]^3, signed distance (watertight -> signed) and the
unsigned distance of the same mesh with one triangle removed (open -> unsigned). Prints JSON and a short table; the ratio
trimesh/open3d is measured in this one run. Run: ``python benchmarks/sdf.py``.
"""
from __future__ import annotations

import json
import time

import numpy as np
import torch


def _best(fn, repeat=3):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main(n_queries: int = 4096, seed: int = 0) -> dict:
    import trimesh

    from geoop import Geometry
    from geoop._optional import available
    from geoop.geometry.sdf import sdf

    torch.set_num_threads(1)
    m = trimesh.creation.uv_sphere(radius=1.0, count=[50, 52])  # 9984 triangles
    g = Geometry(torch.tensor(m.vertices), torch.tensor(m.faces))
    rng = np.random.default_rng(seed)
    q = torch.tensor(rng.uniform(-1.3, 1.3, size=(n_queries, 3)))
    exact = q.norm(dim=1) - 1.0
    res = {"n_triangles": int(m.faces.shape[0]), "n_queries": n_queries, "backends": {}}
    backends = ["trimesh"] + (["open3d"] if available("open3d") else [])
    g_open = Geometry(g.points, g.faces[1:])
    for b in backends:
        rep = 1 if b == "trimesh" else 3
        t, d = _best(lambda: sdf(g, q, backend=b), repeat=rep)
        tu, du = _best(lambda: sdf(g_open, q, backend=b), repeat=rep)
        res["backends"][b] = {"signed_seconds": t, "unsigned_seconds": tu,
                              "max_abs_err_vs_exact": float((d - exact).abs().max()),
                              "sign_agreement": float(((d < 0) == (exact < 0)).double().mean())}
    if "open3d" in res["backends"]:
        for k in ("signed", "unsigned"):
            res[f"ratio_trimesh_over_open3d_{k}"] = (res["backends"]["trimesh"][f"{k}_seconds"]
                                                     / res["backends"]["open3d"][f"{k}_seconds"])
    return res


if __name__ == "__main__":
    r = main()
    print(json.dumps(r, indent=2))
    print(f"\n{'backend':10s} {'signed s':>10s} {'unsigned s':>10s} {'max err':>10s} {'sign ok':>8s}")
    for b, v in r["backends"].items():
        print(f"{b:10s} {v['signed_seconds']:10.4f} {v['unsigned_seconds']:10.4f} "
              f"{v['max_abs_err_vs_exact']:10.2e} {v['sign_agreement']:8.3f}")
    for k in ("signed", "unsigned"):
        if f"ratio_trimesh_over_open3d_{k}" in r:
            print(f"trimesh / open3d time ratio ({k}): {r[f'ratio_trimesh_over_open3d_{k}']:.1f}x")
