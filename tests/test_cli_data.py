"""The ``geoop data`` command: generators through the CLI (same seed -> same bytes) and the
``check`` of a folder of CFD files."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import meshio
import numpy as np
import pytest

from geoop.cli.data import parse_params, resolve_generator
from geoop.cli.main import main
from geoop.errors import ConfigError

SMALL = ["-p", "n_volume=300", "-p", "n_panels=40"]


def _hashes(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_same_seed_gives_same_files(tmp_path, capsys):
    for name, seed, n in (("a", "5", "2"), ("b", "5", "2"), ("c", "6", "1")):
        assert main(["data", "airfoil", "--n", n, "--out", str(tmp_path / name), "--seed", seed] + SMALL) == 0
    ha, hb, hc = _hashes(tmp_path / "a"), _hashes(tmp_path / "b"), _hashes(tmp_path / "c")
    assert "manifest.json" in ha and len(ha) == 5  # 2 cases x (surface + volume) + manifest
    assert ha == hb
    assert hc["case_0000_volume.vtu"] != ha["case_0000_volume.vtu"]  # another seed, another case
    man = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert [c["case"] for c in man["cases"]] == ["case_0000", "case_0001"]
    assert all(c["params"]["n_volume"] == 300 for c in man["cases"])  # --param reached the generator
    # the generated folder is a valid dataset: `check` finds both cases, none skipped
    capsys.readouterr()
    rc = main(["data", "check", str(tmp_path / "a"), "--inputs", "Cp", "--targets", "p", "u",
               "--input-file", "{case}_surface.vtp", "--query-file", "{case}_volume.vtu"])
    out = capsys.readouterr().out
    assert rc == 0 and "2 usable case(s), 0 skipped" in out and "2-D cases" in out


def test_unknown_generator_option_is_a_clear_error(tmp_path, capsys):
    assert main(["data", "airfoil", "--n", "1", "--out", str(tmp_path / "x"), "-p", "camber=0.1"]) == 2
    err = capsys.readouterr().err
    assert "camber" in err and "alpha_deg" in err  # names the bad key and the valid ones


def test_check_reports_bad_cases(tmp_path, capsys):
    pts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], float)
    tet = np.array([[0, 1, 2, 3]])
    meshio.write(tmp_path / "good.vtu", meshio.Mesh(pts, [("tetra", tet)], point_data={"p": np.arange(4.0)}))
    meshio.write(tmp_path / "nofield.vtu", meshio.Mesh(pts, [("tetra", tet)], point_data={"T": np.arange(4.0)}))
    rc = main(["data", "check", str(tmp_path), "--targets", "p"])
    out = capsys.readouterr().out
    assert rc == 1 and "1 usable case(s), 1 skipped" in out and "nofield.vtu" in out and "'p'" in out


def test_generator_choice_and_params_resolution():
    with pytest.raises(ConfigError, match=r"valid: \['airfoil', 'body', 'body3d', 'sphere'\]"):
        resolve_generator("wing")
    # exponent notation is a number (PyYAML alone reads 4e-3 as a string); '0012' stays text
    assert parse_params(["first_cell=4e-3", "tol=1E+2", "r=1e-3,2e-3", "naca=0012x"]) == {
        "first_cell": 4e-3, "tol": 100.0, "r": (1e-3, 2e-3), "naca": "0012x"}
    assert parse_params(["alpha_deg=0,8", "n_volume=500", "naca='0012'", "m=[0, 0.04]"]) == {
        "alpha_deg": (0, 8), "n_volume": 500, "naca": "0012", "m": (0, 0.04)}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_params(["alpha_deg"])
    with pytest.raises(SystemExit):
        main(["data", "wing", "--n", "1", "--out", "x"])
