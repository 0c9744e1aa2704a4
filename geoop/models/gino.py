r"""GINO: geometry-informed neural operator (GNO encoder -> FNO/SFNO latent -> GNO decoder).

Li et al., "Geometry-Informed Neural Operator for Large-Scale 3D PDEs" (NeurIPS 2023).

For a sample with input points :math:`y_j` (features :math:`f_j`, quadrature weights
:math:`w_j`) and query points :math:`x`:

1. **Encoder** (GNO, :class:`geoop.nn.GNO`): for every latent node :math:`z_g`,
   :math:`u(z_g) = \bigoplus_{y_j \in B_{r_{in}}(z_g)} k_{in}(z_g, y_j, f_j)[\odot W f_j]`.
   A node whose ball holds no input point gets exactly 0 (so a sample with no input point in
   any latent ball has an all-zero encoding; the output is still finite).
2. **Lifting**: a pointwise MLP of :math:`[u(z_g), c(z_g), z_g]` (with optional latent
   features :math:`c`, e.g. an SDF) to ``fno_width`` channels.
3. **Latent operator**: ``fno_layers`` FNO blocks on the box grid (``latent="box"``) or SFNO
   blocks on the equiangular / Gauss lat-lon grid of the unit sphere (``latent="sphere"``),
   run once on the stacked ``(B, C, *grid)`` tensor of all samples.
4. **Decoder** (GNO): :math:`v(x) = \bigoplus_{z_g \in B_{r_{out}}(x)} k_{out}(x, z_g)\odot h(z_g)`.
5. **Local geometry** (opt-in, ``local_radius > 0`` and/or ``local_nearest``): features of
   each query computed from the sample's own input points at sub-grid resolution,
   concatenated to :math:`v(x)`:

   * ``local_radius > 0``: a second, small-radius GNO straight from the input points,
     :math:`l(x) = \mathrm{mean}_{y_j \in B_{r_{loc}}(x)} k_{loc}(x, y_j, f_j)`
     (``local_channels`` wide, 0 where the ball is empty);
   * ``local_nearest``: the offset to the nearest input point :math:`y^*(x)` and its length,
     in units of :math:`s` (``local_radius``, else ``radius_out``), and its features:
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
import math
from typing import Any, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from ..batch import GeometryBatch, Sample
from ..errors import ConfigError, ShapeError
from ..geometry.geometry import Geometry
from ..neighbors.neighborhoods import Neighborhoods
from ..nn.gno import GNO, GNO_KERNELS, resolve_choice
from ..nn.mlp import MLP
from ..nn.sfno import SPHERE_GRIDS, resolve_sphere_grid, sphere_grid_points  # noqa: F401  (re-exported)

__all__ = ["GINO", "LATENT_KINDS", "SPHERE_GRIDS", "sphere_grid_points"]

LATENT_KINDS = ("box", "sphere")


def _jsonable(v: Any) -> Any:
    if isinstance(v, (tuple, list)):
        return [_jsonable(a) for a in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(a) for k, a in v.items()}
    if isinstance(v, Tensor):
        return _jsonable(v.tolist())
    return v


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
    in_channels : width of the input point features ``x`` (0: geometry only, the encoder
        kernel is then ``"kernel_only"``)
    out_channels : width of the output fields
    coord_dim : dimension d of the points (3 for a sphere latent)
    latent : ``"box"`` or ``"sphere"``
    latent_shape : grid size per axis (box, default ``(16,) * d``) or ``(nlat, nlon)``
        (sphere, default ``(16, 32)``)
    radius_in, radius_out : radii of the encoder and decoder balls
    latent_channels : width of extra latent features (e.g. SDF), given as ``(B, C, *grid)``
    fno_width, fno_modes, fno_layers : latent width, retained modes (int or per-axis tuple,
        ``FNOBlocks`` convention: ``m`` modes per corner, i.e. ``2m`` frequencies on every
        axis but the last; neuraloperator's ``n_modes=2m`` keeps about the same set) and number
        of blocks (box latent; a sphere latent passes ``fno_kwargs`` such as ``lmax``)
    gno_mlp : hidden widths of both GNO kernel MLPs
    gno_kernel_in : encoder kernel, default ``"linear"`` (``"kernel_only"`` when
        ``in_channels == 0``); gno_kernel_out: decoder kernel, ``"linear"`` or ``"nonlinear"``
    gno_reduction_in, gno_reduction_out : ``"mean"`` (default), ``"weighted"`` (input
        quadrature weights / latent grid quadrature weights) or ``"sum"``
    gno_channels : encoder output width (default ``fno_width``)
    pos_embed, n_freqs : positional embedding of the GNO coordinates
    activation : activation of every MLP
    domain : ``(lower (d,), upper (d,))`` corners of the box latent grid, default unit cube
    chunk_size : max edges per GNO chunk (bounds the memory of the edge MLP)
    projection_hidden : hidden width of the projection MLP (default ``2 * fno_width``)
    sphere_grid : ``"equiangular"`` or ``"legendre-gauss"``
    fno_kwargs : extra keyword arguments of ``FNOBlocks`` / ``SFNOBlocks``
    search_backend : backend of :func:`geoop.radius_search` when neighbourhoods are computed
    local_radius : radius of the local GNO branch from the input points to the queries (step
        5 of the module docstring); 0 (default) leaves it out
    local_channels : output width of that branch
    local_nearest : append the nearest-input-point features (step 5); default off
    checkpoint_encoder : in training, recompute the encoder's per-edge kernel MLP chunk by
        chunk in backward instead of keeping its ``(E_in, hidden)`` activations (default):
        they would stay alive through the whole latent and decoder backward, when every
        spectral weight gradient is allocated too. Measured on the car step of
        ``benchmarks/gino.py`` (45k encoder edges): live-tensor peak 129 -> 99 MiB for about
        9 % more step time. First-order gradients only through the encoder (set False for
        double backward).
    checkpoint_edges : in training, the decoder (and the local branch; the encoder too when
        ``checkpoint_encoder=False``) recomputes its edge MLP chunk by chunk in backward when
        a call has more than this many edges, and keeps the ``(E, hidden)`` activations
        otherwise (about ``6 * 4 * hidden`` bytes per edge in float32). The default, 2^19,
        keeps them for a single car-sized sample and most batches; 0 always recomputes.
        Measured (``benchmarks/gino.py``'s batch of 8 cars, 495k decoder edges, CPU, 1
        thread): live-tensor peak 884 -> 238 MiB for about 6 % more step time with 0 (-1 to
        +11 % over four runs).

    ``config`` holds the constructor arguments (JSON-serialisable); :meth:`from_config`
    rebuilds the model.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        coord_dim: int = 3,
        latent: str = "box",
        latent_shape: Optional[Sequence[int]] = None,
        radius_in: float = 0.1,
        radius_out: float = 0.1,
        latent_channels: int = 0,
        fno_width: int = 32,
        fno_modes: Union[int, Sequence[int]] = 8,
        fno_layers: int = 4,
        gno_mlp: Sequence[int] = (64, 64),
        gno_kernel_in: Optional[str] = None,
        gno_kernel_out: str = "linear",
        gno_reduction_in: str = "mean",
        gno_reduction_out: str = "mean",
        gno_channels: Optional[int] = None,
        pos_embed: Optional[str] = "nerf",
        n_freqs: int = 8,
        activation: str = "gelu",
        domain: Optional[Sequence[Sequence[float]]] = None,
        chunk_size: int = 1 << 14,
        projection_hidden: Optional[int] = None,
        sphere_grid: str = "equiangular",
        fno_kwargs: Optional[dict] = None,
        search_backend: str = "auto",
        local_radius: float = 0.0,
        local_channels: int = 16,
        local_nearest: bool = False,
        checkpoint_encoder: bool = True,
        checkpoint_edges: int = 1 << 19,
    ):
        super().__init__()
        self.config = _jsonable({k: v for k, v in locals().items() if k not in ("self", "__class__")})
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.coord_dim = int(coord_dim)
        self.latent = resolve_choice(latent, LATENT_KINDS, "GINO latent")
        self.radius_in, self.radius_out = float(radius_in), float(radius_out)
        self.latent_channels = int(latent_channels)
        self.search_backend = search_backend
        if self.in_channels < 0 or self.out_channels < 1 or self.latent_channels < 0:
            raise ConfigError(
                f"GINO: need in_channels >= 0, out_channels >= 1, latent_channels >= 0; got "
                f"{in_channels}, {out_channels}, {latent_channels}"
            )
        if self.coord_dim not in (1, 2, 3):
            raise ConfigError(f"GINO: coord_dim must be 1, 2 or 3, got {coord_dim}")
        width = int(fno_width)
        fno_kwargs = dict(fno_kwargs or {})

        if self.latent == "box":
            shape = tuple(int(n) for n in (latent_shape or (16,) * self.coord_dim))
            if len(shape) != self.coord_dim:
                raise ConfigError(f"GINO: latent_shape {shape} must have coord_dim={self.coord_dim} axes for a box latent")
            if domain is None:
                domain = [[0.0] * self.coord_dim, [1.0] * self.coord_dim]
            dom = torch.as_tensor(domain, dtype=torch.float64)
            if dom.shape != (2, self.coord_dim):
                raise ConfigError(f"GINO: domain must be (lower, upper) corners of shape (2, {self.coord_dim}), got {tuple(dom.shape)}")
            from ..neighbors.grid import grid_points

            pts = grid_points(shape, dom, dtype=torch.float32)
            vol = float(torch.prod(dom[1] - dom[0]))
            wts = torch.full((pts.shape[0],), vol / pts.shape[0])
            self.domain = dom.tolist()
            from ..nn.fno import FNOBlocks

            modes = fno_modes if isinstance(fno_modes, (tuple, list)) else (int(fno_modes),) * self.coord_dim
            self.blocks = FNOBlocks(width, tuple(int(m) for m in modes), int(fno_layers), act=activation, **fno_kwargs)
        else:
            if self.coord_dim != 3:
                raise ConfigError(f"GINO: latent='sphere' needs coord_dim=3, got {coord_dim}")
            shape = tuple(int(n) for n in (latent_shape or (16, 32)))
            if len(shape) != 2:
                raise ConfigError(f"GINO: latent_shape for a sphere latent is (nlat, nlon), got {shape}")
            grid = resolve_sphere_grid(sphere_grid, "GINO sphere_grid")
            pts, wts = sphere_grid_points(shape[0], shape[1], grid)
            self.domain = None
            from ..nn.sfno import SFNOBlocks

            self.blocks = SFNOBlocks(width, shape[0], shape[1], int(fno_layers), grid=grid, **fno_kwargs)
        self.latent_shape = shape
        self.num_latent = int(pts.shape[0])
        self.register_buffer("_latent_points", pts, persistent=False)
        self.register_buffer("_latent_weights", wts, persistent=False)

        kin = gno_kernel_in if gno_kernel_in is not None else ("linear" if self.in_channels else "kernel_only")
        kin = resolve_choice(kin, GNO_KERNELS, "GINO gno_kernel_in")
        if self.in_channels == 0 and kin != "kernel_only":
            raise ConfigError(f"GINO: in_channels=0 needs gno_kernel_in='kernel_only' (or None), got {gno_kernel_in!r}")
        if self.in_channels > 0 and kin == "kernel_only":
            raise ConfigError(f"GINO: gno_kernel_in='kernel_only' ignores the {in_channels} input channels; set in_channels=0")
        kout = resolve_choice(gno_kernel_out, ("linear", "nonlinear"), "GINO gno_kernel_out")
        enc = int(gno_channels) if gno_channels else width
        if isinstance(checkpoint_edges, bool) or not isinstance(checkpoint_edges, int) or checkpoint_edges < 0:
            raise ConfigError(f"GINO: checkpoint_edges must be an int >= 0, got {checkpoint_edges!r}")
        common = dict(coord_dim=self.coord_dim, mlp_hidden=tuple(gno_mlp), pos_embed=pos_embed, n_freqs=n_freqs,
                      activation=activation, chunk_edges=chunk_size, checkpoint_edges=checkpoint_edges)
        self.gno_in = GNO(self.in_channels, enc, radius=self.radius_in, kernel=kin, reduction=gno_reduction_in,
                          checkpoint=True if checkpoint_encoder else "auto", **common)
        self.gno_out = GNO(width, width, radius=self.radius_out, kernel=kout, reduction=gno_reduction_out, **common)
        self.lifting = MLP(enc + self.latent_channels + self.coord_dim, width, (2 * width,), act=activation)
        self.local_radius, self.local_nearest = float(local_radius), bool(local_nearest)
        if not (self.local_radius >= 0.0 and math.isfinite(self.local_radius)):
            raise ConfigError(f"GINO: local_radius must be finite and >= 0, got {local_radius}")
        self.gno_local = None
        extra = 0
        if self.local_radius > 0:
            if int(local_channels) < 1:
                raise ConfigError(f"GINO: local_channels must be >= 1 with local_radius > 0, got {local_channels}")
            self.gno_local = GNO(self.in_channels, int(local_channels), radius=self.local_radius,
                                 kernel="nonlinear" if self.in_channels else "kernel_only", reduction="mean", **common)
            extra += int(local_channels)
        if self.local_nearest:
            extra += self.coord_dim + 1 + self.in_channels
        self.projection = MLP(width + extra, self.out_channels, (int(projection_hidden or 2 * width),), act=activation)

    # ------------------------------------------------------------------ config
    @classmethod
    def from_config(cls, config: dict) -> "GINO":
        """Rebuild a model from :attr:`config` (unknown keys raise :class:`ConfigError`)."""
        import inspect

        valid = set(inspect.signature(cls.__init__).parameters) - {"self"}
        unknown = set(config) - valid
        if unknown:
            raise ConfigError(f"GINO.from_config: unknown keys {sorted(unknown)}; valid keys: {sorted(valid)}")
        return cls(**config)

    def cache_key(self) -> dict:
        """What determines this model's neighbourhoods (for on-disk neighbourhood caches)."""
        return {
            "model": "GINO", "coord_dim": self.coord_dim, "latent": self.latent,
            "latent_shape": list(self.latent_shape), "domain": self.domain,
            "sphere_grid": self.config.get("sphere_grid"), "radius_in": self.radius_in,
            "radius_out": self.radius_out,
        }

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
        from ..neighbors.search import radius_search

        lat = self._latent_rep(num_samples, queries.dtype)
        if num_samples > 1:
            nb = radius_search(lat, queries, self.radius_out, self._latent_batch(num_samples), query_batch, backend=self.search_backend)
        else:
            nb = radius_search(lat, queries, self.radius_out, backend=self.search_backend)
        nb.num_sources = num_samples * self.num_latent
        return nb

    def precompute(self, sample: Sample) -> Sample:
        """A copy of ``sample`` with ``neighbors_in`` (G latent nodes -> its N input points)
        and ``neighbors_out`` (its queries, or its input points when it has no queries ->
        G latent nodes) filled in; ``GeometryBatch.from_samples`` concatenates them."""
        pts = sample.geometry.points
        q = sample.queries.points if sample.queries is not None else pts
        with torch.no_grad():
            nin = self.neighbors_in(pts.to(self._latent_points.device))
            nout = self.neighbors_out(q.to(self._latent_points.device))
        nin, nout = nin.to(pts.device), nout.to(pts.device)
        return dataclasses.replace(sample, neighbors_in=nin, neighbors_out=nout)

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
        """Encoder, lifting and latent blocks: (ΣN, d) points -> (B, fno_width, *latent_shape)."""
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
        u = self.gno_in(points.to(dtype), lat, nb, None if x is None else x.to(dtype), w)  # (B*G, enc)
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
        B, G = latent.shape[0], self.num_latent
        if queries.dim() != 2 or queries.shape[1] != self.coord_dim:
            raise ShapeError(f"GINO: queries must have shape (Q, {self.coord_dim}), got {tuple(queries.shape)}")
        dtype = latent.dtype
        nb = neighbors_out if neighbors_out is not None else self.neighbors_out(queries, query_batch, B)
        if nb.num_queries != queries.shape[0]:
            raise ShapeError(f"GINO: neighbors_out has {nb.num_queries} queries, expected {queries.shape[0]}")
        h = latent.flatten(2).transpose(1, 2).reshape(B * G, -1)
        w = self._latent_weights.to(dtype).repeat(B) if self.gno_out.reduction == "weighted" else None
        v = self.gno_out(self._latent_rep(B, dtype), queries.to(dtype), nb, h, w)
        if self.gno_local is not None or self.local_nearest:
            v = torch.cat([v] + self._local_features(queries.to(dtype), points, x, query_batch, point_batch, B, local), 1)
        return self.projection(v)

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
        x : (ΣN, in_channels) input features on ``batch.points`` (e.g. ``batch.x(names)``),
            or None when ``in_channels == 0`` (geometry only). It is NOT taken from the batch's
            fields implicitly.

        Returns
        -------
        (ΣQ, out_channels); split per sample with ``batch.split_queries``.
        """
        if not isinstance(batch, GeometryBatch):
            raise ShapeError(f"GINO.forward: expected a GeometryBatch, got {type(batch).__name__}")
        B = batch.num_samples
        latent = self.encode(batch.points, x, batch.weights, batch.batch, B, batch.neighbors_in, batch.latent_features)
        return self.decode(latent, batch.queries, batch.query_batch, batch.neighbors_out, batch.points, x, batch.batch)

    def query(
        self,
        geometry: Union[Geometry, Tensor],
        points: Tensor,
        x: Optional[Tensor] = None,
        chunk_size: int = 65536,
        latent_features: Optional[Tensor] = None,
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
        x : (N, in_channels) input features, None when ``in_channels == 0``
        latent_features : (latent_channels, *latent_shape) or None

        Returns
        -------
        (Q, out_channels)
        """
        if isinstance(geometry, Geometry):
            pts, w = geometry.points, geometry.weights
        else:
            pts = torch.as_tensor(geometry)
            w = torch.full((pts.shape[0],), 1.0 / max(pts.shape[0], 1), dtype=pts.dtype, device=pts.device)
        q = torch.as_tensor(points, device=pts.device)
        if q.dim() != 2 or q.shape[1] != self.coord_dim:
            raise ShapeError(f"GINO.query: points must have shape (Q, {self.coord_dim}), got {tuple(q.shape)}")
        lf = None if latent_features is None else latent_features.unsqueeze(0)
        latent = self.encode(pts, x, w, None, 1, None, lf)
        cs = max(1, int(chunk_size))
        outs = [self.decode(latent, q[i : i + cs], points=pts, x=x) for i in range(0, q.shape[0], cs)]
        if not outs:
            return latent.new_zeros((0, self.out_channels))
        return torch.cat(outs)
