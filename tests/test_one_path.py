"""One preprocessing path: the Python API and ``geoop train`` train the same model on the
same files, and ``geoop predict`` reproduces the trainer's evaluation from the checkpoint
alone (coordinates, fields, features and normalisers all come from the checkpoint's
Preprocessor)."""
from __future__ import annotations

import json

import pytest
import torch

import geoop
from geoop.cli.main import main

pytestmark = pytest.mark.usefixtures("one_thread")

MODEL = {
    "latent": {"kind": "box", "shape": [10, 10], "features": ["sdf"]},
    "encoder": {"radius_cells": 1.6, "mlp": [8], "inputs": ["normals", "Cp"]},
    "decoder": {"radius_cells": 1.6, "mlp": [8]},
    "blocks": {"kind": "fno", "width": 8, "modes": 3, "layers": 1},
}


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    from geoop.data import airfoil

    root = tmp_path_factory.mktemp("airfoils")
    entries = airfoil.generate(str(root), 4, seed=2, n_volume=800, n_panels=60)
    names = [e["case"] for e in entries]
    (root / "split.json").write_text(json.dumps({"train": names[:3], "test": names[3:]}))
    return root, names


@pytest.mark.slow
def test_api_and_cli_train_alike_and_predict_equals_the_trainers_evaluation(tmp_path, cases, capsys):
    import tomli_w

    from geoop.batch import collate
    from geoop.data import MeshFolderDataset
    from geoop.models import GINO
    from geoop.train import Trainer

    root, names = cases
    data = {"folder": str(root), "inputs": ["Cp"], "targets": ["p"], "input_file": "{case}_surface.vtp",
            "query_file": "{case}_volume.vtu", "drop_flat_z": True, "val_split": ""}
    optim = {"epochs": 2, "batch_size": 2, "lr": 3e-3}
    cfg = {"seed": 3, "device": "cpu", "data": data, "model": MODEL, "optim": optim, "output": {"dir": str(tmp_path / "cli")}}
    (tmp_path / "run.toml").write_text(tomli_w.dumps(cfg))
    assert main(["train", str(tmp_path / "run.toml"), "--no-progress"]) == 0

    # the same run through the Python API
    torch.manual_seed(3)
    model = GINO(out_channels=1, coord_dim=2, **MODEL)
    train = MeshFolderDataset(root, inputs=["Cp"], targets=["p"], input_file="{case}_surface.vtp",
                              query_file="{case}_volume.vtu", drop_flat_z=True, seed=3, neighbors=model.precompute)
    tr = Trainer(model, train, targets=["p"], preprocessor=train.preprocessor, data_normalized=True, precompute=False,
                 epochs=2, batch_size=2, lr=3e-3, seed=3, progress=False)
    tr.fit()
    ck = torch.load(tmp_path / "cli" / "last.pt", weights_only=True)
    assert ck["preprocessor"]["targets"] == ["p"] and ck["model_config"]["encoder"]["inputs"] == ["normals", "Cp"]
    api = tr.model.state_dict()
    assert set(ck["model"]) == set(api)
    for k, v in ck["model"].items():
        assert torch.allclose(v, api[k], atol=1e-6, rtol=0), k

    # geoop predict on a training case, from the checkpoint alone
    case = names[0]
    out = tmp_path / "pred.vtu"
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(tmp_path / "cli" / "last.pt"), "--geometry",
                 str(root / f"{case}_surface.vtp"), "--on", str(root / f"{case}_volume.vtu"), "--out", str(out)]) == 0
    pred = geoop.read(out).fields["p"].double()
    ref = tr.predict(collate([train[train.cases.index(case)]])).double()
    assert pred.shape == ref.shape and float(ref.std()) > 1e-3 * float(ref.abs().max())
    assert float((pred - ref).abs().max()) <= 1e-6 * max(1.0, float(ref.abs().max()))
    # and the evaluation metric agrees with the error predict prints
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    ev = tr.evaluate(torch.utils.data.Subset(train, [train.cases.index(case)]))
    assert info["rel_l2"]["p"] == pytest.approx(ev["rel_l2/p"], rel=1e-5)


def test_preprocessor_state_roundtrips_and_prepares_like_the_dataset(cases):
    from geoop.data import MeshFolderDataset
    from geoop.data.preprocess import Preprocessor

    root, names = cases
    ds = MeshFolderDataset(root, inputs=["Cp"], targets=["p"], input_file="{case}_surface.vtp",
                           query_file="{case}_volume.vtu", drop_flat_z=True, geometry_normalization="case")
    pre = Preprocessor.from_state_dict(ds.preprocessor.state_dict())
    assert pre.dim == 2 and pre.geometry_normalization == "case"
    s, _ = pre.prepare(geoop.read(root / f"{names[1]}_surface.vtp"), geoop.read(root / f"{names[1]}_volume.vtu"))
    item = ds[ds.cases.index(names[1])]
    assert torch.equal(s.geometry.points, item.geometry.points) and torch.equal(s.queries.points, item.queries.points)
    assert torch.equal(s.geometry.fields["Cp"], item.geometry.fields["Cp"])
    assert torch.equal(s.queries.fields["p"], item.queries.fields["p"])
    assert torch.allclose(pre.decode(s.queries.fields["p"]), geoop.read(root / f"{names[1]}_volume.vtu").fields["p"].to(s.queries.fields["p"].dtype), atol=1e-5)


NESTED = {
    "latent": {"kind": "nested", "features": ["sdf"],
               "levels": [{"shape": [8, 8], "domain": [[-0.2, -0.7], [1.2, 0.7]]}, {"shape": [10, 6], "margin": 0.1}]},
    "encoder": {"radius": 0.3, "mlp": [8], "inputs": ["normals", "Cp"]},
    "decoder": {"radius": 0.3, "mlp": [8]},
    "blocks": {"kind": "fno", "width": 8, "modes": 3, "layers": 1},
}


@pytest.mark.slow
def test_geoop_train_and_predict_with_a_nested_latent(tmp_path, cases, capsys):
    """The config system builds a NestedGINO from ``[model.latent] kind = "nested"``: geoop
    train trains and checkpoints it, load_trained rebuilds it, geoop predict answers with it;
    a bad level key is a ConfigError naming the file's section."""
    import tomli_w

    from geoop.errors import ConfigError
    from geoop.models import NestedGINO
    from geoop.train.run import load_trained

    root, names = cases
    data = {"folder": str(root), "inputs": ["Cp"], "targets": ["p"], "input_file": "{case}_surface.vtp",
            "query_file": "{case}_volume.vtu", "drop_flat_z": True, "val_split": "",
            "geometry_normalization": "none"}
    cfg = {"seed": 3, "device": "cpu", "data": data, "model": NESTED, "optim": {"epochs": 2, "batch_size": 2},
           "output": {"dir": str(tmp_path / "run")}}
    (tmp_path / "run.toml").write_text(tomli_w.dumps(cfg))
    assert main(["train", str(tmp_path / "run.toml"), "--no-progress"]) == 0
    tm = load_trained(tmp_path / "run" / "last.pt")
    assert isinstance(tm.model, NestedGINO) and tm.model.num_levels == 2
    assert tm.model.latent_feature_names == ("sdf",) and tm.model.point_inputs
    out = tmp_path / "pred.vtu"
    case = names[3]
    assert main(["predict", "--checkpoint", str(tmp_path / "run" / "last.pt"), "--geometry",
                 str(root / f"{case}_surface.vtp"), "--on", str(root / f"{case}_volume.vtu"), "--out", str(out)]) == 0
    pred = geoop.read(out).fields["p"]
    assert pred.shape[0] == geoop.read(root / f"{case}_volume.vtu").n_points and torch.isfinite(pred).all()

    bad = {**cfg, "model": {**NESTED, "latent": {**NESTED["latent"], "levels": [{"shape": [8, 8]}]}}}
    (tmp_path / "bad.toml").write_text(tomli_w.dumps(bad))
    from geoop.data import MeshFolderDataset
    from geoop.models import GINO
    from geoop.train.config import load_config

    with pytest.raises(ConfigError, match=r"bad.toml \[model\].*needs a fixed domain"):
        load_config(tmp_path / "bad.toml", dataset_cls=MeshFolderDataset, model_cls=GINO)
