"""The one atomic-write helper: permissions, replacement, and nothing half-written."""
import os
import stat

import pytest

from geoop._atomic import atomic_open, atomic_path, atomic_write_json, file_mode


def test_written_file_has_umask_permissions_and_replaces(tmp_path):
    p = tmp_path / "a.json"
    atomic_write_json(p, {"x": 1})
    atomic_write_json(p, {"x": 2})
    assert p.read_text().replace(" ", "").replace("\n", "") == '{"x":2}'
    assert stat.S_IMODE(os.stat(p).st_mode) == file_mode()
    assert file_mode() & 0o044  # readable by others under the usual umask, unlike mkstemp's 0600
    assert os.listdir(tmp_path) == ["a.json"]


def test_failure_keeps_previous_file_and_leaves_no_temp(tmp_path):
    p = tmp_path / "ckpt.bin"
    p.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_open(p, "wb") as f:
            f.write(b"partial")
            raise RuntimeError("disk full")
    assert p.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["ckpt.bin"]
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(p, suffix=".png") as tmp:
            open(tmp, "wb").write(b"x")
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == ["ckpt.bin"]


def test_deferred_interrupts_hold_ctrl_c_until_the_block_ends():
    import signal
    import threading

    import pytest

    from geoop._atomic import deferred_interrupts

    done = []
    # Python's own Ctrl-C handler, whatever the runner left: a job started in the background by
    # a non-interactive shell inherits SIGINT ignored, and Python then keeps it ignored
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            with deferred_interrupts():
                # to this thread: os.kill lets the kernel pick any thread of the process
                signal.pthread_kill(threading.get_ident(), signal.SIGINT)
                done.append("write finished")  # not interrupted mid-block
        assert done == ["write finished"] and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, before)
