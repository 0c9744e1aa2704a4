"""Writing generated CFD-like cases: geometry files and ``manifest.json`` (atomic writes).

Used by the physics generators (:mod:`geoop.data.airfoil`, :mod:`geoop.data.body3d`).
Geometries go through :func:`geoop.write`; the manifest through :mod:`geoop._atomic`.
Also the parameter-range resolver both generators use, and the process pool and
process-group runner of the OpenFOAM generators (:func:`run_cases`, :func:`run_logged`):
an interrupted set stops now, with no solver left running.
"""
from __future__ import annotations

import os
import signal
import subprocess
from typing import Callable, Mapping, Optional, Sequence

from .._atomic import atomic_write_json
from ..errors import ConfigError, GeometryWriteError

__all__ = ["write_geometry", "write_manifest", "resolve_ranges", "finished_cases", "run_cases", "run_logged", "kill_group"]


def write_geometry(geometry, path: str) -> None:
    """Write ``geometry`` to ``path`` with :func:`geoop.write` (atomic, format from the
    extension: ``.vtp`` polylines/triangles, ``.vtu`` unstructured meshes)."""
    from ..geometry.io import write

    write(geometry, path)


def write_manifest(out_dir: str, manifest: dict) -> str:
    """Write ``manifest`` as ``out_dir/manifest.json`` atomically; returns the path."""
    path = os.path.join(out_dir, "manifest.json")
    try:
        atomic_write_json(path, manifest, indent=1, sort_keys=False)
    except Exception as exc:
        raise GeometryWriteError(f"{path}: could not write manifest ({type(exc).__name__}: {exc})") from exc
    return path


def finished_cases(out_dir: str, done_entry: Callable[[str, str], Optional[dict]]) -> dict:
    """``{index: entry}`` of the finished cases of a generated folder: every marker
    ``case_XXXX.json`` in ``out_dir`` that ``done_entry(out_dir, "case_XXXX")`` accepts (its
    generator's check that the case's files exist) gives its manifest entry."""
    import re

    done = {}
    for f in os.listdir(out_dir):
        m = re.fullmatch(r"case_(\d+)\.json", f)
        if m:
            e = done_entry(out_dir, f[:-5])
            if e is not None:
                done[int(m.group(1))] = e
    return done


def resolve_ranges(ranges: Mapping, defaults: Mapping, what: str) -> dict:
    """Merge user parameter ranges into ``defaults``: each value is ``(lo, hi)`` with
    ``lo <= hi`` or a number (a fixed value); unknown keys list the valid ones."""
    unknown = set(ranges) - set(defaults)
    if unknown:
        raise ConfigError(f"{what} ranges: unknown keys {sorted(unknown)}; valid: {sorted(defaults)}")
    out = dict(defaults)
    for k, v in ranges.items():
        if isinstance(v, (int, float)):
            v = (v, v)
        v = tuple(v)
        if len(v) != 2 or not v[0] <= v[1]:
            raise ConfigError(f"{what} range {k!r}: expected (lo, hi) with lo <= hi or a number, got {v!r}")
        out[k] = (float(v[0]), float(v[1]))
    return out


def kill_group(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """End the process group of ``proc`` (started with ``start_new_session=True``): SIGTERM,
    then SIGKILL after ``grace`` seconds; returns when it is gone."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def _inherit_niceness(pid: int) -> None:
    """Give the new session the caller's nice value. On Linux with ``sched_autogroup`` a new
    session is a scheduler group of its own, and process nice values rank processes only
    within their group: without this, ``nice geoop data ...`` would run its solvers at full
    priority against everything else. Best effort (other systems: nothing to do)."""
    n = os.nice(0)
    if n == 0:
        return
    try:
        with open(f"/proc/{pid}/autogroup", "w") as fh:
            fh.write(str(n))
    except OSError:
        pass


def run_logged(cmd: Sequence[str], log: str, env: Optional[Mapping] = None) -> int:
    """Run ``cmd`` with its output to the file ``log`` in a session (process group) of its
    own, and return its exit code. If the caller is interrupted while waiting (Ctrl-C, or
    SIGTERM turned into :class:`KeyboardInterrupt`), the whole group (e.g. ``mpirun`` and its
    ranks) is ended before the exception goes on, so no solver outlives its generator."""
    with open(log, "w") as fh:
        proc = subprocess.Popen(list(cmd), stdout=fh, stderr=subprocess.STDOUT, env=None if env is None else dict(env),
                                start_new_session=True)
        _inherit_niceness(proc.pid)
        try:
            return proc.wait()
        except BaseException:
            kill_group(proc)
            raise


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _worker_init() -> None:
    """In a pool worker: SIGTERM raises KeyboardInterrupt, so the solver the worker waits on
    (:func:`run_logged`) is ended before the worker exits."""
    signal.signal(signal.SIGTERM, _interrupt)


def _call(fn: Callable, *args):
    """A task in a pool worker; interrupted (the solver already ended by
    :func:`run_logged`), the worker exits at once without a traceback (the parent reports)."""
    try:
        return fn(*args)
    except KeyboardInterrupt:
        os._exit(128 + int(signal.SIGTERM))


def run_cases(fn: Callable, tasks: Sequence[tuple], jobs: int, on_result: Callable) -> None:
    """Call ``fn(*task)`` for every task, ``jobs`` at a time in spawned processes (a fresh
    interpreter each: no forked torch / OpenMP state), and ``on_result(task, result)`` in
    this process as each one finishes (in completion order). ``jobs == 1``: in this process,
    in order. If anything interrupts the run (a task's exception, Ctrl-C, SIGTERM), the
    workers are terminated at once (each ends its solver's process group first) and the
    exception goes on: no task keeps running, and tasks not finished leave no result."""
    if int(jobs) <= 1 or len(tasks) <= 1:
        for t in tasks:
            on_result(t, fn(*t))
        return
    import multiprocessing as mp

    pool = mp.get_context("spawn").Pool(min(int(jobs), len(tasks)), initializer=_worker_init)
    try:
        pending = {i: pool.apply_async(_call, (fn, *t)) for i, t in enumerate(tasks)}
        while pending:
            done = [i for i, r in pending.items() if r.ready()]
            if not done:
                next(iter(pending.values())).wait(0.2)
                continue
            for i in done:
                on_result(tasks[i], pending.pop(i).get())
        pool.close()
    except BaseException:
        pool.terminate()  # SIGTERM to every worker: each ends its solver (run_logged) and exits
        raise
    finally:
        pool.join()
