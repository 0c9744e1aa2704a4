"""GeometryBatch / Sample / collate and the Neighborhoods CSR type."""
import pytest
import torch

from geoop import FieldError, Geometry, GeometryBatch, Neighborhoods, Sample, ShapeError, collate


def _tri_geom(n, seed, fields=True):
    g = torch.Generator().manual_seed(seed)
    pts = torch.rand(n, 3, generator=g)
    faces = torch.stack([torch.arange(n - 2), torch.arange(1, n - 1), torch.arange(2, n)], 1)
    f = {"p": torch.rand(n, generator=g), "u": torch.rand(n, 3, generator=g)} if fields else None
    return Geometry(pts, faces=faces, fields=f, name=f"g{seed}")


def test_from_geometries_offsets_and_unbatch_roundtrip():
    geoms = [_tri_geom(5, 0), _tri_geom(9, 1), _tri_geom(3, 2)]
    b = GeometryBatch.from_geometries(geoms)
    assert b.num_samples == 3
    assert b.ptr.tolist() == [0, 5, 14, 17]
    assert b.batch.tolist() == [0] * 5 + [1] * 9 + [2] * 3
    assert b.fields["u"].shape == (17, 3)
    # cells received the input-point offset of their sample
    tri = b.cells["triangle"]
    assert tri[b.cell_ptr["triangle"][1] : b.cell_ptr["triangle"][2]].min() >= 5
    back = b.unbatch()
    for g, h in zip(geoms, back):
        assert torch.equal(g.points, h.points)
        assert torch.equal(g.cells["triangle"], h.cells["triangle"])
        assert torch.equal(g.fields["u"], h.fields["u"])
        assert torch.allclose(g.weights, h.weights)


def test_separate_queries_of_different_sizes_including_empty():
    geoms = [_tri_geom(4, 0), _tri_geom(6, 1), _tri_geom(5, 2)]
    qs = [
        Geometry(torch.rand(7, 3), fields={"t": torch.rand(7, 2)}),
        Geometry(torch.zeros(0, 3), fields={"t": torch.zeros(0, 2)}, validate=False),
        Geometry(torch.rand(2, 3), fields={"t": torch.rand(2, 2)}),
    ]
    b = GeometryBatch.from_geometries(geoms, qs)
    assert b.query_counts() == [7, 0, 2]
    assert b.query_batch.tolist() == [0] * 7 + [2] * 2
    assert b.y(["t"]).shape == (9, 2)
    parts = b.split_queries(b.y(["t"]))
    assert [p.shape[0] for p in parts] == [7, 0, 2]
    assert torch.equal(parts[2], qs[2].fields["t"])
    uq = b.unbatch_queries()
    assert uq[1].n_points == 0 and torch.equal(uq[0].points, qs[0].points)


def test_neighborhoods_concatenate_with_declared_offsets():
    g0, g1 = _tri_geom(4, 0), _tri_geom(6, 1)
    # latent grid of G=2 points per sample; encoder nbrs index input points, decoder nbrs index latent points
    nin0 = Neighborhoods.from_coo(torch.tensor([0, 1]), torch.tensor([3, 0]), 2, 4)
    nin1 = Neighborhoods.from_coo(torch.tensor([0, 0, 1]), torch.tensor([5, 1, 2]), 2, 6)
    nout0 = Neighborhoods.from_coo(torch.tensor([0, 1, 2, 3]), torch.tensor([0, 1, 1, 0]), 4, 2)
    nout1 = Neighborhoods.from_coo(torch.tensor([0, 5]), torch.tensor([1, 0]), 6, 2)
    b = GeometryBatch.from_geometries([g0, g1], neighbors_in=[nin0, nin1], neighbors_out=[nout0, nout1])
    assert b.neighbors_in.to_sets() == [{3}, {0}, {4 + 1, 4 + 5}, {4 + 2}]
    assert b.neighbors_out.num_queries == 10
    sets = b.neighbors_out.to_sets()
    assert sets[:4] == [{0}, {1}, {1}, {0}] and sets[4] == {2 + 1} and sets[9] == {2 + 0}
    b.neighbors_in.validate()
    # split inverts cat
    parts = b.neighbors_in.split([2, 2], [0, 4])
    assert parts[1].to_sets() == nin1.to_sets()


def test_collate_with_dataloader():
    samples = [Sample(_tri_geom(n, i), latent_features=torch.full((1, 2, 2), float(i))) for i, n in enumerate([3, 8, 5, 4])]
    dl = torch.utils.data.DataLoader(samples, batch_size=2, collate_fn=collate)
    batches = list(dl)
    assert len(batches) == 2
    assert batches[0].counts() == [3, 8] and batches[1].counts() == [5, 4]
    assert batches[1].latent_features.shape == (2, 1, 2, 2)
    assert batches[1].latent_features[1].max() == 3.0


def test_batch_errors_name_the_sample():
    g2d = Geometry(torch.rand(5, 2), name="flat")
    with pytest.raises(ShapeError, match="sample 1"):
        GeometryBatch.from_geometries([_tri_geom(4, 0), g2d])
    with pytest.raises(FieldError, match="'p'"):
        GeometryBatch.from_geometries([_tri_geom(4, 0), _tri_geom(4, 1, fields=False)])
    with pytest.raises(ShapeError, match="present in some samples"):
        collate([Sample(_tri_geom(4, 0), latent_features=torch.zeros(1)), Sample(_tri_geom(4, 1))])
    b = GeometryBatch.from_geometries([_tri_geom(4, 0)])
    with pytest.raises(FieldError, match="available"):
        b.x(["nope"])


def test_batch_to_keeps_everything():
    b = GeometryBatch.from_geometries([_tri_geom(4, 0), _tri_geom(5, 1)])
    c = b.to("cpu")
    assert torch.equal(c.points, b.points) and c.counts() == b.counts()


def test_neighborhoods_subsample_is_uniform_subset():
    # one query with 10 neighbours, keep 3: each kept with probability 3/10
    nb = Neighborhoods(torch.cat([torch.arange(10), torch.tensor([4, 7])]), torch.tensor([0, 10, 12]), 10)
    hits = torch.zeros(10)
    trials = 500  # binomial std of a frequency ~ 0.02
    g = torch.Generator().manual_seed(0)
    for _ in range(trials):
        s = nb.subsample(3, generator=g)
        assert s.counts().tolist() == [3, 2]
        sets = s.to_sets()
        assert sets[0] <= set(range(10)) and len(sets[0]) == 3 and sets[1] == {4, 7}
        hits[list(sets[0])] += 1
    freq = hits / trials
    assert torch.allclose(freq, torch.full((10,), 0.3), atol=0.08)


def test_neighborhoods_validate_rejects_broken_csr():
    with pytest.raises(ShapeError):
        Neighborhoods(torch.tensor([0, 1]), torch.tensor([0, 3]), 2).validate()
    with pytest.raises(ShapeError, match="index must be in"):
        Neighborhoods(torch.tensor([0, 5]), torch.tensor([0, 2]), 2).validate()
    nb = Neighborhoods.from_coo(torch.tensor([2, 0, 2]), torch.tensor([1, 4, 0]), 3, 5)
    assert nb.ptr.tolist() == [0, 1, 1, 3] and nb.index.tolist() == [4, 0, 1]
    assert nb.query_index().tolist() == [0, 2, 2]
