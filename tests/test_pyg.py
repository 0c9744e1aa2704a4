"""torch-geometric interop: Geometry <-> Data, PyG Batch -> GeometryBatch, both ways."""
import pytest
import torch

from geoop import Geometry, GeometryBatch
from geoop.errors import FieldError

pyg = pytest.importorskip("torch_geometric")


def _mesh(n_side=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    xs = torch.linspace(0, 1, n_side)
    pts = torch.stack(torch.meshgrid(xs, xs, indexing="ij"), -1).reshape(-1, 2)
    pts = torch.cat([pts, torch.rand(pts.shape[0], 1, generator=g) * 0.1], 1)
    idx = torch.arange(n_side * n_side).reshape(n_side, n_side)
    a, b, c, d = idx[:-1, :-1].reshape(-1), idx[1:, :-1].reshape(-1), idx[:-1, 1:].reshape(-1), idx[1:, 1:].reshape(-1)
    tri = torch.cat([torch.stack([a, b, d], 1), torch.stack([a, d, c], 1)])
    return Geometry(pts, cells={"triangle": tri, "line": torch.stack([a, b], 1)},
                    fields={"p": torch.rand(pts.shape[0], 1, generator=g), "U": torch.rand(pts.shape[0], 3, generator=g)}).compute_normals()


def test_geometry_to_pyg_follows_pyg_conventions_and_roundtrips():
    g = _mesh()
    d = g.to_pyg(x=["p", "U"])
    assert isinstance(d, pyg.data.Data)
    assert torch.equal(d.pos, g.points) and torch.equal(d.face, g.faces.t()) and torch.equal(d.norm, g.normals)
    assert torch.equal(d.x, torch.cat([g.fields["p"], g.fields["U"]], 1)) and d.num_nodes == g.n_points
    # PyG's own mesh transform reads our face/pos: its normals agree with ours (up to the
    # per-face weighting of the vertex average)
    ref = pyg.transforms.GenerateMeshNormals()(pyg.data.Data(pos=g.points.clone(), face=d.face.clone()))
    assert float((ref.norm * g.normals).sum(1).min()) > 0.999
    back = Geometry.from_pyg(d)
    assert torch.equal(back.points, g.points) and torch.equal(back.faces, g.faces)
    assert torch.equal(back.cells["line"], g.cells["line"]) and torch.equal(back.normals, g.normals)
    assert {"p", "U", "x"} <= set(back.fields) and torch.equal(back.fields["U"], g.fields["U"])


def test_pyg_batch_to_geometry_batch_keeps_cells_per_sample():
    gs = [_mesh(3, 0), _mesh(5, 1), _mesh(4, 2)]
    batch = pyg.data.Batch.from_data_list([g.to_pyg() for g in gs])
    # PyG offsets face and line_index by the node counts
    assert int(batch.face.max()) == sum(g.n_points for g in gs) - 1
    gb = GeometryBatch.from_pyg(batch)
    ref = GeometryBatch.from_geometries(gs)
    assert gb.num_samples == 3 and torch.equal(gb.ptr, ref.ptr) and torch.equal(gb.points, ref.points)
    assert torch.equal(gb.fields["U"], ref.fields["U"]) and torch.equal(gb.normals, ref.normals)
    for a, b in zip(gb.unbatch(), gs):
        assert torch.equal(a.faces, b.faces) and torch.equal(a.cells["line"], b.cells["line"])
    # and back: the batch's geometries to PyG give the same Batch
    again = pyg.data.Batch.from_data_list([g.to_pyg() for g in gb.unbatch()])
    assert torch.equal(again.face, batch.face) and torch.equal(again.pos, batch.pos)


def test_clashing_field_names_are_named():
    g = _mesh().with_fields(edge_index=torch.zeros(16, 1))
    with pytest.raises(FieldError, match="edge_index"):
        g.to_pyg()
