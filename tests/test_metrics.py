"""Coefficient metrics (geoop.train.metrics) in the trainer, geoop predict and geoop
evaluate, on small airfoil cases; TensorBoard event files read back with TensorBoard's own
reader."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import geoop
from geoop.cli.main import main
from geoop.train.metrics import CoefficientMetrics, regression_stats, resolve_reference

pytestmark = pytest.mark.usefixtures("one_thread")

REF = {"field": "p", "dynamic_pressure": 1.0, "length": 1.0, "alpha_deg": "manifest:freestream_deg"}


@pytest.fixture(scope="module")
def airfoils(tmp_path_factory):
    """5 small body-frame airfoil cases (the demo's preparation: manifest.json with the
    free-stream angle, split.json with 2 test cases)."""
    from geoop.cli.demo import prepare_cases
    from geoop.data import airfoil

    tmp = tmp_path_factory.mktemp("airfoils")
    entries = airfoil.generate(str(tmp / "raw"), 5, seed=2, n_volume=(500, 600), n_panels=(60, 70), te_stagnation=True)
    prepare_cases(tmp / "raw", tmp / "cases", entries, frame="body")
    names = [e["case"] for e in entries]
    (tmp / "cases" / "split.json").write_text(json.dumps({"train": names[2:], "test": names[:2]}))
    return tmp / "cases", entries


def test_regression_stats_known_answer():
    m = CoefficientMetrics(["cl"], {"dynamic_pressure": 1.0})
    for p, t in ((1.0, 1.5), (2.0, 2.0), (0.5, 0.0)):
        m.add("c", {"cl": p}, {"cl": t})
    s = m.summary()
    assert s["cl/mae"] == pytest.approx((0.5 + 0 + 0.5) / 3)
    t = np.array([1.5, 2.0, 0.0])
    assert s["cl/r2"] == pytest.approx(1 - 0.5 / np.sum((t - t.mean()) ** 2))
    assert math.isnan(regression_stats({"n": 2, "cl/abs": 0, "cl/sq": 0, "cl/t": 2, "cl/t2": 2}, ["cl"])["cl/r2"])


def test_reference_resolution_and_errors():
    r = resolve_reference({"alpha_deg": "manifest:params.alpha_deg", "length": 2.0}, "c", {"params": {"alpha_deg": 90.0}})
    assert r["length"] == 2.0 and r["freestream"] == pytest.approx((0.0, 1.0))
    with pytest.raises(geoop.ConfigError, match="no value 'params.beta'"):
        resolve_reference({"alpha_deg": "manifest:params.beta"}, "c", {"params": {}})
    with pytest.raises(geoop.ConfigError, match="unknown keys"):
        resolve_reference({"rho": 1.0})
    with pytest.raises(geoop.ConfigError, match="unknown coefficients"):
        CoefficientMetrics(["cx"])
    with pytest.raises(geoop.ConfigError, match="not a target"):
        CoefficientMetrics(["cl"], {"field": "Cp"}, targets=["p"])


class _Oracle(nn.Module):
    """Returns the (normalised) target itself, or zeros: known coefficient errors."""

    def __init__(self, zero=False):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.zero = zero

    def forward(self, batch, x=None):
        y = batch.query_fields["p"].float()
        return torch.zeros_like(y) + 0 * self.w if self.zero else y + 0 * self.w


def test_trainer_reports_coefficient_errors(airfoils, tmp_path):
    from geoop.data.folder import MeshFolderDataset
    from geoop.train import Trainer

    root, entries = airfoils
    kw = dict(inputs=[], targets=["p"], input_file="{case}_surface.vtp", query_file="{case}_volume.vtu", drop_flat_z=True,
              subsample={"queries": 200, "near_input": 1e-6})
    train = MeshFolderDataset(root, split="train", **kw)
    val = MeshFolderDataset(root, split="test", normalize=train.normalizers, **kw)
    res = {}
    for zero in (False, True):
        tr = Trainer(_Oracle(zero), train, targets=["p"], val_data=val, normalizers=train.normalizers, data_normalized=True,
                     metrics=CoefficientMetrics(["cl", "cd"], REF, root, ["p"]), epochs=1)
        res[zero] = tr.evaluate()
        per_case = list(tr.metrics.per_case)
    # the true C_L integrated from the query pressure at the surface nodes is the panel
    # method's Kutta-Joukowski lift of each test case
    kutta = {e["case"]: e["cl"] for e in entries}
    for row in per_case:
        assert row["cl_true"] == pytest.approx(kutta[row["case"]], rel=0.03, abs=0.01)
    assert res[False]["cl/mae"] == pytest.approx(0.0, abs=1e-5) and res[False]["cd/mae"] == pytest.approx(0.0, abs=1e-5)
    assert res[False]["cl/r2"] == pytest.approx(1.0, abs=1e-6)
    # zero pressure: no force, so the error is the true |C_L|
    assert res[True]["cl/mae"] == pytest.approx(np.mean([abs(r["cl_true"]) for r in per_case]), rel=1e-6)
    assert res[True]["cl/r2"] < 0


def test_metrics_need_surface_nodes_among_the_queries(airfoils):
    from geoop.data.folder import MeshFolderDataset
    from geoop.train import Trainer

    root, _ = airfoils
    kw = dict(inputs=[], targets=["p"], input_file="{case}_surface.vtp", query_file="{case}_volume.vtu", drop_flat_z=True,
              subsample={"queries": 100})  # random subsample: the wall nodes are not all kept
    train = MeshFolderDataset(root, split="train", **kw)
    val = MeshFolderDataset(root, split="test", normalize=train.normalizers, **kw)
    tr = Trainer(_Oracle(), train, targets=["p"], val_data=val, normalizers=train.normalizers, data_normalized=True,
                 metrics=CoefficientMetrics(["cl"], REF, root, ["p"]), epochs=1)
    with pytest.raises(geoop.FieldError, match="surface nodes are not among the .* query points.*near_input"):
        tr.evaluate()


def _gino_config(tmp, folder, epochs=1):
    text = f"""
seed = 0
device = "cpu"
[data]
folder = "{folder}"
inputs = ["freestream", "normal"]
targets = ["u", "v", "p"]
input_file = "{{case}}_surface.vtp"
query_file = "{{case}}_volume.vtu"
drop_flat_z = true
latent_sdf = true
geometry_normalization = "none"
subsample = {{queries = 300, near_input = 1e-6}}
metrics = ["cl", "cd"]
metrics_reference = {{field = "p", dynamic_pressure = 1.0, length = 1.0, alpha_deg = "manifest:freestream_deg"}}
[model.latent]
kind = "box"
shape = [12, 8]
domain = [[-0.5, -0.75], [1.5, 0.75]]
[model.encoder]
radius = 0.25
mlp = [8]
[model.decoder]
radius = 0.25
mlp = [8]
[model.blocks]
kind = "fno"
width = 8
modes = [3, 3]
layers = 1
[optim]
epochs = {epochs}
batch_size = 2
lr = 3e-3
[output]
dir = "{tmp / 'run'}"
"""
    path = tmp / "cfg.toml"
    path.write_text(text)
    return path


def test_train_predict_evaluate_with_coefficients(airfoils, tmp_path, capsys):
    root, entries = airfoils
    cfg = _gino_config(tmp_path, root, epochs=2)
    tb = tmp_path / "tb"
    assert main(["train", str(cfg), "--no-progress", "--tensorboard", str(tb)]) == 0
    hist = [json.loads(s) for s in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(h["val/cl/mae"]) and "val/cd/r2" in h for h in hist)
    capsys.readouterr()

    # geoop predict: coefficients beside the field file, with errors against the truth
    case = entries[0]["case"]
    out = tmp_path / "pred.vtu"
    assert main(["predict", "--checkpoint", str(tmp_path / "run" / "last.pt"), "--geometry", str(root / f"{case}_surface.vtp"),
                 "--on", str(root / f"{case}_volume.vtu"), "--out", str(out)]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    coef = json.loads((tmp_path / "pred.coefficients.json").read_text())
    assert coef["case"] == case and set(coef["coefficients"]) == {"cl", "cd"}
    assert coef["abs_error"]["cl"] == pytest.approx(abs(coef["coefficients"]["cl"] - coef["true"]["cl"]))
    assert coef["true"]["cl"] == pytest.approx(entries[0]["cl"], rel=0.03, abs=0.01)
    assert coef["reference"]["freestream"][1] == pytest.approx(math.sin(math.radians(entries[0]["params"]["alpha_deg"])))
    assert info["coefficients"] == coef["coefficients"]

    # geoop evaluate: the test split in one process, tables in JSON and CSV
    ev = tmp_path / "ev"
    assert main(["evaluate", "--checkpoint", str(tmp_path / "run" / "last.pt"), str(root), "--out", str(ev)]) == 0
    printed = capsys.readouterr().out
    rep = json.loads((ev / "evaluation.json").read_text())
    assert [r["case"] for r in rep["cases"]] == [e["case"] for e in entries[:2]]
    for r in rep["cases"]:
        assert (ev / f"{r['case']}_pred.vtu").exists()
        assert {"rel_l2_u", "rel_l2_v", "rel_l2_p", "cl_pred", "cl_true", "cl_abs_error"} <= set(r)
    assert rep["mean"]["cl_abs_error"] == pytest.approx(np.mean([r["cl_abs_error"] for r in rep["cases"]]))
    assert rep["coefficients"]["cl/mae"] == pytest.approx(rep["mean"]["cl_abs_error"])
    # the same case through predict and evaluate gives the same coefficient
    assert rep["cases"][0]["cl_pred"] == pytest.approx(coef["coefficients"]["cl"], rel=1e-5, abs=1e-7)
    rows = list(csv.DictReader(open(ev / "evaluation.csv")))
    assert [r["case"] for r in rows] == [entries[0]["case"], entries[1]["case"], "mean"]
    assert "mean" in printed and "cl/mae" in printed
    # --split all: every case; a folder without a split: a clear error naming the way out
    assert main(["evaluate", "--checkpoint", str(tmp_path / "run" / "last.pt"), str(root), "--split", "all",
                 "--out", str(tmp_path / "ev_all")]) == 0
    assert json.loads((tmp_path / "ev_all" / "evaluation.json").read_text())["n_cases"] == len(entries)
    # a folder without a split: the checkpoint's recorded split decides; a case it never saw
    # belongs to no split (a clear error naming the split)
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in ("_surface.vtp", "_volume.vtu"):
        (bare / f"case_9999{f}").write_bytes((root / f"{case}{f}").read_bytes())
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(tmp_path / "run" / "last.pt"), str(bare)]) == 2
    assert "no 'test' case in the split" in capsys.readouterr().err

    # TensorBoard: the event file read back with TensorBoard's own reader
    _check_events(tb, epochs=2, val_tags=["val/rel_l2", "val/rel_l2/p", "val/cl/mae", "val/cl/r2", "val/cd/mae"])


def _check_events(logdir, epochs, val_tags):
    ea_mod = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    ea = ea_mod.EventAccumulator(str(logdir), size_guidance={"scalars": 0, "images": 0})
    ea.Reload()
    tags = ea.Tags()
    for t in ["train/loss", "train/lr", "train/samples_per_s"] + val_tags:
        assert t in tags["scalars"], (t, tags["scalars"])
        assert [e.step for e in ea.Scalars(t)] == list(range(1, epochs + 1)), t
    assert "val/prediction" in tags["images"]
    imgs = ea.Images("val/prediction")
    assert [e.step for e in imgs] == list(range(1, epochs + 1)) and imgs[0].width > 100
    return ea


def test_tensorboard_events_read_back(tmp_path):
    """A tiny Trainer run: losses, learning rate, validation errors per epoch, per-step loss
    every 10 steps and a prediction picture every 2 evaluations."""
    pytest.importorskip("tensorboard")
    from _train_models import PointNetField, make_samples

    from geoop.train import Trainer

    samples = make_samples(12)
    tr = Trainer(PointNetField(in_channels=1), samples[:10], targets=["p"], inputs=["a"], val_data=samples[10:], epochs=3,
                 batch_size=1, tensorboard=tmp_path / "tb", tensorboard_images_every=2)
    tr.fit()
    ea = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator").EventAccumulator(
        str(tmp_path / "tb"), size_guidance={"scalars": 0, "images": 0})
    ea.Reload()
    for t in ("train/loss", "train/lr", "val/rel_l2", "val/rel_l2/p"):
        vals = ea.Scalars(t)
        assert [e.step for e in vals] == [1, 2, 3]
    assert [e.value for e in ea.Scalars("train/loss")] == pytest.approx([h["train_loss"] for h in tr.history], rel=1e-6)
    assert [e.value for e in ea.Scalars("train/lr")] == pytest.approx([h["lr"] for h in tr.history], rel=1e-6)
    assert [e.step for e in ea.Scalars("train/loss_step")] == [10, 20, 30]  # 30 optimizer steps
    assert [e.step for e in ea.Images("val/prediction")] == [1, 3]  # evaluations 1 and 3


def test_trainer_metrics_on_3d_surfaces_with_manifest_yaw(tmp_path):
    """3-D car surfaces (targets on the input file itself, dataset-wide geometry
    normalisation): the metrics' true coefficients are forces() on the file's surface with
    the case's yaw from the generator's manifest (a nested 'params.yaw_deg' value)."""
    from geoop.data import body3d
    from geoop.data.folder import MeshFolderDataset
    from geoop.physics import forces
    from geoop.train import Trainer

    entries = body3d.generate(str(tmp_path), 4, seed=1, volume=False, n_panels=(200, 300))
    ref = {"field": "Cp", "dynamic_pressure": 1.0, "area": 0.2, "length": 1.0, "yaw_deg": "manifest:params.yaw_deg",
           "moment_center": [0.0, 0.0, 0.0]}
    kw = dict(targets=["Cp"], input_file="{case}_surface.vtp", test_fraction=0.5)
    train = MeshFolderDataset(tmp_path, split="train", **kw)
    val = MeshFolderDataset(tmp_path, split="test", normalize=train.normalizers, **kw)
    m = CoefficientMetrics(["cd", "cs", "cm"], ref, tmp_path, ["Cp"])

    class Oracle(_Oracle):
        def forward(self, batch, x=None):
            return batch.query_fields["Cp"].float() + 0 * self.w

    tr = Trainer(Oracle(), train, targets=["Cp"], val_data=val, normalizers=train.normalizers, data_normalized=True,
                 metrics=m, epochs=1)
    out = tr.evaluate()
    assert out["cd/mae"] == pytest.approx(0.0, abs=1e-5)
    byname = {e["case"]: e for e in entries}
    for row in m.per_case:
        y = math.radians(byname[row["case"]]["params"]["yaw_deg"])
        g = geoop.read(tmp_path / f"{row['case']}_surface.vtp")
        c = forces(g, "Cp", dynamic_pressure=1.0, area=0.2, freestream=(math.cos(y), math.sin(y), 0.0)).coefficients
        for k in ("cd", "cs", "cm"):
            assert row[f"{k}_true"] == pytest.approx(c[k], rel=1e-4, abs=1e-6)
