"""``geoop data check CONFIG``: the split, the coordinate normalisation, per-field ranges and
the query points outside the latent window, as training on the config would see them."""
from __future__ import annotations

import json
import re

import pytest
import torch

import geoop
from geoop.cli.main import main

pytestmark = pytest.mark.usefixtures("one_thread")


def test_check_config_reports_split_normalisation_ranges_and_window(tmp_path, capsys):
    import tomli_w

    from geoop.data import airfoil

    root = tmp_path / "cases"
    entries = airfoil.generate(str(root), 4, seed=1, n_volume=400, n_panels=40)
    names = [e["case"] for e in entries]
    (root / "split.json").write_text(json.dumps({"train": names[:2], "val": names[2:3], "test": names[3:]}))
    cfg = {"data": {"folder": str(root), "inputs": ["Cp"], "targets": ["p"], "input_file": "{case}_surface.vtp",
                    "query_file": "{case}_volume.vtu", "drop_flat_z": True, "val_split": "val"},
           "model": {"latent": {"shape": [8, 8], "domain": [[0.25, 0.25], [0.75, 0.75]]}},
           "output": {"dir": str(tmp_path / "run")}}
    (tmp_path / "c.toml").write_text(tomli_w.dumps(cfg))
    capsys.readouterr()
    assert main(["data", "check", str(tmp_path / "c.toml")]) == 0
    out = capsys.readouterr().out
    assert "{'test': 1, 'train': 2, 'val': 1}" in out and "validate on 'val'" in out
    assert "rule 'dataset'" in out and "shift" in out and "scale" in out
    # the ranges printed are those of the training files
    p = torch.cat([geoop.read(root / f"{n}_volume.vtu").fields["p"] for n in names[:2]])
    m = re.search(r"target field 'p': range \[(\S+)\] \.\. \[(\S+)\]", out)
    assert float(m.group(1)) == pytest.approx(float(p.min()), abs=1e-4) and float(m.group(2)) == pytest.approx(float(p.max()), abs=1e-4)
    # a window over the middle of the unit box leaves most of the far field outside
    m = re.search(r"train: (\d+) of (\d+) query points", out)
    n_out, n_all = int(m.group(1)), int(m.group(2))
    assert 0 < n_out < n_all and n_all == sum(geoop.read(root / f"{n}_volume.vtu").n_points for n in names[:2])
    assert "val: " in out and "in file units" in out


def test_train_val_test_splits_are_apart_and_val_comes_from_training_cases():
    from geoop.data.folder import resolve_split

    names = [f"c{i}" for i in range(20)]
    s = resolve_split(names, seed=1, test_fraction=0.2, val_fraction=0.1)
    assert sorted(s.values()).count("test") == 4 and list(s.values()).count("val") == 2
    plain = resolve_split(names, seed=1, test_fraction=0.2)
    assert {c for c, v in plain.items() if v == "test"} == {c for c, v in s.items() if v == "test"}  # test unchanged
    man = {c: ("test" if i < 5 else "train") for i, c in enumerate(names)}
    s = resolve_split(names, seed=0, manifest=man, val_fraction=0.2)
    assert {c for c, v in s.items() if v == "test"} == set(names[:5])  # the manifest's test split is kept
    assert list(s.values()).count("val") == 3 and all(man[c] == "train" for c, v in s.items() if v == "val")


def test_fixed_length_scale_rule_maps_file_units_by_the_users_transform(tmp_path, capsys):
    import tomli_w

    from geoop.data import MeshFolderDataset, airfoil

    root = tmp_path / "cases"
    airfoil.generate(str(root), 3, seed=2, n_volume=300, n_panels=40)
    rule = {"scale": 2.0, "shift": [1.0, -0.5]}
    ds = MeshFolderDataset(root, targets=["p"], input_file="{case}_surface.vtp", query_file="{case}_volume.vtu",
                           drop_flat_z=True, geometry_normalization=rule, split="all")
    item = ds[0]
    raw = geoop.read(root / f"{ds.cases[0]}_volume.vtu").points[:, :2].double()
    assert torch.allclose(item.queries.points.double(), (raw - torch.tensor([1.0, -0.5], dtype=torch.float64)) / 2.0, atol=1e-6)
    assert ds.preprocessor.state_dict()["geometry_normalization"] == {"scale": [2.0], "shift": [1.0, -0.5]}
    cfg = {"data": {"folder": str(root), "targets": ["p"], "input_file": "{case}_surface.vtp", "query_file": "{case}_volume.vtu",
                    "drop_flat_z": True, "val_split": "", "geometry_normalization": rule},
           "model": {"latent": {"shape": [8, 8], "domain": [[-1.0, -1.0], [0.5, 1.0]]}}, "output": {"dir": str(tmp_path / "r")}}
    (tmp_path / "c.toml").write_text(tomli_w.dumps(cfg))
    capsys.readouterr()
    assert main(["data", "check", str(tmp_path / "c.toml")]) == 0
    out = capsys.readouterr().out
    assert "a fixed rule" in out and "[[-1.0, -2.5], [2.0, 1.5]] in file units" in out  # window * 2 + shift


def test_crop_box_cuts_the_query_meshes_in_file_units(tmp_path):
    from geoop.data import MeshFolderDataset, airfoil
    from geoop.data.preprocess import Preprocessor

    root = tmp_path / "cases"
    airfoil.generate(str(root), 2, seed=4, n_volume=500, n_panels=40)
    box = [[-0.5, -0.75], [1.5, 0.75]]
    ds = MeshFolderDataset(root, targets=["p"], input_file="{case}_surface.vtp", query_file="{case}_volume.vtu",
                           drop_flat_z=True, geometry_normalization="none", split="all", crop=box, normalize=False)
    case = ds.cases[0]
    vol = geoop.read(root / f"{case}_volume.vtu")
    xy = vol.points[:, :2].double()
    inside = ((xy >= torch.tensor(box[0], dtype=torch.float64)) & (xy <= torch.tensor(box[1], dtype=torch.float64))).all(1)
    q = ds[0].queries
    assert q.n_points == int(inside.sum()) and torch.allclose(q.points.double(), xy[inside])
    assert torch.allclose(q.fields["p"].double(), vol.fields["p"].double()[inside], atol=1e-6)
    tri = ds._raw(case)[1].cells["triangle"]
    assert tri.max() < q.n_points and 0 < tri.shape[0] < vol.cells["triangle"].shape[0]
    assert Preprocessor.from_state_dict(ds.preprocessor.state_dict()).crop == box


def test_training_warns_about_queries_outside_the_latent_window(tmp_path, caplog):
    import logging

    from geoop.data import MeshFolderDataset, airfoil
    from geoop.models import GINO
    from geoop.train.config import resolve_config
    from geoop.train.run import build_run, queries_outside

    root = tmp_path / "cases"
    airfoil.generate(str(root), 2, seed=3, n_volume=300, n_panels=40)
    cfg = resolve_config({"data": {"folder": str(root), "targets": ["p"], "input_file": "{case}_surface.vtp",
                                   "query_file": "{case}_volume.vtu", "drop_flat_z": True, "val_split": "", "test_fraction": 0.0},
                          "model": {"latent": {"shape": [6, 6], "domain": [[0.3, 0.3], [0.7, 0.7]]},
                                    "blocks": {"width": 4, "modes": 2, "layers": 1}},
                          "output": {"dir": str(tmp_path / "run")}}, dataset_cls=MeshFolderDataset, model_cls=GINO)
    with caplog.at_level(logging.WARNING, logger="geoop.train.run"):
        r = build_run(cfg, progress=False)
    out, total = queries_outside(r.train_data, r.model)
    assert 0 < out < total and f"{out} of {total} training query points" in caplog.text
    # by hand: the prepared (normalised) query points of every case against the window
    n = sum(int(((s.queries.points < 0.3) | (s.queries.points > 0.7)).any(1).sum()) for s in r.train_data)
    assert n == out
