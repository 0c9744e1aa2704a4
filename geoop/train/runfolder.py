"""Run folders that are owned: one writer at a time, and an earlier run is never overwritten.

A run folder (``output.dir``) holds what ``geoop train`` writes: ``last.pt``, ``best.pt``,
``diverged-*.pt``, ``metrics.jsonl``, ``config.json``, ``loss.png``. Two rules protect it:

* **One writer.** :class:`RunLock` takes an advisory lock (``fcntl.flock``) on
  ``OUT/.geoop-run.lock``, a file that records the holder's pid, host and start time. A second
  process gets a :class:`~geoop.errors.RunFolderError` naming the holder. The kernel drops the
  lock when its process dies (SIGKILL, OOM killer, power loss of a local disk), so a lock file
  left behind is *stale*: the next run takes it over with a warning naming the dead holder.
* **No silent overwrite.** :func:`claim_run_folder` refuses a folder that already holds run
  files unless the run continues (``--resume``) or ``--overwrite`` is given; then the old
  files are moved into ``OUT/backup-YYYYmmdd-HHMMSS/`` (never deleted) and the run starts
  afresh in ``OUT``.

Temporary files of writers killed mid-write (``.last.pt.PID.XXXX.tmp``) are removed when the
lock is taken (:func:`geoop._atomic.remove_stale_temps`).
"""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Optional, Union

from .._atomic import remove_stale_temps
from ..errors import RunFolderError

__all__ = ["RUN_FILES", "LOCK_NAME", "RunLock", "run_files", "claim_run_folder"]

log = logging.getLogger(__name__)

#: the files of a run that an earlier run must not lose (plus ``diverged-*.pt``)
RUN_FILES = ("last.pt", "best.pt", "metrics.jsonl", "config.json", "loss.png")
LOCK_NAME = ".geoop-run.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _describe(holder: dict) -> str:
    when = holder.get("started")
    since = f" since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(when))}" if isinstance(when, (int, float)) else ""
    return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}{since}"


class RunLock:
    """Exclusive advisory lock on a run folder, held from :meth:`acquire` to :meth:`release`
    (or as a context manager). Creates the folder."""

    def __init__(self, folder: Union[str, os.PathLike]):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.fd: Optional[int] = None
        #: the previous holder's record when a stale lock was taken over, else None
        self.took_over: Optional[dict] = None

    @staticmethod
    def _read(fd: int) -> dict:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            data = json.loads(os.read(fd, 4096).decode() or "{}")
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def acquire(self) -> "RunLock":
        import fcntl

        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunFolderError(f"run folder {self.folder} cannot be created: {e.strerror or e}") from e
        for _ in range(10):  # retry when the holder removed the file between our open and our lock
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                holder = self._read(fd)
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise RunFolderError(
                        f"run folder {self.folder} is in use by another geoop run ({_describe(holder)}); wait for it to "
                        "end, stop it, or choose another output.dir") from None
                # a file system without flock: fall back to the recorded pid (same host only)
                if holder.get("pid") and holder.get("host") == socket.gethostname() and _alive(int(holder["pid"])) \
                        and int(holder["pid"]) != os.getpid():
                    raise RunFolderError(f"run folder {self.folder} is in use by another geoop run ({_describe(holder)})") from None
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            prev = self._read(fd)
            if prev.get("pid") not in (None, os.getpid()):
                self.took_over = prev
                log.warning("run folder %s: taking over the stale lock of %s; that process ended without releasing it",
                            self.folder, _describe(prev))
            rec = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
            with contextlib.suppress(OSError):  # the record only informs; the flock is the lock (a full disk)
                os.ftruncate(fd, 0)
                os.lseek(fd, 0, os.SEEK_SET)
                os.write(fd, json.dumps(rec).encode())
            self.fd = fd
            for name in RUN_FILES:  # temp files of writers killed mid-write
                remove_stale_temps(self.folder / name)
            return self
        raise RunFolderError(f"run folder {self.folder}: the lock file {self.path} keeps changing; another process is "
                             "starting and stopping runs there")

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)  # while still holding it: a waiting opener sees a new inode and retries
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def run_files(folder: Union[str, os.PathLike]) -> list[Path]:
    """The run files (:data:`RUN_FILES` and ``diverged-*.pt``) present in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [folder / n for n in RUN_FILES if (folder / n).is_file()]
    return found + sorted(folder.glob("diverged-*.pt"))


def claim_run_folder(folder: Union[str, os.PathLike], *, resume: bool = False, overwrite: bool = False) -> Optional[Path]:
    """Check that a new run may write into ``folder`` (call while holding its :class:`RunLock`).

    ``resume``: the run continues the one in the folder, nothing to check. Otherwise a folder
    holding run files is refused (:class:`~geoop.errors.RunFolderError`) unless ``overwrite``;
    then those files are moved to ``folder/backup-YYYYmmdd-HHMMSS/`` (a new name if it exists),
    which is returned (None when nothing was moved)."""
    folder = Path(folder)
    present = run_files(folder)
    if resume or not present:
        return None
    names = ", ".join(p.name for p in present)
    if not overwrite:
        raise RunFolderError(
            f"output folder {folder} already holds a run ({names}); continue it with --resume, choose another output "
            "folder (--output), or pass --overwrite to start afresh (the old files are moved to "
            f"{folder}/backup-<time>/, never deleted)")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    backup, k = folder / f"backup-{stamp}", 1
    while backup.exists():
        backup, k = folder / f"backup-{stamp}-{k}", k + 1
    backup.mkdir()
    for p in present:
        os.replace(p, backup / p.name)
    log.warning("output folder %s held a run (%s): moved to %s", folder, names, backup)
    return backup
