"""The 3-D half-body recipe: coefficients as differentiable functionals of surface fields
(against geoop.physics.forces, gradcheck), body regions, two query sets per case (their
loss equals the per-set losses computed separately), the coefficient loss, and
``geoop train configs/body_rans.toml`` -> ``geoop evaluate`` -> ``geoop render --html`` on
three tiny synthetic cases in the generator's layout."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from _body_cases import half_body, make_cases, tiny_body_config

import geoop
from geoop import Geometry
from geoop.physics import REGIONS, body_regions, coefficient_weights, forces

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
SETS = [{"name": "surface", "file": "{case}_surface.vtp", "targets": ["p", "wallShearStress"]},
        {"name": "points", "file": "{case}_points.vtu", "targets": ["p", "U"]}]


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    root = tmp_path_factory.mktemp("body_rans")
    return root, make_cases(root, 3, seed=1, n_points=200, n_theta=12)


def _torus(major=20, minor=10):
    import trimesh

    m = trimesh.creation.torus(major_radius=1.0, minor_radius=0.35, major_sections=major, minor_sections=minor)
    return Geometry(torch.as_tensor(np.array(m.vertices)), cells={"triangle": np.asarray(m.faces)})


# ------------------------------------------------------------------ coefficient functionals
def test_coefficient_weights_equal_forces_3d_2d_and_half_body():
    rng = np.random.default_rng(0)
    g = _torus()
    p, tau = torch.as_tensor(rng.normal(size=g.n_points)), torch.as_tensor(rng.normal(size=(g.n_points, 3)))
    ref = dict(dynamic_pressure=0.7, area=1.3, length=0.9, freestream=(1, 0.2, 0.1), lift_direction=(0, 0.3, 1),
               moment_center=(0.1, 0.2, 0.3), p_inf=0.4)
    names = ["cd", "cl", "cs", "cm", "cm_roll", "cm_yaw", "cfx", "cfy", "cfz", "cmx", "cmy", "cmz"]
    c = coefficient_weights(g, names, **ref)(p, tau)
    r = forces(g, p, tau, **ref).coefficients
    np.testing.assert_allclose(c.numpy(), [r[n] for n in names], rtol=1e-10, atol=1e-12)
    # 2-D polyline (per unit span), point data
    th = 2 * np.pi * np.arange(40) / 40
    xy = np.stack([np.cos(th) * (1 + 0.3 * np.cos(3 * th)), 0.4 * np.sin(th)], 1)
    line = Geometry(torch.as_tensor(xy), cells={"line": np.stack([np.arange(40), (np.arange(40) + 1) % 40], 1)})
    p2, t2 = torch.as_tensor(rng.normal(size=40)), torch.as_tensor(rng.normal(size=(40, 2)))
    ref2 = dict(length=1.7, freestream=(0.9, 0.1), moment_center=(0.25, 0.0))
    names2 = ["cd", "cl", "cm", "cfx", "cfy", "cmz"]
    c2 = coefficient_weights(line, names2, **ref2)(p2, t2)
    r2 = forces(line, p2, t2, **ref2).coefficients
    np.testing.assert_allclose(c2.numpy(), [r2[n] for n in names2], rtol=1e-10, atol=1e-12)
    # an open half body oriented by its point normals
    v, tri, nrm = half_body(1.0, 0.4, 0.35, 0.2)
    h = Geometry(torch.as_tensor(v), cells={"triangle": torch.as_tensor(tri)}, normals=torch.as_tensor(nrm))
    ph, th_ = torch.as_tensor(rng.normal(size=h.n_points)), torch.as_tensor(rng.normal(size=(h.n_points, 3)))
    ch = coefficient_weights(h, ["cd", "cl"], area=0.2)(ph, th_)
    rh = forces(h, ph, th_, area=0.2).coefficients
    np.testing.assert_allclose(ch.numpy(), [rh["cd"], rh["cl"]], rtol=1e-10)
    with pytest.raises(geoop.ShapeError, match="not defined for a 2D surface"):
        coefficient_weights(line, ["cs"])
    # a 3-D surface's moment centre has 3 components, for both (forces refuses 2 as well)
    for fn in (lambda **k: coefficient_weights(g, ["cm"], **k), lambda **k: forces(g, p, tau, **k)):
        with pytest.raises(geoop.ShapeError, match="moment_center"):
            fn(moment_center=(0.1, 0.2))


def test_half_body_with_symmetry_equals_mirrored_full_body():
    """coefficient_weights(half, symmetry=("y", 0)) = the explicitly mirrored closed body's
    coefficients (p mirrored, wall shear reflected), moments about a point off the plane."""
    v, tri, nrm = half_body(1.0, 0.4, 0.35, 0.2)
    rng = np.random.default_rng(3)
    n = v.shape[0]
    p, tau = rng.normal(size=n), rng.normal(size=(n, 3))
    R = np.diag([1.0, -1.0, 1.0])
    full = Geometry(torch.as_tensor(np.concatenate([v, v @ R])),
                    cells={"triangle": torch.as_tensor(np.concatenate([tri, tri[:, ::-1] + n]))},
                    normals=torch.as_tensor(np.concatenate([nrm, nrm @ R])))
    half = Geometry(torch.as_tensor(v), cells={"triangle": torch.as_tensor(tri)}, normals=torch.as_tensor(nrm))
    names = ["cd", "cl", "cs", "cm", "cm_roll", "cm_yaw", "cfx", "cfy", "cfz", "cmx", "cmy", "cmz"]
    ref = dict(area=0.4, length=1.1, moment_center=(0.1, 0.2, 0.3), freestream=(1.0, 0.1, 0.05))
    cf = coefficient_weights(full, names, **ref)(torch.as_tensor(np.concatenate([p, p])),
                                                 torch.as_tensor(np.concatenate([tau, tau @ R])))
    ch = coefficient_weights(half, names, symmetry=("y", 0.0), **ref)(torch.as_tensor(p), torch.as_tensor(tau))
    np.testing.assert_allclose(ch.numpy(), cf.numpy(), rtol=1e-9, atol=1e-12)
    r = forces(half, torch.as_tensor(p), torch.as_tensor(tau), symmetry=("y", 0.0), **ref).coefficients
    np.testing.assert_allclose(ch.numpy(), [r[k] for k in names], rtol=1e-9, atol=1e-12)  # forces' half-body rule
    plain = coefficient_weights(half, names, **ref)(torch.as_tensor(p), torch.as_tensor(tau))
    assert not torch.allclose(plain, ch)  # without the plane: the half's own loads


def test_coefficients_differentiable_gradcheck():
    g = _torus(8, 6)
    cw = coefficient_weights(g, ["cd", "cl", "cm"], area=2.0, freestream=(1.0, 0.3, 0.0))
    rng = np.random.default_rng(1)
    p = torch.tensor(rng.normal(size=g.n_points), requires_grad=True)
    tau = torch.tensor(rng.normal(size=(g.n_points, 3)), requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: cw(a, b), (p, tau))
    # forces() itself is differentiable in p and tau, and its force gives the same gradient
    f = lambda a, b: forces(g, a, b, area=2.0, freestream=(1.0, 0.3, 0.0)).force  # noqa: E731
    assert torch.autograd.gradcheck(f, (p, tau))
    eD = torch.tensor([1.0, 0.3, 0.0], dtype=torch.float64)
    eD = eD / eD.norm()
    (gp,) = torch.autograd.grad((f(p, tau) @ eD) / (0.5 * 2.0), p)  # cd = F.e_D / (q area), q = 1/2
    torch.testing.assert_close(gp, cw.pressure[:, 0])


def test_body_regions_of_a_box_and_exact_split():
    import trimesh

    m = trimesh.creation.box(extents=(4.0, 2.0, 1.0))
    for _ in range(3):
        m = m.subdivide()
    g = Geometry(torch.as_tensor(np.array(m.vertices)), cells={"triangle": np.asarray(m.faces)})
    lab = body_regions(g)
    x = g.points.double()
    inner = lambda a, v: (x[:, a] - v).abs() < 1e-9  # noqa: E731
    face = {"front": inner(0, -2.0), "base": inner(0, 2.0), "underbody": inner(2, -0.5), "roof": inner(2, 0.5)}
    interior = lambda m_: m_ & ((x.abs() < torch.tensor([2, 1, 0.5]) - 1e-6).sum(1) == 2)  # noqa: E731
    for name, mask in face.items():
        assert (lab[interior(mask)] == REGIONS.index(name)).all(), name
    assert (lab[interior(inner(1, 1.0))] != REGIONS.index("base")).all()  # sides: no base
    # the region parts of a coefficient add up to it
    rng = np.random.default_rng(2)
    p, tau = torch.as_tensor(rng.normal(size=g.n_points)), torch.as_tensor(rng.normal(size=(g.n_points, 3)))
    cw = coefficient_weights(g, ["cd", "cl"])
    parts = sum(cw.rows(lab == i)(p, tau) for i in range(len(REGIONS)))
    torch.testing.assert_close(parts, cw(p, tau))


# ------------------------------------------------------------------ query sets and losses
def _batch(ds, idx=(0, 1)):
    from geoop.batch import collate

    return collate([ds[i] for i in idx])


def test_two_query_sets_loss_equals_separate_per_set_losses(cases):
    from geoop.data.folder import MeshFolderDataset
    from geoop.train import Trainer
    from geoop.train.losses import relative_l2

    root, _ = cases
    sets = [dict(SETS[0], weighting="surface"), SETS[1]]
    both = MeshFolderDataset(root, input_file="{case}_surface.vtp", queries=sets, manifest=False, test_fraction=0.0)
    assert both.targets == ["surface/p", "surface/wallShearStress", "points/p", "points/U"]
    surf = MeshFolderDataset(root, targets=["p", "wallShearStress"], input_file="{case}_surface.vtp",
                             query_file="{case}_surface.vtp", manifest=False, test_fraction=0.0)
    pts = MeshFolderDataset(root, targets=["p", "U"], input_file="{case}_surface.vtp", query_file="{case}_points.vtu",
                            manifest=False, test_fraction=0.0)
    # the per-set normalisers are the single-set datasets' ones
    for a, b in (("surface/p", surf.normalizers["p"]), ("points/U", pts.normalizers["U"])):
        torch.testing.assert_close(both.normalizers[a].mean, b.mean)
    bb, bs, bp = _batch(both), _batch(surf), _batch(pts)
    torch.manual_seed(0)
    ps, pp = torch.randn(bs.queries.shape[0], 4), torch.randn(bp.queries.shape[0], 4)
    # the combined prediction: each sample's surface rows, then its point rows; other sets' columns arbitrary
    rows_s, rows_p = bs.split_queries(ps), bp.split_queries(pp)
    pred = torch.cat([torch.cat([torch.cat([s, torch.randn(s.shape[0], 4)], 1), torch.cat([torch.randn(q.shape[0], 4), q], 1)])
                      for s, q in zip(rows_s, rows_p)])
    model = torch.nn.Linear(1, 1)
    tr = Trainer(model, both, targets=both.targets, preprocessor=both.preprocessor, data_normalized=True, progress=False)
    err = relative_l2(pred, bb.y(both.targets), bb.query_batch, 2, tr.widths(bb), tr.loss_weights(bb))
    e_s = relative_l2(ps, bs.y(["p", "wallShearStress"]), bs.query_batch, 2, [1, 3], bs.query_weights)  # area-weighted
    e_p = relative_l2(pp, bp.y(["p", "U"]), bp.query_batch, 2, [1, 3])  # each point the same
    torch.testing.assert_close(err, torch.cat([e_s, e_p], 1), rtol=1e-5, atol=1e-6)
    assert float(err.mean()) == pytest.approx(float(torch.cat([e_s, e_p], 1).mean()), rel=1e-5)
    with pytest.raises(geoop.DatasetError, match="queries"):
        MeshFolderDataset(root, targets=["p"], queries=SETS)


def test_coefficient_loss_matches_forces_and_has_gradients(cases):
    from geoop.data.folder import MeshFolderDataset
    from geoop.train import Trainer

    root, recs = cases
    area = {r["case"]: r["aref"] for r in recs}
    ref = lambda case: {"area": area[case]}  # noqa: E731
    ds = MeshFolderDataset(root, input_file="{case}_surface.vtp", queries=SETS, manifest=False, test_fraction=0.0,
                           forces={"field": "surface/p", "wall_shear": "surface/wallShearStress", "names": ["cd", "cl"],
                                   "reference": ref})
    tr = Trainer(torch.nn.Linear(1, 1), ds, targets=ds.targets, preprocessor=ds.preprocessor, data_normalized=True,
                 progress=False, coefficient_loss={"weights": {"cd": 1.0, "cl": 0.5}, "names": ["cd", "cl"],
                                                   "field": "surface/p", "wall_shear": "surface/wallShearStress"})
    b = _batch(ds)
    y = b.y(ds.targets)
    torch.manual_seed(1)
    pred = (y + 0.3 * torch.randn_like(y)).requires_grad_(True)
    dc = tr.coefficient_errors(b, pred, y, tr.widths(b), normalized=True)
    # against geoop.physics.forces of the decoded fields on the surface file
    dec_p = ds.normalizers.decode("surface/p", pred[:, :1].detach())
    dec_t = ds.normalizers.decode("surface/wallShearStress", pred[:, 1:4].detach())
    for k, case in enumerate(b.meta):
        surf = geoop.read(case["query_set_files"][0])
        rows = slice(int(b.query_ptr[k]), int(b.query_ptr[k]) + surf.n_points)
        fp = forces(surf, dec_p[rows].double(), dec_t[rows].double(), area=area[case["case"]]).coefficients
        ft = forces(surf, "p", "wallShearStress", area=area[case["case"]]).coefficients
        np.testing.assert_allclose(dc[k].detach().numpy(), [fp["cd"] - ft["cd"], fp["cl"] - ft["cl"]], rtol=1e-4, atol=1e-6)
    loss = (dc.abs() * torch.tensor([1.0, 0.5], dtype=dc.dtype)).sum(1).mean()
    (g,) = torch.autograd.grad(loss, pred)
    assert g[:, :4].abs().sum() > 0  # the surface p and shear columns get a gradient
    assert g[:, 4:].abs().sum() == 0  # the volume fields do not
    off = b.query_fields["__query_set__"][:, 0] != 0
    assert g[off].abs().sum() == 0  # nor the point-cloud rows
    # subsampled queries: the operator rows are scaled as the quadrature weights (unbiased integrals)
    sub = MeshFolderDataset(root, input_file="{case}_surface.vtp", queries=SETS, manifest=False, test_fraction=0.0,
                            subsample={"queries": 100}, forces=ds.forces)
    full, part = ds[0].queries, sub[0]
    rows = part.meta["query_index"]
    k = part.queries.fields["__coef_p__"]
    torch.testing.assert_close(k, full.fields["__coef_p__"][rows] * (full.n_points / 100))
    torch.testing.assert_close(part.queries.weights, full.weights[rows] * (full.n_points / 100))


# ------------------------------------------------------------------ the recipe end to end
def test_train_evaluate_render_recipe(cases, tmp_path, capsys):
    from geoop.cli.main import main

    root, recs = cases
    cfg = tiny_body_config(tmp_path, root)
    assert main(["data", "check", str(cfg)]) == 0
    assert "target field 'points/U'" in capsys.readouterr().out
    assert main(["train", str(cfg), "--no-progress"]) == 0
    hist = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    last = hist[-1]
    assert {"val/rel_l2/surface/p", "val/rel_l2/surface/wallShearStress", "val/rel_l2/points/p", "val/rel_l2/points/U",
            "val/cd/mae", "val/cl/mae", "val/coef_loss/cd"} <= set(last)
    # the loss's coefficient operator and the metric's forces() integration agree
    assert last["val/coef_loss/cd"] == pytest.approx(last["val/cd/mae"], rel=1e-4)
    capsys.readouterr()

    out = tmp_path / "ev"
    assert main(["evaluate", "--checkpoint", str(tmp_path / "run" / "best.pt"), str(root), "--split", "train", "test",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "split 'test'" in text and "split 'train'" in text and "cd/mae" in text and "cd/r2" in text
    assert "share of the drag error by body region" in text
    rep = json.loads((out / "test" / "evaluation.json").read_text())
    row = rep["cases"][0]
    assert set(rep["coefficients"]) == {"cd/mae", "cd/r2", "cl/mae", "cl/r2"}
    parts = sum(row[f"cd_error_{r}"] for r in REGIONS)
    assert parts == pytest.approx(row["cd_pred"] - row["cd_true"], rel=1e-6, abs=1e-9)
    assert sum(rep["drag_error_share"].values()) == pytest.approx(1.0)
    true_cd = {r["case"]: r["cd"] for r in recs}[row["case"]]
    assert row["cd_true"] == pytest.approx(true_cd, rel=1e-5)  # the manifest's value, from the same quadrature
    surf = geoop.read(out / "test" / f"{row['case']}_surface_pred.vtp")
    src = geoop.read(root / f"{row['case']}_surface.vtp")
    assert surf.cells["triangle"].shape == src.cells["triangle"].shape
    assert {"p", "p_true", "p_error", "wallShearStress", "wallShearStress_true"} <= set(surf.fields)
    torch.testing.assert_close(surf.fields["p_true"][:, 0], src.fields["p"].reshape(-1).to(surf.dtype))
    e = float((surf.fields["p"] - surf.fields["p_true"]).norm() / surf.fields["p_true"].norm())
    assert e == pytest.approx(row["rel_l2_surface/p"], rel=1e-5)
    pts = geoop.read(out / "test" / f"{row['case']}_points_pred.vtu")
    assert {"p", "U", "U_true"} <= set(pts.fields) and "wallShearStress" not in pts.fields

    # geoop predict: one set's fields under their own names (default: the set of the input file)
    ck = str(tmp_path / "run" / "best.pt")
    case = root / f"{row['case']}_surface.vtp"
    assert main(["predict", "--checkpoint", ck, "--geometry", str(case), "--out", str(tmp_path / "s.vtp")]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["query_set"] == "surface" and info["fields"] == ["p", "wallShearStress"]
    assert info["rel_l2"]["p"] == pytest.approx(row["rel_l2_surface/p"], rel=1e-5)
    assert info["coefficients"]["cd"] == pytest.approx(row["cd_pred"], rel=1e-5)
    assert main(["predict", "--checkpoint", ck, "--geometry", str(case), "--on", str(root / f"{row['case']}_points.vtu"),
                 "--query-set", "points", "--out", str(tmp_path / "v.vtp")]) == 0
    v = geoop.read(tmp_path / "v.vtp")
    assert {"p", "U", "U_true"} <= set(v.fields) and not any("/" in k for k in v.fields)
    torch.testing.assert_close(v.fields["U"], pts.fields["U"], rtol=1e-4, atol=1e-5)
    capsys.readouterr()

    page = tmp_path / "cp.html"
    assert main(["render", str(out / "test" / f"{row['case']}_surface_pred.vtp"), "--field", "p", "--html", str(page),
                 "--camera", "body"]) == 0
    html = page.read_text()
    assert '"eye":{"x":-' in html.replace(" ", "") and "|error|" in html


def test_body_camera_faces_the_open_side():
    from geoop.viz.framing import body_camera

    v, _, _ = half_body(1.0, 0.4, 0.3, 0.1)
    cam = body_camera(v)
    assert cam["eye"]["y"] > 0 and cam["eye"]["x"] < 0 and cam["eye"]["z"] > 0
    assert body_camera(v * [1, -1, 1])["eye"]["y"] < 0


def test_config_errors(tmp_path, cases):
    from functools import partial

    from geoop.data.folder import MeshFolderDataset
    from geoop.train.config import resolve_config

    resolve_config = partial(resolve_config, dataset_cls=MeshFolderDataset)

    root, _ = cases
    base = {"data": {"folder": str(root), "queries": SETS}, "output": {"dir": str(tmp_path)}}
    assert resolve_config(base)["data"]["targets"] == ["surface/p", "surface/wallShearStress", "points/p", "points/U"]
    with pytest.raises(geoop.ConfigError, match="remove data.targets"):
        resolve_config({**base, "data": {**base["data"], "targets": ["p"]}})
    with pytest.raises(geoop.ConfigError, match="surface_weighting"):
        resolve_config({**base, "loss": {"surface_weighting": "volume"}})
    with pytest.raises(geoop.ConfigError, match="same name"):
        resolve_config({**base, "data": {**base["data"], "queries": [SETS[0], dict(SETS[1], name="surface")]}})


def test_recipe_on_a_generated_set_without_a_split(tmp_path, capsys):
    """As `geoop data body --solver rans` writes it: a manifest without a split (the run draws a
    seeded one) and cases larger than the step's query subsample. Validation sees every point
    (coefficient metrics need the whole surface), and `geoop evaluate --split test` scores the
    test cases the checkpoint was trained with (recorded in it), even after a case is added."""
    import shutil

    from geoop.cli.main import main

    root = tmp_path / "set"
    make_cases(root, 5, seed=2, n_points=200, n_theta=12)
    man = json.loads((root / "manifest.json").read_text())
    for c in man["cases"]:
        c.pop("split")
    (root / "manifest.json").write_text(json.dumps(man))
    cfg = json.loads(tiny_body_config(tmp_path, root).read_text())
    cfg["data"].update(subsample={"queries": 150}, val_fraction=0.25, test_fraction=0.2)
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    assert main(["train", str(tmp_path / "cfg.json"), "--no-progress"]) == 0
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert math.isfinite(last["val/cd/mae"])
    ck = torch.load(tmp_path / "run" / "best.pt", weights_only=False)
    split = ck["extra"]["data"]["split"]
    assert sorted(set(split.values())) == ["test", "train", "val"] and len(split) == 5
    test_cases = sorted(c for c, s in split.items() if s == "test")
    # a case added to the folder after training belongs to no split
    for suffix in ("_surface.vtp", "_points.vtu"):
        shutil.copy(root / f"case_0000{suffix}", root / f"case_0009{suffix}")
    capsys.readouterr()
    out = tmp_path / "ev"
    assert main(["evaluate", "--checkpoint", str(tmp_path / "run" / "best.pt"), str(root), "--split", "test",
                 "--out", str(out)]) == 0
    rep = json.loads((out / "evaluation.json").read_text())
    assert sorted(r["case"] for r in rep["cases"]) == test_cases
