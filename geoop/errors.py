"""Exception hierarchy of geoop.

Every error raised at a boundary of the package (files, user arrays, configs, checkpoints)
is a :class:`GeoopError` subclass whose message names the file or field involved, with the
expected and the actual value, so a user can act on it without reading a traceback.
"""
from __future__ import annotations

__all__ = [
    "GeoopError",
    "GeometryReadError",
    "GeometryWriteError",
    "UnsupportedFormatError",
    "ShapeError",
    "FieldError",
    "BackendUnavailableError",
    "NeighborhoodTooLargeError",
    "ConfigError",
    "CheckpointError",
    "DatasetError",
    "DistributedError",
    "RunFolderError",
    "TrainingDiverged",
    "MemoryBudgetError",
    "SymmetryError",
    "GeoopWarning",
    "UnsignedSDFWarning",
]


class GeoopError(Exception):
    """Base class of all errors raised by geoop."""


class GeometryReadError(GeoopError, OSError):
    """A file could not be read into a :class:`~geoop.Geometry` (missing, corrupt, empty...)."""


class GeometryWriteError(GeoopError, OSError):
    """A geometry could not be written (permissions, full disk, unsupported content)."""


class UnsupportedFormatError(GeoopError, ValueError):
    """The file extension or format is not one geoop can read or write."""


class ShapeError(GeoopError, ValueError):
    """An array has the wrong shape, dtype or contains non-finite values."""


class FieldError(ShapeError, KeyError):
    """A named field is missing or has the wrong length / width."""

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0]) if self.args else ""


class BackendUnavailableError(GeoopError, ImportError):
    """A requested optional backend (torch-cluster, open3d, pyvista, ...) is not installed."""


class NeighborhoodTooLargeError(GeoopError, MemoryError):
    """A radius search would produce more edges than fit in the allowed memory."""


class ConfigError(GeoopError, ValueError):
    """A configuration has unknown, missing or invalid keys."""


class CheckpointError(GeoopError, RuntimeError):
    """A checkpoint is unreadable or belongs to another model configuration."""


class DatasetError(GeoopError, RuntimeError):
    """A dataset folder or one of its cases is invalid."""


class DistributedError(GeoopError, RuntimeError):
    """A multi-process run is set up inconsistently (no process group, ranks disagree)."""


class RunFolderError(GeoopError, RuntimeError):
    """A run folder is in use by another process, or already holds a run that would be overwritten."""


class TrainingDiverged(GeoopError, FloatingPointError):
    """Training produced a non-finite loss, gradient norm or weights; nothing non-finite was
    saved over the last good checkpoint."""


class MemoryBudgetError(GeoopError, MemoryError):
    """An allocation (latent grid, neighbourhoods) was estimated to exceed the available memory
    and refused before it was attempted."""


class SymmetryError(ShapeError):
    """A declared or detected symmetry plane does not fit the geometry (the body does not
    touch it, lies on both sides of it, or the plane is malformed)."""


class GeoopWarning(UserWarning):
    """Base class of the warnings geoop issues (filter them with ``warnings.filterwarnings``)."""


class UnsignedSDFWarning(GeoopWarning):
    """The distance to an open surface has no inside: the SDF is unsigned (e.g. a half body
    without a declared symmetry plane)."""
