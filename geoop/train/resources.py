"""Memory a GINO run will need, estimated before anything is allocated, and refused above
what the machine has.

For a latent grid of ``G`` nodes, FNO/SFNO ``width`` w, ``L`` blocks, batch ``B`` and 4-byte
floats, the estimate is::

    grid        = G (d + 1) 4                            node coordinates and weights
    activations = B G w 4 (10 L + 6)   training          (about ten (B, w, *grid) tensors
                = B G w 4 * 8          inference          kept per block for backward)
    neighbours  = 16 S (N k_in + Q k_out)                 int64 indices and offsets

with ``k = min(G, |ball(r)| / |cell|)`` latent nodes in an encoder / decoder ball (``|ball|``
the volume of a d-ball of radius r, ``|cell|`` the volume of one grid cell; on the sphere the
area of a cap over 4 pi / G), N input points and Q queries per sample and S samples whose
neighbourhoods are kept (the training cache holds every case's). It is an order of magnitude,
not a bound: it exists to refuse a run that cannot fit (a typo in a latent shape asking for
hundreds of GB) with one clear message instead of an allocation failure deep inside torch.

Available memory: ``MemAvailable`` of ``/proc/meminfo`` (and the cgroup limit, when lower) on
the CPU; ``torch.cuda.mem_get_info`` on a CUDA device.
"""
from __future__ import annotations

import math
import os
from typing import Any, Mapping, Optional

from ..errors import MemoryBudgetError

__all__ = ["latent_plan", "model_plan", "memory_estimate", "available_memory", "check_memory"]

GiB = float(1 << 30)


def latent_plan(model_config: Mapping[str, Any]) -> Optional[dict]:
    """Latent grid and radii of the GINO a (nested or flat) model config describes, parsed
    as GINO parses it but without building anything; None when the config is not one this
    estimate covers (a nested latent) or is invalid (the model reports that itself)."""
    from ..models.config import LEGACY_KEYS, EncoderSpec, GNOSpec, SphereLatent, blocks_spec, from_flat, latent_spec, resolve_radius, spec

    try:
        m = dict(model_config)
        legacy = {k: m.pop(k) for k in list(m) if k in LEGACY_KEYS}
        lat = m.get("latent")
        if isinstance(lat, Mapping) and lat.get("kind") == "nested":
            return None
        if legacy:
            flat = from_flat(lat if lat is None or isinstance(lat, str) else None, legacy)
            if lat is None or isinstance(lat, str):
                lat = flat["latent"]
            for s in ("encoder", "blocks", "decoder"):
                if m.get(s) is None and flat[s]:
                    m[s] = flat[s]
        lat = latent_spec(lat)
        d = int(m.get("coord_dim", 3))
        blk = blocks_spec(m.get("blocks"), lat)
        enc, dec = spec(EncoderSpec, m.get("encoder")), spec(GNOSpec, m.get("decoder"))
        sphere = isinstance(lat, SphereLatent)
        shape = tuple(int(n) for n in (lat.shape or (16,) * d))
        dom = None if sphere else (lat.domain or ((0.0,) * d, (1.0,) * d))
        return {"sphere": sphere, "shape": shape, "coord_dim": d, "domain": dom, "width": int(blk.width),
                "layers": int(blk.layers), "radius_in": resolve_radius(enc, lat, d, 0.1),
                "radius_out": resolve_radius(dec, lat, d, 0.1)}
    except Exception:
        return None


def model_plan(model) -> Optional[dict]:
    """:func:`latent_plan` of a built GINO (its ``config``)."""
    cfg = getattr(model, "config", None)
    return latent_plan(cfg) if isinstance(cfg, Mapping) else None


def _nodes_per_ball(plan: Mapping, radius: float) -> float:
    g = math.prod(plan["shape"])
    if plan["sphere"]:  # a cap of chord radius r on the unit sphere: area pi r^2 (small r)
        return min(g, math.pi * radius ** 2 / (4 * math.pi / g) + 1)
    d = len(plan["shape"])
    cell = math.prod((hi - lo) / max(n - 1, 1) for lo, hi, n in zip(*plan["domain"], plan["shape"]))
    ball = math.pi ** (d / 2) / math.gamma(d / 2 + 1) * radius ** d
    return min(g, ball / max(cell, 1e-300) + 1)


def memory_estimate(plan: Mapping, batch_size: int = 1, training: bool = True, n_points: int = 0,
                    n_queries: int = 0, n_samples: int = 1) -> dict:
    """Bytes of the latent grid, its activations and the neighbourhoods (module docstring);
    ``{"grid", "activations", "neighbours", "total"}``."""
    g = math.prod(plan["shape"])
    grid = g * (plan["coord_dim"] + 1) * 4
    act = batch_size * g * plan["width"] * 4 * ((10 * plan["layers"] + 6) if training else 8)
    edges = n_points * _nodes_per_ball(plan, plan["radius_in"]) + n_queries * _nodes_per_ball(plan, plan["radius_out"])
    nb = 16 * edges * max(int(n_samples), 1)
    return {"grid": grid, "activations": act, "neighbours": nb, "total": grid + act + nb}


def _cgroup_free() -> Optional[int]:
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        if limit == "max":
            return None
        with open("/sys/fs/cgroup/memory.current") as f:
            return int(limit) - int(f.read().strip())
    except (OSError, ValueError):
        return None


def available_memory(device: Any = "cpu") -> Optional[int]:
    """Bytes that can still be allocated on ``device``; None when unknown."""
    import torch

    dev = torch.device(device) if not isinstance(device, torch.device) else device
    if dev.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(dev)[0])
        except Exception:
            return None
    free = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError):
        pass
    if free is None and hasattr(os, "sysconf"):
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            free = None
    cg = _cgroup_free()
    if cg is not None:
        free = cg if free is None else min(free, cg)
    return free


def check_memory(plan: Optional[Mapping], what: str, device: Any = "cpu", **kw) -> Optional[dict]:
    """Raise :class:`~geoop.errors.MemoryBudgetError` when :func:`memory_estimate` of ``plan``
    (``kw``: its arguments) exceeds :func:`available_memory` of ``device``; else return the
    estimate (None without a plan). ``what`` names the run in the message."""
    if plan is None:
        return None
    est = memory_estimate(plan, **kw)
    free = available_memory(device)
    if free is not None and est["total"] > free:
        parts = ", ".join(f"{k} {est[k] / GiB:.3g} GiB" for k in ("grid", "activations", "neighbours") if est[k] >= 0.01 * GiB)
        raise MemoryBudgetError(
            f"{what}: the latent grid {list(plan['shape'])} ({math.prod(plan['shape']):.3g} nodes, width {plan['width']}) "
            f"needs about {est['total'] / GiB:.3g} GiB ({parts}), more than the {free / GiB:.3g} GiB available on "
            f"{device}; use a smaller [model.latent] shape, blocks.width, encoder/decoder radius or batch_size")
    return est
