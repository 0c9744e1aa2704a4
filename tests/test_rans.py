"""Tests of geoop.data.rans: the O-grid polyMesh (OpenFOAM's checkMesh), a tiny simpleFoam
case end to end (when OpenFOAM is installed), the CLI, and the error without OpenFOAM."""
from __future__ import annotations

import json
import math
import os
import subprocess

import numpy as np
import pytest

from geoop.cli.main import main
from geoop.data import rans
from geoop.errors import BackendUnavailableError, ConfigError, DatasetError

needs_foam = pytest.mark.skipif(not rans.openfoam_available(),
                                reason="OpenFOAM (simpleFoam) not installed: apt-get install openfoam")
TINY = rans.RansSettings(n_around=64, n_radial=32, first_cell=4e-3, iterations=300, cl_window=50)


def test_ogrid_geometry_and_far_field():
    s, n = rans._surface("2412", 64)
    grid = rans.ogrid_points(s, n, TINY)
    assert grid.shape == (33, 64, 2)
    np.testing.assert_allclose(grid[0], s)
    # the far field is at least 30 chords from the airfoil, every ring encloses the previous
    far = np.linalg.norm(grid[-1][:, None] - s[None], axis=2).min()
    assert far >= 30.0
    # cells are non-degenerate and consistently oriented (signed quad areas of one sign)
    a, b, c, d = grid[:-1], np.roll(grid[:-1], -1, 1), np.roll(grid[1:], -1, 1), grid[1:]
    area = 0.5 * ((c[..., 0] - a[..., 0]) * (d[..., 1] - b[..., 1]) - (c[..., 1] - a[..., 1]) * (d[..., 0] - b[..., 0]))
    assert (np.sign(area) == np.sign(area.flat[0])).all() and np.abs(area).min() > 0
    with pytest.raises(ConfigError, match="far_radius"):
        rans.RansSettings(far_radius=10.0).check()


def test_missing_openfoam_is_a_clear_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BackendUnavailableError, match="apt-get install openfoam"):
        rans.generate(str(tmp_path / "out"), 1)
    assert main(["data", "airfoil", "--solver", "rans", "--n", "1", "--out", str(tmp_path / "o")]) != 0
    assert "apt-get install openfoam" in capsys.readouterr().err


@needs_foam
def test_polymesh_passes_checkmesh(tmp_path):
    s, n = rans._surface("0012", 64)
    info = rans.write_case(str(tmp_path), s, n, 3.0, TINY)
    assert info["n_cells"] == 64 * 32 and info["min_far_distance"] >= 30
    r = subprocess.run(["checkMesh", "-case", str(tmp_path)], capture_output=True, text=True, env=rans._foam_env())
    assert r.returncode == 0 and "Mesh OK." in r.stdout, r.stdout[-2000:]
    # total area of the 2-D domain: the far-field polygon minus the airfoil
    far = rans.ogrid_points(s, n, TINY)[-1]
    poly = lambda p: 0.5 * abs(np.dot(p[:, 0], np.roll(p[:, 1], -1)) - np.dot(p[:, 1], np.roll(p[:, 0], -1)))  # noqa: E731
    vol = float(r.stdout.split("Total volume = ")[1].split(".  ")[0])
    assert vol == pytest.approx((poly(far) - poly(s)) * info["span"], rel=1e-6)


@needs_foam
def test_tiny_case_end_to_end(tmp_path, capsys):
    """A symmetric airfoil at +-alpha: antisymmetric lift; lift slope near thin-airfoil theory
    (2 pi per radian, viscous and coarse: within 25 %); Cp integrated over the written surface
    agrees with OpenFOAM's forceCoeffs; output layout as the panel generator."""
    out = tmp_path / "rans"
    assert main(["data", "airfoil", "--solver", "rans", "--n", "1", "--out", str(out), "-p", "m=0", "-p", "t=0.12",
                 "-p", "alpha_deg=4", "-p", "n_around=64", "-p", "n_radial=32", "-p", "first_cell=0.004",
                 "-p", "iterations=300", "-p", "cl_window=50"]) == 0
    man = json.loads((out / "manifest.json").read_text())
    case = man["cases"][0]
    assert case["surface"] == "case_0000_surface.vtp" and case["volume"] == "case_0000_volume.vtu"
    assert set(case) >= {"cl", "cd", "cm", "converged", "final_residuals", "solver_seconds", "min_far_distance"}
    assert man["settings"]["iterations"] == 300
    cl = case["cl"]
    assert 0.75 * 2 * math.pi * math.radians(4) < cl < 1.1 * 2 * math.pi * math.radians(4)
    assert 0.003 < case["cd"] < 0.05
    import geoop

    surf = geoop.read(str(out / "case_0000_surface.vtp"))
    vol = geoop.read(str(out / "case_0000_volume.vtu"))
    assert {"Cp", "p", "wallShearStress"} <= set(surf.fields) and surf.normals is not None
    assert {"p", "U", "u", "v"} <= set(vol.fields)
    P = surf.points[:, :2].double().numpy()
    cp = surf.fields["Cp"].double().numpy().ravel()
    e = np.roll(P, -1, 0) - P
    nrm = np.stack([-e[:, 1], e[:, 0]], 1)  # outward normal (clockwise polyline) times the panel length
    Fp = -((0.5 * (cp + np.roll(cp, -1)))[:, None] * nrm).sum(0)
    a = math.radians(4)
    cl_p = -Fp[0] * math.sin(a) + Fp[1] * math.cos(a)
    assert cl_p == pytest.approx(cl, rel=0.03)  # pressure lift (viscous lift is tiny)
    # far from the body the flow is the free stream; no slip on the wall
    r = np.linalg.norm(vol.points[:, :2].numpy() - [0.5, 0], axis=1)
    U = vol.fields["U"].double().numpy()
    far = r > 20
    np.testing.assert_allclose(U[far, 0], math.cos(a), atol=0.02)
    np.testing.assert_allclose(U[far, 1], math.sin(a), atol=0.02)
    assert np.abs(U[: surf.n_points]).max() == 0
    # symmetric airfoil at -alpha: lift changes sign
    s2, v2, rec2 = rans.make_case({"m": 0.0, "p": 0.4, "t": 0.12, "alpha_deg": -4.0}, str(tmp_path / "neg"), TINY)
    assert rec2["cl"] == pytest.approx(-cl, rel=0.02, abs=2e-3)
    assert rec2["cd"] == pytest.approx(case["cd"], rel=0.05)


@needs_foam
def test_parallel_jobs_write_the_same_set(tmp_path, capsys, monkeypatch):
    """``jobs=2`` solves cases at once but writes the same files and manifest (index order, same
    fields; only the solver's wall time differs) as one case at a time; bad ``jobs`` and
    ``--jobs`` with the panel solver are clear errors."""
    import geoop

    tiny = {k: getattr(TINY, k) for k in ("n_around", "n_radial", "first_cell", "iterations", "cl_window")}
    serial = rans.generate(str(tmp_path / "a"), 3, seed=5, **tiny)
    par = rans.generate(str(tmp_path / "b"), 3, seed=5, jobs=2, **tiny)
    assert [e["case"] for e in par] == ["case_0000", "case_0001", "case_0002"]
    for e1, e2 in zip(serial, par):
        assert {k: v for k, v in e1.items() if k != "solver_seconds"} == {k: v for k, v in e2.items() if k != "solver_seconds"}
        for f in ("surface", "volume"):
            g1, g2 = geoop.read(str(tmp_path / "a" / e1[f])), geoop.read(str(tmp_path / "b" / e2[f]))
            assert set(g1.fields) == set(g2.fields)
            for k in g1.fields:
                np.testing.assert_array_equal(g1.fields[k].numpy(), g2.fields[k].numpy())
    man = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert [c["case"] for c in man["cases"]] == ["case_0000", "case_0001", "case_0002"]

    # resumable: finished cases (marker + files) are skipped; an interrupted run keeps the cases
    # finished before the interruption in its manifest; a case without its marker is redone;
    # other parameters are refused
    solved = []
    real = rans.make_case

    def counting(prm, case_dir, *a, **k):
        solved.append(os.path.basename(case_dir))
        if os.path.basename(case_dir) == "case_0004":
            raise KeyboardInterrupt  # the run is stopped while case 4 is in flight
        return real(prm, case_dir, *a, **k)

    monkeypatch.setattr(rans, "make_case", counting)
    with pytest.raises(KeyboardInterrupt):
        rans.generate(str(tmp_path / "a"), 5, seed=5, **tiny)
    assert solved == ["case_0003", "case_0004"]
    man = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert [c["case"] for c in man["cases"]] == ["case_0000", "case_0001", "case_0002", "case_0003"]
    assert man["cases"][:3] == serial
    os.remove(tmp_path / "a" / "case_0001.json")
    solved.clear()
    monkeypatch.setattr(rans, "make_case", lambda prm, case_dir, *a, **k: (solved.append(os.path.basename(case_dir)),
                                                                          real(prm, case_dir, *a, **k))[1])
    again = rans.generate(str(tmp_path / "a"), 3, seed=5, **tiny)
    assert solved == ["case_0001"]
    assert {k: v for k, v in again[1].items() if k != "solver_seconds"} == \
        {k: v for k, v in serial[1].items() if k != "solver_seconds"}
    with pytest.raises(DatasetError, match="other parameters"):
        rans.generate(str(tmp_path / "a"), 1, seed=6, **tiny)
    with pytest.raises(ConfigError, match="jobs"):
        rans.generate(str(tmp_path / "c"), 1, jobs=0)
    assert main(["data", "airfoil", "--n", "1", "--out", str(tmp_path / "d"), "--jobs", "2"]) != 0
    assert "--jobs applies to --solver rans" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


@needs_foam
def test_sigterm_stops_a_parallel_set_at_once(tmp_path):
    """SIGTERM to ``geoop data airfoil --solver rans --jobs 2`` ends it within seconds with exit
    143: the workers end their solvers (no simpleFoam of the set keeps running), unfinished
    cases leave no marker, and the same command then resumes."""
    import signal
    import sys
    import time

    out = tmp_path / "set"
    cmd = [sys.executable, "-m", "geoop", "data", "airfoil", "--solver", "rans", "--n", "2", "--jobs", "2",
           "--out", str(out), "-p", "n_around=64", "-p", "n_radial=32", "-p", "first_cell=4e-3",
           "-p", "iterations=100000", "-p", "residual_tol=1e-30", "-p", "cl_window=50"]

    def solvers():
        r = subprocess.run(["pgrep", "-f", f"simpleFoam -case {out}"], capture_output=True, text=True)
        return r.stdout.split()

    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    try:
        t0 = time.time()
        while len(solvers()) < 2 and time.time() - t0 < 120:
            time.sleep(0.5)
        assert len(solvers()) == 2, "the two solvers did not start"
        proc.send_signal(signal.SIGTERM)
        t1 = time.time()
        rc = proc.wait(timeout=60)
        stopped = time.time() - t1
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 143, proc.stderr.read()
    assert stopped < 30
    time.sleep(0.5)
    assert solvers() == []
    assert not list(out.glob("case_*.json")) and not list(out.glob("case_*_surface.vtp"))


@pytest.mark.skipif(not os.path.exists("/proc/self/autogroup"), reason="Linux scheduler autogroups only")
def test_solver_session_keeps_the_callers_niceness(tmp_path):
    """A solver runs in a session of its own (so an interrupt can end its whole group); its
    scheduler autogroup gets the caller's nice value, so ``nice geoop data ...`` stays nice."""
    import sys

    # the group's nice is set just after the solver starts: read it once it has left 0 (up to 2 s)
    script = ('for i in $(seq 200); do a=$(cat /proc/$$/autogroup); '
              'case "$a" in *"nice 0") sleep 0.01;; *) break;; esac; done; echo "$a"')
    code = ("import os; n = os.nice(5); from geoop.data._case_io import run_logged; "
            f"print(n, run_logged(['bash', '-c', {script!r}], {str(tmp_path / 'log')!r}))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    nice, rc = r.stdout.split()  # the caller's nice value (5 above the test's own)
    assert r.returncode == 0 and rc == "0" and int(nice) >= 5, r.stderr
    assert (tmp_path / "log").read_text().strip().endswith(f"nice {nice}")
