"""MeshFolderDataset, FieldNormalizer and the neighbourhood cache on folders laid out the way
CFD tools write them (OpenFOAM foamToVTK, Fluent / Star-CCM+ cell-data exports, 2-D cases)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import meshio
import numpy as np
import pytest
import torch

import geoop.data.folder as folder_mod
from geoop.batch import Sample, collate
from geoop.data import DatasetNormalizers, DiskNeighborhoodCache, FieldNormalizer, MeshFolderDataset
from geoop.data.folder import _keep_sources, _take_queries, discover_cases, resolve_split
from geoop.errors import DatasetError
from geoop.neighbors.neighborhoods import Neighborhoods


# ---------------------------------------------------------------------------- fixtures
def hex_box(n=(4, 3, 3), size=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0)):
    """Points and hexahedra (VTK node order) of a structured box."""
    nx, ny, nz = n
    xs = [np.linspace(o, o + s, k + 1) for o, s, k in zip(origin, size, n)]
    X, Y, Z = np.meshgrid(*xs, indexing="ij")
    pts = np.stack([X.ravel(), Y.ravel(), Z.ravel()], 1)
    idx = np.arange(pts.shape[0]).reshape(nx + 1, ny + 1, nz + 1)
    i, j, k = [a.ravel() for a in np.meshgrid(np.arange(nx), np.arange(ny), np.arange(nz), indexing="ij")]
    hexes = np.stack([idx[i, j, k], idx[i + 1, j, k], idx[i + 1, j + 1, k], idx[i, j + 1, k],
                      idx[i, j, k + 1], idx[i + 1, j, k + 1], idx[i + 1, j + 1, k + 1], idx[i, j + 1, k + 1]], 1)
    return pts, hexes


def tri_square(n=5, size=1.0, origin=(0.0, 0.0)):
    """A 2-D triangulated square stored with z = 0 (what 2-D CFD exports look like)."""
    xs = np.linspace(origin[0], origin[0] + size, n + 1)
    ys = np.linspace(origin[1], origin[1] + size, n + 1)
    X, Y = np.meshgrid(xs, ys, indexing="ij")
    pts = np.stack([X.ravel(), Y.ravel(), np.zeros(X.size)], 1)
    idx = np.arange(pts.shape[0]).reshape(n + 1, n + 1)
    i, j = [a.ravel() for a in np.meshgrid(np.arange(n), np.arange(n), indexing="ij")]
    tris = np.concatenate([np.stack([idx[i, j], idx[i + 1, j], idx[i + 1, j + 1]], 1),
                           np.stack([idx[i, j], idx[i + 1, j + 1], idx[i, j + 1]], 1)])
    return pts, tris


def write_wall_vtp(path: Path, center, radius, rng, p_offset=0.0):
    """A wall patch (triangulated sphere) with point pressure and cell wall shear stress."""
    import pyvista as pv

    wall = pv.Sphere(radius=radius, center=center, theta_resolution=8, phi_resolution=6)
    wall.point_data["p"] = rng.normal(size=wall.n_points) + p_offset
    wall.cell_data["wallShearStress"] = rng.normal(size=(wall.n_cells, 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    wall.save(path)


def write_internal_vtu(path: Path, size, rng, p_offset=0.0, p=None):
    pts, hexes = hex_box(size=size)
    pv_ = rng.normal(size=len(hexes)) + p_offset if p is None else p
    path.parent.mkdir(parents=True, exist_ok=True)
    meshio.write(path, meshio.Mesh(pts, [("hexahedron", hexes)],
                                   cell_data={"p": [pv_], "U": [rng.normal(size=(len(hexes), 3))]}))


def make_foam(root: Path, n=5, seed=0, times=(100,)):
    """OpenFOAM foamToVTK layout: root/<case>/VTK/<case>_<time>/internal.vtu + boundary/wall.vtp."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        for t in times:
            d = root / f"run{i}" / "VTK" / f"run{i}_{t}"
            write_internal_vtu(d / "internal.vtu", (1.0 + 0.5 * i, 1.0, 1.0), rng, p_offset=t / 100)
            write_wall_vtp(d / "boundary" / "wall.vtp", (0.5, 0.5, 0.5), 0.2 + 0.02 * i, rng)
    return root


FOAM = dict(input_file="{case}/VTK/*/boundary/wall.vtp", query_file="{case}/VTK/*/internal.vtu")


def make_fluent2d(root: Path, n=4, seed=0):
    """Fluent / Star-CCM+ style 2-D export: one .vtu per case, CELL data, z = 0."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        pts, tris = tri_square(n=4, size=1.0 + i, origin=(-i, 0.5 * i))
        vel = np.concatenate([rng.normal(size=(len(tris), 2)), np.zeros((len(tris), 1))], 1)
        meshio.write(root / f"design_{i:03d}.vtu", meshio.Mesh(
            pts, [("triangle", tris)], cell_data={"pressure": [rng.normal(size=len(tris))], "velocity": [vel]}))
    return root


@pytest.fixture(scope="module")
def foam(tmp_path_factory):
    return make_foam(tmp_path_factory.mktemp("foam"))


def count_reads(monkeypatch):
    calls = []
    real = folder_mod.read_file

    def counting(path):
        calls.append(str(path))
        return real(path)

    monkeypatch.setattr(folder_mod, "read_file", counting)
    return calls


# ---------------------------------------------------------------------------- grouping / layouts
def test_foam_layout_groups_cases_and_picks_latest_time(tmp_path):
    root = make_foam(tmp_path / "foam", n=3, times=(100, 20, 1000))  # natural order: 20 < 100 < 1000
    cases, problems = discover_cases(root, **FOAM)
    assert list(cases) == ["run0", "run1", "run2"] and not problems
    assert all(c.input.parent.parent.name.endswith("_1000") for c in cases.values())
    assert cases["run1"].query == root / "run1" / "VTK" / "run1_1000" / "internal.vtu"
    # the same grouping with a callable and with the "first * names the case" rule
    cases2, _ = discover_cases(root, input_file="*/VTK/*/boundary/wall.vtp",
                               query_file=lambda rel: rel.split("/")[0] if rel.endswith("internal.vtu") else None)
    assert {k: (v.input, v.query) for k, v in cases2.items()} == {k: (v.input, v.query) for k, v in cases.items()}


def test_cell_data_targets_match_pyvista_and_decode_back(foam):
    import pyvista as pv

    ds = MeshFolderDataset(foam, inputs=["p", "wallShearStress"], targets=["p", "U"], split="all", **FOAM)
    s = ds[ds.cases.index("run2")]
    assert s.geometry.fields["wallShearStress"].shape[1] == 3 and s.queries.fields["U"].shape[1] == 3
    ref = pv.read(s.meta["query_file"]).cell_data_to_point_data()  # independent reference (uniform hexes)
    got = ds.decode(torch.cat([s.queries.fields["p"], s.queries.fields["U"]], 1)).double().numpy()
    np.testing.assert_allclose(got[:, 0], ref.point_data["p"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[:, 1:], ref.point_data["U"], rtol=1e-5, atol=1e-5)
    # points map back to the file coordinates through meta["transform"]
    pts = MeshFolderDataset.to_physical_points(s.queries.points.double(), s.meta).numpy()
    np.testing.assert_allclose(pts, meshio.read(s.meta["query_file"]).points, atol=1e-5)


def test_one_dataset_wide_transform_fitted_on_train_into_unit_box(foam):
    tr = MeshFolderDataset(foam, inputs=["p"], targets=["p"], split="train", **FOAM)
    te = MeshFolderDataset(foam, inputs=["p"], targets=["p"], split="test", **FOAM)
    shifts = {tuple(tr[i].meta["transform"]["shift"].tolist()) for i in range(len(tr))}
    shifts |= {tuple(te[i].meta["transform"]["shift"].tolist()) for i in range(len(te))}
    assert len(shifts) == 1  # ONE transform for every case of both splits
    allpts = torch.cat([torch.cat([tr[i].geometry.points, tr[i].queries.points]) for i in range(len(tr))])
    assert allpts.min() >= -1e-6 and allpts.max() <= 1 + 1e-6
    assert abs(float((allpts.max(0).values - allpts.min(0).values).max()) - 1) < 1e-6  # isotropic, tight
    # per case: each case fills the box, its own transform in meta
    pc = MeshFolderDataset(foam, inputs=["p"], targets=["p"], split="train", geometry_normalization="case", **FOAM)
    for i in range(len(pc)):
        q = pc[i].queries.points
        assert abs(float((q.max(0).values - q.min(0).values).max()) - 1) < 1e-6
    assert len({tuple(pc[i].meta["transform"]["scale"].tolist()) for i in range(len(pc))}) == len(pc)


def test_fluent_2d_cell_data_one_file_per_case(tmp_path):
    root = make_fluent2d(tmp_path / "fluent")
    ds = MeshFolderDataset(root, inputs=[], targets=["pressure", "velocity"], split="all")
    assert ds.cases == [f"design_{i:03d}" for i in range(4)]
    s = ds[1]
    assert s.queries.points.shape[1] == 3 and float(s.queries.points[:, 2].abs().max()) == 0.0  # z stays 0
    # the constant velocity_z channel is shifted, not divided by ~0
    nz = ds.normalizers["velocity"]
    assert float(nz.std[2]) == 1.0 and torch.isfinite(s.queries.fields["velocity"]).all()
    d2 = MeshFolderDataset(root, targets=["pressure"], split="all", drop_flat_z=True)
    s2 = d2[1]
    assert s2.geometry.dim == 2 and s2.queries.dim == 2 and s2.meta["transform"]["shift"].numel() == 2
    torch.testing.assert_close(s2.queries.points, s.queries.points[:, :2])
    # 2-D quadrature: weights of a triangulated square sum to its (normalised) area
    side = float(s2.queries.points[:, 0].max() - s2.queries.points[:, 0].min())
    assert abs(float(s2.queries.weights.sum()) - side**2) < 1e-5


# ---------------------------------------------------------------------------- split / leakage
def test_seeded_split_is_deterministic_and_disjoint():
    names = [f"c{i}" for i in range(20)]
    a = resolve_split(names, seed=3, test_fraction=0.25)
    assert a == resolve_split(list(reversed(names)), seed=3, test_fraction=0.25)
    assert sum(v == "test" for v in a.values()) == 5
    assert a != resolve_split(names, seed=4, test_fraction=0.25)


def test_split_from_split_json_and_manifest(tmp_path, foam):
    import shutil

    root = tmp_path / "f"
    shutil.copytree(foam, root)
    (root / "split.json").write_text(json.dumps({"train": ["run0", "run1", "run2"], "test": ["run3", "run4"]}))
    te = MeshFolderDataset(root, targets=["p"], split="test", **FOAM)
    assert te.cases == ["run3", "run4"] and te.train_cases == ["run0", "run1", "run2"]
    (root / "split.json").unlink()
    (root / "manifest.json").write_text(json.dumps({"cases": [{"case": f"run{i}", "split": "test" if i == 0 else "train"} for i in range(5)]}))
    assert MeshFolderDataset(root, targets=["p"], split="test", **FOAM).cases == ["run0"]
    (root / "manifest.json").write_text(json.dumps({"split": {"train": ["run1"], "test": ["run9"]}}))
    with pytest.raises(DatasetError, match="run9"):
        MeshFolderDataset(root, targets=["p"], split="test", **FOAM)


def test_field_statistics_come_from_training_split_only(tmp_path):
    root = tmp_path / "leak"
    rng = np.random.default_rng(1)
    for i in range(6):
        d = root / f"case{i}"
        # test cases carry a huge pressure: it must not move the statistics
        write_internal_vtu(d / "internal.vtu", (1.0, 1.0, 1.0), rng, p_offset=(1000.0 if i >= 4 else 0.0))
    (root / "split.json").write_text(json.dumps({"train": [f"case{i}" for i in range(4)], "test": ["case4", "case5"]}))
    kw = dict(targets=["p", "U"], input_file="{case}/internal.vtu")
    tr = MeshFolderDataset(root, split="train", **kw)
    te = MeshFolderDataset(root, split="test", **kw)
    # independent reference: the point values of the training files, converted by pyvista
    import pyvista as pv

    ref = np.concatenate([pv.read(root / f"case{i}" / "internal.vtu").cell_data_to_point_data().point_data["p"]
                          for i in range(4)])
    for ds in (tr, te):
        np.testing.assert_allclose(float(ds.normalizers["p"].mean), ref.mean(), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(float(ds.normalizers["p"].std), ref.std(), rtol=1e-5)
    assert float(te[0].queries.fields["p"].mean()) > 100  # test data is far from the training statistics
    # passing the train normalisers (e.g. from a checkpoint) gives the same encoding
    te2 = MeshFolderDataset(root, split="test", normalize=tr.normalizers.state_dict(), **kw)
    torch.testing.assert_close(te2[0].queries.fields["p"], te[0].queries.fields["p"])


# ---------------------------------------------------------------------------- subsampling
def test_subsample_is_reproducible_per_epoch_and_consistent(foam):
    kw = dict(inputs=["p"], targets=["U"], split="all", subsample={"points": 20, "queries": 0.5}, seed=7, **FOAM)
    a, b = MeshFolderDataset(foam, **kw), MeshFolderDataset(foam, **kw)
    full = MeshFolderDataset(foam, inputs=["p"], targets=["U"], split="all", **FOAM)
    sa, sb = a[1], b[1]
    torch.testing.assert_close(sa.meta["point_index"], sb.meta["point_index"])
    assert sa.geometry.n_points == 20 and sa.queries.n_points == round(0.5 * full[1].queries.n_points)
    torch.testing.assert_close(sa.queries.fields["U"], full[1].queries.fields["U"][sa.meta["query_index"]])
    torch.testing.assert_close(sa.geometry.points, full[1].geometry.points[sa.meta["point_index"]])
    a.set_epoch(1)
    assert not torch.equal(a[1].meta["point_index"], sa.meta["point_index"])
    a.set_epoch(0)
    torch.testing.assert_close(a[1].meta["point_index"], sa.meta["point_index"])
    # quadrature weights rescaled by N/K: the integral of 1 is unbiased over many draws
    tot = []
    for e in range(200):
        a.set_epoch(e)
        tot.append(float(a[1].queries.weights.sum()))
    assert abs(np.mean(tot) / float(full[1].queries.weights.sum()) - 1) < 0.02


def test_subsample_near_input_keeps_the_queries_near_the_input_points(foam):
    """subsample near_input: every query within r of an input point is in every epoch's
    subsample, the others are drawn at random to fill the count, and the quadrature weights
    stay unbiased (the drawn ones scaled by the inverse fraction of the others)."""
    from scipy.spatial import cKDTree

    full = MeshFolderDataset(foam, inputs=["p"], targets=["U"], split="all", **FOAM)[1]
    d, _ = cKDTree(full.geometry.points.double().numpy()).query(full.queries.points.double().numpy())
    r = float(np.quantile(d, 0.2))
    near = set(np.nonzero(d <= r)[0].tolist())
    k = len(near) + 5
    assert 0 < len(near) and k < full.queries.n_points
    ds = MeshFolderDataset(foam, inputs=["p"], targets=["U"], split="all", subsample={"queries": k, "near_input": r}, **FOAM)
    tot, drawn = [], set()
    for e in range(200):
        ds.set_epoch(e)
        s = ds[1]
        idx = set(s.meta["query_index"].tolist())
        assert near <= idx and len(idx) == k
        drawn |= idx - near
        torch.testing.assert_close(s.queries.fields["U"], full.queries.fields["U"][s.meta["query_index"]])
        tot.append(float(s.queries.weights.sum()))
    assert len(drawn) > 5  # the others change from epoch to epoch
    assert abs(np.mean(tot) / float(full.queries.weights.sum()) - 1) < 0.02
    with pytest.raises(DatasetError, match="near_input"):
        MeshFolderDataset(foam, inputs=["p"], targets=["U"], split="all", subsample={"queries": k, "near_input": -1.0}, **FOAM)


# ---------------------------------------------------------------------------- neighbourhoods
def _ball(sources: torch.Tensor, queries: torch.Tensor, r: float) -> Neighborhoods:
    from scipy.spatial import cKDTree

    lists = cKDTree(sources.double().numpy()).query_ball_point(queries.double().numpy(), r)
    q = torch.cat([torch.full((len(l),), i, dtype=torch.long) for i, l in enumerate(lists)])
    s = torch.cat([torch.as_tensor(l, dtype=torch.long) for l in lists])
    return Neighborhoods.from_coo(q, s, len(lists), sources.shape[0], r)


class GridNeighbors:
    """Latent grid neighbourhoods computed with scipy (the GINO.precompute contract)."""

    def __init__(self, n=4, radius=0.35):
        self.n, self.radius = n, radius

    def latent(self, d):
        ax = torch.linspace(0, 1, self.n)
        return torch.stack(torch.meshgrid(*([ax] * d), indexing="ij"), -1).reshape(-1, d)

    def __call__(self, s: Sample) -> Sample:
        lat = self.latent(s.geometry.dim)
        return Sample(s.geometry, s.queries, latent_features=torch.ones(1, *([self.n] * s.geometry.dim)),
                      neighbors_in=_ball(s.geometry.points, lat, self.radius),
                      neighbors_out=_ball(lat, s.queries.points, self.radius), meta=s.meta)


def test_neighbourhoods_cached_on_disk_by_content_and_config(tmp_path):
    root = make_foam(tmp_path / "foam", n=3)
    cache = tmp_path / "cache"
    kw = dict(inputs=["p"], targets=["U"], split="all", neighbors=GridNeighbors(), cache_dir=cache, **FOAM)
    d1 = MeshFolderDataset(root, **kw)
    s1 = [d1[i] for i in range(len(d1))]
    assert d1.neighbor_computations == 3 and len(DiskNeighborhoodCache(cache)) == 3
    d2 = MeshFolderDataset(root, **kw)
    s2 = [d2[i] for i in range(len(d2))]
    assert d2.neighbor_computations == 0 and d2.cache.hits == 3  # loaded, not recomputed
    for a, b in zip(s1, s2):
        assert torch.equal(a.neighbors_in.index, b.neighbors_in.index) and torch.equal(a.neighbors_out.ptr, b.neighbors_out.ptr)
    assert not list(cache.glob("*.tmp"))  # atomic writes leave no temporaries
    # another radius misses; editing one file's content misses for that case only
    assert MeshFolderDataset(root, **{**kw, "neighbors": GridNeighbors(radius=0.3)})[0] is not None
    f = d1._files["run1"].query
    m = meshio.read(f)
    m.cell_data["p"][0][:] += 1.0
    meshio.write(f, m)
    d3 = MeshFolderDataset(root, **kw)
    [d3[i] for i in range(len(d3))]
    assert d3.neighbor_computations == 1
    # a corrupt entry is recomputed with a warning naming it
    victim = sorted(cache.glob("*.pt"))[0]
    victim.write_bytes(b"\x00garbage" * 10)
    d4 = MeshFolderDataset(root, **kw)
    with pytest.warns(RuntimeWarning, match=victim.name):
        [d4[i] for i in range(len(d4))]
    assert d4.neighbor_computations == 1 and d4.cache.corrupt == 1
    d5 = MeshFolderDataset(root, **kw)
    [d5[i] for i in range(len(d5))]
    assert d5.neighbor_computations == 0


def test_subsampled_neighbourhoods_equal_recomputed_ones(foam):
    nb = GridNeighbors(radius=0.3)
    ds = MeshFolderDataset(foam, inputs=["p"], targets=["U"], split="all", neighbors=nb, subsample=0.4, **FOAM)
    s = ds[2]
    ref = nb(Sample(s.geometry, s.queries))  # neighbourhoods searched on the kept points directly
    assert s.neighbors_in.to_sets() == ref.neighbors_in.to_sets()
    assert s.neighbors_out.to_sets() == ref.neighbors_out.to_sets()
    assert s.neighbors_in.num_sources == s.geometry.n_points
    b = collate([ds[0], ds[1]])
    assert b.neighbors_in.num_queries == 2 * nb.n**3 and b.neighbors_out.num_queries == b.queries.shape[0]


def test_csr_helpers_on_hand_made_case():
    nb = Neighborhoods(torch.tensor([0, 2, 1, 2, 3, 0]), torch.tensor([0, 2, 2, 5, 6]), 4)
    k = _keep_sources(nb, torch.tensor([0, 2]), 4)
    assert k.to_sets() == [{0, 1}, set(), {1}, {0}]
    t = _take_queries(nb, torch.tensor([3, 0, 2]))
    assert t.to_sets() == [{0}, {0, 2}, {1, 2, 3}]


def test_second_epoch_parses_no_file(foam, monkeypatch):
    calls = count_reads(monkeypatch)
    ds = MeshFolderDataset(foam, inputs=["p"], targets=["U"], split="all", **FOAM)
    n_build = len(calls)
    assert n_build == 2 * 5  # every file read once, when the dataset is built and checked
    for _ in range(2):
        [ds[i] for i in range(len(ds))]
    assert len(calls) == n_build
    import pickle

    blob = pickle.dumps(ds)  # what a "spawn" DataLoader worker receives: no cached data
    assert len(blob) < 20_000
    clone = pickle.loads(blob)
    torch.testing.assert_close(clone[3].queries.fields["U"], ds[3].queries.fields["U"])
    tiny = MeshFolderDataset(foam, inputs=["p"], targets=["U"], split="all", memory_cache_mb=0, **FOAM)
    before = len(calls)
    [tiny[i] for i in range(len(tiny))]
    assert len(calls) - before == 2 * 5  # no memory cache: parsed again


# ---------------------------------------------------------------------------- bad input
def test_missing_target_field_raises_or_skips(tmp_path):
    root = make_foam(tmp_path / "foam", n=4)
    bad = root / "run2" / "VTK" / "run2_100" / "internal.vtu"
    m = meshio.read(bad)
    del m.cell_data["U"]
    meshio.write(bad, m)
    with pytest.raises(DatasetError) as e:
        MeshFolderDataset(root, targets=["U"], split="all", **FOAM)
    assert str(bad) in str(e.value) and "'U'" in str(e.value)
    with pytest.warns(RuntimeWarning, match="internal.vtu"):
        ds = MeshFolderDataset(root, targets=["U"], split="all", on_error="skip", **FOAM)
    assert "run2" not in ds.cases and len(ds) == 3 and ds.skipped[0][0] == "run2"


def test_nan_unreadable_and_mixed_dimension_cases(tmp_path):
    root = make_fluent2d(tmp_path / "mix", n=4)
    pts, hexes = hex_box()
    meshio.write(root / "design_100.vtu", meshio.Mesh(pts, [("hexahedron", hexes)],
                                                     cell_data={"pressure": [np.ones(len(hexes))]}))
    with pytest.raises(DatasetError, match=r"design_100\.vtu.*2-D and 3-D"):
        MeshFolderDataset(root, targets=["pressure"], split="all")
    with pytest.warns(RuntimeWarning, match=r"design_100\.vtu.*2-D and 3-D"):  # the minority is left out
        assert "design_100" not in MeshFolderDataset(root, targets=["pressure"], split="all", on_error="skip").cases
    (root / "design_100.vtu").unlink()
    ptri, tris = tri_square()
    p = np.ones(len(tris))
    p[3] = np.nan
    meshio.write(root / "design_050.vtu", meshio.Mesh(ptri, [("triangle", tris)], cell_data={"pressure": [p]}))
    with pytest.raises(DatasetError, match=r"design_050\.vtu.*NaN"):
        MeshFolderDataset(root, targets=["pressure"], split="all")
    (root / "design_007.vtu").write_bytes(b"<VTKFile garbage" + os.urandom(64))
    with pytest.warns(RuntimeWarning) as rec:
        ds = MeshFolderDataset(root, targets=["pressure"], split="all", on_error="skip")
    msgs = " ".join(str(w.message) for w in rec)
    assert "design_050.vtu" in msgs and "design_007.vtu" in msgs
    assert ds.cases == [f"design_{i:03d}" for i in range(4)]
    with pytest.raises(DatasetError, match="design_007"):
        MeshFolderDataset(root, targets=["pressure"], split="all")


def test_empty_folder_and_pattern_matching_nothing(tmp_path, foam):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="searched .*empty"):
        MeshFolderDataset(tmp_path / "empty", targets=["p"])
    with pytest.raises(DatasetError, match=r"\{case\}_volume\.vtu"):
        MeshFolderDataset(foam, targets=["p"], input_file="{case}_volume.vtu")
    with pytest.raises(DatasetError, match="does not exist"):
        MeshFolderDataset(tmp_path / "nope", targets=["p"])
    with pytest.raises(DatasetError, match=r"valid: \['train', 'val', 'test', 'all'\]"):
        MeshFolderDataset(foam, targets=["p"], split="validation", **FOAM)
    with pytest.raises(DatasetError, match=r"valid: \['raise', 'skip'\]"):
        MeshFolderDataset(foam, targets=["p"], on_error="ignore", **FOAM)


# ---------------------------------------------------------------------------- normaliser
def test_field_normalizer_streaming_roundtrip_and_weights_only_state(tmp_path):
    g = torch.Generator().manual_seed(0)
    parts = [torch.randn(n, 3, generator=g) * torch.tensor([1.0, 10.0, 0.0]) + torch.tensor([5.0, -3e4, 2.0])
             for n in (7, 50, 13)]
    fn = FieldNormalizer().fit(parts)
    allx = torch.cat(parts).double()
    torch.testing.assert_close(fn.mean, allx.mean(0))
    torch.testing.assert_close(fn.std[:2], allx.std(0, unbiased=False)[:2])
    assert float(fn.std[2]) == 1.0  # constant channel: no division by ~0
    z = fn.encode(parts[1])
    torch.testing.assert_close(fn.decode(z), parts[1])
    torch.testing.assert_close(z[:, :2].double().mean(0), ((parts[1].double() - fn.mean) / fn.std).mean(0)[:2], atol=1e-5, rtol=1e-5)
    dn = DatasetNormalizers({"U": fn})
    torch.save(dn.state_dict(), tmp_path / "n.pt")
    back = DatasetNormalizers.from_state_dict(torch.load(tmp_path / "n.pt", weights_only=True))
    torch.testing.assert_close(back.encode("U", parts[0]), fn.encode(parts[0]))
    with pytest.raises(Exception, match="NaN"):
        FieldNormalizer().update(torch.tensor([[float("nan")]]))


def test_gino_precompute_as_cached_neighbourhoods(tmp_path, foam):
    import geoop.models.gino as gino_mod
    mk = lambda r: gino_mod.GINO(1, 3, coord_dim=3, latent_shape=(6, 6, 6), radius_in=r, radius_out=r,  # noqa: E731
                                 fno_width=8, fno_modes=3, fno_layers=1, gno_mlp=(8,),
                                 search_backend="scipy")
    model = mk(0.3)
    kw = dict(inputs=["p"], targets=["U"], split="train", cache_dir=tmp_path / "c", subsample={"queries": 30}, **FOAM)
    ds = MeshFolderDataset(foam, neighbors=model.precompute, **kw)
    items = [ds[i] for i in range(len(ds))]
    assert ds.neighbor_computations == len(ds)
    b = collate(items[:2])
    out = model(b, x=b.x(["p"]))
    assert out.shape == (b.queries.shape[0], 3) and torch.isfinite(out).all()
    ref = model.precompute(Sample(ds[1].geometry, ds[1].queries))  # searched on the subsample directly
    assert ds[1].neighbors_out.to_sets() == ref.neighbors_out.to_sets()
    again = MeshFolderDataset(foam, neighbors=mk(0.3).precompute, **kw)  # same config: loaded
    [again[i] for i in range(len(again))]
    assert again.neighbor_computations == 0
    other = MeshFolderDataset(foam, neighbors=mk(0.25).precompute, **kw)  # another radius: recomputed
    [other[i] for i in range(len(other))]
    assert other.neighbor_computations == len(other)


def test_planar_slice_queries_of_3d_cases_are_not_2d_cases(tmp_path):
    """A 3-D case queried on a cut plane (z = const, as exported by ParaView/Fluent) is a 3-D
    case, not a 2-D one mixed into the dataset."""
    rng = np.random.default_rng(2)
    for i in range(3):
        write_wall_vtp(tmp_path / f"c{i}_wall.vtp", (0.5, 0.5, 0.5), 0.3, rng)
        pts, tris = tri_square(n=3)
        pts[:, 2] = 0.5
        meshio.write(tmp_path / f"c{i}_slice.vtu", meshio.Mesh(pts, [("triangle", tris)], point_data={"p": rng.normal(size=len(pts))}))
    ds = MeshFolderDataset(tmp_path, inputs=["p"], targets=["p"], split="all", input_file="{case}_wall.vtp",
                           query_file="{case}_slice.vtu", drop_flat_z=True)
    assert not ds.is_2d and ds.dim == 3 and ds[0].queries.points.shape[1] == 3
