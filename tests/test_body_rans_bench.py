"""benchmarks/body_rans.py's peer harness: the peers train on geoop's cases, coordinates and
loss weights; an arm trains, predicts and is scored end to end; a peer whose environment is
missing is reported with the way to make it, never dropped; the peers' workers run in their
own environments where those exist (scripts/setup_bench_env.sh, scripts/setup_peer_env.sh)."""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
from _body_cases import make_cases

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("body_rans_bench", ROOT / "benchmarks" / "body_rans.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    root = tmp_path_factory.mktemp("body_rans_bench")
    make_cases(root, 4, seed=2, n_points=150, n_theta=10, test=(0,))
    return root


def test_peer_data_and_loss_weights_are_geoops(cases, tmp_path):
    """The peers' training items and loss weights are those of geoop's own trainer for the
    same config (split, symmetry plane, body box, area weights on the surface set)."""
    from geoop.batch import collate
    from geoop.train.run import build_run

    bench = _bench()
    rc = bench._resolved(bench.recipe_config(cases, tmp_path / "run", 0.01, tiny=True, force=False))
    run = build_run(rc, progress=False)
    peer = bench._peer_data(rc)
    assert list(peer.cases) == list(run.train_data.cases)
    names = peer.preprocessor.set_names
    for i in range(len(peer)):
        s, g = peer[i], run.train_data[i]
        torch.testing.assert_close(s.queries.points, g.queries.points)
        torch.testing.assert_close(s.geometry.points, g.geometry.points)
        w = bench._set_weights(s.queries, peer.targets, names)
        torch.testing.assert_close(w, run.trainer.loss_weights(collate([g])).float())
        surf = w[:, peer.targets.index("surface/p")]
        on = surf > 0
        assert on.any() and not torch.allclose(surf[on], surf[on][:1].expand(int(on.sum())))  # area, not 1 per point
        assert (w[~on][:, peer.targets.index("surface/p")] == 0).all()


def test_an_arm_runs_and_a_missing_peer_is_reported(cases, tmp_path, monkeypatch):
    bench = _bench()
    monkeypatch.setitem(bench.PEER_PYTHON, "transolver", ["", str(tmp_path / "no-such-venv" / "bin" / "python")])
    out = tmp_path / "out"
    assert bench.main(["--data", str(cases), "--minutes", "0.01", "--tiny", "--threads", "1", "--arms", "mlp,transolver",
                       "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert "setup_peer_env.sh" in res["transolver"]["not_run"]
    mlp = res["mlp"]
    assert mlp["steps"] > 0 and len(mlp["per_case"]) == 1
    for k in ("surface/p", "surface/wallShearStress", "points/p", "points/U", "cd/mae", "cl/mae"):
        assert math.isfinite(mlp[k]) and mlp[k] > 0, k
    table = (out / "table.md").read_text()
    assert "| mlp |" in table and "| transolver | not run:" in table


@pytest.mark.slow
@pytest.mark.parametrize("arm", ["gino_peer", "transolver"])
def test_peer_worker_runs_in_its_environment(arm, cases, tmp_path):
    bench = _bench()
    if not any(p and Path(p).exists() for p in bench.PEER_PYTHON[arm]):
        pytest.skip(f"no environment for {arm}: bash scripts/{'setup_bench_env.sh' if arm == 'gino_peer' else 'setup_peer_env.sh'}")
    out = tmp_path / "out"
    assert bench.main(["--data", str(cases), "--minutes", "0.02", "--tiny", "--threads", "1", "--arms", arm, "--out", str(out)]) == 0
    r = json.loads((out / "results.json").read_text())[arm]
    assert "not_run" not in r, r.get("not_run")
    assert r["steps"] > 0 and r["params"] > 0
    for k in ("surface/p", "points/U", "cd/mae"):
        assert math.isfinite(r[k]), k


def test_point_peers_see_the_surface_normals(cases, tmp_path):
    """Transolver's and the MLP's tokens: the surface file's normals on the surface rows (the
    combined queries carry none, the volume cloud having none), zero and flag 0 elsewhere."""
    import geoop

    bench = _bench()
    rc = bench._resolved(bench.recipe_config(cases, tmp_path / "run", 0.01, tiny=True, force=False))
    peer = bench._peer_data(rc)
    s = peer[0]
    f = bench._token_features(rc)(s)
    surf = f[:, 3] == 1
    g = geoop.read(cases / f"{s.meta['case']}_surface.vtp")
    assert int(surf.sum()) == g.n_points and f.shape == (s.queries.n_points, 4)
    ref = torch.nn.functional.normalize(g.normals.float(), dim=1)
    torch.testing.assert_close(torch.nn.functional.normalize(f[surf, :3], dim=1), ref, atol=1e-5, rtol=0)
    assert (f[~surf] == 0).all()


def test_merge_combines_separate_runs_and_reports_ratios_to_the_better_peer(tmp_path):
    """Arms run separately (e.g. two at once, 1 thread each) merge into one table; the ratio
    row divides by the better peer metric by metric; an arm in two runs is refused."""
    bench = _bench()
    a, b = tmp_path / "a", tmp_path / "b"
    for d, res in ((a, {"geoop": {"surface/p": 0.1, "cd/mae": 0.004}, "gino_peer": {"surface/p": 0.4, "cd/mae": 0.01}}),
                   (b, {"transolver": {"surface/p": 0.2, "cd/mae": 0.02}})):
        d.mkdir()
        (d / "results.json").write_text(json.dumps(res))
    out = tmp_path / "m"
    assert bench.main(["--merge", str(a), str(b), "--out", str(out)]) == 0
    merged = json.loads((out / "results.json").read_text())
    assert set(merged) == {"geoop", "gino_peer", "transolver"}
    r = bench.ratios(merged)["geoop"]
    assert r["surface/p"] == pytest.approx(0.1 / 0.2) and r["cd/mae"] == pytest.approx(0.004 / 0.01)
    assert "| geoop | 0.5 | " in (out / "table.md").read_text()
    with pytest.raises(SystemExit):
        bench.main(["--merge", str(a), str(a), "--out", str(tmp_path / "x")])
