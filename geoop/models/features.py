"""Model inputs by name: point features of the encoder and computed latent features.

Point features (``EncoderSpec.inputs``), concatenated in the order given, ``(N, C)``:

==================  =========================================  ======
name                what                                       width
==================  =========================================  ======
``"normals"``       the geometry's unit normals                d
``"coords"``        the point coordinates                      d
``"const=V"``       the constant ``V`` on every point          1
``"p"``             point field ``p`` (must have 1 component)  1
``"U[0:2]"``        components 0 and 1 of point field ``U``    2
``"U[2]"``          component 2 of point field ``U``           1
==================  =========================================  ======

Latent features (``BoxLatent.features``): ``"sdf"``, the signed distance from every latent
node to the boundary of the input geometry (:func:`geoop.geometry.sdf.sdf`; negative inside
a closed boundary, or inside the mirrored closed body of a half body with a declared
``symmetry`` plane; an open surface without one gives an unsigned distance and an
:class:`~geoop.errors.UnsignedSDFWarning`), the GINO paper's geometry encoding on the latent grid.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import torch
from torch import Tensor

from ..errors import ConfigError, FieldError

__all__ = ["PointFeature", "parse_point_feature", "point_features", "LatentSDF", "latent_sdf"]

_FIELD = re.compile(r"^(?P<name>[^\[\]=]+?)(?:\[(?P<a>\d*)(?::(?P<b>\d*))?\])?$")


@dataclass(frozen=True)
class PointFeature:
    """One parsed point-feature name (see the module table)."""

    kind: str  # "normals" | "coords" | "const" | "field"
    name: str
    start: Optional[int] = None  # field components [start, stop)
    stop: Optional[int] = None
    value: float = 0.0

    def width(self, coord_dim: int) -> int:
        if self.kind in ("normals", "coords"):
            return coord_dim
        if self.kind == "const" or self.start is None:
            return 1
        return self.stop - self.start


def parse_point_feature(spec: str) -> PointFeature:
    """``"normals"``, ``"coords"``, ``"const=1.5"``, ``"p"``, ``"U[0:2]"``, ``"U[2]"`` -> PointFeature."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"point input {spec!r}: expected a name such as 'normals', 'coords', 'const=1.0', 'p' or 'U[0:2]'")
    s = spec.strip()
    if s in ("normals", "coords"):
        return PointFeature(s, s)
    if s.startswith("const="):
        try:
            return PointFeature("const", s, value=float(s[6:]))
        except ValueError:
            raise ConfigError(f"point input {spec!r}: 'const=' needs a number, e.g. 'const=1.0'") from None
    m = _FIELD.match(s)
    if not m:
        raise ConfigError(f"point input {spec!r}: expected 'name', 'name[i]' or 'name[i:j]' (e.g. 'U[0:2]')")
    a, b = m.group("a"), m.group("b")
    if a is None:
        return PointFeature("field", m.group("name"))
    if b is None:  # name[i]
        if a == "":
            raise ConfigError(f"point input {spec!r}: empty component index")
        return PointFeature("field", m.group("name"), int(a), int(a) + 1)
    start, stop = int(a or 0), (int(b) if b else None)
    if stop is None or stop <= start:
        raise ConfigError(f"point input {spec!r}: components [i:j] need j > i (write the stop explicitly, e.g. 'U[0:3]')")
    return PointFeature("field", m.group("name"), start, stop)


def point_features(specs: Sequence[str], points: Tensor, normals: Optional[Tensor], fields: Mapping[str, Tensor],
                   where: str = "geometry") -> Optional[Tensor]:
    """The point features ``specs`` of one point set, side by side: (N, ΣC), or None for no specs.

    points (N, d), normals (N, d) or None, fields name -> (N,) or (N, C).
    """
    if not specs:
        return None
    n, d = points.shape
    parts = []
    for s in specs:
        f = parse_point_feature(s)
        if f.kind == "normals":
            if normals is None:
                raise FieldError(f"{where}: the model's input 'normals' needs normals on the input points; the geometry "
                                 "has none (Geometry.compute_normals() computes them from its cells)")
            parts.append(normals)
        elif f.kind == "coords":
            parts.append(points)
        elif f.kind == "const":
            parts.append(points.new_full((n, 1), f.value))
        else:
            if f.name not in fields:
                raise FieldError(f"{where}: the model's input field {f.name!r} is missing; point fields: {sorted(fields)}")
            v = fields[f.name]
            v = v[:, None] if v.dim() == 1 else v
            c = v.shape[1]
            if f.start is None:
                if c != 1:
                    raise FieldError(f"{where}: input field {f.name!r} has {c} components; name them, e.g. "
                                     f"'{f.name}[0:{c}]' for all of them")
            elif f.stop > c:
                raise FieldError(f"{where}: input {s!r} selects components [{f.start}:{f.stop}] of {f.name!r}, "
                                 f"which has {c}")
            else:
                v = v[:, f.start:f.stop]
            parts.append(v)
    return torch.cat([p.to(points.dtype) for p in parts], 1)


# ---------------------------------------------------------------------------- latent features
def latent_sdf(model, geometry) -> Tensor:
    """Signed distance from the latent nodes of ``model`` to ``geometry``: (1, *latent_shape)
    float32 (the geometry's cells give the boundary; see :func:`geoop.geometry.sdf.sdf`)."""
    from ..geometry.sdf import sdf

    nodes = model.latent_points().to(geometry.points.dtype)
    return sdf(geometry, nodes).reshape(1, *model.latent_shape).to(torch.float32)


class LatentSDF:
    """``neighbors`` callable for datasets: ``model.precompute(sample)`` plus the signed
    distance from the latent grid nodes to the input geometry as ``latent_features``
    (1, *latent_shape). A model that declares ``latent.features = ["sdf"]`` computes it in
    its own :meth:`~geoop.models.GINO.precompute`; this wrapper serves models that take the
    SDF as a hand-given latent channel."""

    def __init__(self, model):
        self.model = model

    def cache_key(self) -> dict:
        return {"gino": self.model.cache_key(), "latent_features": "sdf"}

    def features(self, geometry) -> Tensor:
        return latent_sdf(self.model, geometry)

    def __call__(self, sample):
        out = self.model.precompute(sample)
        if out.latent_features is not None:
            return out
        return dataclasses.replace(out, latent_features=self.features(sample.geometry))
