r"""Nested latent grids: a GINO whose latent is a coarse grid over the whole domain plus finer
grids around the geometry.

One uniform latent grid cannot be both large enough for a far field tens of body lengths
away and fine enough at the wall. :class:`NestedGINO` keeps a hierarchy of ``L`` box grids
(levels), every level with the same grid shape for every sample, so each level is ONE batched
FNO call on ``(B, C, *shape_l)``:

* level 0 (coarse): a fixed box (``LatentLevel.domain``), exactly a :class:`~geoop.models.GINO`
  latent (same encoder, lifting, FNO blocks, decoder, local features and projection);
* level ``l >= 1`` (fine): a box per sample, either fixed (``box``) or the bounds of the
  sample's input points widened by ``margin`` on every side (or a fixed ``domain``). Each fine level is a GINO
  encoder + lifting + FNO blocks + decoder GNO working in the level's **unit frame**: sample
  ``b``'s points are mapped by :math:`\hat x = (x - lo_b) / (hi_b - lo_b)` (per axis) onto the
  unit box, where the level's grid is ``grid_points(shape, [0, 1]^d)``. Its radii are in that
  frame (a fraction of the box per axis), so every sample sees the same neighbour pattern on
  its grid whatever the size of its box.

Level coupling (coarse to fine, one way; ``coupling="interpolate"``, off by default)
-----------------------------------------------------------------------------------
With ``coupling="interpolate"`` the lifting of level ``l`` takes, besides its own GNO encoding
and node coordinates, the features of level ``l - 1`` after its FNO blocks, interpolated at
level ``l``'s nodes
(multi-linear, :func:`torch.nn.functional.grid_sample` with ``align_corners=True`` since grid
nodes include the box corners; nodes outside the coarser box take its border values):

.. math::  u_l(z) = \mathrm{GNO}^{in}_l(z),\qquad
           h_l(z) = \mathrm{FNO}_l\big(P_l[u_l(z), \mathcal I_{l-1}(h_{l-1})(z), \hat z]\big).

The lifting :math:`P_l`'s first-layer weights on the coupled channels start at zero, so an
untrained coarse latent adds nothing at initialisation and the coupling grows as it helps.

This is the coupling of the nested FNO of Wen et al. (2023, "Real-time high-resolution CO2
geological storage prediction using nested Fourier neural operators"), where every finer
level's FNO gets the coarser level's prediction on its grid as an input channel and levels run
coarse to fine. Here the coupling carries the coarse *latent features* (``fno_width``
channels, not the output fields) and all levels are trained together, end to end, through one
loss (``"detached"``: no gradient from the finer level into the coarser one, closer to the
level-by-level training of that paper). A fine-to-coarse feedback (as in multigrid V-cycles)
would add a second pass over every level; it is not used. Without coupling
(``coupling="none"``, the default) the levels meet only in the decoder's mix below; the
couplings are opt-in because they cost an interpolation and a wider lifting and did not test
better than none on the far-field airfoil sets of ``benchmarks/nested.py``
(docs/experiments.md).

Decoder
-------
Every level decodes with its own GNO (radius ``radius_out`` of the level), and the decodings
are mixed with per-query weights. A fine level's raw weight :func:`level_weight` is 1 inside
its box and falls smoothly to 0 over the last ``taper`` cells before the box edge
(``taper = 0``: containment); level 0's is 1. Two mixes (``NestedGINO(mix=...)``):

* ``"partition"`` (default): a partition of unity, finest level first,

  .. math::  v(x) = \sum_l \tilde w_l(x)\,\mathrm{GNO}^{out}_l(\hat x_l),\qquad
             \tilde w_l = w_l \prod_{k > l} (1 - w_k),\quad \sum_l \tilde w_l = 1,

  so a query deep inside the finest box is decoded by that level alone (it carries the whole
  signal there, with the coarse context it received through the coupling), and a level
  decodes only the queries where its weight is nonzero: the decoder costs about one level's
  GNO per query, not one per level;
* ``"sum"``: :math:`v(x) = \mathrm{GNO}^{out}_0(x) + \sum_{l \ge 1} w_l(x)\,\mathrm{GNO}^{out}_l(\hat x_l)`,
  the coarse level everywhere plus every fine level's correction (every level decodes every
  query it covers).

Then GINO's local-geometry features and projection apply to :math:`v` (a query outside every
fine box uses the coarse level alone). The taper keeps the decoded field continuous across a
fine box's edge, where a hard switch would put a jump. With a single level this is GINO's
decoder, operation for operation: ``NestedGINO`` with one level and a GINO with the same
parameters give the same outputs (tested).

Latent features
---------------
``NestedLatent.features`` (e.g. ``("sdf",)``) are computed on every level: on level 0 as a
GINO's ``latent.features``, on a fine level at its *physical* nodes
``lo_b + \hat z (hi_b - lo_b)`` of sample ``b`` (so a fine level near the body sees the signed
distance at its own resolution), placed before the coupled coarse features in the lifting's
input.

Shapes
------
batch.points (ΣN, d), x (ΣN, in_channels), batch.queries (ΣQ, d) -> (ΣQ, out_channels);
level latents (B, fno_width, *shape_l); boxes (B, 2, d) per level.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..batch import GeometryBatch, Sample
from ..errors import ConfigError, ShapeError
from ..geometry.geometry import Geometry
from ..neighbors.neighborhoods import Neighborhoods
from .gino import GINO, points_and_weights

__all__ = ["LatentLevel", "NestedLatent", "NestedGINO", "model_from_config", "interpolate_level", "level_boxes", "level_weight", "COUPLINGS", "MIXES"]

#: level couplings: ``"interpolate"`` (coarse features at the fine nodes), ``"detached"`` (the
#: same, without gradient into the coarse level: it learns from its own decoding only) or ``"none"``
#: (independent levels, only mixed in the decoder; the ablation of the benchmark)
COUPLINGS = ("interpolate", "detached", "none")
#: how the decoder mixes the levels: ``"partition"`` (a partition of unity, finest level first)
#: or ``"sum"`` (the coarse level everywhere plus every fine level's tapered correction)
MIXES = ("partition", "sum")


@dataclass(frozen=True)
class LatentLevel:
    """One level of a nested latent.

    shape : grid nodes per axis (d axes)
    domain : fixed ``(lower (d,), upper (d,))`` corners (as ``BoxLatent.domain``); ``None``: the bounds of each sample's
        input points widened by ``margin`` (fine levels only; level 0 needs a domain)
    margin : added on every side of the input bounds (same units as the points)
    radius_in, radius_out : GNO radii; level 0 in the points' units, fine levels in the
        level's unit frame (default: the model's ``radius_in`` / ``radius_out`` for level 0;
        ``radius_cells=1.5`` for fine levels: 1.5 of their largest unit-frame node spacing)
    fno_modes : retained modes (default: the model's ``fno_modes``)
    taper : fine levels: width, in the level's cells, of the band inside its box edge over which
        its decoder weight falls smoothly from 1 to 0 (see :func:`level_weight`); 0: a hard
        containment mask (the weight jumps from 1 to 0 at the box edge)
    """

    shape: tuple
    domain: Optional[tuple] = None
    margin: float = 0.0
    radius_in: Optional[float] = None
    radius_out: Optional[float] = None
    fno_modes: Optional[Any] = None
    taper: float = 2.0

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(n) for n in self.shape))
        if self.domain is not None:
            object.__setattr__(self, "domain", tuple(tuple(float(v) for v in c) for c in self.domain))
        if isinstance(self.fno_modes, list):
            object.__setattr__(self, "fno_modes", tuple(self.fno_modes))


@dataclass(frozen=True)
class NestedLatent:
    """The levels of a nested latent, coarsest first; ``levels[0]`` covers the whole domain
    with a fixed ``domain``. ``NestedLatent.from_dict(cfg.to_dict())`` round-trips; the dict
    form (lists, no None) is what a TOML/YAML ``[model.latent]`` section holds, next to the
    ``kind = "box" | "sphere"`` latents of the typed GINO configs."""

    kind: ClassVar[str] = "nested"
    levels: tuple = field(default_factory=tuple)
    #: latent features the model computes on EVERY level's nodes from the input geometry
    #: (names of ``geoop.models.config.LATENT_FEATURES``, e.g. ``("sdf",)``); a fine level's
    #: nodes are placed per sample, so its features are computed at its physical nodes
    features: tuple = ()

    def to_dict(self) -> dict:
        def plain(v):
            return [plain(a) for a in v] if isinstance(v, (tuple, list)) else v

        d = {"kind": self.kind, "levels": [{k: plain(v) for k, v in dataclasses.asdict(l).items() if v is not None}
                                           for l in self.levels]}
        if self.features:
            d["features"] = list(self.features)
        return d

    def __post_init__(self):
        lv = tuple(l if isinstance(l, LatentLevel) else LatentLevel(**l) for l in self.levels)
        object.__setattr__(self, "levels", lv)
        feats = (self.features,) if isinstance(self.features, str) else tuple(self.features)
        object.__setattr__(self, "features", feats)

    @classmethod
    def from_dict(cls, d: dict) -> "NestedLatent":
        d = dict(d)
        if d.pop("kind", cls.kind) != cls.kind:
            raise ConfigError(f"NestedLatent: kind must be {cls.kind!r}, got {d.get('kind')!r}")
        if set(d) - {"levels", "features"}:
            raise ConfigError(f"NestedLatent: unknown keys {sorted(set(d) - {'levels', 'features'})}; "
                              "valid: ['features', 'kind', 'levels']")
        valid = {f.name for f in dataclasses.fields(LatentLevel)}
        for i, l in enumerate(d.get("levels", ())):
            if isinstance(l, dict) and set(l) - valid:
                raise ConfigError(f"NestedLatent level {i}: unknown keys {sorted(set(l) - valid)}; valid: {sorted(valid)}")
        return cls(levels=tuple(d.get("levels", ())), features=tuple(d.get("features", ())))

    def check(self, coord_dim: int) -> "NestedLatent":
        from .config import LATENT_FEATURES

        if not self.levels:
            raise ConfigError("NestedLatent: need at least one level (the coarse grid over the domain)")
        bad = [f for f in self.features if f not in LATENT_FEATURES]
        if bad or len(set(self.features)) != len(self.features):
            raise ConfigError(f"NestedLatent: features must be distinct names of {list(LATENT_FEATURES)}, got "
                              f"{list(self.features)}")
        for i, l in enumerate(self.levels):
            if len(l.shape) != coord_dim or min(l.shape) < 2:
                raise ConfigError(f"NestedLatent level {i}: shape {l.shape} must have coord_dim={coord_dim} sizes >= 2")
            if l.domain is not None:
                b = torch.as_tensor(l.domain, dtype=torch.float64)
                if b.shape != (2, coord_dim) or bool((b[1] <= b[0]).any()):
                    raise ConfigError(f"NestedLatent level {i}: domain must be (lower, upper) of shape (2, {coord_dim}) "
                                      f"with lower < upper, got {l.domain}")
            elif i == 0:
                raise ConfigError("NestedLatent level 0 (the coarse grid over the whole domain) needs a fixed domain")
            elif not l.margin >= 0:
                raise ConfigError(f"NestedLatent level {i}: margin must be >= 0, got {l.margin}")
            if not (l.taper >= 0 and 2 * l.taper <= min(l.shape) - 1):
                raise ConfigError(f"NestedLatent level {i}: taper must be in [0, (min(shape) - 1) / 2] cells "
                                  f"= [0, {(min(l.shape) - 1) / 2}], got {l.taper}")
        return self


def level_boxes(level: LatentLevel, points: Tensor, point_batch: Optional[Tensor], num_samples: int) -> Tensor:
    """(B, 2, d) float64 boxes of a level for B samples: its fixed box repeated, or the
    per-sample bounds of ``points`` widened by ``level.margin`` (no gradient)."""
    d = points.shape[1]
    if level.domain is not None:
        return torch.as_tensor(level.domain, dtype=torch.float64, device=points.device).expand(num_samples, 2, d).clone()
    p = points.detach().to(torch.float64)
    pb = point_batch if (point_batch is not None and num_samples > 1) else torch.zeros(p.shape[0], dtype=torch.long, device=p.device)
    idx = pb[:, None].expand(-1, d)
    lo = torch.full((num_samples, d), float("inf"), dtype=torch.float64, device=p.device).scatter_reduce(0, idx, p, "amin")
    hi = torch.full((num_samples, d), float("-inf"), dtype=torch.float64, device=p.device).scatter_reduce(0, idx, p, "amax")
    if not bool(torch.isfinite(lo).all()):
        empty = torch.nonzero(~torch.isfinite(lo).all(1)).flatten().tolist()
        raise ShapeError(f"NestedGINO: samples {empty} have no input points, so a level around the geometry has no box")
    lo, hi = lo - level.margin, hi + level.margin
    if bool((hi <= lo).any()):
        raise ShapeError(f"NestedGINO: a level box around the geometry has zero extent on some axis (flat input, "
                         f"margin {level.margin}); give margin > 0 or a fixed box")
    return torch.stack([lo, hi], 1)


def level_weight(unit: Tensor, shape: tuple, taper: float) -> Tensor:
    r"""Decoder weight of a fine level at points given in its unit frame.

    .. math::  w(\hat x) = \prod_i s\big(\min(\hat x_i, 1 - \hat x_i) / t_i\big),\qquad
               t_i = \frac{\text{taper}}{n_i - 1},\quad s(r) = 3r^2 - 2r^3 \text{ on } [0, 1]

    (clamped: 0 outside the box, 1 deeper than ``taper`` cells inside it): the weight and its
    first derivative are continuous, so a query crossing the box edge sees no jump in the
    decoded field. ``taper = 0``: the indicator of the closed box.

    unit : (N, d) points in the level's unit frame; shape : the level's nodes per axis.
    Returns (N,) in the dtype of ``unit``.
    """
    u = unit.detach()
    if taper <= 0:
        return ((u >= 0) & (u <= 1)).all(1).to(unit.dtype)
    t = torch.tensor([taper / (n - 1) for n in shape], dtype=u.dtype, device=u.device)
    r = (torch.minimum(u, 1 - u) / t).clamp(0, 1)
    return (r * r * (3 - 2 * r)).prod(1)


def interpolate_level(latent: Tensor, boxes: Tensor, nodes: Tensor) -> Tensor:
    r"""Multi-linear interpolation of a level's grid features at points (the level coupling).

    Parameters
    ----------
    latent : (B, C, *shape) features on the level's nodes ``linspace(lo, hi, n)`` per axis
    boxes : (B, 2, d) the level's box per sample
    nodes : (B, G, d) points per sample (physical coordinates)

    Returns
    -------
    (B, C, G); points outside a box take the values at its border.
    """
    B, C = latent.shape[:2]
    d = latent.dim() - 2
    if boxes.shape != (B, 2, d) or nodes.dim() != 3 or nodes.shape[0] != B or nodes.shape[2] != d:
        raise ShapeError(f"interpolate_level: latent {tuple(latent.shape)}, boxes {tuple(boxes.shape)} and nodes "
                         f"{tuple(nodes.shape)} do not match (expected boxes ({B}, 2, {d}), nodes ({B}, G, {d}))")
    lo, hi = boxes[:, 0:1].to(nodes.dtype), boxes[:, 1:2].to(nodes.dtype)
    g = (2.0 * (nodes - lo) / (hi - lo) - 1.0).flip(-1).to(latent.dtype)  # grid_sample wants (x=last axis, ...)
    G = nodes.shape[1]
    if d == 1:
        g = torch.cat([g, torch.zeros_like(g)], -1)  # a 1-D grid as a (1, n) image
        out = F.grid_sample(latent.unsqueeze(2), g.view(B, 1, G, 2), mode="bilinear", padding_mode="border", align_corners=True)
    elif d == 2:
        out = F.grid_sample(latent, g.view(B, 1, G, 2), mode="bilinear", padding_mode="border", align_corners=True)
    else:
        out = F.grid_sample(latent, g.view(B, 1, 1, G, 3), mode="bilinear", padding_mode="border", align_corners=True)
    return out.reshape(B, C, G)


class NestedGINO(nn.Module):
    """GINO with a nested latent (see the module docstring).

    Parameters
    ----------
    in_channels, out_channels, coord_dim : as :class:`~geoop.models.GINO`
    latent : a :class:`NestedLatent` (or its dict form)
    encoder, blocks, decoder, local, memory : the GINO sections (typed specs of
        :mod:`geoop.models.config` or dicts; or GINO's flat keywords), shared by every level:
        level 0 is ``GINO(latent=BoxLatent(level 0), **sections)``; a fine level the same with
        its own shape and radii, no local features and no projection of its own
    coupling : ``"none"`` (default: levels independent until the decoder's mix),
        ``"interpolate"`` (the coarser level's features interpolated into every finer level's
        lifting, module docstring) or ``"detached"`` (the same without gradient into the coarser
        level). The default is the one that trained and tested best on the far-field airfoil
        sets of ``benchmarks/nested.py`` (see benchmarks/README.md)
    mix : ``"partition"`` (default) or ``"sum"``: how the decoder combines the levels (module
        docstring, Decoder)
    **legacy : GINO's flat keywords (deprecated there too); ``latent_shape`` and ``domain``
        come from the levels. Every level has the same width.

    Attributes
    ----------
    coarse : the level-0 :class:`GINO` (its state dict is a plain GINO's)
    fine : ``nn.ModuleList`` of GINOs, one per fine level, working in the unit frame (their
        projection is the identity: the shared projection is the coarse one's)
    """

    def __init__(self, in_channels: Optional[int] = None, out_channels: int = 1, coord_dim: int = 3,
                 latent: Union[NestedLatent, dict, None] = None, encoder=None, blocks=None, decoder=None, local=None,
                 memory=None, coupling: str = "none", mix: str = "partition", **legacy):
        super().__init__()
        import copy

        from ..nn.gno import resolve_choice

        if latent is None:
            raise ConfigError("NestedGINO: latent=NestedLatent(levels=[...]) is required")
        cfg = NestedLatent.from_dict(latent) if isinstance(latent, dict) else latent
        if not isinstance(cfg, NestedLatent):
            raise ConfigError(f"NestedGINO: latent must be a NestedLatent or its dict, got {type(latent).__name__}")
        cfg.check(int(coord_dim))
        for k in ("latent_shape", "domain"):
            if k in legacy:
                raise ConfigError(f"NestedGINO: {k!r} comes from the levels of NestedLatent; do not pass it")
        self.coupling = resolve_choice(coupling, COUPLINGS, "NestedGINO coupling")
        self.mix = resolve_choice(mix, MIXES, "NestedGINO mix")
        self.levels_config = cfg
        l0 = cfg.levels[0]
        lat0 = {"kind": "box", "shape": list(l0.shape), "domain": [list(l0.domain[0]), list(l0.domain[1])]}
        if cfg.features:
            lat0["features"] = list(cfg.features)
        if "latent_channels" in legacy:  # hand-given latent features of level 0 (flat keyword)
            lat0["channels"] = int(legacy.pop("latent_channels"))
        # level 0 is a GINO built from the given sections (typed specs, dicts or flat keywords);
        # its resolved config is the template of every level
        self.coarse = GINO(in_channels, out_channels, coord_dim, latent=lat0, encoder=encoder, blocks=blocks,
                           decoder=decoder, local=local, memory=memory, **legacy)
        base = copy.deepcopy(self.coarse.config)

        def with_level(c: dict, lv: LatentLevel, fine: bool) -> dict:
            for sec, r in (("encoder", lv.radius_in), ("decoder", lv.radius_out)):
                if r is not None or fine:
                    c[sec].pop("radius", None)
                    c[sec].pop("radius_cells", None)
                    # fine levels: radii in the unit frame, by default 1.5 cells of the level's grid
                    c[sec].update({"radius": float(r)} if r is not None else {"radius_cells": 1.5})
            if lv.fno_modes is not None:
                c["blocks"]["modes"] = list(lv.fno_modes) if isinstance(lv.fno_modes, (tuple, list)) else int(lv.fno_modes)
            return c

        if l0.radius_in is not None or l0.radius_out is not None or l0.fno_modes is not None:
            self.coarse = GINO.from_config(with_level(copy.deepcopy(base), l0, False))
            base = copy.deepcopy(self.coarse.config)
        width = int(base["blocks"]["width"])
        self.fine = nn.ModuleList()
        for lv in cfg.levels[1:]:
            c = with_level(copy.deepcopy(base), lv, True)
            c["out_channels"] = 1
            # the unit box of the level's frame; the coarser level's features as latent channels
            c["latent"] = {"kind": "box", "shape": list(lv.shape),
                           "channels": len(cfg.features) + (width if self.coupling != "none" else 0)}
            c.pop("local", None)
            g = GINO.from_config(c)
            g.projection = nn.Identity()  # the levels' decodings are mixed before the shared projection
            if self.coupling != "none":
                # the lifting's weights on the coupled coarse channels start at zero: at
                # initialisation a fine level is its uncoupled self and learns how much coarse
                # context to take (random weights there injected the untrained coarse latent)
                first = g.lifting.net[0]
                start = first.in_features - g.latent_channels - g.coord_dim + len(cfg.features)
                with torch.no_grad():
                    first.weight[:, start: start + width].zero_()
            self.fine.append(g)
        self.config = {**{k: v for k, v in base.items() if k != "latent"}, "latent": cfg.to_dict(),
                       "coupling": self.coupling, "mix": self.mix}
        self.coord_dim = int(coord_dim)
        self.in_channels, self.out_channels = self.coarse.in_channels, self.coarse.out_channels

    @property
    def num_levels(self) -> int:
        return 1 + len(self.fine)

    #: top-level keys of :attr:`config`
    CONFIG_KEYS = ("in_channels", "out_channels", "coord_dim", "latent", "encoder", "blocks", "decoder", "local",
                   "memory", "coupling", "mix")

    @classmethod
    def from_config(cls, config: dict) -> "NestedGINO":
        """Rebuild a model from :attr:`config` (unknown keys raise :class:`ConfigError`)."""
        cls.check_config(config, "NestedGINO.from_config")
        return cls(**config)

    @classmethod
    def check_config(cls, config, where: str = "NestedGINO config") -> None:
        """Validate a config without building the model: the levels (:class:`NestedLatent`),
        ``coupling``/``mix``, and GINO's sections checked as level 0's GINO (a box latent)."""
        from ..nn.gno import resolve_choice

        if not isinstance(config, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(config).__name__}")
        unknown = sorted(set(config) - set(cls.CONFIG_KEYS))
        if unknown:
            raise ConfigError(f"{where}: unknown keys {unknown}; valid keys: {list(cls.CONFIG_KEYS)}")
        try:
            lat = config.get("latent")
            cfg = NestedLatent.from_dict(lat) if isinstance(lat, dict) else lat
            if not isinstance(cfg, NestedLatent):
                raise ConfigError(f"latent must be a NestedLatent or its dict, got {type(lat).__name__}")
            cfg.check(int(config.get("coord_dim", len(cfg.levels[0].shape) if cfg.levels else 3)))
            resolve_choice(config.get("coupling", "none"), COUPLINGS, "coupling")
            resolve_choice(config.get("mix", "partition"), MIXES, "mix")
            l0 = cfg.levels[0]
            box = {"kind": "box", "shape": list(l0.shape), "domain": [list(l0.domain[0]), list(l0.domain[1])]}
            GINO.check_config({**{k: v for k, v in config.items() if k not in ("coupling", "mix")}, "latent": box},
                              where)
        except ConfigError as e:
            raise ConfigError(e.args[0] if str(e).startswith(where) else f"{where}: {e}") from None

    # ------------------------------------------------------------------ inputs by name (level 0's)
    @property
    def point_inputs(self):
        """The point inputs by name (``encoder.inputs``), shared by every level."""
        return self.coarse.point_inputs

    @property
    def latent_feature_names(self):
        """The latent features computed on every level (``NestedLatent.features``)."""
        return self.coarse.latent_feature_names

    def latent_features(self, geometries):
        """Level 0's computed latent features, as :meth:`GINO.latent_features` (B, F, *shape_0);
        the fine levels' come from :meth:`fine_features`."""
        return self.coarse.latent_features(geometries)

    def point_features(self, source):
        """As :meth:`GINO.point_features`: (ΣN, in_channels) by the model's input names, or None."""
        return self.coarse.point_features(source)

    def cache_key(self) -> dict:
        return {**self.coarse.cache_key(), "model": "NestedGINO", "levels": self.levels_config.to_dict()}

    # ------------------------------------------------------------------ levels
    def boxes(self, points: Tensor, point_batch: Optional[Tensor] = None, num_samples: int = 1) -> list:
        """[(B, 2, d) float64 box per sample] for every level."""
        return [level_boxes(lv, points, point_batch, num_samples) for lv in self.levels_config.levels]

    def level_nodes(self, level: int, boxes: Tensor) -> Tensor:
        """(B, G_l, d) physical nodes of ``level`` for the given (B, 2, d) boxes."""
        g = self.coarse if level == 0 else self.fine[level - 1]
        unit = g._latent_points.to(torch.float64) if level else None
        if level == 0:
            return g._latent_points.to(torch.float64).expand(boxes.shape[0], -1, -1).clone()
        lo, hi = boxes[:, 0:1], boxes[:, 1:2]
        return lo + unit[None] * (hi - lo)

    def contains(self, points: Tensor, point_batch: Optional[Tensor], boxes: list) -> Tensor:
        """(N, L) bool: whether each point lies in each level's box of its sample."""
        pb = point_batch if point_batch is not None else torch.zeros(points.shape[0], dtype=torch.long, device=points.device)
        p = points.detach().to(torch.float64)
        return torch.stack([((p >= b[pb, 0]) & (p <= b[pb, 1])).all(1) for b in boxes], 1)

    @staticmethod
    def _to_unit(points: Tensor, box: Tensor, batch: Optional[Tensor]) -> Tensor:
        pb = batch if batch is not None else torch.zeros(points.shape[0], dtype=torch.long, device=points.device)
        lo, hi = box[pb, 0], box[pb, 1]
        return ((points.to(torch.float64) - lo) / (hi - lo)).to(points.dtype)

    # ------------------------------------------------------------------ latent features
    def fine_features(self, geometries, boxes: list) -> Optional[list]:
        """The computed latent features (``NestedLatent.features``) of every fine level:
        ``[(B, F, *shape_l)]`` at the level's physical nodes of each sample, or None when the
        model declares none. ``boxes``: the levels' (B, 2, d) boxes of these geometries."""
        from ..geometry.sdf import sdf

        names = self.levels_config.features
        if not names or not len(self.fine):
            return None
        geoms = [geometries] if isinstance(geometries, Geometry) else list(geometries)
        out = []
        for l, g in enumerate(self.fine, start=1):
            nodes = self.level_nodes(l, boxes[l])  # (B, G_l, d) float64
            per = [torch.stack([sdf(geo, nodes[b]) for name in names if name == "sdf"]).reshape(len(names), *g.latent_shape)
                   for b, geo in enumerate(geoms)]
            out.append(torch.stack(per).to(torch.float32))
        return out

    def _batch_fine_features(self, batch: GeometryBatch, boxes: list) -> Optional[list]:
        if not self.levels_config.features or not len(self.fine):
            return None
        parts = [m.get("nested_latent_features") for m in batch.meta]
        if parts and all(p is not None for p in parts):
            return [torch.stack([p[l] for p in parts]).to(batch.points.device) for l in range(len(self.fine))]
        return [f.to(batch.points.device) for f in self.fine_features(batch.unbatch(), boxes)]

    # ------------------------------------------------------------------ neighbourhoods
    def precompute(self, sample: Sample, decoder: bool = True) -> Sample:
        """The coarse level's neighbourhoods and latent features as :meth:`GINO.precompute`,
        plus every fine level's ``(neighbors_in, neighbors_out)`` of this sample in
        ``meta["nested_neighbors"]`` (indices local to the sample; :meth:`forward` concatenates
        them over a batch; ``neighbors_out`` None with ``decoder=False``) and its computed
        latent features ``(F, *shape_l)`` in ``meta["nested_latent_features"]``."""
        s = self.coarse.precompute(sample, decoder=decoder)
        pts = sample.geometry.points
        q = sample.queries.points if sample.queries is not None else pts
        boxes = self.boxes(pts, None, 1)
        nn_l = []
        with torch.no_grad():
            for l, g in enumerate(self.fine, start=1):
                nn_l.append((g.neighbors_in(self._to_unit(pts, boxes[l], None)),
                             g.neighbors_out(self._to_unit(q, boxes[l], None)) if decoder else None))
        meta = {**s.meta, "nested_neighbors": nn_l}
        ff = self.fine_features(sample.geometry, boxes)
        if ff is not None:
            meta["nested_latent_features"] = [f[0] for f in ff]
        return dataclasses.replace(s, meta=meta)

    def select_queries(self, sample: Sample, rows: Tensor) -> Sample:
        """A precomputed sample (:meth:`precompute`) restricted to its queries ``rows`` (K,),
        in that order (:meth:`GINO.select_queries`), with every fine level's decoder
        neighbourhoods selected to match (no new search)."""
        rows = torch.as_tensor(rows, dtype=torch.long)
        out = GINO.select_queries(sample, rows)
        nn_l = sample.meta.get("nested_neighbors")
        if nn_l is None:
            return out
        sel = [(nin, None if nout is None else nout.select(rows)) for nin, nout in nn_l]
        return dataclasses.replace(out, meta={**sample.meta, "nested_neighbors": sel})

    def _batched_neighbors(self, batch: GeometryBatch, level: int):
        parts = [m.get("nested_neighbors") for m in batch.meta]
        if not parts or any(p is None for p in parts):
            return None, None
        G = self.fine[level - 1].num_latent
        nin = Neighborhoods.cat([p[level - 1][0] for p in parts])
        if any(p[level - 1][1] is None for p in parts):
            return nin, None
        nout = Neighborhoods.cat([p[level - 1][1] for p in parts], [b * G for b in range(len(parts))])
        nout.num_sources = len(parts) * G
        return nin, nout

    # ------------------------------------------------------------------ stages
    def encode(self, points: Tensor, x: Optional[Tensor] = None, weights: Optional[Tensor] = None,
               point_batch: Optional[Tensor] = None, num_samples: int = 1, neighbors_in: Optional[Neighborhoods] = None,
               latent_features: Optional[Tensor] = None, boxes: Optional[list] = None,
               fine_neighbors: Optional[list] = None, fine_features: Optional[list] = None) -> tuple[list, list]:
        """All levels, coarse to fine: returns ``(latents, boxes)``, latents[l] of shape
        (B, fno_width, *shape_l). ``latent_features``: level 0's (B, C_0, *shape_0);
        ``fine_neighbors``: per fine level a neighbors_in or None; ``fine_features``: per fine
        level its computed features (B, F, *shape_l) (:meth:`fine_features`), required when
        the model declares ``NestedLatent.features``."""
        B = int(num_samples)
        boxes = boxes if boxes is not None else self.boxes(points, point_batch, B)
        h = self.coarse.encode(points, x, weights, point_batch, B, neighbors_in, latent_features)
        latents = [h]
        for l, g in enumerate(self.fine, start=1):
            coupled = None
            if self.coupling != "none":
                nodes = self.level_nodes(l, boxes[l])  # (B, G_l, d)
                coarse = latents[-1].detach() if self.coupling == "detached" else latents[-1]
                coupled = interpolate_level(coarse, boxes[l - 1], nodes.to(h.dtype))
                coupled = coupled.reshape(B, -1, *g.latent_shape)
            if self.levels_config.features:
                if fine_features is None:
                    raise ShapeError(f"NestedGINO.encode: the model computes latent features "
                                     f"{list(self.levels_config.features)} on every level; pass fine_features "
                                     "(NestedGINO.fine_features) or use forward/query with the geometry")
                f = fine_features[l - 1].to(h.dtype)
                coupled = f if coupled is None else torch.cat([f, coupled], 1)
            nb = fine_neighbors[l - 1] if fine_neighbors is not None else None
            latents.append(g.encode(self._to_unit(points, boxes[l], point_batch if B > 1 else None), x, weights,
                                    point_batch, B, nb, coupled))
        return latents, boxes

    def level_mix(self, queries: Tensor, query_batch: Optional[Tensor], boxes: list) -> list:
        r"""(ΣQ,) weight of every level's decoding at the queries (module docstring, Decoder):
        ``"partition"``: finest first, :math:`\tilde w_l = w_l \prod_{k > l} (1 - w_k)` with
        :math:`w_0 = 1`, so the weights sum to 1; ``"sum"``: :math:`w_l` (level 0: 1)."""
        qb = query_batch if boxes[0].shape[0] > 1 else None
        q = queries.detach().to(torch.float64)
        w = [torch.ones(queries.shape[0], dtype=torch.float64, device=queries.device)]
        for l, g in enumerate(self.fine, start=1):
            w.append(level_weight(self._to_unit(q, boxes[l], qb), g.latent_shape, float(self.levels_config.levels[l].taper)))
        if self.mix == "sum":
            return w
        out, rest = [None] * len(w), torch.ones_like(w[0])
        for l in range(len(w) - 1, 0, -1):
            out[l] = w[l] * rest
            rest = rest * (1 - w[l])
        out[0] = rest
        return out

    def decode(self, latents: list, boxes: list, queries: Tensor, query_batch: Optional[Tensor] = None,
               neighbors_out: Optional[Neighborhoods] = None, points: Optional[Tensor] = None,
               x: Optional[Tensor] = None, point_batch: Optional[Tensor] = None,
               fine_neighbors: Optional[list] = None) -> Tensor:
        """The levels' decoder GNOs mixed by :meth:`level_mix` (each level decodes only the
        queries where its weight is nonzero), then GINO's local features and projection:
        (ΣQ, d) -> (ΣQ, out_channels)."""
        c = self.coarse
        B, dtype = latents[0].shape[0], latents[0].dtype
        qb = query_batch if B > 1 else None
        mix = self.level_mix(queries, qb, boxes)
        v = None
        for l in range(self.num_levels):
            nb = neighbors_out if l == 0 else (fine_neighbors[l - 1] if fine_neighbors is not None else None)
            wl = mix[l]
            rows = torch.nonzero(wl > 0).flatten()
            if rows.numel() == queries.shape[0]:
                rows = None  # every query (the weight may still be below 1)
            elif rows.numel() == 0:
                continue
            q, b = (queries, qb) if rows is None else (queries[rows], None if qb is None else qb[rows])
            if rows is not None and nb is not None:
                nb = nb.select(rows)
            if l == 0:
                vl = c.decode_latent(latents[0], q, b, nb)  # level 0: GINO's decoder step
            else:
                vl = self.fine[l - 1].decode(latents[l], self._to_unit(q, boxes[l], b), b, nb)
            vl = vl * (wl if rows is None else wl[rows])[:, None].to(dtype)
            if rows is None:
                v = vl if v is None else v + vl
            else:
                v = (torch.zeros(queries.shape[0], vl.shape[1], dtype=dtype, device=vl.device) if v is None else v)
                v = v.index_add(0, rows, vl)
        if c.gno_local is not None or c.local_nearest:
            v = torch.cat([v] + c._local_features(queries.to(dtype), points, x, query_batch, point_batch, B), 1)
        return c.projection(v)

    # ------------------------------------------------------------------ forward
    def forward(self, batch: GeometryBatch, x: Optional[Tensor] = None) -> Tensor:
        """As :meth:`GINO.forward`: (ΣQ, out_channels) at the queries of every sample."""
        if not isinstance(batch, GeometryBatch):
            raise ShapeError(f"NestedGINO.forward: expected a GeometryBatch, got {type(batch).__name__}")
        B = batch.num_samples
        if x is None and self.point_inputs:
            x = self.point_features(batch)
        pre = [self._batched_neighbors(batch, l) for l in range(1, self.num_levels)]
        nin = [p[0] for p in pre] if pre and all(p[0] is not None for p in pre) else None
        nout = [p[1] for p in pre] if pre and all(p[1] is not None for p in pre) else None
        boxes = self.boxes(batch.points, batch.batch, B)
        latents, boxes = self.encode(batch.points, x, batch.weights, batch.batch, B, batch.neighbors_in,
                                     self.coarse._batch_latent_features(batch), boxes=boxes, fine_neighbors=nin,
                                     fine_features=self._batch_fine_features(batch, boxes))
        return self.decode(latents, boxes, batch.queries, batch.query_batch, batch.neighbors_out, batch.points, x,
                           batch.batch, fine_neighbors=nout)

    def encode_geometry(self, geometry: Union[Geometry, Tensor], x: Optional[Tensor] = None,
                        latent_features: Optional[Tensor] = None) -> tuple[list, list]:
        """Every level of ONE geometry (a Geometry, or its (N, d) points with uniform weights):
        ``(latents, boxes)`` as :meth:`encode`. Level 0's latent features are
        ``latent_features`` (C, *shape_0) when given, else computed, and the fine levels' are
        computed from the geometry (both need a Geometry when the model declares features)."""
        pts, w = points_and_weights(geometry)
        if self.latent_feature_names and latent_features is None and not isinstance(geometry, Geometry):
            raise ShapeError(f"NestedGINO: the latent features {list(self.latent_feature_names)} are "
                             "computed from a Geometry (its cells give the boundary); pass a Geometry, not a tensor")
        if latent_features is not None:
            lf = latent_features.unsqueeze(0)
        else:
            lf = self.latent_features(geometry) if self.latent_feature_names else None
        boxes = self.boxes(pts, None, 1)
        ff = self.fine_features(geometry, boxes) if isinstance(geometry, Geometry) else None
        return self.encode(pts, x, w, None, 1, None, lf, boxes=boxes, fine_features=ff)

    def query(self, geometry: Union[Geometry, Tensor], points: Tensor, x: Optional[Tensor] = None,
              chunk_size: int = 65536, latent_features: Optional[Tensor] = None) -> Tensor:
        """As :meth:`GINO.query`: encode every level once, decode ``chunk_size`` queries at a time."""
        pts, w = points_and_weights(geometry)
        q = torch.as_tensor(points, device=pts.device)
        if q.dim() != 2 or q.shape[1] != self.coord_dim:
            raise ShapeError(f"NestedGINO.query: points must have shape (Q, {self.coord_dim}), got {tuple(q.shape)}")
        if x is None and self.point_inputs:
            if not isinstance(geometry, Geometry):
                raise ShapeError(f"NestedGINO.query: the model's inputs {list(self.point_inputs)} are taken from a "
                                 "Geometry; got bare points (pass a Geometry, or x=)")
            x = self.point_features(geometry)
        latents, boxes = self.encode_geometry(geometry, x, latent_features)
        cs = max(1, int(chunk_size))
        outs = [self.decode(latents, boxes, q[i: i + cs], points=pts, x=x) for i in range(0, q.shape[0], cs)]
        if not outs:
            return latents[0].new_zeros((0, self.out_channels))
        return torch.cat(outs)


def model_from_config(config) -> nn.Module:
    """The model a config describes: a :class:`NestedGINO` when its ``latent`` is a nested one
    (``{"kind": "nested", ...}`` or a :class:`NestedLatent`), an :class:`~geoop.models.ensemble.Ensemble`
    when it has an ``ensemble`` key, else a :class:`GINO`."""
    if isinstance(config, dict) and "ensemble" in config:  # [model] ensemble = K
        from .ensemble import Ensemble

        return Ensemble.from_config(config)
    lat = config.get("latent") if isinstance(config, dict) else None
    nested = isinstance(lat, NestedLatent) or (isinstance(lat, dict) and lat.get("kind") == NestedLatent.kind)
    return NestedGINO.from_config(dict(config)) if nested else GINO.from_config(config)
