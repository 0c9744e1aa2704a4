"""Tests of geoop.models.Ensemble: stacked members = members one by one, 1 member = GINO,
identical members have std 0, calibration on validation only, checkpoints, bad input."""
from __future__ import annotations

import math

import pytest
import torch

from geoop.batch import GeometryBatch, Sample
from geoop.errors import CheckpointError, ConfigError, GeoopError
from geoop.geometry.geometry import Geometry
from geoop.models import GINO, Ensemble
from geoop.models.ensemble import mixture

CFG = dict(out_channels=2, coord_dim=2, latent={"shape": (12, 12), "features": ["sdf"]},
           encoder={"radius_cells": 1.5, "inputs": ["normals"]}, blocks={"width": 8, "modes": 3, "layers": 2},
           decoder={"radius_cells": 1.5}, local={"radius_cells": 0.6, "nearest": True}, memory={"chunk_edges": 64})


def shapes(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        m = 40 + 10 * i
        t = torch.linspace(0, 2 * math.pi, m + 1)[:-1]
        r = 0.25 + 0.05 * torch.rand(1, generator=g)
        pts = torch.stack([0.5 + r * torch.cos(t), 0.5 + 0.7 * r * torch.sin(t)], 1)
        nrm = torch.stack([torch.cos(t), torch.sin(t)], 1)
        segs = torch.stack([torch.arange(m), (torch.arange(m) + 1) % m], 1)
        geo = Geometry(pts, cells={"line": segs}, normals=nrm, weights=torch.full((m,), 1.0 / m), name=f"c{i}")
        q = torch.rand(25 + i, 2, generator=g)
        out.append((geo, q))
    return out


def batch_of(model, items):
    return GeometryBatch.from_samples([model.precompute(Sample(g, Geometry(q, validate=False))) for g, q in items])


def test_stacked_equals_members_one_by_one_forward_and_gradients():
    torch.manual_seed(0)
    ens = Ensemble(CFG, size=3, vectorize=True).double()
    items = shapes()
    batch = batch_of(ens, items)
    out = ens.member_outputs(batch)  # one vmap call
    assert out.shape == (3, batch.queries.shape[0], 2)
    members = [ens.member(i) for i in range(3)]
    for k, m in enumerate(members):
        torch.testing.assert_close(out[k], m(batch), rtol=1e-6, atol=1e-6)
    # the loop fallback gives the same numbers
    ens.vectorize = False
    torch.testing.assert_close(ens.member_outputs(batch), out, rtol=1e-10, atol=1e-12)
    ens.vectorize = True
    # gradients of the stacked parameters = the members' own gradients
    y = torch.randn_like(out[0])
    (ens.member_outputs(batch) - y).square().sum().backward()
    for k, m in enumerate(members):
        (m(batch) - y).square().sum().backward()
        for name, p in m.named_parameters():
            torch.testing.assert_close(ens.stacked_parameters()[name].grad[k], p.grad, rtol=1e-6, atol=1e-8)
    # members differ (independent initialisations)
    assert (out[0] - out[1]).abs().max() > 1e-3


def test_one_member_ensemble_is_gino_and_query():
    torch.manual_seed(3)
    ens = Ensemble(CFG, size=1, variance=False)
    torch.manual_seed(3)
    gino = GINO.from_config(CFG)
    items = shapes(2)
    batch = batch_of(gino, items)
    torch.testing.assert_close(ens(batch), gino(batch), rtol=1e-6, atol=1e-6)
    for (n, p), (n2, p2) in zip(gino.named_parameters(), ens.member(0).named_parameters()):
        assert n == n2 and torch.equal(p, p2)
    with pytest.raises(ConfigError, match="ensemble >= 2"):
        ens.predict(batch)
    from geoop.train.calibration import ensemble_fields

    with pytest.raises(ConfigError, match="model.ensemble >= 2"):
        ensemble_fields(ens, None, ["p"], items[0][0], items[0][1], None, None, 100, torch.float32)
    # query of a 3-member ensemble = per-member GINO.query (chunked)
    torch.manual_seed(1)
    ens3 = Ensemble(CFG, size=3, vectorize=True)
    geo, q = items[0]
    with torch.no_grad():
        pr = ens3.query(geo, q, chunk_size=7)
        ref = torch.stack([ens3.member(k).query(geo, q, chunk_size=7) for k in range(3)])
    torch.testing.assert_close(pr.members, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(pr.mean, ref.mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(pr.std, ref.std(0, unbiased=False), rtol=1e-4, atol=1e-6)


def test_identical_members_have_zero_std_and_mixture():
    torch.manual_seed(0)
    m = GINO.from_config(CFG)
    ens = Ensemble.from_members([m, m, m, m])
    batch = batch_of(m, shapes(2))
    with torch.no_grad():
        pr = ens.predict(batch)
    assert torch.all(pr.std <= 1e-6 * (1 + pr.mean.abs()))
    torch.testing.assert_close(pr.mean, m(batch).detach(), rtol=1e-6, atol=1e-6)
    # the mixture: law of total variance on a known example
    mu = torch.tensor([[0.0], [2.0]])
    var = torch.tensor([[1.0], [3.0]])
    mean, std = mixture(mu, var)
    assert float(mean) == 1.0 and abs(float(std) - math.sqrt(1.0 + 2.0)) < 1e-7
    with pytest.raises(ConfigError, match="same|share one config"):
        Ensemble.from_members([m, GINO.from_config({**CFG, "blocks": {"width": 4, "modes": 3, "layers": 1}})])


def test_variance_head_and_member_losses():
    torch.manual_seed(0)
    ens = Ensemble(CFG, size=2, variance=True, bootstrap=True, seed=5, vectorize=True)
    batch = batch_of(ens, shapes(3))
    for i, m in enumerate(batch.meta):
        m["case"] = f"case_{i}"
    out = ens.member_outputs(batch)
    assert out.shape[-1] == 4
    pr = ens.distribution(out)
    assert torch.all(pr.std > 0) and pr.member_var.shape == pr.members.shape
    y = torch.randn(batch.queries.shape[0], 2)

    def loss(p):
        return torch.stack([(p - y).square().mean(1)[batch.query_batch == b].mean() for b in range(3)])[:, None]

    err = ens.member_losses(batch, None, y, [2], loss)
    assert err.shape == (3, 1) and torch.isfinite(err).all()
    w = ens.bootstrap_weights(batch.meta)
    torch.testing.assert_close(w, ens.bootstrap_weights(batch.meta))  # the same every epoch
    assert w.shape == (2, 3) and torch.all(w == w.round())
    err.mean().backward()
    assert all(p.grad is not None for p in ens.stacked_parameters().values())


def test_checkpoint_round_trip_and_member_count_mismatch(tmp_path):
    from geoop.models.nested import model_from_config
    from geoop.train.checkpoint import load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    ens = model_from_config({**CFG, "ensemble": 3})
    assert isinstance(ens, Ensemble) and ens.size == 3
    ens.temperature.fill_(1.7)
    save_checkpoint({"model": ens.state_dict(), "model_config": ens.config}, tmp_path / "e.pt")
    state = load_checkpoint(tmp_path / "e.pt")
    again = model_from_config(dict(state["model_config"]))
    again.load_state_dict(state["model"])
    batch = batch_of(ens, shapes(2))
    with torch.no_grad():
        a, b = ens.predict(batch), again.predict(batch)
    torch.testing.assert_close(a.mean, b.mean, rtol=0, atol=0)
    torch.testing.assert_close(a.std, b.std, rtol=0, atol=0)
    assert float(again.temperature[0]) == pytest.approx(1.7)
    from geoop.train.checkpoint import load_model_state

    five = model_from_config({**CFG, "ensemble": 5})
    with pytest.raises(CheckpointError, match=r"3 members .* model.ensemble = 5"):
        load_model_state(five, state["model"], "e.pt")
    with pytest.raises(CheckpointError, match=r"single model's .* model.ensemble = 3"):
        load_model_state(again, GINO.from_config(CFG).state_dict(), "single.pt")
    with pytest.raises(CheckpointError, match="ensemble = 5"):
        five.load_state_dict(state["model"])


@pytest.mark.parametrize("bad", [0, -1, True, "3", {"size": 2, "colour": 1}, {"size": 2, "variance": "yes"},
                                 {"size": 2, "vectorize": "sometimes"}])
def test_bad_ensemble_settings(bad):
    with pytest.raises(ConfigError, match="ensemble"):
        Ensemble({**CFG, "ensemble": bad})
    with pytest.raises(ConfigError, match=r"cfg.toml \[model\]: ensemble"):  # the config check of geoop train
        GINO.check_config({**CFG, "ensemble": bad}, "cfg.toml [model]")
    assert issubclass(ConfigError, GeoopError)


# ---------------------------------------------------------------------------- command line
@pytest.fixture(scope="module")
def airfoils(tmp_path_factory):
    """Ten small panel-method airfoil cases in the demo's body-frame layout, split 7 train
    (2 of them drawn as validation by val_fraction) / 3 test."""
    import json

    from geoop.cli.demo import prepare_cases
    from geoop.data import airfoil

    root = tmp_path_factory.mktemp("uq")
    entries = airfoil.generate(str(root / "raw"), 10, seed=2, n_volume=(500, 700), n_panels=(50, 60))
    cases = root / "cases"
    prepare_cases(root / "raw", cases, entries, frame="body")
    names = [e["case"] for e in entries]
    (cases / "split.json").write_text(json.dumps({"train": names[:7], "test": names[7:]}))
    return root


def _uq_config(root, ensemble="3"):
    text = f"""
seed = 0
device = "cpu"
[data]
folder = "{root / 'cases'}"
inputs = ["freestream", "normal"]
targets = ["u", "v", "p"]
input_file = "{{case}}_surface.vtp"
query_file = "{{case}}_volume.vtu"
drop_flat_z = true
latent_sdf = true
geometry_normalization = "none"
train_split = "train"
val_split = "val"
val_fraction = 0.3
metrics = ["cl", "cd"]
metrics_reference = {{field = "p", dynamic_pressure = 1.0, length = 1.0, alpha_deg = "manifest:freestream_deg"}}
[model]
ensemble = {ensemble}
[model.latent]
shape = [16, 12]
domain = [[-0.5, -0.75], [1.5, 0.75]]
[model.encoder]
radius = 0.15
mlp = [8]
n_freqs = 3
[model.decoder]
radius = 0.15
mlp = [8]
n_freqs = 3
[model.blocks]
width = 8
modes = [4, 4]
layers = 1
[optim]
epochs = 2
batch_size = 2
lr = 3e-3
[output]
dir = "{root / 'run'}"
"""
    path = root / "uq.toml"
    path.write_text(text)
    return path


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_cli_train_calibrate_predict_evaluate(airfoils, capsys):
    import json

    import numpy as np

    from geoop.cli.main import main
    from geoop.train.run import load_trained

    root = airfoils
    assert main(["train", str(_uq_config(root))]) == 0
    ckpt = root / "run" / "last.pt"
    trained = load_trained(ckpt)
    assert isinstance(trained.model, Ensemble) and trained.model.size == 3
    assert float(trained.model.temperature.sum()) == 3.0  # uncalibrated
    capsys.readouterr()
    assert main(["calibrate", "--checkpoint", str(ckpt)]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["split"] == "val" and info["cases"] == 2 and len(info["temperature"]) == 3
    cal = load_trained(ckpt).model
    np.testing.assert_allclose(cal.temperature.numpy(), info["temperature"], rtol=1e-6)
    # the temperature is the closed form T^2 = mean (error / std)^2 over the validation cases
    # only (computed here independently from the uncalibrated predictions); the test cases give another
    from geoop.cli.predict import predict_geometry
    from geoop.data.folder import resolve_split

    names = [f"case_{i:04d}" for i in range(10)]
    part = resolve_split(names, 0, manifest={n: ("train" if i < 7 else "test") for i, n in enumerate(names)},
                         val_fraction=0.3)  # as split.json + data.val_fraction

    def closed_form(split):
        ratios = {n: [] for n in ("u", "v", "p")}
        for c in [n for n in names if part[n] == split]:
            res, _ = predict_geometry(trained, geoop.read(root / "cases" / f"{c}_surface.vtp"),
                                      geoop.read(root / "cases" / f"{c}_volume.vtu"))
            for n in ratios:
                ratios[n].append((res.fields[f"{n}_error"] / res.fields[f"{n}_std"]).double().square().ravel())
        return np.array([float(torch.cat(ratios[n]).mean().sqrt()) for n in ("u", "v", "p")])

    import geoop

    np.testing.assert_allclose(info["temperature"], closed_form("val"), rtol=2e-3)
    assert np.abs(closed_form("test") / np.array(info["temperature"]) - 1).max() > 0.01
    # predict: <field>_std next to the prediction, coefficient std in the JSON
    out = root / "pred.vtu"
    case = "case_0008"
    assert main(["predict", "--checkpoint", str(ckpt), "--geometry", str(root / "cases" / f"{case}_surface.vtp"),
                 "--on", str(root / "cases" / f"{case}_volume.vtu"), "--out", str(out)]) == 0
    g = geoop.read(out)
    for n in ("u", "v", "p"):
        assert f"{n}_std" in g.fields and bool((g.fields[f"{n}_std"] > 0).all())
    coef = json.loads((root / "pred.coefficients.json").read_text())
    assert set(coef["coefficients_std"]) == {"cl", "cd"} and len(coef["coefficients_members"]["cl"]) == 3
    assert abs(np.mean(coef["coefficients_members"]["cl"]) - coef["coefficients"]["cl"]) < 0.05 + 0.5 * coef["coefficients_std"]["cl"] + 1e-6
    # render: the std beside the error (PNG: 4 views; HTML: a "std" view)
    assert main(["render", str(out), "--field", "p", "--out", str(root / "p.png"), "--html", str(root / "p.html"),
                 "--no-surface-plot"]) == 0
    assert (root / "p.png").stat().st_size > 1000
    page = (root / "p.html").read_text()
    assert '"p std"' in page and '"p |error|"' in page
    # evaluate: calibration section and a reliability diagram
    capsys.readouterr()
    assert main(["evaluate", str(root / "cases"), "--checkpoint", str(ckpt), "--out", str(root / "ev")]) == 0
    rep = json.loads((root / "ev" / "evaluation.json").read_text())
    for key in ("p", "u", "p@surface"):
        r = rep["calibration"][key]
        assert 0 <= r["coverage_50"] <= r["coverage_90"] <= r["coverage_95"] <= 1 and r["crps"] > 0
    assert set(rep["coefficient_coverage_2std"]) == {"cl", "cd"}
    assert (root / "ev" / "reliability.png").stat().st_size > 1000
    assert "calibration" in capsys.readouterr().out
    # a calibration split with no case: a clear error naming the setting, the checkpoint unchanged
    from geoop.errors import DatasetError
    from geoop.train.calibration import calibrate_checkpoint
    from geoop.train.checkpoint import load_checkpoint, save_checkpoint

    state = load_checkpoint(ckpt)
    state["config"]["data"]["val_fraction"] = 0.0
    state.pop("checksum")
    save_checkpoint(state, root / "noval.pt")
    before = (root / "noval.pt").read_bytes()
    with pytest.raises(DatasetError, match=r"'val'.*data.val_split"):
        calibrate_checkpoint(root / "noval.pt", "val")
    assert (root / "noval.pt").read_bytes() == before


def test_calibration_split_without_cases_is_a_clear_error(airfoils, tmp_path):
    from geoop.errors import DatasetError
    from geoop.train.calibration import fit_temperature

    ens = Ensemble(CFG, size=2)
    with pytest.raises(DatasetError, match="no cases"):
        fit_temperature(ens, [], targets=["p"])
    with pytest.raises(ConfigError, match="not an ensemble"):
        fit_temperature(GINO.from_config(CFG), [], targets=["p"])


def test_loop_fallback_trains_like_vmap():
    """vectorize=False (members one after the other through functional_call) gives the same
    gradients as the vmap call, with the GINO's default edge recomputation configured."""
    torch.manual_seed(0)
    ens = Ensemble({**CFG, "memory": {"checkpoint_encoder": True, "checkpoint_edges": 0}}, size=2)
    batch = batch_of(ens, shapes(2))
    grads = []
    for vec, recompute in ((True, False), (False, False), (False, True), (True, True)):
        ens.vectorize, ens.recompute = vec, recompute  # recompute: the members' stages re-run in backward
        ens.zero_grad()
        ens.member_outputs(batch).square().sum().backward()
        grads.append({n: p.grad.clone() for n, p in ens.stacked_parameters().items()})
    for g in grads[1:]:
        for n in grads[0]:
            torch.testing.assert_close(g[n], grads[0][n], rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------------- query sets and force losses
@pytest.fixture(scope="module")
def bodies(tmp_path_factory):
    """Four tiny synthetic half bodies with two query sets (surface: p, wall shear; points:
    p, U) in the layout of ``geoop data body --solver rans``."""
    from _body_cases import make_cases

    root = tmp_path_factory.mktemp("uq_body")
    return root, make_cases(root, 4, seed=3, n_points=150, n_theta=10)


@pytest.mark.usefixtures("one_thread")
def test_ensemble_with_query_sets_and_coefficient_loss_per_member(bodies):
    """An ensemble trained on two query sets with a coefficient loss: the relative L2 of every
    member over each target's own set, and the coefficient term of every member, averaged
    over the members (the plain trainer's terms of each extracted member GINO); the variance
    head's NLL counts only each target's own set's queries."""
    from geoop.data.folder import MeshFolderDataset
    from geoop.train import Trainer
    from geoop.train.losses import relative_l2

    root, recs = bodies
    area = {r["case"]: r["aref"] for r in recs}
    forces = {"field": "surface/p", "wall_shear": "surface/wallShearStress", "names": ["cd", "cl"],
              "reference": lambda case: {"area": area[case]}}
    cfg = {"out_channels": 8, "coord_dim": 3, "latent": {"shape": (6, 6, 6), "features": ["sdf"]},
           "encoder": {"radius_cells": 1.8, "inputs": ["normals"]}, "blocks": {"width": 6, "modes": 2, "layers": 1},
           "decoder": {"radius_cells": 1.8}}
    torch.manual_seed(0)
    ens = Ensemble(cfg, size=2)
    ds = MeshFolderDataset(root, input_file="{case}_surface.vtp", queries=SETS_BODY, manifest=False, test_fraction=0.0,
                           forces=forces, neighbors=ens.precompute, symmetry=["y", 0.0])
    coef = {"weights": {"cd": 1.0, "cl": 0.5}, "names": ["cd", "cl"], "field": "surface/p",
            "wall_shear": "surface/wallShearStress"}
    tr = Trainer(ens, ds, targets=ds.targets, preprocessor=ds.preprocessor, data_normalized=True, progress=False,
                 coefficient_loss=coef)
    batch = GeometryBatch.from_samples([ds[0], ds[1]])
    y = batch.y(ds.targets)
    w = tr.loss_weights(batch)
    err, c = tr._ensemble_error(batch, y, w)
    assert err.shape == (2, 4) and c.shape == (2,)
    ref_err, ref_c = [], []
    for k in range(2):
        m = ens.member(k)
        with torch.no_grad():
            p = m(batch)
        ref_err.append(relative_l2(p, y, batch.query_batch, 2, tr.widths(batch), w))
        ref_c.append(tr._coefficient_term(batch, p, y, tr.widths(batch)))
    torch.testing.assert_close(err.detach(), torch.stack(ref_err).mean(0), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(c.detach(), torch.stack(ref_c).mean(0).float(), rtol=1e-4, atol=1e-6)
    assert float(c.detach().abs().sum()) > 0
    # the variance head's NLL over each target's own set: the other sets' rows do not move it
    torch.manual_seed(0)
    ensv = Ensemble({**cfg, "ensemble": {"size": 2, "variance": True}})
    mask = tr.set_mask(batch)
    y2 = y.clone()
    y2[(mask == 0).repeat_interleave(torch.tensor(tr.widths(batch)), 1)] = 1e3  # garbage off each target's set

    def l2(p):
        return relative_l2(p.float(), y, batch.query_batch, 2, tr.widths(batch), w)

    a = ensv.member_losses(batch, None, y, tr.widths(batch), l2, mask=mask)
    b = ensv.member_losses(batch, None, y2, tr.widths(batch), l2, mask=mask)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, ensv.member_losses(batch, None, y2, tr.widths(batch), l2))


SETS_BODY = [{"name": "surface", "file": "{case}_surface.vtp", "targets": ["p", "wallShearStress"]},
             {"name": "points", "file": "{case}_points.vtu", "targets": ["p", "U"]}]


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_cli_ensemble_query_sets_train_calibrate_evaluate_predict(bodies, tmp_path, capsys):
    """configs/body_rans.toml with ``[model] ensemble = 2``: two query sets and the force loss;
    calibrate fits each target on its own set's queries; evaluate writes each set's fields
    with their ``_std`` and scores calibration per ``<set>/<field>``; predict --query-set
    writes the set's fields and their std."""
    import json

    import numpy as np
    from _body_cases import tiny_body_config

    import geoop
    from geoop.cli.main import main
    from geoop.cli.predict import predict_geometry
    from geoop.data.preprocess import split_query_sets
    from geoop.train.run import load_trained

    root, _ = bodies
    assert main(["train", str(tiny_body_config(tmp_path, root, "body_uq.json", ensemble=2)), "--no-progress"]) == 0
    ck = tmp_path / "run" / "last.pt"
    hist = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert "val/coef_loss/cd" in hist[-1] and np.isfinite(hist[-1]["train_loss"])
    capsys.readouterr()
    assert main(["calibrate", "--checkpoint", str(ck)]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    trained = load_trained(ck)
    assert trained.targets == ["surface/p", "surface/wallShearStress", "points/p", "points/U"]
    assert len(info["temperature"]) == 8 and info["cases"] == 2
    # the closed form on the validation cases, each target on its own set's points only
    from geoop.data.folder import MeshFolderDataset
    from geoop.train.run import data_kwargs

    kw = {**data_kwargs(trained.config), "seed": 0, "normalize": trained.normalizers}
    val = list(MeshFolderDataset(root, split="val", **kw).cases)
    assert len(val) == 2
    ratios = {n: [] for n in trained.targets}
    for c in val:
        g = geoop.read(root / f"{c}_surface.vtp")
        parts = [g, geoop.read(root / f"{c}_points.vtu")]
        _, q, _ = trained.preprocessor.read_sets(g, parts, c, targets_required=False)
        res, _ = predict_geometry(_uncalibrated(trained), g, q)
        for s, part in split_query_sets(res, ["surface", "points"]).items():
            for f in ("p", "wallShearStress") if s == "surface" else ("p", "U"):
                ratios[f"{s}/{f}"].append((part.fields[f"{f}_error"] / part.fields[f"{f}_std"]).double().square())
    expect = np.concatenate([torch.cat(ratios[n]).mean(0).sqrt().numpy() for n in trained.targets])
    np.testing.assert_allclose(info["temperature"], expect, rtol=2e-3)

    out = tmp_path / "ev"
    assert main(["evaluate", "--checkpoint", str(ck), str(root), "--split", "train", "test", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "calibration" in text and "share of the drag error" in text
    rep = json.loads((out / "train" / "evaluation.json").read_text())
    assert set(rep["calibration"]) == set(trained.targets)  # no "@surface" twin: the surface set is the surface
    for r in rep["calibration"].values():
        assert 0 <= r["coverage_50"] <= r["coverage_90"] <= r["coverage_95"] <= 1 and r["crps"] > 0
    row = rep["cases"][0]
    assert {"cd_std", "cl_std", "mean_std_surface/p", "mean_std_points/U"} <= set(row) and row["cd_std"] > 0
    assert set(rep["coefficient_coverage_2std"]) == {"cd", "cl"}
    surf = geoop.read(out / "train" / f"{row['case']}_surface_pred.vtp")
    pts = geoop.read(out / "train" / f"{row['case']}_points_pred.vtu")
    assert {"p", "p_std", "wallShearStress_std"} <= set(surf.fields) and "U_std" not in surf.fields
    assert {"p_std", "U_std"} <= set(pts.fields) and "wallShearStress_std" not in pts.fields
    assert float(surf.fields["p_std"].double().mean()) == pytest.approx(row["mean_std_surface/p"], rel=1e-5)
    assert bool((pts.fields["U_std"] > 0).all())
    # predict: one set's fields and their std, the coefficients' std
    assert main(["predict", "--checkpoint", str(ck), "--geometry", str(root / f"{row['case']}_surface.vtp"),
                 "--out", str(tmp_path / "s.vtp")]) == 0
    pinfo = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert pinfo["query_set"] == "surface" and pinfo["coefficients_std"]["cd"] == pytest.approx(row["cd_std"], rel=1e-4)
    s = geoop.read(tmp_path / "s.vtp")
    torch.testing.assert_close(s.fields["p_std"], surf.fields["p_std"], rtol=1e-4, atol=1e-6)
    assert not any("/" in k for k in s.fields)


def _uncalibrated(trained):
    """``trained`` with its ensemble's temperature reset to 1 (a copy)."""
    import copy

    t = copy.copy(trained)
    t.model = copy.deepcopy(trained.model)
    t.model.temperature.fill_(1.0)
    return t
