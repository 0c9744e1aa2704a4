"""Timing of the physics data generators (airfoil panel method, 3-D source panels).

Prints JSON and a short table. Run: ``python benchmarks/bench_physics_data.py``.
Measures, in one run: one airfoil case with a ~10k-point volume mesh (solve, mesh,
field evaluation; file writing timed separately), the 2-D field evaluation with the
multipole far field vs the exact sum, and one 3-D body with 2,000 panels (near/far split vs
exact influence everywhere).
"""
from __future__ import annotations

import json
import os
import tempfile
import time

import numpy as np


def _best(fn, repeat=3):
    ts = []
    out = None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
    return min(ts), out


def main() -> dict:
    from geoop.data import airfoil

    res = {"load_avg_1min": os.getloadavg()[0], "cpu_count": os.cpu_count()}
    airfoil.make_case({"naca": "2412", "alpha_deg": 4.0, "n_volume": 2000}, seed=0)  # warm imports
    t_case, (surf, vol) = _best(lambda: airfoil.make_case({"naca": "2412", "alpha_deg": 4.0, "n_panels": 160, "n_volume": 10500}, seed=0))
    res["airfoil_case_s"] = t_case
    res["airfoil_volume_points"] = vol.n_points
    res["airfoil_surface_points"] = surf.n_points
    with tempfile.TemporaryDirectory() as d:
        from geoop.data._case_io import write_geometry

        write_geometry(surf, os.path.join(d, "w.vtp"))
        t_w, _ = _best(lambda: (write_geometry(surf, os.path.join(d, "s.vtp")), write_geometry(vol, os.path.join(d, "v.vtu"))))
    res["airfoil_write_s"] = t_w
    sol = airfoil.solve_airfoil("2412", 4.0, 160)
    q = vol.points.numpy()[surf.n_points:, :2].astype(np.float64)
    zq = q[:, 0] + 1j * q[:, 1]
    t_fast, a = _best(lambda: sol.panels.complex_velocity(zq))
    t_exact, b = _best(lambda: sol.panels.complex_velocity(zq, far_factor=np.inf))
    res["airfoil_velocity_multipole_s"] = t_fast
    res["airfoil_velocity_exact_s"] = t_exact
    res["airfoil_velocity_speedup"] = t_exact / t_fast
    res["airfoil_velocity_max_abs_diff"] = float(np.abs(a - b).max())

    try:
        from geoop.data import body3d
    except ImportError:
        body3d = None
    if body3d is not None:
        res.update(body3d._benchmark())
    print(json.dumps(res, indent=1))
    rows = [(k, v) for k, v in res.items()]
    print(f"{'quantity':40s} value")
    for k, v in rows:
        print(f"{k:40s} {v:.4g}" if isinstance(v, float) else f"{k:40s} {v}")
    return res


if __name__ == "__main__":
    main()
