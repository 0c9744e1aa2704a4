"""DDP on CPU (gloo): 2 processes reach the same parameters as 1 process with the same
global batch."""
from __future__ import annotations

import os

import pytest
import torch
import torch.multiprocessing as mp
from _helpers import dist_env, free_port
from _train_models import PointNetField, make_samples

from geoop.train import Trainer
from geoop.train.distributed import DistInfo, all_reduce_sums, cleanup_distributed, init_distributed

EPOCHS, N_SAMPLES, PER_RANK_BATCH = 2, 8, 2


pytestmark = pytest.mark.usefixtures("one_thread")


def _trainer(dist_info, batch_size, out_dir=None):
    torch.manual_seed(0)
    model = PointNetField(in_channels=1, out_channels=1, hidden=16, dropout=0.0)
    return Trainer(model, make_samples(N_SAMPLES), targets=["p"], inputs=["a"], epochs=EPOCHS, batch_size=batch_size,
                   lr=1e-2, warmup=0.5, seed=3, dist_info=dist_info, progress=False, out_dir=out_dir)


def _worker(rank, world, port, out):
    torch.set_num_threads(1)
    os.environ.update(dist_env(rank, world, port))
    info = init_distributed(torch.device("cpu"))
    try:
        assert info.world_size == world and info.backend == "gloo"
        tr = _trainer(info, PER_RANK_BATCH, out_dir=os.path.join(out, "run"))
        hist = tr.fit()
        s = all_reduce_sums({"r": float(rank)}, info)
        torch.save({"state": tr.model.state_dict(), "history": hist, "sum": s["r"], "steps": tr.steps_per_epoch}, os.path.join(out, f"rank{rank}.pt"))
    finally:
        cleanup_distributed(info)


@pytest.mark.slow
def test_ddp_two_processes_match_one_process(tmp_path):
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["sum"] == r1["sum"] == 1.0
    assert r0["steps"] == N_SAMPLES // (2 * PER_RANK_BATCH)
    # only rank 0 wrote files; it wrote the checkpoint of every epoch
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == ["best.pt", "config.json", "last.pt", "loss.png", "metrics.jsonl"]
    assert len((run / "metrics.jsonl").read_text().splitlines()) == EPOCHS

    single = _trainer(DistInfo(), 2 * PER_RANK_BATCH)
    hist = single.fit()
    for k, ref in single.model.state_dict().items():
        assert torch.allclose(r0["state"][k], ref, atol=1e-5, rtol=0), k
        assert torch.allclose(r1["state"][k], ref, atol=1e-5, rtol=0), k
    # the parameters moved (the comparison is not between two untrained models)
    torch.manual_seed(0)
    init = PointNetField(in_channels=1, out_channels=1, hidden=16, dropout=0.0).state_dict()
    assert max(float((init[k] - v).abs().max()) for k, v in single.model.state_dict().items()) > 1e-3
    # all-reduced metrics equal the single-process ones
    for a, b in zip(r0["history"], hist):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-5)


def test_single_process_without_torchrun_env():
    info = init_distributed(env={})
    assert info == DistInfo() and not info.is_distributed and info.is_main
    assert all_reduce_sums({"b": 2, "a": 1}, info) == {"a": 1.0, "b": 2.0}
