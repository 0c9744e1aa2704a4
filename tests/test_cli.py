"""geoop train / predict / render / demo on the command line (in-process ``main``)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from _helpers import tiny_gino_config, write_annulus_cases

import geoop
from geoop.cli.main import main
from geoop.geometry.geometry import Geometry

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_annulus_cases(tmp_path_factory.mktemp("cases"), 6, "case_{i:02d}")


def _config(tmp, folder, **optim):
    return tiny_gino_config(tmp / "cfg.toml", folder, tmp / "run", optim=optim)


@pytest.mark.slow
def test_train_resume_predict_render(tmp_path, folder, capsys):
    cfg = _config(tmp_path, folder)
    assert main(["train", str(cfg), "--no-progress"]) == 0
    run = tmp_path / "run"
    assert {"last.pt", "best.pt", "metrics.jsonl", "loss.png", "config.json"} <= {p.name for p in run.iterdir()}
    saved = json.loads((run / "config.json").read_text())
    assert saved["model"]["latent_shape"] == [8, 8] and saved["optim"]["warmup"] == 0.0
    ck = torch.load(run / "last.pt", weights_only=True)
    assert ck["epoch"] == 2 and ck["config"] == saved and ck["model_config"]["coord_dim"] == 2
    # resume continues from epoch 2 to 3
    assert main(["train", str(cfg), "--resume", "--epochs", "3", "--no-progress"]) == 0
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 3
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3
    capsys.readouterr()

    # predict on the unseen case, and on a moved + scaled copy of it
    case = folder / "case_05.vtu"
    out = tmp_path / "pred.vtu"
    assert main(["predict", "--checkpoint", str(run / "last.pt"), "--geometry", str(case), "--out", str(out)]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["fields"] == ["p"] and math.isfinite(info["rel_l2"]["p"])
    src, pred = geoop.read(case), geoop.read(out)
    assert torch.allclose(pred.points, src.points)  # original coordinates
    assert pred.cells["triangle"].shape == src.cells["triangle"].shape
    assert {"p", "p_true", "p_error"} <= set(pred.fields)
    assert torch.allclose(pred.fields["p_true"], src.fields["p"])
    moved = src.replace(points=src.points * 2.0 + torch.tensor([-7.0, 4.0, 0.0]))
    geoop.write(moved, tmp_path / "moved.vtu")
    out2 = tmp_path / "pred_moved.vtp"
    assert main(["predict", "--checkpoint", str(run / "best.pt"), "--geometry", str(tmp_path / "moved.vtu"), "--on", str(tmp_path / "moved.vtu"), "--out", str(out2)]) == 0
    pred2 = geoop.read(out2)
    assert torch.allclose(pred2.points, moved.points, atol=1e-5)
    # per-case normalisation: the prediction does not depend on where the file puts the shape
    assert main(["predict", "--checkpoint", str(run / "best.pt"), "--geometry", str(case), "--out", str(tmp_path / "pb.vtu")]) == 0
    assert torch.allclose(geoop.read(tmp_path / "pb.vtu").fields["p"], pred2.fields["p"], atol=1e-4)
    # query points from a point file: written where they are
    pts = src.points[::3] + torch.tensor([0.01, 0.0, 0.0])
    geoop.write(Geometry(pts), tmp_path / "q.xyz")
    assert main(["predict", "--checkpoint", str(run / "last.pt"), "--geometry", str(case), "--query", str(tmp_path / "q.xyz"), "--out", str(tmp_path / "q.vtp")]) == 0
    q = geoop.read(tmp_path / "q.vtp")
    assert q.n_points == pts.shape[0] and torch.allclose(q.points, pts, atol=1e-5) and "p" in q.fields

    png = tmp_path / "p.png"
    assert main(["render", str(out), "--field", "p", "--truth", str(case), "--out", str(png), "--size", "600", "240"]) == 0
    import matplotlib.image as mpimg

    img = mpimg.imread(str(png))[..., :3]
    assert img.shape[:2] == (240, 600) and img.std() > 0.05


def test_cli_errors_exit_nonzero_with_clear_messages(tmp_path, folder, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(f'[data]\nfolder = "{folder}"\ntargets = ["p"]\n[output]\ndir = "{tmp_path}"\n[optim]\nlearning_rate = 1\n')
    assert main(["train", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "geoop train: error:" in err and "unknown key ['learning_rate']" in err and "'lr'" in err and "bad.toml" in err
    cfg.write_text(f'[data]\nfolder = "{folder}"\n[output]\ndir = "{tmp_path}"\n')
    assert main(["train", str(cfg)]) == 2
    assert "missing required key data.targets" in capsys.readouterr().err
    cfg.write_text(f'[data]\nfolder = "{folder}"\ntargets = ["p"]\n[model]\nlatent_shap = [4, 4]\n[output]\ndir = "{tmp_path}"\n')
    assert main(["train", str(cfg)]) == 2
    assert "[model]: unknown key ['latent_shap']" in capsys.readouterr().err
    assert main(["predict", "--checkpoint", str(tmp_path / "none.pt"), "--geometry", str(folder / "case_00.vtu"), "--out", str(tmp_path / "x.vtu")]) == 2
    assert "none.pt does not exist" in capsys.readouterr().err
    assert main(["render", str(folder / "case_00.vtu"), "--field", "T", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "no point field 'T'" in err and "['a', 'p']" in err


@pytest.mark.slow
def test_predict_without_input_field_names_field_and_file(tmp_path, folder, capsys):
    cfg = _config(tmp_path, folder, epochs=1)
    assert main(["train", str(cfg), "--no-progress"]) == 0
    g = geoop.read(folder / "case_05.vtu")
    geoop.write(g.replace(fields={"p": g.fields["p"]}), tmp_path / "no_a.vtu")
    capsys.readouterr()
    rc = main(["predict", "--checkpoint", str(tmp_path / "run" / "last.pt"), "--geometry", str(tmp_path / "no_a.vtu"), "--out", str(tmp_path / "o.vtu")])
    err = capsys.readouterr().err
    assert rc == 2 and "no_a.vtu" in err and "input field 'a'" in err
    assert not (tmp_path / "o.vtu").exists()


def test_demo_wind_frame_and_crop(tmp_path):
    """The demo's case preparation: after rotating by -alpha the free stream is +x, the
    volume lies in the window, and the surface Cp equals the volume pressure at the
    surface nodes (what the demo uses to predict Cp)."""
    from geoop.cli.demo import WINDOW, prepare_cases
    from geoop.data import airfoil

    entries = airfoil.generate(str(tmp_path / "raw"), 1, seed=3, alpha_deg=8.0, n_volume=800, n_panels=80)
    prepare_cases(tmp_path / "raw", tmp_path / "cases", entries)
    s = geoop.read(tmp_path / "cases" / entries[0]["surface"])
    v = geoop.read(tmp_path / "cases" / entries[0]["volume"])
    x, y = v.points[:, 0], v.points[:, 1]
    assert float(x.min()) >= WINDOW[0] and float(x.max()) <= WINDOW[1] and float(y.min()) >= WINDOW[2] and float(y.max()) <= WINDOW[3]
    # far from the airfoil (raw mesh, 4-5 chords away) the rotated flow is the +x free stream
    from geoop.cli.demo import _rotate

    raw = geoop.read(tmp_path / "raw" / entries[0]["volume"])
    far = raw.points[:, :2].double().norm(dim=1) > 4.0
    vel = np.concatenate([raw.fields["u"].double().numpy(), raw.fields["v"].double().numpy()], 1)[far.numpy()]
    rot = _rotate(vel, -math.radians(8.0)).mean(0)
    assert abs(rot[0] - 1.0) < 0.01 and abs(rot[1]) < 0.01
    # speed (hence p = 1 - |V|^2) is unchanged by the rotation
    assert torch.allclose(v.fields["p"][:, 0], 1 - v.fields["u"][:, 0] ** 2 - v.fields["v"][:, 0] ** 2, atol=1e-4)
    # the trailing edge stays at the origin-centred rotation of (1, 0): y_te = -sin(alpha)
    te = s.points[s.points[:, 0].argmax()]
    assert float(te[1]) == pytest.approx(-math.sin(math.radians(8.0)), abs=0.01)
    # surface nodes are volume nodes with p = Cp
    d = torch.cdist(s.points[:, :2].double(), v.points[:, :2].double())
    j = d.argmin(1)
    assert float(d.min(1).values.max()) < 1e-6
    assert torch.allclose(v.fields["p"][j], s.fields["Cp"], atol=1e-4)


def test_train_threads(tmp_path, folder, capsys):
    """``geoop train --threads N`` sets torch's CPU threads before training; N < 1 is a clear error."""
    cfg = _config(tmp_path, folder, epochs=1)
    assert main(["train", str(cfg), "--threads", "0", "--no-progress"]) == 2
    assert "--threads must be >= 1, got 0" in capsys.readouterr().err
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert main(["train", str(cfg), "--threads", "1", "--no-progress"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
