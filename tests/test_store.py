"""The packed case store (geoop.data.store, geoop.data.store_dataset): packed then read equals
the folder bit for bit, lazy building, chunk-aligned row sampling, resumable packing, bad input."""
from __future__ import annotations

import itertools
import json
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("zarr")

from _helpers import annulus, tiny_gino_config, write_annulus_cases  # noqa: E402
from test_folder import FOAM, make_foam  # noqa: E402

import geoop  # noqa: E402
from geoop.cli.main import main  # noqa: E402
from geoop.data import MeshFolderDataset  # noqa: E402
from geoop.data.store import CaseStore, StoreError, inclusion_probabilities, is_store, pack_folder  # noqa: E402
from geoop.data.store_dataset import PackedCaseDataset  # noqa: E402
from geoop.errors import DatasetError  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

FIELDS = dict(inputs=["p"], targets=["p", "U"])


@pytest.fixture(scope="module")
def foam(tmp_path_factory):
    """5 OpenFOAM-layout cases (wall surface + hexahedral volume, cell data), packed with cells."""
    root = make_foam(tmp_path_factory.mktemp("foam"), n=5)
    store = tmp_path_factory.mktemp("packed") / "store"
    rep = pack_folder(root, store, cells=True, chunk_rows=16, **FIELDS, **FOAM)
    assert sorted(rep.packed) == [f"run{i}" for i in range(5)] and not rep.kept and not rep.skipped
    return root, store


def _copy_store(store: Path, tmp: Path) -> Path:
    out = tmp / "copy"
    shutil.copytree(store, out)
    return out


# ---------------------------------------------------------------------------- equality
def test_packed_then_read_equals_folder_bit_for_bit(foam):
    root, store = foam
    f = MeshFolderDataset(root, split="all", **FIELDS, **FOAM)
    s = MeshFolderDataset(store, split="all", **FIELDS)
    assert isinstance(s, PackedCaseDataset) and s.cases == f.cases and s.split_of == f.split_of
    for case in f.cases:
        for a, b in zip(f._load_raw(case), s._load_raw(case)):  # the reading stage: every array, every bit
            assert torch.equal(a.points, b.points) and torch.equal(a.weights, b.weights)
            assert (a.normals is None) == (b.normals is None)
            assert a.fields.keys() == b.fields.keys() and all(torch.equal(a.fields[n], b.fields[n]) for n in a.fields)
            assert a.cells.keys() == b.cells.keys() and all(torch.equal(a.cells[k], b.cells[k]) for k in a.cells)
    # normalisation from the stored moments = fitted on the values (to float64 rounding)
    assert torch.equal(f.normalizers.transform.shift, s.normalizers.transform.shift)
    assert torch.equal(f.normalizers.transform.scale, s.normalizers.transform.scale)
    for n, fn in f.normalizers.fields.items():
        sn = s.normalizers.fields[n]
        assert torch.allclose(fn.mean, sn.mean, rtol=1e-12, atol=1e-14) and torch.allclose(fn.std, sn.std, rtol=1e-12)
        assert float(fn.count) == float(sn.count)
    # whole-case items with the same normalisers: points and fields bit for bit
    s2 = MeshFolderDataset(store, split="all", normalize=f.normalizers, **FIELDS)
    for i in range(len(f)):
        a, b = f[i], s2[i]
        for x, y in ((a.geometry, b.geometry), (a.queries, b.queries)):
            assert torch.equal(x.points, y.points)
            assert all(torch.equal(x.fields[n], y.fields[n]) for n in x.fields)
            assert torch.allclose(x.weights, y.weights, rtol=1e-5)  # weights of mapped vs. original points
        assert a.meta["transform"]["scale"].tolist() == b.meta["transform"]["scale"].tolist()


def test_same_file_2d_cases_and_case_transform(tmp_path):
    """One file per case (queries share the input points), 2-D, per-case transform."""
    root = tmp_path / "cases"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        geoop.write(annulus(float(rng.uniform(0.5, 1.5)), float(rng.uniform(0, 3)), n_t=18 + 2 * i), root / f"c{i}.vtu")
    store = tmp_path / "store"
    pack_folder(root, store, ["a"], ["p"], chunk_rows=32)
    kw = dict(inputs=["a"], targets=["p"], split="all", drop_flat_z=True, geometry_normalization="case")
    f, s = MeshFolderDataset(root, **kw), MeshFolderDataset(store, **kw)
    assert s.dim == f.dim == 2 and s.is_2d
    assert not (store / "cases" / "c0" / "query" / "points").exists()  # shared with the input geometry
    s2 = MeshFolderDataset(store, normalize=f.normalizers, **kw)
    for i in range(len(f)):
        a, b = f[i], s2[i]
        assert torch.equal(a.geometry.points, b.geometry.points) and torch.equal(a.queries.fields["p"], b.queries.fields["p"])
        assert torch.allclose(a.queries.weights, b.queries.weights, rtol=1e-5)


# ---------------------------------------------------------------------------- laziness
def test_building_reads_metadata_only(foam, tmp_path, monkeypatch):
    root, store = foam
    store = _copy_store(store, tmp_path)
    import geoop.data.preprocess as pre
    import geoop.data.store as st

    def no_read(*a, **k):
        raise AssertionError("a case payload was read while building the dataset")

    monkeypatch.setattr(pre, "read_file", no_read)
    monkeypatch.setattr(st.CaseStore, "_read_chunks", no_read)
    s = MeshFolderDataset(store, split="train", **FIELDS)
    assert s.store.chunks_read == 0 and s.store.bytes_read == 0 and len(s) >= 3
    assert s.normalizers.fields["U"].fitted and s.normalizers.transform is not None
    monkeypatch.undo()
    # the source folder is not needed once packed
    moved = tmp_path / "gone"
    shutil.move(str(root), moved)
    try:
        item = MeshFolderDataset(store, split="train", subsample=10, **FIELDS)[0]
        assert item.geometry.n_points == 10
    finally:
        shutil.move(str(moved), root)


def test_subsample_reads_only_its_chunks_and_matches_the_full_case(foam):
    root, store = foam
    full = MeshFolderDataset(store, split="all", **FIELDS)
    lazy = MeshFolderDataset(store, split="all", subsample={"points": 7, "queries": 12}, **FIELDS,
                             normalize=full.normalizers)
    c = lazy.store.chunk_rows("run1", "query")
    n_q = lazy.store.info("run1").n("query")
    before = lazy.store.chunks_read
    item = lazy[1]
    m_q = inclusion_probabilities(n_q, c, 12)[0]
    m_p = inclusion_probabilities(lazy.store.info("run1").n("input"), c, 7)[0]
    # points, normals, weights, order + 1 input field; points..order + 2 target fields
    assert lazy.store.chunks_read - before <= 5 * m_p + 6 * m_q
    whole = full[1]
    pi, qi = item.meta["point_index"], item.meta["query_index"]
    assert pi.numel() == 7 and qi.numel() == 12 and bool((qi[1:] > qi[:-1]).all())
    assert torch.equal(whole.geometry.points[pi], item.geometry.points)
    assert torch.equal(whole.queries.fields["U"][qi], item.queries.fields["U"])
    # weights: the whole case's, divided by the inclusion probability of each row
    _, p_full, p_short = inclusion_probabilities(n_q, c, 12)
    order = np.asarray(lazy.store._array(lazy.store.info("run1"), "query/order")[:])
    stored_row = np.argsort(order)[qi.numpy()]
    pi_rows = torch.from_numpy(np.where(stored_row >= (-(-n_q // c) - 1) * c, p_short, p_full)).float()
    assert torch.allclose(item.queries.weights, whole.queries.weights[qi] / pi_rows, rtol=1e-5)
    # reproducible per (seed, epoch, index), also in a copy sent to a DataLoader worker; another epoch draws other rows
    assert torch.equal(lazy[1].meta["query_index"], qi)
    clone = pickle.loads(pickle.dumps(lazy))
    assert type(clone) is PackedCaseDataset and torch.equal(clone[1].queries.fields["U"], item.queries.fields["U"])
    lazy.set_epoch(1)
    assert not torch.equal(lazy[1].meta["query_index"], qi)


@pytest.mark.parametrize("n,c,k", [(10, 4, 3), (11, 4, 5), (12, 4, 2), (9, 3, 1), (10, 4, 9)])
def test_inclusion_probabilities_are_exact(n, c, k):
    """The formula against enumerating every chunk subset (rows uniformly from their union)."""
    m, p_full, p_short = inclusion_probabilities(n, c, k)
    nc = -(-n // c)
    sizes = [min(c, n - j * c) for j in range(nc)]
    exact = np.zeros(n)
    subsets = list(itertools.combinations(range(nc), m))
    for S in subsets:
        R = sum(sizes[j] for j in S)
        assert R >= k  # m always holds k rows
        for j in S:
            exact[j * c:j * c + sizes[j]] += (k / R) / len(subsets)
    formula = np.array([p_short if i >= (nc - 1) * c else p_full for i in range(n)])
    assert np.allclose(exact, formula, rtol=1e-12) and abs(formula.sum() - k) < 1e-9


def test_sampling_frequencies_follow_the_probabilities(foam):
    """Monte Carlo: how often each stored row is drawn ~ its inclusion probability."""
    _, store = foam
    s = CaseStore(store)
    n, c, k, draws = s.info("run0").n("query"), s.chunk_rows("run0", "query"), 10, 3000
    _, p_full, p_short = inclusion_probabilities(n, c, k)
    counts = np.zeros(n)
    g = torch.Generator().manual_seed(0)
    for _ in range(draws):
        rows, _ = s.sample_rows("run0", "query", k, g)
        counts[rows] += 1
    expect = np.array([p_short if i >= (-(-n // c) - 1) * c else p_full for i in range(n)])
    assert np.abs(counts / draws - expect).max() < 5 * np.sqrt(expect.max() / draws)


# ---------------------------------------------------------------------------- resumable, atomic
def test_pack_is_resumable_and_atomic(tmp_path, monkeypatch):
    root = make_foam(tmp_path / "foam", n=4)
    store = tmp_path / "store"
    import geoop.data.preprocess as pre

    real, calls = pre.read_file, []

    def dies_on_third_case(path):
        calls.append(path)
        if "run2" in str(path):
            raise KeyboardInterrupt  # the process is stopped mid-pack
        return real(path)

    monkeypatch.setattr(pre, "read_file", dies_on_third_case)
    with pytest.raises(KeyboardInterrupt):
        pack_folder(root, store, **FIELDS, **FOAM)
    monkeypatch.undo()
    assert sorted(CaseStore(store).cases) == ["run0", "run1"]
    # a pack killed while writing a case leaves a partial folder that readers ignore
    dead = store / "cases" / ".partial-run2-999999999"
    shutil.copytree(store / "cases" / "run0", dead)
    assert sorted(CaseStore(store).cases) == ["run0", "run1"]
    rep = pack_folder(root, store, **FIELDS, **FOAM)
    assert rep.kept == ["run0", "run1"] and rep.packed == ["run2", "run3"] and not dead.exists()
    assert not [p for p in (store / "cases").iterdir() if p.name.startswith(".")]
    s = MeshFolderDataset(store, split="all", **FIELDS)
    f = MeshFolderDataset(root, split="all", **FIELDS, **FOAM)
    assert all(torch.equal(a.points, b.points) for c in f.cases for a, b in zip(f._load_raw(c), s._load_raw(c)))


# ---------------------------------------------------------------------------- bad input
def _edit_attrs(path: Path, **changes):
    meta = json.loads(path.read_text())
    for k, v in changes.items():
        node = meta["attributes"]
        *head, last = k.split(".")
        for h in head:
            node = node[h]
        node[last] = v
    path.write_text(json.dumps(meta))


def test_store_of_another_format_version(foam, tmp_path):
    store = _copy_store(foam[1], tmp_path)
    _edit_attrs(store / "zarr.json", **{"geoop_store.format": 99})
    with pytest.raises(StoreError, match="format version 99.*newer"):
        MeshFolderDataset(store, **FIELDS)
    _edit_attrs(store / "zarr.json", **{"geoop_store.format": 1})
    _edit_attrs(store / "cases" / "run3" / "zarr.json", format=2)
    with pytest.raises(StoreError, match="case 'run3'.*format version 2"):
        MeshFolderDataset(store, **FIELDS)


def _chunk_files(store: Path, case: str, rel: str) -> list:
    return sorted(p for p in (store / "cases" / case / rel / "c").rglob("*") if p.is_file())


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_missing_or_truncated_chunk_names_the_case(foam, tmp_path, damage):
    store = _copy_store(foam[1], tmp_path)
    chunk = _chunk_files(store, "run2", "query/f1")[0]
    if damage == "missing":
        chunk.unlink()
    else:
        chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])
    s = MeshFolderDataset(store, split="all", **FIELDS)  # metadata is intact: building works
    with pytest.raises(StoreError, match=f"case 'run2'.*{damage if damage == 'missing' else 'truncated or corrupt'}"):
        s[s.cases.index("run2")]
    s.subsample = {"points": None, "queries": 50, "near_input": None}
    with pytest.raises(StoreError, match="case 'run2'"):
        for epoch in range(5):  # some epoch draws the damaged chunk
            s.set_epoch(epoch)
            s[s.cases.index("run2")]
    other = s[s.cases.index("run1")]  # the other cases still read
    assert other.queries.n_points == 50


def test_skip_damaged_case_during_run(foam, tmp_path):
    store = _copy_store(foam[1], tmp_path)
    for p in _chunk_files(store, "run0", "input/points"):
        p.unlink()
    s = MeshFolderDataset(store, split="all", on_error="skip", **FIELDS)
    with pytest.warns(RuntimeWarning, match="run0"):
        item = s[s.cases.index("run0")]
    assert item.meta["case"] != "run0" and [c for c, *_ in s.skipped_during_run()] == ["run0"]


def test_fields_or_settings_other_than_packed(foam, tmp_path):
    _, store = foam
    with pytest.raises(StoreError, match=r"case 'run0' was packed with inputs \['p'\] and targets \['p', 'U'\].*missing \['T'\]"):
        MeshFolderDataset(store, inputs=["p"], targets=["T"])
    s = MeshFolderDataset(store, inputs=[], targets=["U"], split="all")  # a subset of the packed fields reads
    assert s[0].queries.fields.keys() == {"U"}
    with pytest.raises(StoreError, match="crop"):
        MeshFolderDataset(store, crop=[[0, 0, 0], [1, 1, 1]], **FIELDS)
    with pytest.raises(StoreError, match="input_file"):
        MeshFolderDataset(store, input_file="{case}.vtp", **FIELDS)
    with pytest.raises(StoreError, match="near_input"):
        MeshFolderDataset(store, subsample={"queries": 5, "near_input": 0.1}, **FIELDS)
    # packing other fields into an existing store
    copy = _copy_store(store, tmp_path)
    with pytest.raises(StoreError, match="other settings"):
        pack_folder(foam[0], copy, inputs=["p"], targets=["U"], **FOAM)
    # a case whose attributes name other fields (packed by another run)
    _edit_attrs(copy / "cases" / "run4" / "zarr.json", **{"roles.query.fields": {"p": ["f0", 1]}})
    with pytest.raises(StoreError, match="case 'run4'"):
        MeshFolderDataset(copy, split="all", **FIELDS)
    with pytest.raises(DatasetError, match="not a geoop store"):
        pack_folder(foam[0], foam[0] / "run0", **FIELDS, **FOAM)
    assert not is_store(foam[0]) and is_store(store)


# ---------------------------------------------------------------------------- CLI
@pytest.mark.slow
def test_cli_pack_train_evaluate_predict_on_a_store(tmp_path, capsys):
    root = write_annulus_cases(tmp_path / "cases", 6, "case_{i:02d}")
    cfg = tiny_gino_config(tmp_path / "cfg.toml", root, tmp_path / "run")
    store = tmp_path / "store"
    assert main(["data", "pack", str(root), "--out", str(store), "--config", str(cfg), "--chunk-rows", "16"]) == 0
    assert "6 case(s) packed" in capsys.readouterr().out
    assert main(["data", "pack", str(root), "--out", str(store), "--config", str(cfg), "--chunk-rows", "16"]) == 0
    assert "0 case(s) packed, 6 already there" in capsys.readouterr().out
    text = cfg.read_text().replace(f'folder = "{root}"', f'folder = "{store}"\nsubsample = 40')
    scfg = tmp_path / "store.toml"
    scfg.write_text(text)
    assert main(["train", str(scfg), "--no-progress"]) == 0
    run = tmp_path / "run"
    assert (run / "last.pt").exists()
    assert main(["evaluate", "--checkpoint", str(run / "last.pt"), str(store), "--out", str(tmp_path / "ev")]) == 0
    report = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert [r["case"] for r in report["cases"]] == ["case_05"] and np.isfinite(report["mean"]["rel_l2_p"])
    out = tmp_path / "pred.vtu"
    assert main(["predict", "--checkpoint", str(run / "last.pt"), "--geometry", str(store), "--case", "case_05",
                 "--out", str(out)]) == 0
    pred = geoop.read(out)
    truth = geoop.read(root / "case_05.vtu")
    assert pred.n_points == truth.n_points and torch.allclose(pred.points[:, :2].double(), truth.points[:, :2].double())
    assert main(["predict", "--checkpoint", str(run / "last.pt"), "--geometry", str(store), "--out", str(out)]) == 2
    assert "--case" in capsys.readouterr().err


def test_data_check_on_a_store_prints_what_the_folder_gives(tmp_path, capsys):
    """Ranges from the stored min/max and the queries outside the window counted chunk by
    chunk (bounds first) equal what reading every file gives."""
    import tomli_w

    from geoop.data import airfoil

    root = tmp_path / "cases"
    entries = airfoil.generate(str(root), 4, seed=1, n_volume=400, n_panels=40)
    names = [e["case"] for e in entries]
    (root / "split.json").write_text(json.dumps({"train": names[:2], "val": names[2:3], "test": names[3:]}))
    data = {"inputs": ["Cp"], "targets": ["p"], "input_file": "{case}_surface.vtp", "query_file": "{case}_volume.vtu",
            "drop_flat_z": True, "val_split": "val"}
    model = {"latent": {"shape": [8, 8], "domain": [[0.25, 0.25], [0.75, 0.75]]}}
    outs = []
    for folder in (root, tmp_path / "store"):
        cfg = tmp_path / f"{folder.name}.toml"
        cfg.write_text(tomli_w.dumps({"data": {"folder": str(folder), **data}, "model": model,
                                      "output": {"dir": str(tmp_path / "run")}}))
        if folder != root:
            assert main(["data", "pack", str(root), "--out", str(folder), "--config", str(cfg), "--chunk-rows", "64"]) == 0
        capsys.readouterr()
        assert main(["data", "check", str(cfg)]) == 0
        outs.append(capsys.readouterr().out.split(": split", 1)[1])  # drop the config and folder paths
    assert outs[0] == outs[1] and re.search(r"train: [1-9]\d* of \d+ query points", outs[1])


def test_dataloader_workers_read_the_store(foam):
    """Forked DataLoader workers (zarr's I/O loop started in the parent first) draw the same items."""
    from geoop.batch import collate

    s = MeshFolderDataset(foam[1], split="all", subsample={"points": 9, "queries": 11}, **FIELDS)
    first = [s[i].queries.fields["U"] for i in range(len(s))]
    dl = torch.utils.data.DataLoader(s, batch_size=2, num_workers=2, collate_fn=collate)
    got = [u for b in dl for u in b.unbatch_queries()]
    assert len(got) == len(first)
    assert all(torch.equal(g.fields["U"], f) for g, f in zip(got, first))


def test_symmetry_and_body_rules_from_the_packed_planes(tmp_path):
    """A symmetry plane is packed per case; the 'body' rules fit on the bounding corners and
    the plane give the folder's transform exactly; mirror augmentation is refused."""
    root = make_foam(tmp_path / "foam", n=3)
    store = tmp_path / "store"
    sym = ["y", 0.0]
    pack_folder(root, store, symmetry=sym, chunk_rows=32, **FIELDS, **FOAM)
    for rule in ("body", "body_case"):
        kw = dict(split="all", symmetry=sym, geometry_normalization=rule, **FIELDS)
        f, s = MeshFolderDataset(root, **kw, **FOAM), MeshFolderDataset(store, **kw)
        s2 = MeshFolderDataset(store, normalize=f.normalizers, **kw)
        for i in range(len(f)):
            a, b = f[i], s2[i]
            assert a.meta["transform"]["scale"].tolist() == b.meta["transform"]["scale"].tolist()
            assert torch.equal(a.geometry.points, b.geometry.points) and b.geometry.symmetry is not None
        if rule == "body":
            assert torch.equal(f.normalizers.transform.shift, s.normalizers.transform.shift)
    with pytest.raises(StoreError, match="symmetry"):
        MeshFolderDataset(store, **FIELDS)
    with pytest.raises(StoreError, match="mirror"):
        MeshFolderDataset(store, symmetry=sym, mirror={"plane": sym}, **FIELDS)
