"""Atomic file writes: one implementation for every file geoop writes.

A file is written to a temporary name in the destination folder, flushed and fsync'ed,
given the permissions a normal ``open(path, "w")`` would give (``0o666 & ~umask``; plain
``tempfile.mkstemp`` files are ``0o600``), then moved into place with :func:`os.replace`.
On any failure (``KeyboardInterrupt`` included) the temporary file is removed and the
previous file at ``path``, if any, is untouched; an ``OSError`` that names no file (a full
disk reported by ``write``/``fsync``) is re-raised naming ``path``.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator, Union

__all__ = ["atomic_path", "atomic_open", "atomic_write_text", "atomic_write_json", "file_mode", "remove_stale_temps",
           "deferred_interrupts"]

PathLike = Union[str, os.PathLike]


def file_mode() -> int:
    """``0o666 & ~umask``, read without changing the process umask (Linux /proc)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    return 0o644


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


@contextlib.contextmanager
def atomic_path(path: PathLike, suffix: str = "") -> Iterator[str]:
    """Yield a temporary path next to ``path``; a writer (any library that takes a file
    name) writes there; on normal exit the file replaces ``path``.

    ``suffix`` keeps an extension some writers need (``.vtu``, ``.png``)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except OSError as e:
        _remove(tmp)
        if e.filename is None and e.errno is not None:  # a failed write() names no file: name the destination
            raise OSError(e.errno, e.strerror or os.strerror(e.errno), str(path)) from e
        raise
    except BaseException:
        _remove(tmp)
        raise
    _fsync_dir(path.parent)


def remove_stale_temps(path: PathLike) -> list[Path]:
    """Remove the temporary files of writes to ``path`` whose writing process is gone (a
    process killed mid-write, e.g. by SIGKILL or the OOM killer, leaves its temporary file
    ``.NAME.PID.XXXX.tmp*`` behind). Files of live processes are kept. Returns the removed
    paths."""
    path = Path(path)
    removed = []
    try:
        names = os.listdir(path.parent)
    except OSError:
        return removed
    head = f".{path.name}."
    for name in names:
        if not name.startswith(head) or ".tmp" not in name:
            continue
        pid = name[len(head):].split(".", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # alive (or not ours to signal): maybe writing right now
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        with contextlib.suppress(OSError):
            os.unlink(path.parent / name)
            removed.append(path.parent / name)
    return removed


@contextlib.contextmanager
def deferred_interrupts(signals=(signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """Hold SIGINT/SIGTERM until the block ends, then act on the first one received as its
    previous handler would (``KeyboardInterrupt`` for Ctrl-C). For writes that call back into
    Python from native code (``torch.save`` into a file object), where an exception raised
    mid-write is turned into an unrelated ``RuntimeError``: the write completes (or fails on
    its own), then the interrupt is seen. Outside the main thread nothing is changed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list = []
    old = {}
    try:
        for s in signals:
            old[s] = signal.signal(s, lambda signum, frame: received.append((signum, frame)))
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if received:
            signum, frame = received[0]
            h = old.get(signum)
            if callable(h):
                h(signum, frame)
            elif h == signal.SIG_DFL:
                os.kill(os.getpid(), signum)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (a crash of the machine right after ``os.replace``
    could otherwise lose it); best effort where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "w", **kw) -> Iterator[Any]:
    """``open`` that writes atomically (modes ``"w"``/``"wb"``); fsync before the rename."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open: mode must be 'w' or 'wb', got {mode!r}")
    with atomic_path(path) as tmp:
        with open(tmp, mode, **kw) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path: PathLike, text: str) -> Path:
    with atomic_open(path, "w") as f:
        f.write(text)
    return Path(path)


def atomic_write_json(path: PathLike, obj: Any, **kw) -> Path:
    """``json.dump(obj, indent=2)`` atomically (``kw`` go to ``json.dump``)."""
    kw.setdefault("indent", 2)
    with atomic_open(path, "w") as f:
        json.dump(obj, f, **kw)
    return Path(path)
