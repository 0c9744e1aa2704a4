"""The data path, walked once: a config becomes a run with the cases discovered and split once
(``CaseIndex``), each case file read at most once before the first epoch (the first training
case, read to size the model, is the training dataset's), datasets sharing one ``CaseReader``;
on a packed store nothing but metadata is read."""
from __future__ import annotations

import collections
import json

import pytest
import torch

import geoop.data.cases as cases_mod
import geoop.geometry.io as io_mod
from geoop.data import MeshFolderDataset
from geoop.data.cases import CaseIndex, discover_cases, resolve_split
from geoop.data.folder import CaseReader
from geoop.errors import DatasetError

pytestmark = pytest.mark.usefixtures("one_thread")

MODEL = {
    "latent": {"kind": "box", "shape": [8, 8], "features": ["sdf"]},
    "encoder": {"radius_cells": 1.6, "mlp": [8], "inputs": ["normals", "Cp"]},
    "decoder": {"radius_cells": 1.6, "mlp": [8]},
    "blocks": {"kind": "fno", "width": 8, "modes": 3, "layers": 1},
}
FILES = {"input_file": "{case}_surface.vtp", "query_file": "{case}_volume.vtu"}


@pytest.fixture(scope="module")
def airfoils(tmp_path_factory):
    from geoop.data import airfoil

    root = tmp_path_factory.mktemp("airfoils")
    entries = airfoil.generate(str(root), 5, seed=4, n_volume=300, n_panels=40)
    names = [e["case"] for e in entries]
    # case_0000 is a test case: the first case of the folder is not the first training case
    (root / "split.json").write_text(json.dumps({"train": names[1:], "test": names[:1]}))
    return root, names


def count_reads(monkeypatch) -> collections.Counter:
    calls: collections.Counter = collections.Counter()
    real = io_mod.read

    def counting(path, *a, **k):
        calls[str(path)] += 1
        return real(path, *a, **k)

    monkeypatch.setattr(io_mod, "read", counting)
    return calls


def count_discoveries(monkeypatch) -> list:
    calls = []
    real = cases_mod.discover_cases

    def counting(*a, **k):
        calls.append(a)
        return real(*a, **k)

    monkeypatch.setattr(cases_mod, "discover_cases", counting)
    return calls


def run_config(root, tmp_path, **data):
    from geoop.models import GINO
    from geoop.train.config import resolve_config

    raw = {"seed": 1, "device": "cpu", "model": MODEL, "optim": {"epochs": 1, "batch_size": 2},
           "output": {"dir": str(tmp_path / "run")},
           "data": {"folder": str(root), "inputs": ["Cp"], "targets": ["u", "v", "p"], "drop_flat_z": True,
                    "val_split": "val", "val_fraction": 0.3, "subsample": {"queries": 100}, **FILES, **data}}
    return resolve_config(raw, dataset_cls=MeshFolderDataset, model_cls=GINO)


def test_a_config_becomes_a_run_reading_each_case_file_once(airfoils, tmp_path, monkeypatch):
    from geoop.train.run import build_run

    root, names = airfoils
    reads, discoveries = count_reads(monkeypatch), count_discoveries(monkeypatch)
    r = build_run(run_config(root, tmp_path), progress=False)
    used = r.train_data.cases + r.val_data.cases
    assert sorted(used) == names[1:] and r.val_data.cases  # train and val, never the test case
    want = {str(root / f"{c}_{kind}") for c in used for kind in ("surface.vtp", "volume.vtu")}
    assert set(reads) == want, sorted(reads)  # the test case's files are not opened
    assert max(reads.values()) == 1, reads  # the first training case sizes the model and is not read again
    assert len(discoveries) == 1  # one discovery and split for the model and both datasets
    assert r.train_data.reader is r.val_data.reader
    # the widths the model got are those of the items
    s = r.train_data[0]
    assert r.model.config["out_channels"] == sum(s.queries.fields[n].shape[1] for n in ("u", "v", "p")) == 3
    assert r.model.config["coord_dim"] == s.geometry.points.shape[1] == 2
    # the first epoch reads nothing more (cases decoded once, kept in memory)
    before = sum(reads.values())
    r.trainer.fit()
    assert sum(reads.values()) == before


def test_a_shared_reader_gives_the_same_items_and_must_match(airfoils, monkeypatch):
    root, names = airfoils
    kw = dict(inputs=["Cp"], targets=["p"], subsample={"queries": 50}, seed=3, **FILES)
    reads = count_reads(monkeypatch)
    reader = MeshFolderDataset.open_cases(root, **kw)
    assert isinstance(reader, CaseReader) and not reads  # discovery and split read no mesh
    assert reader.index.split_of == {n: ("test" if n == names[0] else "train") for n in names}
    shape = reader.describe(names[1])
    assert shape.widths == {"Cp": 1, "p": 1} and shape.dim == 2 and shape.cols == 3
    shared = MeshFolderDataset(root, split="train", reader=reader, **kw)
    assert sum(reads.values()) == 2 * len(shared.cases)  # names[1] was not read again
    alone = MeshFolderDataset(root, split="train", **kw)
    for i in range(len(alone)):
        a, b = alone[i], shared[i]
        assert a.meta["case"] == b.meta["case"]
        for x, y in ((a.geometry, b.geometry), (a.queries, b.queries)):
            assert torch.equal(x.points, y.points) and torch.equal(x.weights, y.weights)
            assert all(torch.equal(x.fields[n], y.fields[n]) for n in x.fields)
    # a reader opened with other settings is refused, naming them
    with pytest.raises(DatasetError, match=r"targets=\['p'\] \(the dataset: \['u'\]\)"):
        MeshFolderDataset(root, split="train", reader=reader, **{**kw, "targets": ["u"]})
    with pytest.raises(DatasetError, match="seed=3"):
        MeshFolderDataset(root, split="train", reader=reader, **{**kw, "seed": 4})
    with pytest.raises(DatasetError, match="must be a CaseReader"):
        MeshFolderDataset(root, split="train", reader="cases", **kw)


def test_case_index_is_discovery_and_split_without_reading(airfoils, tmp_path, monkeypatch):
    root, names = airfoils

    def no_read(*a, **k):
        raise AssertionError("a mesh was read while indexing")

    monkeypatch.setattr(io_mod, "read", no_read)
    idx = CaseIndex.from_folder(root, **FILES, manifest=False, seed=5, test_fraction=0.4, val_fraction=0.2)
    found, problems = discover_cases(root, **FILES)
    assert idx.files == found and not problems and idx.n_found == len(names)
    assert idx.split_of == resolve_split(list(found), 5, 0.4, None, 0.2)
    assert sorted(idx.cases("train") + idx.cases("val") + idx.cases("test")) == sorted(names) == idx.cases("all")
    # a case lacking a file and a manifest name without files are problems, reported in order
    (root / "case_0099_surface.vtp").write_bytes((root / "case_0001_surface.vtp").read_bytes())
    try:
        seen = []
        idx = CaseIndex.from_folder(root, **FILES, manifest={n: "train" for n in names + ["ghost"]},
                                    report=lambda *p: seen.append(p))
        assert [p[0] for p in seen] == [p[0] for p in idx.problems] == ["case_0099", "ghost"]
        assert "no query file" in seen[0][2] and "manifest lists 1 case(s) with no files" in seen[1][2]
        assert idx.cases("train") == names and "case_0099" not in idx.files
    finally:
        (root / "case_0099_surface.vtp").unlink()


def test_a_run_on_a_packed_store_reads_metadata_only(airfoils, tmp_path, monkeypatch):
    pytest.importorskip("zarr")
    import geoop.data.store as st
    from geoop.data.store import pack_folder
    from geoop.train.run import build_run

    root, names = airfoils
    store = tmp_path / "store"
    pack_folder(root, store, ["Cp"], ["u", "v", "p"], **FILES)

    def no_read(*a, **k):
        raise AssertionError("a case payload was read while the config became a run")

    monkeypatch.setattr(io_mod, "read", no_read)
    monkeypatch.setattr(st.CaseStore, "_read_chunks", no_read)
    cfg = run_config(store, tmp_path, input_file=None, query_file=None)
    r = build_run(cfg, progress=False)
    assert r.train_data.reader is r.val_data.reader and r.train_data.store is r.val_data.store is r.train_data.reader.store
    assert r.train_data.store.chunks_read == 0
    assert r.model.config["out_channels"] == 3 and r.model.config["coord_dim"] == 2
