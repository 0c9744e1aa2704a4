"""Peak memory of one function call, measured in a fresh subprocess.

Usage (from any benchmark script)::

    from _memory import peak_memory_mb, measure_memory
    mb = peak_memory_mb(my_module_level_function, arg1, arg2)          # float, MiB
    mb = peak_memory_mb("benchmarks/neighbors.py:case_a_torch")         # file:function
    mb = peak_memory_mb("geoop.neighbors.search:radius_search", S, Q, 0.05)
    info = measure_memory(fn, *args, device="cuda", warmup=True)        # dict with details

What is measured
----------------
The child process imports the target, unpickles the arguments, optionally calls the
function once (``warmup``: lazy imports and caches are then part of the baseline), and then

* CPU: resets the kernel's RSS high-water mark (``/proc/self/clear_refs``, Linux >= 4.0),
  records the current RSS as the baseline, calls the function, and reports the high-water
  mark ``VmHWM`` (the per-process part of ``ru_maxrss``, see :func:`_vm_hwm_kib`) minus the
  baseline. Where /proc is not available: ``resource.getrusage(RUSAGE_SELF).ru_maxrss``
  after the call minus the same after imports (a lower bound of the true peak increase).
* CUDA (``device="cuda"``): ``torch.cuda.max_memory_allocated() - memory_allocated()``
  around the call (the caching allocator's view; tensors only).

The function must be importable by the child: a module-level function (pickled by
reference), or a ``"module:function"`` / ``"path/to/file.py:function"`` string.
Its return value is discarded (not sent back), so returning large tensors is fine.
"""
from __future__ import annotations

import importlib
import importlib.util
import multiprocessing as mp
import os
import resource
import sys
import time
from typing import Any, Callable, Union

__all__ = ["peak_memory_mb", "measure_memory"]

Target = Union[str, Callable[..., Any]]


def _resolve(target: Target) -> Callable[..., Any]:
    if callable(target):
        return target
    mod_name, _, fn_name = str(target).rpartition(":")
    if not mod_name or not fn_name:
        raise ValueError(f"target must be 'module:function' or 'file.py:function', got {target!r}")
    if mod_name.endswith(".py"):
        path = os.path.abspath(mod_name)
        sys.path.insert(0, os.path.dirname(path))
        spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    else:
        mod = importlib.import_module(mod_name)
    return getattr(mod, fn_name)


def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


def _vm_hwm_kib():
    """The high-water mark of this process's own address space (``VmHWM``), or None.

    ``ru_maxrss`` is not used on Linux when the reset worked: it also includes
    ``signal->maxrss``, which after fork+exec (how "spawn" starts the child) holds the
    *parent's* RSS at fork time, so it reports the parent's size, not the child's peak."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _child(target, args, kwargs, device, warmup, conn):
    try:
        fn = _resolve(target)
        if warmup:
            fn(*args, **kwargs)
        import gc

        gc.collect()
        if device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            t0 = time.perf_counter()
            fn(*args, **kwargs)
            torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            peak = torch.cuda.max_memory_allocated()
            conn.send(dict(peak_mb=(peak - base) / 2**20, baseline_mb=base / 2**20, seconds=dt,
                           method="torch.cuda.max_memory_allocated"))
            return
        reset = _reset_hwm() and _vm_hwm_kib() is not None
        base_kib = _rss_kib() if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        fn(*args, **kwargs)
        dt = time.perf_counter() - t0
        peak_kib = _vm_hwm_kib() if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        conn.send(dict(peak_mb=max(0, peak_kib - base_kib) / 1024, baseline_mb=base_kib / 1024, seconds=dt,
                       method="VmHWM - VmRSS (hwm reset)" if reset else "ru_maxrss - ru_maxrss after imports"))
    except BaseException as e:  # report, never hang the parent
        conn.send(dict(error=f"{type(e).__name__}: {e}"))
    finally:
        conn.close()


def measure_memory(target: Target, *args, device: str = "cpu", warmup: bool = False, timeout: float = 600, **kwargs) -> dict:
    """Run ``target(*args, **kwargs)`` in a fresh (spawned) process and return
    ``{"peak_mb", "baseline_mb", "seconds", "method"}``: the peak memory increase during the
    call in MiB, the baseline it is measured from, the call's wall time, how it was measured.

    Raises RuntimeError when the call fails or times out in the child.
    """
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_child, args=(target, args, kwargs, device, warmup, child), daemon=True)
    p.start()
    child.close()
    if not parent.poll(timeout):
        p.kill()
        p.join()
        raise RuntimeError(f"measure_memory: {target!r} did not finish within {timeout} s")
    out = parent.recv()
    p.join()
    if "error" in out:
        raise RuntimeError(f"measure_memory: {target!r} failed in the child process: {out['error']}")
    return out


def peak_memory_mb(target: Target, *args, device: str = "cpu", warmup: bool = False, **kwargs) -> float:
    """Peak memory increase (MiB) of one call of ``target(*args, **kwargs)``, measured in a
    fresh subprocess (see the module docstring for the method)."""
    return float(measure_memory(target, *args, device=device, warmup=warmup, **kwargs)["peak_mb"])


if __name__ == "__main__":  # self-check: a 400 MiB allocation is seen as ~400 MiB
    print(round(peak_memory_mb("numpy:ones", (400 * 2**20 // 8,)), 1), "MiB for a 400 MiB array")
