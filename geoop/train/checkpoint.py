"""Checkpoints: atomic writes, ``weights_only`` loading, RNG states, compatibility checks.

A checkpoint is a plain dict of tensors, dicts, lists, numbers and strings (no pickled code),
so it loads with ``torch.load(path, weights_only=True)``:

=================  ==========================================================
key                content
=================  ==========================================================
``format``         ``"geoop-checkpoint"``; ``version`` (int)
``epoch``          number of completed epochs
``model``          ``model.state_dict()``
``model_config``   the model's constructor arguments (plain dict) or ``{}``
``optimizer``      ``optimizer.state_dict()``
``scheduler``      ``scheduler.state_dict()``
``normalizers``    ``{field: normaliser.state_dict()}``
``config``         the resolved run configuration (plain dict)
``rng``            torch / numpy / python ``random`` states (tensors and lists)
``metrics``        last epoch's metrics
``extra``          anything else the caller stores (plain types)
``checksum``       SHA-256 of everything else (see :func:`state_digest`)
=================  ==========================================================

Format versions: 1 (checksum optional), 2 (checksum always written and required). A file
without ``checksum`` loads only when it declares version 1, with a warning; deleting the
entry from a version-2 file is a :class:`CheckpointError`.

Writes go to a temporary file in the destination folder followed by :func:`os.replace`, so a
failure (full disk, no permission, Ctrl-C) never leaves a truncated checkpoint behind and the
previous checkpoint at that path stays loadable (also when the process is killed with
SIGKILL mid-write: the partial data only ever exist under a temporary name).

A checkpoint cut short fails to unzip; one whose bytes were changed afterwards usually
still unpickles (``torch.load`` checks no checksums, so a flipped bit in a weight loads as a
slightly different weight): the ``checksum`` written with every checkpoint and verified by
:func:`load_checkpoint` turns both into a :class:`CheckpointError`.
"""
from __future__ import annotations

import hashlib
import os
import random
import warnings
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import numpy as np
import torch

from .._atomic import atomic_open, deferred_interrupts, remove_stale_temps
from ..errors import CheckpointError

__all__ = [
    "FORMAT",
    "VERSION",
    "save_checkpoint",
    "load_checkpoint",
    "rng_state",
    "set_rng_state",
    "check_state_dict",
    "load_model_state",
    "state_digest",
]

FORMAT = "geoop-checkpoint"
VERSION = 2
#: format versions written before the checksum was mandatory
UNCHECKED_VERSIONS = (1,)
PathLike = Union[str, os.PathLike]


# --------------------------------------------------------------------------- RNG
def rng_state() -> dict:
    """The torch (CPU and CUDA), numpy and python ``random`` RNG states as plain types."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": int(py_version), "state": [int(x) for x in py_state], "gauss": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping) -> None:
    """Restore the states captured by :func:`rng_state`."""
    torch.set_rng_state(torch.as_tensor(state["torch"], dtype=torch.uint8))
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], np.asarray(n["keys"].numpy(), dtype=np.uint32), int(n["pos"]), int(n["has_gauss"]), float(n["cached_gaussian"]))
    )
    p = state["python"]
    random.setstate((int(p["version"]), tuple(int(x) for x in p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


# --------------------------------------------------------------------------- save / load
def state_digest(state: Mapping[str, Any]) -> str:
    """SHA-256 of a checkpoint state without its ``checksum`` key: keys in sorted order,
    scalars by ``repr``, tensors by dtype, shape and raw bytes (on the CPU)."""
    h = hashlib.sha256()

    def walk(obj: Any) -> None:
        if isinstance(obj, torch.Tensor):
            t = obj.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(obj, Mapping):
            h.update(f"D{len(obj)}".encode())
            for k in sorted(obj, key=repr):
                h.update(repr(k).encode())
                walk(obj[k])
        elif isinstance(obj, (list, tuple)):
            h.update(f"L{len(obj)}".encode())
            for v in obj:
                walk(v)
        else:
            h.update(f"S{obj!r}".encode())

    walk({k: v for k, v in state.items() if k != "checksum"})
    return h.hexdigest()


def _check_plain(obj: Any, where: str = "checkpoint") -> None:
    """Refuse objects ``weights_only`` loading would reject, naming the offending key."""
    if isinstance(obj, torch.Tensor) or obj is None or isinstance(obj, (bool, int, float, str, torch.dtype, torch.device)):
        return
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise CheckpointError(f"{where}: key {k!r} is a {type(k).__name__}; checkpoint keys must be str or int")
            _check_plain(v, f"{where}[{k!r}]")
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
        return
    raise CheckpointError(
        f"{where} is a {type(obj).__name__}; checkpoints hold only tensors, dicts, lists, numbers "
        "and strings so that they load with torch.load(weights_only=True)"
    )


def save_checkpoint(state: Mapping[str, Any], path: PathLike) -> Path:
    """Write ``state`` to ``path`` atomically (temp file in the same folder, fsync,
    ``os.replace``). ``format``/``version`` are added.

    Raises
    ------
    CheckpointError
        when the state holds non-plain objects, or the file cannot be written (the message
        names the path and says the previous checkpoint, if any, is unchanged).
    """
    path = Path(path)
    state = {"format": FORMAT, "version": VERSION, **state}
    _check_plain(state)
    state["checksum"] = state_digest(state)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path)  # left by a writer killed mid-write
        with deferred_interrupts(), atomic_open(path, "wb") as f:  # Ctrl-C/SIGTERM after the write, not inside torch
            torch.save(state, f)
    except (OSError, RuntimeError) as e:
        prev = "the previous checkpoint there is unchanged" if path.exists() else "no checkpoint was written"
        raise CheckpointError(f"could not write checkpoint {path}: {e}; {prev}") from e
    return path


def load_checkpoint(path: PathLike, map_location: Any = "cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` with ``weights_only=True``.

    Raises
    ------
    CheckpointError
        missing / unreadable file, or a file that is not a geoop checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # pickle errors, truncated zip, unsafe globals...
        raise CheckpointError(f"checkpoint {path} cannot be read: {_load_failure(e)}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a geoop checkpoint (expected a dict with format={FORMAT!r}, got "
            f"{type(state).__name__}{' with format=' + repr(state.get('format')) if isinstance(state, dict) else ''})"
        )
    version = state.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"checkpoint {path}: format version {version!r} is not valid (expected an integer 1..{VERSION})")
    if version > VERSION:
        raise CheckpointError(f"checkpoint {path} has version {version}; this geoop reads up to {VERSION}")
    if "checksum" not in state:
        if version not in UNCHECKED_VERSIONS:
            raise CheckpointError(f"checkpoint {path} has no checksum, which every version-{version} checkpoint "
                                  "carries: the file was altered after it was written; retrain or use an intact copy")
        warnings.warn(f"checkpoint {path} is of the older format version {version}, written without a checksum: its "
                      "integrity cannot be verified", UserWarning, stacklevel=2)
    else:
        found = state_digest(state)
        if found != state["checksum"]:
            raise CheckpointError(f"checkpoint {path} fails its checksum (expected {state['checksum'][:16]}..., "
                                  f"found {found[:16]}...): its content changed after it was written (tampered "
                                  "or corrupted file)")
    return state


def _load_failure(e: Exception) -> str:
    """What ``torch.load`` reported, in words a user can act on, without torch's advice to
    load with ``weights_only=False`` (which would run code stored in the file)."""
    text = str(e)
    low = text.lower()
    if "central directory" in low or "failed reading zip" in low or "not a zip" in low or isinstance(e, EOFError):
        return "the file is truncated or not a torch checkpoint (its zip archive is incomplete)"
    if "weights_only" in low or "unsupported global" in low or "unpickl" in low:
        import re

        m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        what = f" ({m.group(1)})" if m else ""
        return (f"it holds objects other than tensors and plain data{what}, which geoop checkpoints never do: it was "
                "not written by geoop or was altered; it is not loaded, as loading it could run code stored in it")
    first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
    return f"{type(e).__name__}: {first}"


# --------------------------------------------------------------------------- compatibility
def check_state_dict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Raise :class:`CheckpointError` listing missing / unexpected keys and shape mismatches
    between ``model`` and a saved ``state`` dict."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []

        def few(xs):
            return ", ".join(xs[:8]) + (f", ... ({len(xs)} in all)" if len(xs) > 8 else "")

        if shapes:
            parts.append(f"shape mismatch: {few(shapes)}")
        if missing:
            parts.append(f"missing in checkpoint: {few(missing)}")
        if unexpected:
            parts.append(f"not in model: {few(unexpected)}")
        raise CheckpointError(
            f"{source} was saved from another model configuration; " + "; ".join(parts)
        )


def load_model_state(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """:func:`check_state_dict` then ``model.load_state_dict(state)``; a model with its own
    ``check_state(state, source)`` (an Ensemble: the member count) checks first."""
    if hasattr(model, "check_state"):
        model.check_state(state, source)
    check_state_dict(model, state, source)
    model.load_state_dict(state)


def strip_ddp_prefix(state: Mapping[str, Any], prefix: str = "module.") -> dict:
    """Remove a DistributedDataParallel ``module.`` prefix from state-dict keys."""
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return dict(state)


def optional_state(obj: Optional[Any]) -> Optional[dict]:
    return None if obj is None else obj.state_dict()
