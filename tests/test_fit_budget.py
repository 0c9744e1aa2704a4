"""Trainer.fit(max_time=...): the epochs follow a wall-clock budget and the cosine schedule
ends with them; one progress line per epoch."""
import pytest
from _train_models import PointNetField, make_samples

from geoop.errors import ConfigError
from geoop.train import Trainer, resolve_config

pytestmark = pytest.mark.usefixtures("one_thread")


def _trainer(**kw):
    import torch

    torch.manual_seed(0)
    samples = make_samples(6) if "n" not in kw else make_samples(kw.pop("n"))
    args = dict(targets=["p"], inputs=["a"], epochs=50, batch_size=2, lr=1e-2, min_lr_ratio=0.1, progress=None)
    args.update(kw)
    return Trainer(PointNetField(in_channels=1, out_channels=1, hidden=8), samples, **args)


def test_budget_stops_early_and_the_schedule_ends_with_it(capsys):
    tr = _trainer()
    hist = tr.fit(max_time=1e-6, min_epochs=2)
    assert len(hist) == 2 and tr.epochs == 2  # the budget is spent after the first epoch
    assert tr.scheduler.total_steps == 2 * tr.steps_per_epoch
    assert hist[-1]["lr"] == pytest.approx(1e-2 * 0.1, rel=1e-6)  # cosine ended at the last step
    err = capsys.readouterr().err.strip().splitlines()
    assert [ln.split(":")[0] for ln in err] == ["epoch 1/2", "epoch 2/2"] and "train loss" in err[0]


def test_budget_never_exceeds_the_epochs_and_minutes_come_from_the_config(capsys):
    tr = _trainer(epochs=3, minutes=10.0, progress=False)
    assert tr.max_time == 600.0
    assert len(tr.fit()) == 3 and tr.scheduler.total_steps == 3 * tr.steps_per_epoch
    assert capsys.readouterr().err == ""  # progress=False: no lines
    cfg = resolve_config({"data": {"folder": "x", "targets": ["p"]}, "output": {"dir": "y"}, "optim": {"minutes": 2.5}})
    assert cfg["optim"]["minutes"] == 2.5
    with pytest.raises(ConfigError, match="minutes"):
        resolve_config({"data": {"folder": "x", "targets": ["p"]}, "output": {"dir": "y"}, "optim": {"minutes": -1}})
    with pytest.raises(ConfigError, match="minutes"):
        _trainer(minutes=-2.0)
