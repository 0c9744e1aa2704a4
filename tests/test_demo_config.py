"""``geoop demo``'s run configuration, the example config that mirrors it, the body-frame
case preparation and the generator's trailing-edge option it can use."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import geoop

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("fast", [False, True])
def test_demo_config_latent_grid_spans_the_window(tmp_path, fast):
    """The latent box is the crop window (points stay in chords), the config validates, and
    the encoder / decoder balls are between 1 and 3 latent grid spacings (a ball smaller
    than the spacing can miss every node; a much larger one blurs the suction peak)."""
    from geoop.cli.demo import WINDOW, demo_config
    from geoop.data.folder import MeshFolderDataset
    from geoop.models.gino import GINO
    from geoop.train.config import resolve_config

    cfg = resolve_config(demo_config(tmp_path, tmp_path / "run", fast, 3, 0), source="demo",
                         dataset_cls=MeshFolderDataset, model_cls=GINO)
    m = cfg["model"]
    assert cfg["data"]["geometry_normalization"] == "none"
    assert cfg["data"]["inputs"] == ["freestream", "normal"]
    assert m["latent"]["domain"] == [[WINDOW[0], WINDOW[2]], [WINDOW[1], WINDOW[3]]]
    shape = m["latent"]["shape"]
    spacing = max((WINDOW[1] - WINDOW[0]) / (shape[0] - 1), (WINDOW[3] - WINDOW[2]) / (shape[1] - 1))
    for r in (m["encoder"]["radius"], m["decoder"]["radius"]):
        assert spacing < r < 3 * spacing
    model = GINO.from_config({"in_channels": 2, "out_channels": 3, "coord_dim": 2, **m,
                              "latent": {**m["latent"], "features": ["sdf"]}})
    pts = model.latent_points()
    assert pts.min(0).values.tolist() == pytest.approx([WINDOW[0], WINDOW[2]])
    assert pts.max(0).values.tolist() == pytest.approx([WINDOW[1], WINDOW[3]])
    wind = demo_config(tmp_path, tmp_path / "run", fast, 3, 0, frame="wind")
    assert wind["data"]["inputs"] == ["normal"]


def test_airfoil_toml_mirrors_the_demo():
    """configs/airfoil.toml trains on the demo's cases: same model and data options."""
    from geoop.cli.demo import demo_config
    from geoop.train.config import load_config_file

    toml = load_config_file(ROOT / "configs" / "airfoil.toml")
    ref = demo_config(Path("x"), Path("y"), False, 1, 0)
    assert toml["model"] == ref["model"]
    for k in ("inputs", "targets", "input_file", "query_file", "drop_flat_z", "latent_sdf", "geometry_normalization", "subsample"):
        assert toml["data"][k] == ref["data"][k], k


def test_body_frame_cases_carry_the_free_stream(tmp_path):
    """frame="body": points are not rotated (trailing edge at (1, 0)), the surface carries
    (cos alpha, sin alpha), and far from the airfoil the body-frame velocity is that
    direction; the wind frame of the same case is its rotation by -alpha."""
    from geoop.cli.demo import _rotate, prepare_cases
    from geoop.data import airfoil
    from geoop.errors import ConfigError

    alpha = 7.0
    entries = airfoil.generate(str(tmp_path / "raw"), 1, seed=5, alpha_deg=alpha, n_volume=800, n_panels=80)
    prepare_cases(tmp_path / "raw", tmp_path / "body", entries, frame="body")
    prepare_cases(tmp_path / "raw", tmp_path / "wind", entries, frame="wind")
    sb = geoop.read(tmp_path / "body" / entries[0]["surface"])
    sw = geoop.read(tmp_path / "wind" / entries[0]["surface"])
    a = math.radians(alpha)
    want = torch.tensor([[math.cos(a), math.sin(a)]], dtype=torch.float64).expand(sb.n_points, 2)
    assert torch.allclose(sb.fields["freestream"].double(), want, atol=1e-6)
    assert "freestream" not in sw.fields
    te = sb.points[sb.points[:, 0].argmax()]
    assert float(te[0]) == pytest.approx(1.0, abs=1e-6) and float(te[1]) == pytest.approx(0.0, abs=1e-6)
    assert np.allclose(_rotate(sb.points[:, :2].double().numpy(), -a), sw.points[:, :2].double().numpy(), atol=1e-5)
    raw = geoop.read(tmp_path / "raw" / entries[0]["volume"])
    far = (raw.points[:, :2].double().norm(dim=1) > 4.0).numpy()
    vel = np.concatenate([raw.fields["u"].double().numpy(), raw.fields["v"].double().numpy()], 1)[far].mean(0)
    assert vel == pytest.approx([math.cos(a), math.sin(a)], abs=0.01)
    with pytest.raises(ConfigError, match="valid"):
        prepare_cases(tmp_path / "raw", tmp_path / "x", entries, frame="stability")


def test_te_stagnation_changes_only_the_trailing_edge_node():
    """te_stagnation: Cp = p = 1 and zero velocity at the trailing-edge node (node 0 of the
    surface, a volume node too); every other value is the raw panel solution."""
    from geoop.data import airfoil

    prm = {"naca": "2412", "alpha_deg": 6.0, "n_panels": 80, "n_volume": 700}
    s0, v0 = airfoil.make_case(prm, seed=1)
    s1, v1 = airfoil.make_case(prm, seed=1, te_stagnation=True)
    cp0, cp1 = s0.fields["Cp"][:, 0].numpy(), s1.fields["Cp"][:, 0].numpy()
    assert cp1[0] == 1.0 and cp0[0] != pytest.approx(1.0, abs=1e-3)
    assert np.array_equal(cp0[1:], cp1[1:])
    te = np.nonzero((v1.points[:, :2] - s1.points[:1, :2]).norm(dim=1).numpy() < 1e-9)[0]
    assert te.size == 1
    changed = np.nonzero((v0.fields["p"] != v1.fields["p"])[:, 0].numpy())[0]
    assert changed.tolist() == te.tolist()
    assert float(v1.fields["p"][te[0], 0]) == 1.0
    assert float(v1.fields["u"][te[0], 0]) == 0.0 and float(v1.fields["v"][te[0], 0]) == 0.0


def test_limit_blas_threads_reaches_numpys_openblas():
    """The demo sets the OpenBLAS threads of numpy (and scipy) too, not only torch's: on a
    busy machine the panel-method solves were 20-100x slower with spinning BLAS threads."""
    from geoop.cli.demo import _limit_blas_threads

    cfg = np.show_config(mode="dicts") if hasattr(np, "show_config") else {}
    blas = str(cfg.get("Build Dependencies", {}).get("blas", {}).get("name", "")) if isinstance(cfg, dict) else ""
    done = _limit_blas_threads(1)
    if "openblas" in blas:
        assert any("numpy" in p for p in done), done
    a = np.random.default_rng(0).random((50, 50)) + 50 * np.eye(50)
    assert np.allclose(a @ np.linalg.solve(a, np.ones(50)), 1.0)


def test_mirrored_case_is_the_reflection_about_the_chord(tmp_path):
    """prepare_cases(mirror=[case]): y -> -y, v -> -v, free stream (cos a, -sin a), normals
    reflected, u / p / Cp unchanged, triangles still counter-clockwise."""
    from geoop.cli.demo import prepare_cases
    from geoop.data import airfoil

    entries = airfoil.generate(str(tmp_path / "raw"), 1, seed=3, alpha_deg=6.0, n_volume=800, n_panels=80)
    prepare_cases(tmp_path / "raw", tmp_path / "body", entries, frame="body")
    prepare_cases(tmp_path / "raw", tmp_path / "mirror", entries, frame="body", mirror=[entries[0]["case"]])
    sb, sm = (geoop.read(tmp_path / d / entries[0]["surface"]) for d in ("body", "mirror"))
    vb, vm = (geoop.read(tmp_path / d / entries[0]["volume"]) for d in ("body", "mirror"))
    flip = torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(sm.points.double(), sb.points.double() * flip)
    torch.testing.assert_close(vm.points.double(), vb.points.double() * flip)
    torch.testing.assert_close(sm.fields["freestream"].double(), sb.fields["freestream"].double() * flip[:2])
    torch.testing.assert_close(sm.fields["normal"].double(), sb.fields["normal"].double() * flip[:2])
    torch.testing.assert_close(sm.fields["Cp"], sb.fields["Cp"])
    for k, sign in (("u", 1.0), ("v", -1.0), ("p", 1.0)):
        torch.testing.assert_close(vm.fields[k].double(), sign * vb.fields[k].double())
    p, t = vm.points[:, :2].double(), vm.cells["triangle"]
    a, b, c = p[t[:, 0]], p[t[:, 1]], p[t[:, 2]]
    cross = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    assert (cross > 0).all()
