"""Point data win over cell data of the same name; the cell data stay available, renamed."""
import meshio
import numpy as np
import torch

import geoop
from geoop.cli.main import main
from geoop.data.preprocess import pick_fields


def test_point_normals_and_fields_win_and_cell_data_are_renamed(tmp_path, capsys):
    pts = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], float)
    tri = np.array([[0, 1, 2], [0, 2, 3]])
    nrm = np.tile([0.0, 0.0, 1.0], (4, 1))
    path = tmp_path / "both.vtu"
    meshio.write(path, meshio.Mesh(pts, [("triangle", tri)],
                                   point_data={"Normals": nrm, "p": np.arange(4.0)},
                                   cell_data={"Normals": [np.array([[0.2, 0, 0], [0.2, 0, 0]])], "p": [np.array([10.0, 20.0])]}))
    g = geoop.read(path)
    assert torch.allclose(g.normals.double(), torch.from_numpy(nrm))
    assert torch.equal(g.fields["p"].flatten().double(), torch.arange(4.0, dtype=torch.float64))  # point data
    assert torch.allclose(g.fields["p_cell"].flatten().double(), torch.tensor([15.0, 10.0, 15.0, 20.0], dtype=torch.float64))
    assert torch.allclose(g.fields["Normals_cell"][:, 0].double(), torch.full((4,), 0.2, dtype=torch.float64))
    # a dataset/preprocessor asking for "Normals" gets the file's point normals, not the averaged cell ones
    got = pick_fields(g, ["Normals", "p"], path, "input")
    assert torch.allclose(got["Normals"].double(), torch.from_numpy(nrm)) and torch.equal(got["p"], g.fields["p"])
    capsys.readouterr()
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "p_cell" in out and "cell data 'p' averaged onto the points; the point data of that name win" in out


def test_vector_components_are_selected_by_name(tmp_path):
    from geoop.data import MeshFolderDataset
    from geoop.errors import DatasetError

    pts = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], float)
    tri = np.array([[0, 1, 2], [0, 2, 3]])
    U = np.stack([np.arange(4.0), 10 + np.arange(4.0), np.zeros(4)], 1)  # dead z component
    for i in range(2):
        meshio.write(tmp_path / f"c{i}.vtu", meshio.Mesh(pts, [("triangle", tri)], point_data={"U": U + i, "p": np.arange(4.0)}))
    ds = MeshFolderDataset(tmp_path, targets=["U[0:2]", "p"], split="all", normalize=False, geometry_normalization="none",
                           drop_flat_z=True)
    q = ds[0].queries.fields
    assert q["U[0:2]"].shape == (4, 2) and torch.allclose(q["U[0:2]"].double(), torch.from_numpy(U[:, :2]))
    got = pick_fields(geoop.read(tmp_path / "c1.vtu"), ["U[1]"], "c1.vtu", "target")
    assert torch.allclose(got["U[1]"].double().flatten(), torch.from_numpy(U[:, 1] + 1))
    import pytest

    with pytest.raises(DatasetError, match=r"\[2:5\].*has 3"):
        pick_fields(geoop.read(tmp_path / "c1.vtu"), ["U[2:5]"], "c1.vtu", "target")
