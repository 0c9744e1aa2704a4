"""Detection of optional dependencies, done once, in one place.

Flags (``WITH_TORCH_CLUSTER``, ``WITH_OPEN3D``, ``WITH_PYVISTA``, ...) tell whether the
package can be imported. Detection uses :func:`importlib.util.find_spec` plus a guarded
import for compiled extensions (an installed but broken extension counts as absent).

Set the environment variable ``GEOOP_DISABLE_BACKENDS`` to a comma-separated list
(``torch_cluster,open3d``) to pretend those packages are missing; the test suite uses it to
exercise the fallback paths.
"""
from __future__ import annotations

import importlib
import os

from .errors import BackendUnavailableError

__all__ = [
    "WITH_TORCH_CLUSTER",
    "WITH_OPEN3D",
    "WITH_PYVISTA",
    "WITH_TORCH_HARMONICS",
    "WITH_TENSORLY",
    "require",
    "available",
]

_DISABLED = {s.strip() for s in os.environ.get("GEOOP_DISABLE_BACKENDS", "").split(",") if s.strip()}

# package import name -> pip extra that provides it
_EXTRAS = {
    "torch_cluster": "fast",
    "open3d": "fast",
    "pyvista": "viz",
    "plotly": "viz",
    "tensorboard": "tensorboard",
    "zarr": "store",
    "torch_harmonics": "core (torch-harmonics)",
    "tensorly": "test (tensorly)",
    "torch_geometric": "core (torch-geometric)",
}


def _probe(name: str) -> bool:
    if name in _DISABLED:
        return False
    try:
        importlib.import_module(name)
    except Exception:  # ImportError, or a compiled extension failing to load
        return False
    return True


_CACHE: dict[str, bool] = {}


def available(name: str) -> bool:
    """Whether the optional package ``name`` (import name) can be used. Cached."""
    if name not in _CACHE:
        _CACHE[name] = _probe(name)
    return _CACHE[name]


def require(name: str, what: str = ""):
    """Import and return the optional module ``name`` or raise a helpful error.

    Raises
    ------
    BackendUnavailableError
        naming the pip extra to install.
    """
    if not available(name):
        extra = _EXTRAS.get(name, name)
        purpose = f" for {what}" if what else ""
        raise BackendUnavailableError(
            f"{name} is required{purpose} but is not installed (or is disabled by "
            f"GEOOP_DISABLE_BACKENDS); install it with `pip install geoop[{extra}]` "
            f"or `pip install {name.replace('_', '-')}`"
        )
    return importlib.import_module(name)


_FLAGS = {
    "WITH_TORCH_CLUSTER": "torch_cluster",
    "WITH_OPEN3D": "open3d",
    "WITH_PYVISTA": "pyvista",
    "WITH_TORCH_HARMONICS": "torch_harmonics",
    "WITH_TENSORLY": "tensorly",
}


def __getattr__(attr: str) -> bool:
    """``WITH_*`` flags are computed lazily (importing open3d is slow), then cached."""
    if attr in _FLAGS:
        return available(_FLAGS[attr])
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")
