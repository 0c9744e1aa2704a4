"""`geoop demo` end to end at toy size: data -> train -> predict unseen -> VTK + PNG + errors."""
import math
import re

import pytest

from geoop.cli.main import main
from geoop.geometry.io import read

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def test_demo_runs_end_to_end_at_toy_size(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(["demo", "--out", str(out), "--train-cases", "3", "--test-cases", "1", "--epochs", "1",
               "--threads", "1", "--no-progress"])
    assert rc == 0
    text = capsys.readouterr().out
    errors = dict(re.findall(r"^\s+(\w+)\s+(?:volume|surface)\s+([0-9.]+) %", text, re.M))
    assert {"p", "Cp"} <= set(errors), text
    assert all(math.isfinite(float(v)) for v in errors.values())
    results = out / "results"
    vtu = sorted(results.glob("*_volume_pred.vtu"))
    pngs = sorted(results.glob("*.png"))
    assert vtu and pngs
    pred = read(vtu[0])
    assert pred.n_points > 1000 and "p" in pred.fields
    assert all(p.stat().st_size > 10_000 for p in pngs)  # real pictures, not empty files
    # the C_L error on the unseen airfoil, and the true Cp's C_L agreeing with Kutta-Joukowski
    import json

    lift = json.loads((out / "results.json").read_text())["lift_coefficient"]
    assert "lift coefficient C_L" in text and math.isfinite(lift["mae"])
    assert lift["true"][0] == pytest.approx(lift["kutta"][0], rel=0.03, abs=0.01)


def test_demo_time_budget_cuts_the_epochs(tmp_path, capsys):
    """Without --epochs the demo trains as many epochs as fit in --minutes, re-estimated after
    every epoch, never fewer than 3; the schedule ends at the epochs actually trained."""
    import json

    out = tmp_path / "demo"
    rc = main(["demo", "--out", str(out), "--train-cases", "2", "--test-cases", "1", "--minutes", "0.01",
               "--threads", "1", "--no-progress", "--fast"])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert res["epochs"] == 3
    lines = (out / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln)["epoch"] for ln in lines] == [1, 2, 3]
    optim = json.loads((out / "run" / "config.json").read_text())["optim"]
    assert json.loads(lines[-1])["lr"] == pytest.approx(optim["lr"] * optim["min_lr_ratio"], rel=1e-6)  # cosine ended
