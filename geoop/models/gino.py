r"""GINO: geometry-informed neural operator (GNO encoder -> FNO/SFNO latent -> GNO decoder).

Li et al., "Geometry-Informed Neural Operator for Large-Scale 3D PDEs" (NeurIPS 2023).

For a sample with input points :math:`y_j` (features :math:`f_j`, quadrature weights
:math:`w_j`) and query points :math:`x`:

1. **Encoder** (GNO, :class:`geoop.nn.GNO`): for every latent node :math:`z_g`,
   :math:`u(z_g) = \bigoplus_{y_j \in B_{r_{in}}(z_g)} k_{in}(z_g, y_j, f_j)[\odot W f_j]`.
   A node whose ball holds no input point gets exactly 0 (so a sample with no input point in
   any latent ball has an all-zero encoding; the output is still finite).
2. **Lifting**: a pointwise MLP of :math:`[u(z_g), c(z_g), z_g]` (with optional latent
   features :math:`c`, e.g. an SDF) to ``blocks.width`` channels.
3. **Latent operator**: ``blocks.layers`` FNO blocks on the box grid (``BoxLatent``) or SFNO
   blocks on the equiangular / Gauss lat-lon grid of the unit sphere (``SphereLatent``),
   run once on the stacked ``(B, C, *grid)`` tensor of all samples.
4. **Decoder** (GNO): :math:`v(x) = \bigoplus_{z_g \in B_{r_{out}}(x)} k_{out}(x, z_g)\odot h(z_g)`.
5. **Local geometry** (opt-in, ``local.radius > 0`` and/or ``local.nearest``): features of
   each query computed from the sample's own input points at sub-grid resolution,
   concatenated to :math:`v(x)`:

   * ``local.radius > 0``: a second, small-radius GNO straight from the input points,
     :math:`l(x) = \mathrm{mean}_{y_j \in B_{r_{loc}}(x)} k_{loc}(x, y_j, f_j)`
     (``local.channels`` wide, 0 where the ball is empty);
   * ``local.nearest``: the offset to the nearest input point :math:`y^*(x)` and its length,
     in units of :math:`s` (the local radius, else the decoder's), and its features:
     :math:`[(x - y^*)/s, |x - y^*|/s, f(y^*)]`.

   The latent grid resolves nothing finer than its spacing (e.g. a leading-edge suction
   peak); these features do, and ``GINO.query`` / ``forward`` compute them themselves.
6. **Projection**: a pointwise MLP to ``out_channels``.

Latent grids
------------
* box: ``grid_points(latent_shape, domain)``, nodes ``linspace(lo, hi, n)`` per axis (end
  points included), flattened in C order; ``domain`` defaults to the unit cube ``[0, 1]^d``.
* sphere: ``latent_shape = (nlat, nlon)``, colatitudes of the torch-harmonics quadrature
  (``"equiangular"``: Clenshaw-Curtis nodes, poles included; ``"legendre-gauss"``), longitudes
  ``2 pi k / nlon``; the points are on the unit sphere, inputs should lie on or near it, and
  the radii are chord lengths (plain 3-D distances).

Batches
-------
B samples of different sizes are processed in ONE call. The latent nodes of all samples are
sample-major (``b * G + g``). ``batch.neighbors_in`` (over the B*G latent nodes, indices
into ``batch.points``) and ``batch.neighbors_out`` (over the queries, indices into the B*G
latent nodes) are used when present (see :meth:`GINO.precompute`); otherwise they are
computed in ``forward`` (grid search for points -> box grid, :func:`geoop.radius_search`
otherwise). The local-geometry features (step 5) are computed in ``forward`` / ``decode``
from the input points of each query's own sample (radius search and nearest-point search
per sample, using ``batch.batch`` / ``batch.query_batch``), so they are never precomputed
and never cross samples.

Shapes
------
batch.points : (ΣN, d)        x : (ΣN, in_channels) or None when in_channels == 0
batch.queries : (ΣQ, d)       latent : (B, fno_width, *latent_shape)
local features : (ΣQ, local_channels) [+ (ΣQ, d + 1 + in_channels)], projection input
    (ΣQ, fno_width + their widths)
output : (ΣQ, out_channels)
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import Mapping, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from ..batch import GeometryBatch, Sample
from ..errors import ConfigError, ShapeError
from ..geometry.geometry import Geometry
from ..neighbors.neighborhoods import Neighborhoods
from ..nn.gno import GNO, GNO_KERNELS, resolve_choice
from ..nn.mlp import MLP
from ..nn.sfno import SPHERE_GRIDS, resolve_sphere_grid, sphere_grid_points  # noqa: F401  (re-exported)
from .config import (
    LEGACY_KEYS,
    BoxLatent,
    EncoderSpec,
    FNOSpec,
    GNOSpec,
    IncrementalSpec,
    LocalSpec,
    MemorySpec,
    SFNOSpec,
    SphereLatent,
    blocks_spec,
    from_flat,
    latent_spec,
    resolve_radius,
    spec,
)

__all__ = ["GINO", "LATENT_KINDS", "SPHERE_GRIDS", "sphere_grid_points"]

LATENT_KINDS = ("box", "sphere")


def points_and_weights(geometry: Union[Geometry, Tensor]) -> tuple[Tensor, Tensor]:
    """The input points (N, d) and quadrature weights (N,) of a model call: a Geometry's own,
    or bare points with uniform weights 1 / N."""
    if isinstance(geometry, Geometry):
        return geometry.points, geometry.weights
    pts = torch.as_tensor(geometry)
    return pts, torch.full((pts.shape[0],), 1.0 / max(pts.shape[0], 1), dtype=pts.dtype, device=pts.device)


def _nearest(points: Tensor, queries: Tensor, point_batch: Optional[Tensor], query_batch: Optional[Tensor],
             num_samples: int) -> tuple[Tensor, Tensor]:
    """Index (ΣQ,) of the nearest point of the same sample for every query (scipy KD-tree per
    sample, no gradient) and a (ΣQ,) 0/1 mask, 0 where the sample has no point (index 0 then)."""
    import numpy as np
    from scipy.spatial import cKDTree

    from ..neighbors.search import _ptr

    P = points.detach().cpu().double().numpy()
    Qp = queries.detach().cpu().double().numpy()
    pptr, qptr = _ptr(point_batch, P.shape[0], num_samples), _ptr(query_batch, Qp.shape[0], num_samples)
    idx = np.zeros(Qp.shape[0], dtype=np.int64)
    has = np.zeros(Qp.shape[0], dtype=np.float64)
    for b in range(len(pptr) - 1):
        p0, p1, q0, q1 = pptr[b], pptr[b + 1], qptr[b], qptr[b + 1]
        if p1 > p0 and q1 > q0:
            idx[q0:q1] = cKDTree(P[p0:p1]).query(Qp[q0:q1])[1] + p0
            has[q0:q1] = 1.0
    return (torch.from_numpy(idx).to(queries.device),
            torch.from_numpy(has).to(device=queries.device, dtype=queries.dtype))


class GINO(nn.Module):
    """GNO encoder -> FNO (box) / SFNO (sphere) latent -> GNO decoder, for batches of
    geometries of different sizes (see the module docstring for the maths).

    Parameters
    ----------
    in_channels : width of the input point features ``x``; None (default): the total width
        of ``encoder.inputs`` (0 without inputs: geometry only, the encoder kernel is then
        ``"kernel_only"``). When given with ``encoder.inputs`` it must equal their width.
    out_channels : width of the output fields
    coord_dim : dimension d of the points (3 for a sphere latent)
    latent : :class:`~geoop.models.config.BoxLatent` (default: 16 nodes per axis over the
        unit cube) or :class:`~geoop.models.config.SphereLatent`, a dict, or ``"box"``/``"sphere"``;
        its ``features`` (``["sdf"]``) are computed by the model from the input geometry
    encoder : :class:`~geoop.models.config.EncoderSpec` (radius, kernel, reduction, point
        ``inputs`` by name, ...)
    blocks : :class:`~geoop.models.config.FNOSpec` (box) / :class:`~geoop.models.config.SFNOSpec`
        (sphere): width, modes, layers, activation of every MLP, projection width
    decoder : :class:`~geoop.models.config.GNOSpec`
    local : :class:`~geoop.models.config.LocalSpec`, sub-grid features of the queries (step 5
        of the module docstring); default off
    memory : :class:`~geoop.models.config.MemorySpec`: edge chunks and recomputation in
        backward (the encoder's per-edge activations by default; the decoder's above
        ``checkpoint_edges`` edges; the latent blocks' with ``checkpoint_latent``)
    **legacy : the flat keywords of the first release (``fno_modes=8``, ``radius_in=0.1``,
        ...; :data:`geoop.models.config.LEGACY_KEYS` maps each to its section), accepted
        with a :class:`DeprecationWarning`; not together with the nested sections they map to

    ``config`` holds the nested configuration (plain types, None left out; it round-trips
    through JSON, TOML and YAML); :meth:`from_config` rebuilds the model.

    Example
    -------
    >>> import torch, geoop
    >>> from geoop.models import GINO
    >>> from geoop.models.config import BoxLatent, EncoderSpec, FNOSpec, GNOSpec
    >>> model = GINO(out_channels=1, coord_dim=2,
    ...              latent=BoxLatent(shape=(16, 16)),
    ...              encoder=EncoderSpec(radius="1.5 cells", inputs=["normals"]),
    ...              blocks=FNOSpec(width=8, modes=4, layers=2),
    ...              decoder=GNOSpec(radius_cells=1.5))
    >>> model.in_channels, round(model.radius_in, 4)
    (2, 0.1)
    >>> GINO.from_config(model.config).config == model.config
    True
    """

    def __init__(
        self,
        in_channels: Optional[int] = None,
        out_channels: int = 1,
        coord_dim: int = 3,
        latent: Union[None, str, Mapping, BoxLatent, SphereLatent] = None,
        encoder: Union[None, Mapping, EncoderSpec] = None,
        blocks: Union[None, Mapping, FNOSpec, SFNOSpec] = None,
        decoder: Union[None, Mapping, GNOSpec] = None,
        local: Union[None, Mapping, LocalSpec] = None,
        memory: Union[None, Mapping, MemorySpec] = None,
        **legacy,
    ):
        super().__init__()
        sections = {"encoder": encoder, "blocks": blocks, "decoder": decoder, "local": local, "memory": memory}
        if legacy:
            flat = from_flat(latent, legacy)
            clash = sorted(s for s, v in flat.items() if v and s != "latent" and sections.get(s) is not None)
            clash += ["latent"] if len(flat["latent"]) > 1 and not (latent is None or isinstance(latent, str)) else []
            if clash:
                raise ConfigError(f"GINO: flat keywords {sorted(legacy)} and the nested sections {clash} they map to "
                                  "were both given; use the nested sections only")
            moves = ", ".join(f"{k} -> {LEGACY_KEYS[k][0]}.{LEGACY_KEYS[k][1]}" for k in sorted(legacy))
            warnings.warn(f"GINO: flat keywords are deprecated, use the nested sections (geoop.models.config): {moves}",
                          DeprecationWarning, stacklevel=2)
            if latent is None or isinstance(latent, str):
                latent = flat["latent"]
            for s in sections:
                if sections[s] is None and flat[s]:
                    sections[s] = flat[s]
        lat = latent_spec(latent)
        enc_s = spec(EncoderSpec, sections["encoder"])
        blk_s = blocks_spec(sections["blocks"], lat)
        dec_s = spec(GNOSpec, sections["decoder"])
        loc_s = spec(LocalSpec, sections["local"])
        mem_s = spec(MemorySpec, sections["memory"])
        self.specs = {"latent": lat, "encoder": enc_s, "blocks": blk_s, "decoder": dec_s, "local": loc_s, "memory": mem_s}

        self.coord_dim = int(coord_dim)
        if self.coord_dim not in (1, 2, 3):
            raise ConfigError(f"GINO: coord_dim must be 1, 2 or 3, got {coord_dim}")
        from .features import parse_point_feature

        self.point_inputs = tuple(enc_s.inputs)
        width_in = sum(parse_point_feature(f).width(self.coord_dim) for f in self.point_inputs)
        if in_channels is None:
            in_channels = width_in
        elif self.point_inputs and int(in_channels) != width_in:
            raise ConfigError(f"GINO: in_channels={in_channels} but encoder.inputs {list(self.point_inputs)} are "
                              f"{width_in} wide; leave in_channels out to derive it")
        self.latent_feature_names = tuple(lat.features)
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.latent = lat.kind
        self.latent_channels = len(lat.features) + int(lat.channels)
        self.search_backend = dec_s.search_backend
        self.encoder_search_backend = enc_s.search_backend
        if self.in_channels < 0 or self.out_channels < 1:
            raise ConfigError(f"GINO: need in_channels >= 0 and out_channels >= 1; got {in_channels}, {out_channels}")
        width = int(blk_s.width)
        activation = blk_s.activation

        if self.latent == "box":
            shape = tuple(int(n) for n in (lat.shape or (16,) * self.coord_dim))
            if len(shape) != self.coord_dim:
                raise ConfigError(f"GINO: latent shape {shape} must have coord_dim={self.coord_dim} axes for a box latent")
            domain = lat.domain if lat.domain is not None else [[0.0] * self.coord_dim, [1.0] * self.coord_dim]
            dom = torch.as_tensor(domain, dtype=torch.float64)
            if dom.shape != (2, self.coord_dim):
                raise ConfigError(f"GINO: latent domain must be (lower, upper) corners of shape (2, {self.coord_dim}), got {tuple(dom.shape)}")
            from ..neighbors.grid import grid_points

            pts = grid_points(shape, dom, dtype=torch.float32)
            vol = float(torch.prod(dom[1] - dom[0]))
            wts = torch.full((pts.shape[0],), vol / pts.shape[0])
            self.domain = dom.tolist()
            from ..nn.fno import FNOBlocks

            fno_modes = blk_s.modes
            modes = fno_modes if isinstance(fno_modes, (tuple, list)) else (int(fno_modes),) * self.coord_dim
            start = None
            if blk_s.incremental is not None:  # the final modes must fit the grid (2m points per axis)
                start = IncrementalSpec.from_dict(blk_s.incremental).start_modes(modes)
                need = tuple(2 * int(m) for m in modes)
                if len(need) != len(shape) or any(n < k for n, k in zip(shape, need)):
                    raise ConfigError(f"GINO: blocks.incremental grows the modes to blocks.modes={list(modes)}, which "
                                      f"need a latent grid of at least {list(need)} points; latent.shape is {list(shape)}")
            self.blocks = FNOBlocks(width, tuple(int(m) for m in modes), int(blk_s.layers), act=activation,
                                    checkpoint=mem_s.checkpoint_latent, active_modes=start, **blk_s.block_kwargs())
        else:
            if self.coord_dim != 3:
                raise ConfigError(f"GINO: latent='sphere' needs coord_dim=3, got {coord_dim}")
            shape = tuple(int(n) for n in lat.shape)
            grid = resolve_sphere_grid(lat.grid, "GINO sphere grid")
            pts, wts = sphere_grid_points(shape[0], shape[1], grid)
            self.domain = None
            from ..nn.sfno import SFNOBlocks, default_lmax

            start = None
            if blk_s.incremental is not None:  # start degrees within the grid's (or the given) lmax
                lmax = default_lmax(shape[0], grid) if blk_s.lmax is None else int(blk_s.lmax)
                start = IncrementalSpec.from_dict(blk_s.incremental).start_modes((lmax,), final_key="lmax")[0]
            self.blocks = SFNOBlocks(width, shape[0], shape[1], int(blk_s.layers), grid=grid, act=activation,
                                     checkpoint=mem_s.checkpoint_latent, active_lmax=start, **blk_s.block_kwargs())
        self.sphere_grid = None if self.latent == "box" else lat.grid
        self.latent_shape = shape
        self.num_latent = int(pts.shape[0])
        self.register_buffer("_latent_points", pts, persistent=False)
        self.register_buffer("_latent_weights", wts, persistent=False)
        self.radius_in = resolve_radius(enc_s, lat, self.coord_dim, 0.1)
        self.radius_out = resolve_radius(dec_s, lat, self.coord_dim, 0.1)
        self.config = {"in_channels": self.in_channels, "out_channels": self.out_channels, "coord_dim": self.coord_dim,
                       **{k: s.to_dict() for k, s in self.specs.items()}}

        kin = enc_s.kernel if enc_s.kernel is not None else ("linear" if self.in_channels else "kernel_only")
        kin = resolve_choice(kin, GNO_KERNELS, "GINO encoder kernel")
        if self.in_channels == 0 and kin != "kernel_only":
            raise ConfigError(f"GINO: in_channels=0 needs encoder kernel 'kernel_only' (or None), got {enc_s.kernel!r}")
        if self.in_channels > 0 and kin == "kernel_only":
            raise ConfigError(f"GINO: encoder kernel 'kernel_only' ignores the {in_channels} input channels; set in_channels=0")
        kout = resolve_choice(dec_s.kernel or "linear", ("linear", "nonlinear"), "GINO decoder kernel")
        enc = int(enc_s.channels) if enc_s.channels else width

        def common(s):
            return dict(coord_dim=self.coord_dim, mlp_hidden=tuple(s.mlp), pos_embed=s.pos_embed, n_freqs=s.n_freqs,
                        activation=activation, chunk_edges=mem_s.chunk_edges, checkpoint_edges=mem_s.checkpoint_edges)

        self.gno_in = GNO(self.in_channels, enc, radius=self.radius_in, kernel=kin, reduction=enc_s.reduction,
                          checkpoint=True if mem_s.checkpoint_encoder else "auto", **common(enc_s))
        self.gno_out = GNO(width, width, radius=self.radius_out, kernel=kout, reduction=dec_s.reduction, **common(dec_s))
        self.lifting = MLP(enc + self.latent_channels + self.coord_dim, width, (2 * width,), act=activation)
        self.local_radius = resolve_radius(loc_s, lat, self.coord_dim, 0.0)
        self.local_nearest = bool(loc_s.nearest)
        self.gno_local = None
        extra = 0
        if self.local_radius > 0:
            self.gno_local = GNO(self.in_channels, int(loc_s.channels), radius=self.local_radius,
                                 kernel="nonlinear" if self.in_channels else "kernel_only", reduction="mean", **common(dec_s))
            extra += int(loc_s.channels)
        if self.local_nearest:
            extra += self.coord_dim + 1 + self.in_channels
        self.projection = MLP(width + extra, self.out_channels, (int(blk_s.projection_hidden or 2 * width),), act=activation)

    # ------------------------------------------------------------------ config
    @classmethod
    def from_config(cls, config: Mapping) -> "GINO":
        """Rebuild a model from :attr:`config` (nested; a flat config of the first release is
        accepted with a DeprecationWarning). Unknown keys raise :class:`ConfigError` naming
        the valid ones."""
        if not isinstance(config, Mapping):
            raise ConfigError(f"GINO.from_config: expected a mapping, got {type(config).__name__}")
        valid = {"in_channels", "out_channels", "coord_dim", "latent", "encoder", "blocks", "decoder", "local", "memory"}
        unknown = set(config) - valid - set(LEGACY_KEYS)
        if unknown:
            raise ConfigError(f"GINO.from_config: unknown keys {sorted(unknown)}; valid keys: {sorted(valid)}")
        return cls(**config)

    #: top-level keys of :attr:`config`
    CONFIG_KEYS = ("in_channels", "out_channels", "coord_dim", "latent", "encoder", "blocks", "decoder", "local", "memory")

    @classmethod
    def check_config(cls, config: Mapping, where: str = "GINO config") -> None:
        """Validate a (nested or flat) config without building the model: unknown keys and
        bad values raise :class:`ConfigError` prefixed with ``where`` (e.g. the file and
        section), naming the valid keys. A nested latent (``kind = "nested"``) is checked as
        :class:`~geoop.models.nested.NestedGINO`'s config."""
        if isinstance(config, Mapping) and "ensemble" in config:  # [model] ensemble = K: members of this config
            from .ensemble import ensemble_spec

            ensemble_spec(config["ensemble"], f"{where}: ensemble")
            config = {k: v for k, v in config.items() if k != "ensemble"}
        lat = config.get("latent") if isinstance(config, Mapping) else None
        if isinstance(lat, Mapping) and lat.get("kind") == "nested":
            from .nested import NestedGINO  # the nested model is built from GINOs, above this module

            return NestedGINO.check_config(dict(config), where)
        unknown = sorted(set(config) - set(cls.CONFIG_KEYS) - set(LEGACY_KEYS))
        if unknown:
            raise ConfigError(f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {unknown}; valid keys: "
                              f"{list(cls.CONFIG_KEYS)} (deprecated flat keys: {sorted(LEGACY_KEYS)})")
        try:
            lat = latent_spec(config.get("latent")) if not isinstance(config.get("latent"), str) else None
            for key, kind in (("encoder", EncoderSpec), ("decoder", GNOSpec), ("local", LocalSpec), ("memory", MemorySpec)):
                if isinstance(config.get(key), Mapping):
                    kind.from_dict(config[key])
            if isinstance(config.get("blocks"), Mapping) and lat is not None:
                blocks_spec(config["blocks"], lat)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None

    def cache_key(self) -> dict:
        """What determines this model's neighbourhoods and computed latent features (for
        on-disk caches)."""
        key = {
            "model": "GINO", "coord_dim": self.coord_dim, "latent": self.latent,
            "latent_shape": list(self.latent_shape), "domain": self.domain,
            "sphere_grid": self.sphere_grid, "radius_in": self.radius_in,
            "radius_out": self.radius_out,
        }
        if self.latent_feature_names:
            key["latent_features"] = list(self.latent_feature_names)
        return key

    # ------------------------------------------------------------------ latent grid
    def latent_points(self) -> Tensor:
        """(G, d) latent nodes (C order over ``latent_shape``), a copy."""
        return self._latent_points.clone()

    def latent_weights(self) -> Tensor:
        """(G,) quadrature weights of the latent nodes (box: volume / G; sphere: sum 4 pi)."""
        return self._latent_weights.clone()

    def _latent_rep(self, num_samples: int, dtype) -> Tensor:
        return self._latent_points.to(dtype).repeat(num_samples, 1)

    def _latent_batch(self, num_samples: int) -> Tensor:
        return torch.arange(num_samples, device=self._latent_points.device).repeat_interleave(self.num_latent)

    # ------------------------------------------------------------------ neighbourhoods
    def neighbors_in(self, points: Tensor, point_batch: Optional[Tensor] = None, num_samples: int = 1) -> Neighborhoods:
        """Input points -> latent nodes: Neighborhoods over the ``num_samples * G`` latent nodes
        (sample-major) with indices into ``points`` (grid search for a box latent)."""
        if self.latent == "box":
            from ..neighbors.grid import radius_search_grid

            nb = radius_search_grid(points, self.latent_shape, self.domain, self.radius_in,
                                    point_batch=point_batch if num_samples > 1 else None,
                                    num_batches=num_samples if num_samples > 1 else None)
        else:
            from ..neighbors.search import radius_search

            lat = self._latent_rep(num_samples, points.dtype)
            if num_samples > 1:
                nb = radius_search(points, lat, self.radius_in, point_batch, self._latent_batch(num_samples), backend=self.search_backend)
            else:
                nb = radius_search(points, lat, self.radius_in, backend=self.search_backend)
        nb.num_sources = int(points.shape[0])
        return nb

    def neighbors_out(self, queries: Tensor, query_batch: Optional[Tensor] = None, num_samples: int = 1) -> Neighborhoods:
        """Latent nodes -> queries: Neighborhoods over the queries with indices into the
        ``num_samples * G`` latent nodes."""
        if self.latent == "box" and self.search_backend == "auto":
            # the grid search point by point: the same pairs as a tree search, no tree, no sort
            from ..neighbors.grid import radius_search_grid

            return radius_search_grid(queries, self.latent_shape, self.domain, self.radius_out,
                                      point_batch=query_batch if num_samples > 1 else None,
                                      num_batches=num_samples, point_major=True)
        from ..neighbors.search import radius_search

        lat = self._latent_rep(num_samples, queries.dtype)
        if num_samples > 1:
            nb = radius_search(lat, queries, self.radius_out, self._latent_batch(num_samples), query_batch, backend=self.search_backend)
        else:
            nb = radius_search(lat, queries, self.radius_out, backend=self.search_backend)
        nb.num_sources = num_samples * self.num_latent
        return nb

    def precompute(self, sample: Sample, decoder: bool = True) -> Sample:
        """A copy of ``sample`` with ``neighbors_in`` (G latent nodes -> its N input points),
        ``neighbors_out`` (its queries, or its input points when it has no queries -> G
        latent nodes; left as it is with ``decoder=False``, e.g. when the queries are drawn
        afresh every step) and the model's computed latent features (``latent.features``,
        when the sample has none) filled in; ``GeometryBatch.from_samples`` concatenates them."""
        pts = sample.geometry.points
        q = sample.queries.points if sample.queries is not None else pts
        dev = self._latent_points.device
        with torch.no_grad():
            nin = self.neighbors_in(pts.to(dev)).to(pts.device)
            nout = self.neighbors_out(q.to(dev)).to(pts.device) if decoder else sample.neighbors_out
        lf = sample.latent_features
        if lf is None and self.latent_feature_names:
            lf = self.latent_features(sample.geometry)[0]
        return dataclasses.replace(sample, neighbors_in=nin, neighbors_out=nout, latent_features=lf)

    @staticmethod
    def select_queries(sample: Sample, rows: Tensor) -> Sample:
        """A precomputed sample (:meth:`precompute`) restricted to its queries ``rows`` (K,)
        (long indices, any order, repeats allowed), in that order, with ``neighbors_out``
        selected to match (:meth:`Neighborhoods.select`, no new search): for training loops
        that draw a subset of precomputed queries every step."""
        rows = torch.as_tensor(rows, dtype=torch.long)
        q = sample.queries if sample.queries is not None else sample.geometry
        nout = None if sample.neighbors_out is None else sample.neighbors_out.select(rows)
        return dataclasses.replace(sample, queries=q.select(rows), neighbors_out=nout)

    # ------------------------------------------------------------------ features by name
    def point_features(self, source: Union[GeometryBatch, Geometry]) -> Optional[Tensor]:
        """The point inputs ``encoder.inputs`` of a batch or a geometry, (ΣN, in_channels), or
        None when the model declares none (see :mod:`geoop.models.features`)."""
        from .features import point_features

        if not self.point_inputs:
            return None
        where = "GINO input" if isinstance(source, GeometryBatch) else (source._where().rstrip(": ") or "GINO input")
        return point_features(self.point_inputs, source.points, source.normals, source.fields, where)

    def latent_features(self, geometries: Union[Geometry, Sequence[Geometry]]) -> Optional[Tensor]:
        """The computed latent features ``latent.features`` of each geometry,
        (B, len(features), *latent_shape), or None when the model declares none."""
        from .features import latent_sdf

        if not self.latent_feature_names:
            return None
        geoms = [geometries] if isinstance(geometries, Geometry) else list(geometries)
        out = []
        for g in geoms:
            feats = [latent_sdf(self, g) for name in self.latent_feature_names if name == "sdf"]
            out.append(torch.cat(feats, 0))
        return torch.stack(out).to(self._latent_points.device)

    def _batch_latent_features(self, batch: GeometryBatch) -> Optional[Tensor]:
        if batch.latent_features is not None or not self.latent_feature_names:
            return batch.latent_features
        if self.latent_channels != len(self.latent_feature_names):
            raise ShapeError(f"GINO: the batch has no latent_features; the model computes {list(self.latent_feature_names)} "
                             f"but also takes {self.latent_channels - len(self.latent_feature_names)} hand-given channels")
        return self.latent_features(batch.unbatch()).to(batch.points.device)

    # ------------------------------------------------------------------ stages
    def encode(
        self,
        points: Tensor,
        x: Optional[Tensor] = None,
        weights: Optional[Tensor] = None,
        point_batch: Optional[Tensor] = None,
        num_samples: int = 1,
        neighbors_in: Optional[Neighborhoods] = None,
        latent_features: Optional[Tensor] = None,
    ) -> Tensor:
        """Encoder, lifting and latent blocks: (ΣN, d) points -> (B, fno_width, *latent_shape).

        Equal to :meth:`encode_finish` of :meth:`encode_partial`; the split lets the encoder's
        additive pieces be summed over shards of the input points first
        (:class:`geoop.distributed.DomainParallel`)."""
        sums, counts = self.encode_partial(points, x, weights, point_batch, num_samples, neighbors_in)
        return self.encode_finish(sums, counts, latent_features, num_samples)

    def encode_partial(
        self,
        points: Tensor,
        x: Optional[Tensor] = None,
        weights: Optional[Tensor] = None,
        point_batch: Optional[Tensor] = None,
        num_samples: int = 1,
        neighbors_in: Optional[Neighborhoods] = None,
    ) -> tuple[Tensor, Optional[Tensor]]:
        """The encoder GNO's additive pieces over the given input points: ``(sums (B*G, enc),
        counts (B*G,) or None)`` (see :meth:`geoop.nn.GNO.forward` with ``partial=True``).
        Pieces of disjoint subsets of a sample's points (with the whole sample's quadrature
        weights) add up to the pieces of the whole sample."""
        B, G = int(num_samples), self.num_latent
        dtype = self.lifting.net[0].weight.dtype
        if points.dim() != 2 or points.shape[1] != self.coord_dim:
            raise ShapeError(f"GINO: points must have shape (N, {self.coord_dim}), got {tuple(points.shape)}")
        n = points.shape[0]
        if self.in_channels == 0:
            if x is not None:
                raise ShapeError(f"GINO: in_channels=0 takes no input features, got x of shape {tuple(x.shape)}")
        elif x is None or x.dim() != 2 or tuple(x.shape) != (n, self.in_channels):
            got = None if x is None else tuple(x.shape)
            raise ShapeError(f"GINO: x must have shape ({n}, {self.in_channels}) (one row per input point), got {got}")
        nb = neighbors_in if neighbors_in is not None else self.neighbors_in(points, point_batch, B)
        if nb.num_queries != B * G:
            raise ShapeError(f"GINO: neighbors_in must have B*G = {B}*{G} = {B * G} queries, got {nb.num_queries}")
        lat = self._latent_rep(B, dtype)
        w = None
        if self.gno_in.reduction == "weighted":
            if weights is None:
                raise ShapeError(f"GINO: gno_reduction_in='weighted' needs quadrature weights of shape ({n},)")
            w = weights.to(dtype)
        return self.gno_in(points.to(dtype), lat, nb, None if x is None else x.to(dtype), w, partial=True)

    def encode_finish(self, sums: Tensor, counts: Optional[Tensor] = None, latent_features: Optional[Tensor] = None,
                      num_samples: int = 1) -> Tensor:
        """Encoder output from its (summed) pieces, then lifting and latent blocks:
        -> (B, fno_width, *latent_shape)."""
        B, G = int(num_samples), self.num_latent
        dtype = self.lifting.net[0].weight.dtype
        u = GNO.finish(sums, counts)  # (B*G, enc)
        lat = self._latent_rep(B, dtype)
        feats = [u]
        if self.latent_channels:
            lf = latent_features
            exp = (B, self.latent_channels) + tuple(self.latent_shape)
            if lf is None or tuple(lf.shape) != exp:
                raise ShapeError(f"GINO: latent_features must have shape {exp}, got {None if lf is None else tuple(lf.shape)}")
            feats.append(lf.to(dtype).flatten(2).transpose(1, 2).reshape(B * G, self.latent_channels))
        elif latent_features is not None:
            raise ShapeError(f"GINO: latent_channels=0 but latent_features of shape {tuple(latent_features.shape)} were given")
        feats.append(lat)
        h = self.lifting(torch.cat(feats, 1))  # (B*G, W)
        h = h.view(B, G, -1).transpose(1, 2).reshape(B, -1, *self.latent_shape)
        return self.blocks(h)

    def decode(
        self,
        latent: Tensor,
        queries: Tensor,
        query_batch: Optional[Tensor] = None,
        neighbors_out: Optional[Neighborhoods] = None,
        points: Optional[Tensor] = None,
        x: Optional[Tensor] = None,
        point_batch: Optional[Tensor] = None,
        local: Optional[tuple] = None,
    ) -> Tensor:
        """Decoder and projection: latent (B, W, *grid) and (ΣQ, d) queries -> (ΣQ, out).

        ``points`` (ΣN, d), ``x`` (ΣN, in_channels) and ``point_batch`` (ΣN,) are the input
        points of the samples; only the local-geometry features need them (required when
        ``local_radius > 0`` or ``local_nearest``; ``point_batch`` and ``query_batch`` when B > 1).
        ``local``: their searches done beforehand (:meth:`local_neighbors`), else done here.
        """
        v = self.decode_latent(latent, queries, query_batch, neighbors_out)
        if self.gno_local is not None or self.local_nearest:
            B = latent.shape[0]
            v = torch.cat([v] + self._local_features(queries.to(latent.dtype), points, x, query_batch, point_batch, B, local), 1)
        return self.projection(v)

    def decode_latent(self, latent: Tensor, queries: Tensor, query_batch: Optional[Tensor] = None,
                      neighbors_out: Optional[Neighborhoods] = None) -> Tensor:
        """The decoder GNO alone: latent (B, W, *grid) -> (ΣQ, W) at the queries (no local
        features, no projection; :meth:`decode` adds them)."""
        B, G = latent.shape[0], self.num_latent
        if queries.dim() != 2 or queries.shape[1] != self.coord_dim:
            raise ShapeError(f"GINO: queries must have shape (Q, {self.coord_dim}), got {tuple(queries.shape)}")
        dtype = latent.dtype
        nb = neighbors_out if neighbors_out is not None else self.neighbors_out(queries, query_batch, B)
        if nb.num_queries != queries.shape[0]:
            raise ShapeError(f"GINO: neighbors_out has {nb.num_queries} queries, expected {queries.shape[0]}")
        h = latent.flatten(2).transpose(1, 2).reshape(B * G, -1)
        w = self._latent_weights.to(dtype).repeat(B) if self.gno_out.reduction == "weighted" else None
        return self.gno_out(self._latent_rep(B, dtype), queries.to(dtype), nb, h, w)

    def local_neighbors(self, queries: Tensor, points: Tensor, query_batch: Optional[Tensor] = None,
                        point_batch: Optional[Tensor] = None, num_samples: int = 1) -> tuple:
        """The searches of the local-geometry features (module docstring, step 5), no gradient:
        ``(nb, nearest)`` with ``nb`` the local branch's Neighborhoods (queries -> input
        points; None without the branch) and ``nearest = (index (ΣQ,), has (ΣQ,))`` of
        :func:`_nearest` (None without ``local_nearest``). ``decode(..., local=...)`` takes
        them, so a compiled or graph-captured decoder runs no search."""
        dtype = queries.dtype
        pts = points.to(dtype)
        pb, qb = (point_batch, query_batch) if num_samples > 1 else (None, None)
        nb = nearest = None
        if self.gno_local is not None:
            from ..neighbors.search import radius_search

            with torch.no_grad():
                nb = radius_search(pts, queries, self.local_radius, pb, qb, backend=self.search_backend)
            nb.num_sources = int(pts.shape[0])
        if self.local_nearest:
            nearest = _nearest(pts, queries, pb, qb, num_samples)
        return nb, nearest

    def _local_features(self, queries: Tensor, points: Optional[Tensor], x: Optional[Tensor],
                        query_batch: Optional[Tensor], point_batch: Optional[Tensor], B: int,
                        local: Optional[tuple] = None) -> list:
        """Local-geometry features of the queries (module docstring, step 5): a list of
        (ΣQ, local_channels) and/or (ΣQ, d + 1 + in_channels) tensors. ``local``: the result
        of :meth:`local_neighbors` (searched here when None)."""
        if points is None or points.dim() != 2 or points.shape[1] != self.coord_dim:
            got = None if points is None else tuple(points.shape)
            raise ShapeError(f"GINO: local_radius/local_nearest need the input points (N, {self.coord_dim}) in decode, got {got}")
        if self.in_channels and (x is None or tuple(x.shape) != (points.shape[0], self.in_channels)):
            raise ShapeError(f"GINO: local features need x of shape ({points.shape[0]}, {self.in_channels}), "
                             f"got {None if x is None else tuple(x.shape)}")
        if local is None:
            if B > 1 and (point_batch is None or query_batch is None):
                raise ShapeError("GINO: local features of a batch of several samples need point_batch and query_batch")
            local = self.local_neighbors(queries, points, query_batch, point_batch, B)
        dtype = queries.dtype
        pts = points.to(dtype)
        xf = None if not self.in_channels else x.to(dtype)
        nb, nearest = local
        out = []
        if self.gno_local is not None:
            out.append(self.gno_local(pts, queries, nb, xf))
        if self.local_nearest:
            s = self.local_radius if self.local_radius > 0 else self.radius_out
            idx, has = nearest
            off = (queries - pts[idx]) * has[:, None]
            d2 = off.square().sum(1, keepdim=True)
            pos = d2 > 0
            dist = torch.where(pos, d2, torch.ones_like(d2)).sqrt() * pos  # no NaN gradient at 0
            feats = [off / s, dist / s]
            if xf is not None:
                feats.append(xf[idx] * has[:, None])
            out.append(torch.cat(feats, 1))
        return out

    # ------------------------------------------------------------------ forward
    def forward(self, batch: GeometryBatch, x: Optional[Tensor] = None) -> Tensor:
        """Predict the output fields at the queries of every sample of ``batch``.

        Parameters
        ----------
        batch : GeometryBatch of B samples (any numbers of points and queries)
        x : (ΣN, in_channels) input features on ``batch.points``; None (default): assembled
            from the batch by the model's ``encoder.inputs`` (:meth:`point_features`), or none
            when ``in_channels == 0``. Latent features come from ``batch.latent_features``, or
            are computed for the model's ``latent.features`` when the batch has none.

        Returns
        -------
        (ΣQ, out_channels); split per sample with ``batch.split_queries``.
        """
        if not isinstance(batch, GeometryBatch):
            raise ShapeError(f"GINO.forward: expected a GeometryBatch, got {type(batch).__name__}")
        B = batch.num_samples
        if x is None and self.point_inputs:
            x = self.point_features(batch)
        lf = self._batch_latent_features(batch)
        latent = self.encode(batch.points, x, batch.weights, batch.batch, B, batch.neighbors_in, lf)
        return self.decode(latent, batch.queries, batch.query_batch, batch.neighbors_out, batch.points, x, batch.batch)

    def query(
        self,
        geometry: Union[Geometry, Tensor],
        points: Tensor,
        x: Optional[Tensor] = None,
        chunk_size: int = 65536,
        latent_features: Optional[Tensor] = None,
        check_extrapolation: bool = False,
    ) -> Tensor:
        """Answer at any number of query points with bounded memory: encode the geometry and
        run the latent blocks once, then decode ``chunk_size`` queries at a time.

        Runs in the caller's autograd mode (wrap in ``torch.no_grad()`` for inference; with
        gradients the graph of every chunk is kept).

        Parameters
        ----------
        geometry : the input Geometry (its quadrature weights are used by a weighted
            encoder) or its (N, d) points
        points : (Q, d) query points (tensor or array)
        x : (N, in_channels) input features; None (default): assembled from ``geometry`` by
            the model's ``encoder.inputs``, or none when ``in_channels == 0``
        latent_features : (latent_channels, *latent_shape); None (default): the model's
            ``latent.features`` computed from ``geometry``, or none
        check_extrapolation : also report the fractions of query and input points outside
            the latent window and of latent nodes with empty encoder balls
            (:func:`geoop.models.extrapolation.extrapolation_report`, kept as
            ``self.last_extrapolation``) and warn (``ExtrapolationWarning``) above the
            threshold training uses; default False (one more encoder search)

        Returns
        -------
        (Q, out_channels)

        Example
        -------
        >>> import torch, geoop
        >>> from geoop.models import GINO
        >>> model = GINO(out_channels=2, coord_dim=2, blocks={"width": 8, "modes": 4, "layers": 1},
        ...              encoder={"inputs": ["coords"]})
        >>> surface = geoop.Geometry(torch.rand(100, 2))
        >>> with torch.no_grad():
        ...     y = model.query(surface, torch.rand(1000, 2), chunk_size=256)
        >>> y.shape
        torch.Size([1000, 2])
        """
        pts, w = points_and_weights(geometry)
        q = torch.as_tensor(points, device=pts.device)
        for what, t, n in (("points", q, "Q"), ("geometry points", pts, "N")):  # before any encoding work
            if t.dim() != 2 or t.shape[1] != self.coord_dim:
                raise ShapeError(f"GINO.query: {what} must have shape ({n}, {self.coord_dim}), got {tuple(t.shape)}")
            if not torch.isfinite(t).all():
                bad = int((~torch.isfinite(t)).any(1).sum())
                raise ShapeError(f"GINO.query: {what} must be finite, got {bad} of {t.shape[0]} rows with NaN/Inf")
        if check_extrapolation:
            from .extrapolation import extrapolation_report, warn_extrapolation

            self.last_extrapolation = extrapolation_report(self, pts, q)
            warn_extrapolation(self.last_extrapolation, "GINO.query")
        if x is None and self.point_inputs:
            if not isinstance(geometry, Geometry):
                raise ShapeError(f"GINO.query: the model's inputs {list(self.point_inputs)} are taken from a Geometry; "
                                 "got bare points (pass a Geometry, or x=)")
            x = self.point_features(geometry)
        if latent_features is None and self.latent_feature_names:
            if not isinstance(geometry, Geometry):
                raise ShapeError(f"GINO.query: the latent features {list(self.latent_feature_names)} are computed from a "
                                 "Geometry; got bare points (pass a Geometry, or latent_features=)")
            latent_features = self.latent_features(geometry)[0].to(pts.device)
        lf = None if latent_features is None else latent_features.unsqueeze(0)
        latent = self.encode(pts, x, w, None, 1, None, lf)
        cs = max(1, int(chunk_size))
        outs = [self.decode(latent, q[i : i + cs], points=pts, x=x) for i in range(0, q.shape[0], cs)]
        if not outs:
            return latent.new_zeros((0, self.out_channels))
        return torch.cat(outs)
