"""Fault injection: 100 random kills (SIGKILL, SIGTERM, SIGINT) at random times during
``geoop train``, each followed by ``--resume`` (or ``--overwrite`` when no epoch completed),
in chains until the run completes. Every completed chain ends with the weights of an
uninterrupted run of the same seed (1e-6), ``metrics.jsonl`` holding each epoch exactly once,
no temporary file and no lock left.

Each ``geoop train`` is a forked child of this process calling the command's entry point
(:func:`geoop.cli.main.main`): the same code as the ``geoop`` executable without re-importing
torch for each of the hundred runs. The kill times come from a seeded RNG (reproducible).
"""
from __future__ import annotations

import json
import os
import random
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import geoop
from geoop.geometry.geometry import Geometry
from geoop.train import load_checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread"), pytest.mark.timeout(900)]

KILLS = int(os.environ.get("GEOOP_FAULT_KILLS", "100"))  # fewer for a quick look
EPOCHS = 4
SIGNALS = (signal.SIGKILL, signal.SIGTERM, signal.SIGINT)


def _cases(root: Path) -> None:
    rng = np.random.default_rng(0)
    for i in range(3):
        n = 40 + 5 * i
        t = np.linspace(0, 2 * np.pi, n, endpoint=False)
        pts = np.stack([np.cos(t), np.sin(t) * (0.5 + 0.2 * i), 0 * t], 1) + np.concatenate([rng.normal(0, 0.01, (n, 2)), np.zeros((n, 1))], 1)
        a = float(rng.uniform(0.5, 1.5))
        geoop.write(Geometry(pts, fields={"a": np.full(n, a), "p": a * pts[:, 0] + pts[:, 1] ** 2}), root / f"c{i}.vtp")
    (root / "split.json").write_text(json.dumps({"train": ["c0", "c1"], "test": ["c2"]}))


def _config(tmp: Path, data: Path, out: Path) -> Path:
    path = tmp / f"{out.name}.toml"
    path.write_text(f"""seed = 5
device = "cpu"
[data]
folder = "{data}"
inputs = ["a"]
targets = ["p"]
drop_flat_z = true
geometry_normalization = "case"
[model.latent]
shape = [6, 6]
[model.encoder]
radius = 0.3
mlp = [8]
[model.decoder]
radius = 0.3
mlp = [8]
[model.blocks]
width = 4
modes = 2
layers = 1
[optim]
epochs = {EPOCHS}
batch_size = 1
lr = 0.003
warmup = 0.5
[output]
dir = "{out}"
""")
    return path


def _spawn(argv: list, log: Path) -> int:
    """Fork a child running ``geoop <argv>``, its stdout/stderr into ``log``. The child starts
    with SIGINT and SIGTERM at their default action (killed), as a freshly started ``geoop``
    process does until the command installs its handlers."""
    sigs = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    pid = os.fork()
    if pid != 0:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, sigs)
    if pid == 0:  # pragma: no cover - the child never returns
        rc = 1
        try:
            for s in sigs:
                signal.signal(s, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, sigs)
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            # new streams on fds 1/2: the inherited sys.stdout/sys.stderr may be the test runner's
            # capture objects, which do not write to the log
            sys.stdout = open(1, "w", buffering=1, closefd=False)
            sys.stderr = open(2, "w", buffering=1, closefd=False)
            from geoop.cli.main import main

            rc = main(argv)
        except BaseException:
            rc = 3
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:
                    pass
            os._exit(rc)
    return pid


def _wait(pid: int, timeout: float) -> int:
    """The child's wait status; SIGKILL after ``timeout`` seconds (a hang is a failure)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"child {pid} did not end within {timeout} s")


def _argv(cfg: Path, out: Path) -> list:
    mode = ["--resume"] if (out / "last.pt").exists() else (["--overwrite"] if out.exists() else [])
    return ["train", str(cfg), "--no-progress", *mode]


def _check_complete(out: Path, reference: dict) -> None:
    state = load_checkpoint(out / "last.pt")
    assert state["epoch"] == EPOCHS
    for k, v in reference.items():
        torch.testing.assert_close(state["model"][k], v, rtol=0, atol=1e-6, msg=f"{out}: weight {k} differs")
    epochs = [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, EPOCHS + 1)), (out, epochs)
    left = [p for p in out.rglob("*") if ".tmp" in p.name or p.name == ".geoop-run.lock"]
    assert not left, left


def test_random_kills_and_resume_chains_end_with_the_uninterrupted_weights(tmp_path):
    data = tmp_path / "cases"
    data.mkdir()
    _cases(data)
    from geoop.cli.main import main

    # the uninterrupted run of the same seed, in this process: it also imports everything a
    # run needs (matplotlib, readers...), so that the forked children start warm
    ref_out = tmp_path / "reference"
    assert main(["train", str(_config(tmp_path, data, ref_out)), "--no-progress"]) == 0
    t0 = time.monotonic()
    assert main(["train", str(_config(tmp_path, data, ref_out)), "--no-progress", "--overwrite"]) == 0
    full = time.monotonic() - t0
    reference = load_checkpoint(ref_out / "last.pt")["model"]

    rng = random.Random(int(os.environ.get("GEOOP_FAULT_SEED", "12345")))
    chains, kills, handled = 0, 0, {signal.SIGTERM: 0, signal.SIGINT: 0}
    out = tmp_path / f"chain{chains}"
    cfg = _config(tmp_path, data, out)
    while kills < KILLS:
        sig = rng.choice(SIGNALS)
        delay = rng.uniform(0.0, 0.7 * full)
        log = tmp_path / "child.log"
        pid = _spawn(_argv(cfg, out), log)
        time.sleep(delay)
        os.kill(pid, sig)
        status = _wait(pid, 120)
        kills += 1
        text = log.read_text()
        # ended by the signal sent (SIGKILL; SIGTERM before the command installed its handler), or
        # exited: a crash (SIGSEGV, SIGABRT...) is a failure
        assert not os.WIFSIGNALED(status) or os.WTERMSIG(status) == sig, (sig, os.WTERMSIG(status), text)
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) not in (0,):
            code = os.WEXITSTATUS(status)
            # a handled SIGTERM / SIGINT: the one-line message of the command, nothing else
            assert code == 128 + sig, (sig, code, text)
            assert ("terminated (SIGTERM)" if sig == signal.SIGTERM else "interrupted") in text, text
            assert "Traceback" not in text, text
            handled[sig] += 1
        if (out / "last.pt").exists() and load_checkpoint(out / "last.pt")["epoch"] == EPOCHS:
            # the chain completed (the kill came late): one more resume is a no-op that cleans up
            status = _wait(_spawn(_argv(cfg, out), log), 300)
            assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, log.read_text()
            _check_complete(out, reference)
            chains += 1
            out = tmp_path / f"chain{chains}"
            cfg = _config(tmp_path, data, out)
    # finish the last chain without interruption
    status = _wait(_spawn(_argv(cfg, out), tmp_path / "last.log"), 300)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, (tmp_path / "last.log").read_text()
    _check_complete(out, reference)
    chains += 1
    print(f"{kills} kills, {chains} completed chains, handled SIGTERM {handled[signal.SIGTERM]} / SIGINT "
          f"{handled[signal.SIGINT]}, uninterrupted run {full:.2f} s")
    assert chains >= 3 and handled[signal.SIGTERM] > 0 and handled[signal.SIGINT] > 0
