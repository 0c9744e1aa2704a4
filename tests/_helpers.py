"""Helpers shared by several test files: a free TCP port and a rank's environment for
torch.distributed, the tiny 2-D
annulus cases of the command-line tests and a tiny GINO training config for them."""
from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Mapping, Optional

import numpy as np

from geoop.geometry.geometry import Geometry


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (for a process group's rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dist_env(rank: int, world: int, port: int) -> dict:
    """The environment a torchrun-launched rank sees (gloo on 127.0.0.1:``port``), for
    ``os.environ.update`` in an ``mp.spawn`` worker before ``init_distributed``."""
    return {"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port)}


def annulus(amp: float, angle: float, centre=(10.0, 5.0), scale=3.0, n_r=6, n_t=20) -> Geometry:
    """A 2-D triangulated annulus (z = 0) in 'file' coordinates, with a constant input
    field ``a`` and a target ``p`` depending on ``a`` and the position."""
    r, t = np.meshgrid(np.linspace(0.4, 1.0, n_r), np.linspace(0, 2 * np.pi, n_t, endpoint=False), indexing="ij")
    x, y = r.ravel() * np.cos(t.ravel()), r.ravel() * np.sin(t.ravel())
    idx = np.arange(n_r * n_t).reshape(n_r, n_t)
    a, b, c, d = idx[:-1], np.roll(idx[:-1], -1, 1), idx[1:], np.roll(idx[1:], -1, 1)
    tri = np.concatenate([np.stack([a, b, d], -1).reshape(-1, 3), np.stack([a, d, c], -1).reshape(-1, 3)])
    p = amp * np.cos(2 * (t.ravel() - angle)) * r.ravel() + 0.3 * x
    pts = np.stack([centre[0] + scale * x, centre[1] + scale * y, 0 * x], 1)
    return Geometry(pts, cells={"triangle": tri}, fields={"a": np.full(x.shape, amp), "p": p})


def write_annulus_cases(root: Path, n: int, name: str = "case_{i}") -> Path:
    """``n`` annulus cases ``root/<name>.vtu`` (seeded, case ``i`` with ``18 + 2 i`` points per
    ring) and ``split.json``: the last case is the test split, the others train."""
    import geoop

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = [name.format(i=i) for i in range(n)]
    for i, case in enumerate(names):
        geoop.write(annulus(float(rng.uniform(0.5, 1.5)), float(rng.uniform(0, np.pi)), n_t=18 + 2 * i), root / f"{case}.vtu")
    (root / "split.json").write_text(json.dumps({"train": names[:-1], "test": names[-1:]}))
    return root


def _toml_table(name: str, values: Mapping) -> str:
    return f"[{name}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())


def tiny_gino_config(path: Path, folder: Path, out_dir: Path, *, model: Optional[Mapping] = None,
                     optim: Optional[Mapping] = None, parallel: Optional[Mapping] = None) -> Path:
    """Write a TOML config training a tiny 2-D GINO (8x8 latent, width 8) on the annulus
    cases in ``folder`` for 2 epochs into ``out_dir``; ``model``, ``optim`` and ``parallel``
    add or override keys of those tables."""
    text = f"""seed = 1
device = "cpu"
[data]
folder = "{folder}"
inputs = ["a"]
targets = ["p"]
drop_flat_z = true
geometry_normalization = "case"
"""
    text += _toml_table("model", {"latent_shape": [8, 8], "radius_in": 0.2, "radius_out": 0.2, "fno_width": 8,
                                  "fno_modes": 3, "fno_layers": 1, "gno_mlp": [8], **(model or {})})
    text += _toml_table("optim", {"epochs": 2, "batch_size": 2, "lr": 3e-3, **(optim or {})})
    text += f'[output]\ndir = "{out_dir}"\n'
    if parallel:
        text += _toml_table("parallel", parallel)
    path = Path(path)
    path.write_text(text)
    return path
