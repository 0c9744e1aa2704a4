"""Trainer settings as typed groups (geoop.train.specs): the same trainer as the flat
keywords, round trips through TOML and YAML, clear errors."""
import pytest
import torch
from _train_models import PointNetField, make_samples

from geoop.errors import ConfigError
from geoop.train import Trainer
from geoop.train.specs import CheckpointSpec, OptimSpec, PrecisionSpec, ScheduleSpec

pytestmark = pytest.mark.usefixtures("one_thread")


def _model():
    torch.manual_seed(0)
    return PointNetField(in_channels=1, out_channels=1, hidden=8)


def test_groups_build_the_same_trainer_as_the_flat_keywords(tmp_path):
    import tomllib

    import tomli_w
    import yaml

    samples = make_samples(4)
    flat = Trainer(_model(), samples, targets=["p"], inputs=["a"], lr=3e-3, weight_decay=0.0, batch_size=2, epochs=3,
                   warmup=1.0, min_lr_ratio=0.1, minutes=2.0, out_dir=tmp_path / "a", save_best=False, amp="bf16", progress=False)
    typed = Trainer(_model(), samples, targets=["p"], inputs=["a"], progress=False,
                    optim=OptimSpec(lr=3e-3, weight_decay=0.0, batch_size=2),
                    schedule=ScheduleSpec(epochs=3, warmup=1.0, min_lr_ratio=0.1, minutes=2.0),
                    checkpointing={"out_dir": str(tmp_path / "a"), "save_best": False}, precision=PrecisionSpec(amp="bf16"))
    assert flat.specs() == typed.specs()
    for dump, load in ((tomli_w.dumps, tomllib.loads), (yaml.safe_dump, yaml.safe_load)):
        back = load(dump(typed.specs()))
        assert back == typed.specs()
        again = Trainer(_model(), samples, targets=["p"], inputs=["a"], progress=False, **back)
        assert again.specs() == typed.specs()
    assert typed.max_time == 120.0 and typed.amp_dtype == torch.bfloat16 and typed.scheduler.total_steps == 3 * typed.steps_per_epoch
    torch.manual_seed(1)
    h1 = flat.fit()
    torch.manual_seed(1)
    h2 = typed.fit()
    assert [h["train_loss"] for h in h1] == [h["train_loss"] for h in h2]


def test_group_errors_name_the_keys():
    samples = make_samples(2)
    with pytest.raises(ConfigError, match="given both"):
        Trainer(_model(), samples, targets=["p"], inputs=["a"], lr=0.1, optim=OptimSpec(lr=0.2))
    with pytest.raises(ConfigError, match="learning_rate.*valid keys"):
        Trainer(_model(), samples, targets=["p"], inputs=["a"], optim={"learning_rate": 0.1})
    with pytest.raises(ConfigError, match="amp"):
        PrecisionSpec(amp="fp8")
    with pytest.raises(ConfigError, match="epochs"):
        ScheduleSpec(epochs=0)
    assert CheckpointSpec.from_dict(CheckpointSpec(out_dir="x").to_dict()) == CheckpointSpec(out_dir="x")
