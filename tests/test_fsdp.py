"""Fully sharded data parallel (geoop.train.fsdp, PyTorch FSDP2 on gloo): 2 ranks train a GINO
to the weights of 1 process on the same global batches; checkpoints are the plain
single-file format and move between 2 sharded ranks and 1 unsharded process both ways;
FSDP composes with domain parallelism (2 x 2 mesh); bad settings are clear errors."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp
from _helpers import dist_env, free_port, tiny_gino_config, write_annulus_cases
from _train_models import make_samples

from geoop.errors import ConfigError, DistributedError
from geoop.models import GINO
from geoop.train import Trainer
from geoop.train.checkpoint import load_checkpoint
from geoop.train.distributed import DistInfo, cleanup_distributed, init_distributed

pytestmark = pytest.mark.usefixtures("one_thread")

EPOCHS, N_SAMPLES, PER_RANK_BATCH = 3, 8, 2


def _model() -> GINO:
    """A tiny 2-D GINO whose encoder and decoder take the chunked recomputation path (many
    chunks) and whose latent blocks are checkpointed: FSDP must gather parameters for them."""
    torch.manual_seed(0)
    return GINO(in_channels=1, out_channels=1, coord_dim=2, latent=dict(shape=[8, 8]),
                encoder=dict(radius=0.25), blocks=dict(width=8, modes=3, layers=2), decoder=dict(radius=0.25),
                memory=dict(chunk_edges=64, checkpoint_edges=0, checkpoint_latent=True))


def _trainer(info, batch_size, fsdp, out_dir=None, domain=1):
    return Trainer(_model(), make_samples(N_SAMPLES), val_data=make_samples(5, seed=5), targets=["p"], inputs=["a"],
                   epochs=EPOCHS, batch_size=batch_size, lr=1e-2, warmup=0.5, seed=3, dist_info=info, progress=False,
                   out_dir=out_dir, fsdp=fsdp, domain=domain)


def _init(rank, world, port):
    torch.set_num_threads(1)
    os.environ.update(dist_env(rank, world, port))
    return init_distributed(torch.device("cpu"), timeout_s=180)  # a mismatch fails, never hangs the suite


def _worker(rank, world, port, out):
    info = _init(rank, world, port)
    try:
        from torch.distributed.tensor import DTensor

        from geoop.train.fsdp import local_bytes

        run = os.path.join(out, "run")
        tr = _trainer(info, PER_RANK_BATCH, True, out_dir=run)
        assert tr.fsdp and all(isinstance(p, DTensor) for p in tr.model.parameters())
        tr.fit(until_epoch=2)
        if rank == 0:  # the epoch-2 checkpoint, before epoch 3 replaces last.pt
            shutil.copy(os.path.join(run, "last.pt"), os.path.join(out, "fsdp_ep2.pt"))
        hist = tr.fit()
        grads = _full_grads(tr.model)
        mem = local_bytes(tr.model, tr.optimizer)
        state = tr.state_dict()  # a collective: the full state on rank 0
        # a plain one-process checkpoint of epoch 2 continued by 2 sharded ranks
        tr2 = _trainer(info, PER_RANK_BATCH, True)
        hist2 = tr2.fit(resume=os.path.join(out, "plain_ep2.pt"))
        state2 = tr2.state_dict()
        if rank == 0:
            torch.save({"model": state["model"], "history": hist, "grads": grads, "mem": mem, "model2": state2["model"], "history2": hist2},
                       os.path.join(out, "rank0.pt"))
        else:
            torch.save({"mem": mem, "empty": state["model"] == {} and state["optimizer"] == {}}, os.path.join(out, "rank1.pt"))
    finally:
        cleanup_distributed(info)


def _full_grads(model):
    """The whole gradient of every parameter, gathered from the shards (a collective)."""
    return {n: p.grad.full_tensor() for n, p in model.named_parameters()}


def _close(a, b, atol=1e-5):
    assert sorted(a) == sorted(b)
    for k, v in b.items():
        assert torch.allclose(a[k], v, atol=atol, rtol=0), (k, float((a[k] - v).abs().max()))


@pytest.mark.slow
def test_fsdp_two_ranks_match_one_process_and_checkpoints_move(tmp_path):
    # one process, unsharded, on the same global batches: epoch 2 checkpoint, then epoch 3
    single = _trainer(DistInfo(), 2 * PER_RANK_BATCH, False, out_dir=tmp_path / "single")
    single.fit(until_epoch=2)
    shutil.copy(tmp_path / "single" / "last.pt", tmp_path / "plain_ep2.pt")
    ref_hist = single.fit()
    ref = single.model.state_dict()

    mp.spawn(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    # same weights and losses as one process (the model moved: not two untrained models)
    _close(r0["model"], ref)
    _close(r0["grads"], {n: p.grad for n, p in single.model.named_parameters()})
    init = _model().state_dict()
    assert max(float((init[k] - v).abs().max()) for k, v in ref.items()) > 1e-3
    for a, b in zip(r0["history"], ref_hist):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-5)
        assert a["val/rel_l2"] == pytest.approx(b["val/rel_l2"], abs=1e-5)
    # each rank holds about half of parameters + gradients + Adam moments; only rank 0 gathers
    full = sum(v.numel() * v.element_size() for v in ref.values())
    for r in (r0, r1):
        assert r["mem"]["params"] < 0.6 * full and r["mem"]["optimizer"] < 1.2 * full
    assert r0["mem"]["params"] + r1["mem"]["params"] == full
    assert r1["empty"]

    # the 2-rank checkpoint is a plain geoop checkpoint (integer optimizer ids, checksum) ...
    ck = load_checkpoint(tmp_path / "fsdp_ep2.pt")
    plain = load_checkpoint(tmp_path / "plain_ep2.pt")
    assert ck["epoch"] == 2 and sorted(ck["optimizer"]["state"]) == sorted(plain["optimizer"]["state"])
    assert all(isinstance(k, int) for k in ck["optimizer"]["state"])
    # ... that one unsharded process resumes to the same epoch-3 loss and weights
    one = _trainer(DistInfo(), 2 * PER_RANK_BATCH, False)
    hist = one.fit(resume=tmp_path / "fsdp_ep2.pt")
    assert hist[-1]["train_loss"] == pytest.approx(ref_hist[-1]["train_loss"], abs=1e-5)
    _close(one.model.state_dict(), ref)
    # and a one-process checkpoint continued on 2 sharded ranks
    assert r0["history2"][-1]["train_loss"] == pytest.approx(ref_hist[-1]["train_loss"], abs=1e-5)
    _close(r0["model2"], ref)


def _four_rank_worker(rank, world, port, out):
    info = _init(rank, world, port)
    try:
        tr = _trainer(info, PER_RANK_BATCH, True, domain=2)
        assert tr.fsdp and tr.grid.data == 2 and tr.domain_parallel is not None
        hist = tr.fit(until_epoch=2)
        grads = _full_grads(tr.model)
        state = tr.state_dict()
        # the one-process epoch-2 checkpoint continued on 4 sharded ranks (batch 1 each:
        # the same global batches; a 1-element bias has empty shards on some ranks)
        tr4 = _trainer(info, 1, True)
        hist4 = tr4.fit(resume=os.path.join(out, "plain_ep2.pt"))
        state4 = tr4.state_dict()
        if rank == 0:
            torch.save({"model": state["model"], "history": hist, "grads": grads, "model4": state4["model"], "history4": hist4},
                       os.path.join(out, "four.pt"))
    finally:
        cleanup_distributed(info)


@pytest.mark.slow
def test_fsdp_composes_with_domain_parallelism_and_resumes_on_four_ranks(tmp_path):
    """4 ranks: 2 data ranks (sharded) x 2 domain ranks (replicated, each a spatial half of
    every batch) train like 1 process on the whole batches; then 4 sharded data ranks
    continue a one-process checkpoint like that process."""
    single = _trainer(DistInfo(), 2 * PER_RANK_BATCH, False, out_dir=tmp_path / "single")
    hist = single.fit(until_epoch=2)
    shutil.copy(tmp_path / "single" / "last.pt", tmp_path / "plain_ep2.pt")
    ep2 = {k: v.clone() for k, v in single.model.state_dict().items()}
    grads = {n: p.grad.clone() for n, p in single.model.named_parameters()}
    ref_hist = single.fit()

    mp.spawn(_four_rank_worker, args=(4, free_port(), str(tmp_path)), nprocs=4, join=True)
    r0 = torch.load(tmp_path / "four.pt", weights_only=True)
    _close(r0["model"], ep2, atol=1e-4)
    # the last step's (clipped) gradient itself, not only Adam's scale-free update
    _close(r0["grads"], grads, atol=1e-5)
    for a, b in zip(r0["history"], hist):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
    assert r0["history4"][-1]["train_loss"] == pytest.approx(ref_hist[-1]["train_loss"], abs=1e-5)
    _close(r0["model4"], single.model.state_dict())


def test_fsdp_bad_settings_are_clear_errors():
    from geoop.train.config import resolve_config

    samples = make_samples(2)
    # a world size that parallel.domain does not divide: named, before any collective
    with pytest.raises(ConfigError, match="parallel.domain = 2 does not divide the world size 3"):
        Trainer(_model(), samples, targets=["p"], inputs=["a"], dist_info=DistInfo(0, 3), domain=2, fsdp=True)
    with pytest.raises(DistributedError, match="fsdp over 2 data ranks needs an initialised process group"):
        Trainer(_model(), samples, targets=["p"], inputs=["a"], dist_info=DistInfo(0, 2), fsdp=True)
    with pytest.raises(ConfigError, match="fsdp must be true or false"):
        Trainer(_model(), samples, targets=["p"], inputs=["a"], fsdp="yes")
    with pytest.raises(ConfigError, match="parallel.fsdp must be true or false"):
        resolve_config({"data": {"folder": ".", "targets": ["p"]}, "output": {"dir": "x"}, "parallel": {"fsdp": 1}})
    from geoop.train.fsdp import fsdp_mesh

    with pytest.raises(ConfigError, match="parallel.fsdp = true with parallel.domain = 3"):
        fsdp_mesh(4, 3)
    # one process: nothing to shard, trains unsharded with the same results as fsdp=False
    a = Trainer(_model(), samples, targets=["p"], inputs=["a"], epochs=1, fsdp=True, progress=False)
    b = Trainer(_model(), samples, targets=["p"], inputs=["a"], epochs=1, progress=False)
    assert not a.fsdp
    a.fit()
    b.fit()
    _close(a.model.state_dict(), b.model.state_dict(), atol=0)


@pytest.mark.slow
def test_geoop_train_fsdp_under_torchrun(tmp_path):
    """``[parallel] fsdp = true`` under torchrun: 2 sharded ranks train like one process;
    rank 0 writes the usual files and a checkpoint that ``geoop train --resume`` continues
    on one process."""

    from geoop.cli.main import main

    root = write_annulus_cases(tmp_path / "cases", 5)

    def config(run, batch, fsdp, epochs=2):
        return tiny_gino_config(tmp_path / f"cfg_{run.name}.toml", root, run, optim={"epochs": epochs, "batch_size": batch},
                                parallel={"fsdp": fsdp})

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([os.getcwd(), *sys.path])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "geoop", "train", str(config(tmp_path / "run2", 1, True)), "--no-progress"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count('"checkpoint"') == 1  # rank 0 reports
    run2 = tmp_path / "run2"
    assert sorted(p.name for p in run2.iterdir()) == ["best.pt", "config.json", "last.pt", "loss.png", "metrics.jsonl"]
    assert main(["train", str(config(tmp_path / "run1", 2, False)), "--no-progress"]) == 0
    a = load_checkpoint(run2 / "last.pt")
    b = load_checkpoint(tmp_path / "run1" / "last.pt")
    assert a["epoch"] == b["epoch"] == 2 and a["config"]["parallel"]["fsdp"] is True
    for k in ("train_loss", "val/rel_l2"):
        assert abs(a["metrics"][k] - b["metrics"][k]) <= 1e-4 * abs(b["metrics"][k]), k
    _close(a["model"], b["model"], atol=1e-5)
    # the sharded run's checkpoint continues on one process (same config file, fsdp on one rank)
    assert main(["train", str(config(run2, 2, True, epochs=3)), "--resume", "--no-progress"]) == 0
    assert load_checkpoint(run2 / "last.pt")["epoch"] == 3
