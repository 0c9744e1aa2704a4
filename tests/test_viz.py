"""Off-screen rendering and VTK export."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import geoop
from geoop.errors import FieldError, ShapeError, UnsupportedFormatError
from geoop.geometry.geometry import Geometry
from geoop.viz import export_vtk, relative_l2_error, render, with_error
from geoop.viz.render import colour_limits

pytest.importorskip("pyvista")


pytestmark = pytest.mark.usefixtures("one_thread")


def _disc(n=24):
    """A triangulated 2-D annulus with a smooth field (z = 0, like CFD exports)."""
    r, t = np.meshgrid(np.linspace(0.3, 1.0, 8), np.linspace(0, 2 * np.pi, n, endpoint=False), indexing="ij")
    pts = np.stack([r.ravel() * np.cos(t.ravel()), r.ravel() * np.sin(t.ravel()), 0 * r.ravel()], 1)
    idx = np.arange(8 * n).reshape(8, n)
    a, b, c, d = idx[:-1, :], np.roll(idx[:-1, :], -1, 1), idx[1:, :], np.roll(idx[1:, :], -1, 1)
    tri = np.concatenate([np.stack([a, b, d], -1).reshape(-1, 3), np.stack([a, d, c], -1).reshape(-1, 3)])
    p = np.cos(2 * t.ravel()) * r.ravel()
    return Geometry(pts, cells={"triangle": tri}, fields={"p": p, "u": np.stack([p, -p], 1)}, name="annulus")


def _image(path):
    import matplotlib.image as mpimg

    return mpimg.imread(str(path))


def test_render_single_and_with_truth(tmp_path):
    g = _disc()
    out = render(g, "p", tmp_path / "p.png", window_size=(400, 320))
    img = _image(out)
    assert img.shape[:2] == (320, 400)
    rgb = img[..., :3]
    # not blank: many distinct colours and real variance (a white or one-colour image fails)
    assert rgb.std() > 0.05 and len(np.unique((rgb * 255).astype(int).reshape(-1, 3), axis=0)) > 50
    pred = g.with_fields(p=g.fields["p"] * 1.1)
    out3 = render(pred, "p", tmp_path / "cmp.png", truth=g, window_size=(900, 320))
    img3 = _image(out3)[..., :3]
    assert img3.shape[:2] == (320, 900)
    # three panels: each third of the picture holds drawn pixels (not just background)
    for k in range(3):
        panel = img3[60:260, k * 300:(k + 1) * 300]
        assert (panel.min(axis=2) < 0.9).mean() > 0.05, k
    # the vector field is drawn by its magnitude, a 3-D point cloud from an isometric camera
    render(g, "u", tmp_path / "u.png", window_size=(300, 240))
    cloud = Geometry(torch.rand(300, 3), fields={"q": torch.rand(300)})
    assert _image(render(cloud, "q", tmp_path / "cloud.png", window_size=(300, 240)))[..., :3].std() > 0.02


def test_render_errors(tmp_path):
    g = _disc()
    with pytest.raises(FieldError, match=r"annulus: no point field 'T' to render; available: \['p', 'u'\]"):
        render(g, "T", tmp_path / "x.png")
    with pytest.raises(ShapeError, match="colour map 'rainbowz' is unknown; valid"):
        render(g, "p", tmp_path / "x.png", cmap="rainbowz")
    with pytest.raises(ShapeError, match="same points"):
        render(g, "p", tmp_path / "x.png", truth=g.select(torch.arange(10)))
    assert not (tmp_path / "x.png").exists()


def test_relative_l2_and_colour_limits():
    t = np.array([3.0, 4.0])
    assert relative_l2_error(np.array([3.0, 4.0]) * 1.2, t) == pytest.approx(0.2)
    assert relative_l2_error(np.array([0.0, 4.0]), t, weights=np.array([0.0, 1.0])) == pytest.approx(0.0)
    v = np.concatenate([np.linspace(0, 1, 1000), [-50.0]])
    lo, hi = colour_limits(v, "robust")
    assert -0.1 < lo < 0.05 and 0.95 < hi <= 1.0
    assert colour_limits(v, "full") == [-50.0, 1.0]
    with pytest.raises(ShapeError, match=r"valid: \['robust', 'full'\]"):
        colour_limits(v, "auto")


def test_export_vtk_round_trip(tmp_path):
    g = _disc()
    pred = with_error(g.with_fields(p=g.fields["p"] + 0.5), g, ["p"])
    path = export_vtk(pred, tmp_path / "sub" / "pred.vtu")
    back = geoop.read(path)
    assert back.n_points == g.n_points and back.cells["triangle"].shape == g.cells["triangle"].shape
    assert torch.allclose(back.fields["p_error"], torch.full((g.n_points, 1), 0.5), atol=1e-6)
    assert torch.allclose(back.fields["p_true"], g.fields["p"], atol=1e-6)
    with pytest.raises(UnsupportedFormatError, match=r"valid: \['.vtp', '.vtu', '.vtk'\]"):
        export_vtk(g, tmp_path / "x.stl")
