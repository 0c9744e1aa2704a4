"""The other entry points that take user data fail clearly, and before any work:
radius_search, GINO.query, ``geoop predict --query``, config files."""
from __future__ import annotations

import pytest
import torch

import geoop
from geoop import Geometry
from geoop.errors import ConfigError, DatasetError, FieldError, ShapeError
from geoop.models import GINO

pytestmark = pytest.mark.usefixtures("one_thread")

NAN, INF = float("nan"), float("inf")


# ---------------------------------------------------------------------------- radius_search
@pytest.mark.parametrize("radius,match", [(-0.1, ">= 0"), (NAN, "finite"), (INF, "finite"), ("big", "number"),
                                          (None, "number")])
def test_radius_search_bad_radius(radius, match):
    pts = torch.rand(10, 3)
    with pytest.raises(ShapeError, match=f"radius_search: radius.*{match}"):
        geoop.radius_search(pts, pts, radius)


@pytest.mark.parametrize("which", ["sources", "queries"])
@pytest.mark.parametrize("bad", [NAN, INF])
def test_radius_search_nonfinite_points(which, bad):
    src, qry = torch.rand(10, 3), torch.rand(5, 3)
    (src if which == "sources" else qry)[2, 1] = bad
    with pytest.raises(ShapeError, match="finite") as e:
        geoop.radius_search(src, qry, 0.3)
    assert "1 point" in str(e.value)


@pytest.mark.parametrize("src,qry", [(torch.rand(10), torch.rand(5, 3)), (torch.rand(10, 3), torch.rand(5, 2)),
                                     (torch.rand(10, 3, 1), torch.rand(5, 3)), (torch.rand(10, 4), torch.rand(5, 4))])
def test_radius_search_bad_shapes(src, qry):
    with pytest.raises(ShapeError, match="radius_search"):
        geoop.radius_search(src, qry, 0.3)


# ---------------------------------------------------------------------------- GINO
@pytest.fixture(scope="module")
def gino():
    torch.manual_seed(0)
    return GINO(in_channels=0, out_channels=1, fno_modes=2, latent_shape=(6, 6, 6), fno_width=8, fno_layers=1,
                gno_mlp=(8,))


def _no_encoding(model, monkeypatch):
    def fail(*a, **k):
        raise AssertionError("GINO.query started encoding before checking its input")

    monkeypatch.setattr(model, "encode", fail)


@pytest.mark.parametrize("bad", [NAN, INF])
def test_gino_query_nonfinite_points(gino, monkeypatch, bad):
    geom = torch.rand(40, 3)
    q = torch.rand(7, 3)
    q[3, 0] = bad
    _no_encoding(gino, monkeypatch)
    with pytest.raises(ShapeError, match=r"GINO.query: points must be finite, got 1 of 7 rows"):
        gino.query(geom, q)
    g2 = geom.clone()
    g2[5] = bad
    with pytest.raises(ShapeError, match="GINO.query: geometry points must be finite"):
        gino.query(g2, torch.rand(7, 3))


@pytest.mark.parametrize("q", [torch.rand(7, 2), torch.rand(7), torch.rand(7, 4), torch.rand(2, 7, 3)])
def test_gino_query_wrong_dims(gino, monkeypatch, q):
    _no_encoding(gino, monkeypatch)
    with pytest.raises(ShapeError, match=r"GINO.query: points must have shape \(Q, 3\)"):
        gino.query(torch.rand(40, 3), q)
    with pytest.raises(ShapeError, match=r"GINO.query: geometry points must have shape \(N, 3\)"):
        gino.query(torch.rand(40, 2), torch.rand(7, 3))


def test_gino_query_still_answers(gino):
    out = gino.query(Geometry(torch.rand(40, 3)), torch.rand(7, 3))
    assert out.shape == (7, 1) and torch.isfinite(out).all()


@pytest.mark.parametrize("kw", [dict(radius_in=-0.1), dict(radius_out=NAN), dict(radius_in=0.0), dict(radius_out=INF),
                                dict(latent_shape=(0, 8, 8))])
def test_gino_bad_arguments(kw):
    with pytest.raises(ConfigError, match=r"radius must be a finite number > 0|shape must be integers >= 2"):
        GINO(in_channels=0, out_channels=1, fno_modes=2, **kw)


# ---------------------------------------------------------------------------- geoop predict
@pytest.mark.parametrize("content,match", [("0 0 0\n1 nan 0\n", "NaN/Inf"), ("0 0 0\n1 2\n", "reader failed"),
                                           ("", "empty"), ("# only a comment\n", "no points")])
def test_predict_bad_query_file_fails_before_loading_the_model(tmp_path, capsys, content, match):
    from geoop.cli.main import main

    geom = tmp_path / "body.vtp"
    geoop.write(Geometry(torch.rand(20, 3)), geom)
    bad = tmp_path / "points.xyz"
    bad.write_text(content)
    # the checkpoint does not exist: reading it would be a CheckpointError, so the query
    # file's error shows the user's files are checked first
    rc = main(["predict", "--checkpoint", str(tmp_path / "missing.pt"), "--geometry", str(geom),
               "--query", str(bad), "--out", str(tmp_path / "out.vtp")])
    err = capsys.readouterr().err
    assert rc == 2 and f"geoop predict: error: {bad}" in err and match in err, err
    assert "Traceback" not in err and not (tmp_path / "out.vtp").exists()


# ---------------------------------------------------------------------------- config files
def _config(tmp_path, model: str = "", data: str = "", ext: str = ".toml") -> str:
    folder = tmp_path / "cases"
    text = (f'[data]\nfolder = "{folder}"\ntargets = ["p"]\n{data}\n{model}\n'
            f'[output]\ndir = "{tmp_path / "run"}"\n')
    p = tmp_path / f"c{ext}"
    p.write_text(text)
    return str(p)


def _load(path):
    """As ``geoop train`` reads a config: with the dataset's and GINO's own checks."""
    from geoop.data import MeshFolderDataset
    from geoop.train.config import load_config

    return load_config(path, dataset_cls=MeshFolderDataset, model_cls=GINO)


@pytest.mark.parametrize("model,match", [
    ("[model.encoder]\nradius = -0.05", r"EncoderSpec: radius must be a finite number > 0, got -0.05"),
    ("[model.decoder]\nradius = 0", r"GNOSpec: radius must be a finite number > 0, got 0"),
    ("[model.local]\nradius = -1.0", r"LocalSpec: radius must be a finite number >= 0"),
    ("[model.encoder]\nradius = nan", r"radius must be a finite number > 0, got nan"),
    ("[model.latent]\ndomain = [[0.0, nan], [1.0, 1.0]]", r"model.latent.domain\[0\]\[1\] must be finite, got nan"),
    ("[model.latent]\ndomain = [[0.0, 0.0], [1.0, inf]]", r"model.latent.domain\[1\]\[1\] must be finite, got inf"),
    ("[model.latent]\ndomain = [[0.0, 1.0], [1.0, 1.0]]", r"domain upper corner must exceed the lower one"),
    ("[model.latent]\nshape = [0, 48]", r"shape must be integers >= 2"),
    ("[model.blocks]\nmodes = [8, 0]", r"modes must be an int >= 1"),
])
def test_config_bad_values(tmp_path, model, match):
    path = _config(tmp_path, model=model)
    with pytest.raises(ConfigError, match=match) as e:
        _load(path)
    assert path in str(e.value)


def test_config_nan_anywhere_and_yaml(tmp_path):
    with pytest.raises(ConfigError, match=r"optim.lr must be finite|optim.lr must be >= "):
        _load(_config(tmp_path, data="[optim]\nlr = nan"))
    with pytest.raises(ConfigError, match=r"data.subsample.queries must be finite, got nan"):
        _load(_config(tmp_path, data="subsample = {queries = nan}"))
    y = tmp_path / "c.yaml"
    y.write_text(f"data: {{folder: {tmp_path}, targets: [p]}}\nmodel: {{latent: {{domain: [[0, 0], [1, .inf]]}}}}\n"
                 f"output: {{dir: {tmp_path / 'run'}}}\n")
    with pytest.raises(ConfigError, match=r"model.latent.domain\[1\]\[1\] must be finite, got inf"):
        _load(y)


def test_config_valid_values_pass(tmp_path):
    cfg = _load(_config(tmp_path, model="[model.latent]\nshape = [4, 4]\ndomain = [[-1.0, 0.0], [1.0, 2.0]]\n"
                                        "[model.encoder]\nradius = 0.05\n[model.blocks]\nmodes = 2"))
    assert cfg["model"]["latent"]["shape"] == [4, 4]


def test_config_missing_field_name_is_named_before_training(tmp_path):
    """A field name the files do not hold: an error naming the field, the file and the
    available fields, raised while the model shape is inferred from the first case (before
    any dataset is built)."""
    from geoop.train.run import build_run

    folder = tmp_path / "cases"
    folder.mkdir()
    for i in range(3):
        pts = torch.rand(30, 3)
        geoop.write(Geometry(pts, fields={"p": pts[:, :1]}), folder / f"case_{i}.vtp")
    cfg = _load(_config(tmp_path, data='inputs = ["pressure"]',
                        model="[model.latent]\nshape = [4, 4, 4]\n[model.blocks]\nmodes = 2"))
    with pytest.raises((FieldError, DatasetError), match=r"case_0.vtp: input field 'pressure' is missing; .*\['p'\]"):
        build_run(cfg)
    assert not (tmp_path / "run").exists()
