"""Crash-safe runs: SIGKILL during checkpoint writes, damaged checkpoints, files that turn
unreadable while a DataLoader with workers runs."""
from __future__ import annotations

import os
import random
import select
import signal
import time
import warnings
from pathlib import Path

import pytest
import torch
from _train_models import PointNetField, make_samples

from geoop.errors import CheckpointError
from geoop.train import Trainer, load_checkpoint, save_checkpoint

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.timeout(600)]

KILLS = 50


def _trainer(out_dir, samples, hidden=384):
    """A real Trainer whose checkpoints are a few MB (weights + Adam moments), so a write
    takes long enough for kills to land inside it."""
    torch.manual_seed(0)
    model = PointNetField(in_channels=1, out_channels=1, hidden=hidden)
    tr = Trainer(model, samples, targets=["p"], inputs=["a"], epochs=10 ** 6, batch_size=2, lr=1e-3, out_dir=out_dir,
                 seed=3, progress=False, save_best=False)
    tr.plot_every_s = float("inf")  # no PNG drawing in the loop
    tr._last_plot = time.perf_counter()
    return tr


def _child(tr: Trainer, ckpt: Path, w: int) -> None:
    """Resume from ``ckpt`` when there is one, then train one epoch and checkpoint it
    (``Trainer.save``: what ``fit`` calls after every epoch), reporting each completed save
    on the pipe, until killed."""
    try:
        if ckpt.exists():
            tr.resume(ckpt)
        while True:
            tr.train_epoch(tr.epoch)
            tr.epoch += 1
            tr.save(ckpt)
            os.write(w, f"{tr.epoch}\n".encode())
    finally:
        os._exit(0)


def test_sigkill_during_checkpoint_writes_never_loses_the_previous_checkpoint(tmp_path):
    samples = make_samples(4)
    ckpt = tmp_path / "last.pt"
    tr = _trainer(tmp_path, samples)  # built once; each forked child resumes its copy
    rng = random.Random(0)
    loaded_epochs, mid_write = [], 0
    for kill in range(KILLS):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child never returns
            os.close(r)
            _child(tr, ckpt, w)
        os.close(w)
        reports, stamps, buf = [], [], b""

        def drain(timeout):
            nonlocal buf
            ready, _, _ = select.select([r], [], [], timeout)
            if ready:
                chunk = os.read(r, 4096)
                buf += chunk
                *done, buf = buf.split(b"\n")
                reports.extend(int(x) for x in done if x)
                stamps.extend(time.perf_counter() for x in done if x)
                return bool(chunk)
            return False

        # two reports: the child resumed and wrote two checkpoints, which times one
        # train + save cycle; then kill at a uniformly random moment of the next cycle
        while len(reports) < 2:
            assert drain(60), "the checkpoint-writing child stopped without reporting"
        time.sleep(rng.uniform(0, stamps[-1] - stamps[-2]))
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        while drain(0):
            pass
        os.close(r)
        # what a kill mid-write leaves: a temporary file of the killed pid, never last.pt
        # itself; the next save removes it (so at most this kill's one is there now)
        temps = [p for p in tmp_path.iterdir() if p.name.startswith(".last.pt.")]
        assert len(temps) <= 1, temps
        mid_write += any(f".last.pt.{pid}." in p.name for p in temps)
        # the checkpoint loads with weights_only=True, and is the last reported one or the next
        raw = torch.load(ckpt, map_location="cpu", weights_only=True)
        state = load_checkpoint(ckpt)  # weights_only=True plus the checksum
        assert raw["epoch"] == state["epoch"]
        assert state["epoch"] in (reports[-1], reports[-1] + 1), (reports, state["epoch"])
        assert not loaded_epochs or state["epoch"] >= loaded_epochs[-1]
        loaded_epochs.append(state["epoch"])
    # the kills hit writes in progress, not only the gaps between them
    assert mid_write >= 5, f"only {mid_write} of {KILLS} kills landed during a checkpoint write"
    print(f"{KILLS} kills, {mid_write} during a write; epochs reached {loaded_epochs[-1]}")
    # and the run resumes: one more epoch from the surviving checkpoint
    tr = _trainer(tmp_path, samples)
    tr.resume(ckpt)
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    torch.testing.assert_close(before, load_checkpoint(ckpt)["model"])
    tr.fit(until_epoch=tr.epoch + 1)
    assert load_checkpoint(ckpt)["epoch"] == loaded_epochs[-1] + 1
    assert any(not torch.equal(before[k], v) for k, v in tr.model.state_dict().items())


def test_truncated_or_tampered_checkpoint_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "c.pt"
    w = torch.arange(4096, dtype=torch.float32)
    save_checkpoint({"epoch": 3, "model": {"w": w}, "extra": {"note": "x"}}, path)
    assert load_checkpoint(path)["epoch"] == 3
    data = path.read_bytes()
    for cut in (10, len(data) // 3, len(data) // 2, len(data) - 30, len(data) - 1):
        bad = tmp_path / f"cut{cut}.pt"
        bad.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=f"cut{cut}.pt"):
            load_checkpoint(bad)
    # one bit of one weight: torch.load alone does not notice
    i = data.index(torch.tensor([1000.0, 1001.0]).numpy().tobytes())
    flipped = bytearray(data)
    flipped[i] ^= 1
    bad = tmp_path / "bit.pt"
    bad.write_bytes(bytes(flipped))
    assert torch.load(bad, weights_only=True)["model"]["w"][1000] != 1000.0
    with pytest.raises(CheckpointError, match="bit.pt fails its checksum"):
        load_checkpoint(bad)
    # a changed scalar in the pickled metadata
    bad = tmp_path / "epoch.pt"
    state = torch.load(path, weights_only=True)
    state["epoch"] = 4
    torch.save(state, bad)
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(bad)
    # deleting the checksum does not switch the check off: a current-version file needs it
    del state["checksum"]
    torch.save(state, bad)
    with pytest.raises(CheckpointError, match="has no checksum"):
        load_checkpoint(bad)
    # only a file of the older format version (written before checksums existed) loads, with a warning
    state["version"] = 1
    torch.save(state, bad)
    with pytest.warns(UserWarning, match="no checksum|integrity"):
        assert load_checkpoint(bad)["epoch"] == 4


# ---------------------------------------------------------------------------- datasets
def _cases(root: Path, n: int) -> None:
    import numpy as np

    import geoop
    from geoop import Geometry

    rng = np.random.default_rng(0)
    for i in range(n):
        pts = torch.tensor(rng.random((30, 3)))
        geoop.write(Geometry(pts, fields={"p": pts[:, :1] * (i + 1)}), root / f"case_{i:02d}.vtp")


def _warnings_to_stderr(_worker_id):
    """Workers forked from pytest inherit its warning recorder, which keeps their warnings
    in their own memory: print every warning of a worker on the shared stderr instead."""
    warnings.simplefilter("always")
    warnings.showwarning = lambda msg, cat, *a, **k: os.write(2, f"{cat.__name__}: {msg}\n".encode())


@pytest.mark.parametrize("mode", ["skip", "raise"])
def test_file_unreadable_mid_run_with_dataloader_workers(tmp_path, capfd, mode):
    """A case file is corrupted between two epochs of a DataLoader(num_workers=2) run.
    ``on_error="skip"``: every later item of that case is the next readable case, and the
    file is reported once in all (not once per worker or per epoch); ``"raise"``: a
    DatasetError naming the file."""
    from torch.utils.data import DataLoader

    from geoop.batch import collate
    from geoop.data import MeshFolderDataset
    from geoop.errors import DatasetError

    root = tmp_path / "cases"
    root.mkdir()
    _cases(root, 6)
    ds = MeshFolderDataset(root, targets=["p"], split="all", on_error=mode, memory_cache_mb=0)
    assert len(ds) == 6 and ds.skipped == []
    loader = DataLoader(ds, batch_size=1, num_workers=2, collate_fn=collate, persistent_workers=False,
                        worker_init_fn=_warnings_to_stderr)
    seen = [b.meta[0]["case"] for b in loader]
    assert sorted(seen) == sorted(ds.cases)
    bad = root / "case_03.vtp"
    bad.write_bytes(bad.read_bytes()[:200])  # cut short while the run goes on
    capfd.readouterr()
    if mode == "raise":
        with pytest.raises(DatasetError, match="case_03.vtp"):
            list(loader)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # the once-only report must come from the markers, not from warnings' registry
        epochs = [[b.meta[0]["case"] for b in loader] for _ in range(3)]
    err = capfd.readouterr().err
    for cases in epochs:
        assert len(cases) == 6 and "case_03" not in cases
        assert cases.count("case_04") == 2  # the next readable case stands in
    assert err.count("skipping case 'case_03'") == 1, err
    assert "case_03.vtp" in err
    runs = ds.skipped_during_run()
    assert [r[:2] for r in runs] == [("case_03", str(bad))] and "case_03.vtp" in runs[0][2]
    ds[3]  # the main process knows it too, without reading the file again
    assert err.count("skipping") == 1


def test_stale_temporary_files_of_dead_writers_are_removed(tmp_path):
    import subprocess
    import sys

    from geoop._atomic import remove_stale_temps

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    target = tmp_path / "last.pt"
    names = {"dead": f".last.pt.{dead.pid}.ab12.tmp", "parent": f".last.pt.{os.getppid()}.cd34.tmp",
             "self": f".last.pt.{os.getpid()}.ef56.tmp", "other": f".best.pt.{dead.pid}.gh78.tmp"}
    for n in names.values():
        (tmp_path / n).write_bytes(b"partial")
    assert remove_stale_temps(target) == [tmp_path / names["dead"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(v for k, v in names.items() if k != "dead")
