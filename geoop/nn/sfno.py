r"""Spherical Fourier neural operator layers on a latitude-longitude grid (torch-harmonics).

Spherical convolution
---------------------
A real field ``f`` on the unit sphere, sampled on an ``(nlat, nlon)`` grid (colatitude
``theta_i`` from the north pole, longitude ``phi_j = 2 pi j / nlon``), has the spherical
harmonic coefficients (``torch_harmonics.RealSHT``, orthonormal, ``m >= 0``)

.. math::  \hat f_{lm} = \int_{S^2} f\, \overline{Y_l^m}\, d\Omega
           \approx \sum_{i,j} w_i\, \Delta\phi\, f(\theta_i, \phi_j)\, \overline{Y_l^m(\theta_i,\phi_j)},

with the latitude quadrature ``w_i`` of the grid (Clenshaw-Curtis for ``"equiangular"``,
Gauss-Legendre for ``"legendre-gauss"``).  The layer multiplies every coefficient of degree
``l`` by the same channel matrix, whatever the order ``m``:

.. math::  \hat g_{lm,o} = \sum_i W_{i,o,l}\, \hat f_{lm,i},\qquad
           g = \mathrm{ISHT}(\hat g) + b_o .

``W`` is real by default: a degree-only real multiplier is a convolution with a zonal
kernel (Funk-Hecke / Driscoll-Healy), which commutes with every rotation of the sphere;
on the grid, rotations about the polar axis by a multiple of the longitude step commute
*exactly* (tested).  ``complex_weights=True`` adds a per-degree phase (more expressive,
equivariant about the polar axis only).  ``W : (C_in, C_out, lmax)`` may be Tucker/CP
factorised (:class:`~geoop.nn.spectral.SpectralWeight`).

``active_lmax=a`` (``a <= lmax``) makes the layer incremental, as the FNO's
``active_modes`` (:mod:`geoop.nn.fno`): ``W`` is allocated for ``lmax`` degrees, the degrees
``l >= a`` are multiplied by zero (their weights unused), :meth:`SphericalConv.set_active_lmax`
grows ``a``, and at ``a = lmax`` the layer is the plain one with the same weights.

SFNO block
----------
Same layout as the FNO block (:mod:`geoop.nn.fno`):
``x <- act(norm(K x + S x)); x <- x + MLP(x)`` with a pointwise skip ``S`` and channel MLP.

Grid helpers
------------
:func:`sphere_grid_points` returns the unit vectors of the grid in the C-order of an
``(nlat, nlon)`` tensor (``index = i * nlon + j``) and the matching area weights (summing
to ``4 pi``); :func:`sphere_quadrature_weights` the weights alone.

Shapes
------
x : (B, C, nlat, nlon) float  ->  (B, C, nlat, nlon) float
sphere_grid_points : (nlat * nlon, 3) float, (nlat * nlon,) float
sphere_quadrature_weights : (nlat * nlon,) float
"""
from __future__ import annotations

import math
from typing import Optional, Union

import torch
from torch import Tensor, nn

from .._optional import require
from ..errors import ConfigError, ShapeError
from .channel_mlp import SpectralBlock, run_blocks
from .spectral import SpectralWeight

__all__ = [
    "SPHERE_GRIDS",
    "resolve_sphere_grid",
    "default_lmax",
    "sphere_colatitudes",
    "sphere_grid_points",
    "sphere_quadrature_weights",
    "SphericalConv",
    "SFNOBlock",
    "SFNOBlocks",
]

#: latitude grids supported by the SHT
SPHERE_GRIDS = ("equiangular", "legendre-gauss")


def resolve_sphere_grid(grid: str, what: str = "grid") -> str:
    """Validate a latitude grid name (the one list of valid grids: :data:`SPHERE_GRIDS`);
    unknown names raise :class:`ConfigError` naming ``what`` and listing the choices."""
    key = str(grid).lower()
    if key not in SPHERE_GRIDS:
        raise ConfigError(f"{what}: unknown sphere grid {grid!r}; valid choices: {list(SPHERE_GRIDS)}")
    return key


def default_lmax(nlat: int, grid: str = "equiangular") -> int:
    """Largest number of degrees for which the grid's SHT is exact on band-limited fields.

    Gauss-Legendre with ``nlat`` nodes integrates polynomials in ``cos theta`` of degree
    ``2 nlat - 1`` exactly, so products of two degree ``< nlat`` harmonics: ``lmax = nlat``.
    Clenshaw-Curtis (``"equiangular"``) is exact to degree ``nlat - 1`` only: ``lmax =
    (nlat + 1) // 2``.  (torch-harmonics defaults to ``lmax = nlat`` on both; on the
    equiangular grid that aliases: a band-limited field picks up spurious high-degree
    coefficients of relative size ~1e-3, so its SHT round trip is not exact.)
    """
    grid = resolve_sphere_grid(grid)
    return int(nlat) if grid == "legendre-gauss" else (int(nlat) + 1) // 2


def _check_grid_size(nlat: int, nlon: int) -> None:
    if int(nlat) < 2 or int(nlon) < 2:
        raise ConfigError(f"sphere grid: expected nlat >= 2 and nlon >= 2, got ({nlat}, {nlon})")


def sphere_colatitudes(nlat: int, grid: str = "equiangular") -> tuple[Tensor, Tensor]:
    """Colatitudes ``theta`` (ascending from the north pole) and latitude quadrature weights
    (in ``cos theta``, summing to 2) of the torch-harmonics grid, float64.

    Shapes: ``theta : (nlat,)``, ``w : (nlat,)``.
    """
    grid = resolve_sphere_grid(grid)
    _check_grid_size(nlat, 2)
    quad = require("torch_harmonics", "SFNO / sphere grids").quadrature
    if grid == "equiangular":
        cost, w = quad.clenshaw_curtiss_weights(int(nlat), -1, 1)
    else:
        cost, w = quad.legendre_gauss_weights(int(nlat), -1, 1)
    # same convention as RealSHT: flip(arccos(cos theta)) -> theta ascending from 0 (north)
    theta = torch.flip(torch.arccos(torch.as_tensor(cost, dtype=torch.float64)), dims=(0,))
    w = torch.flip(torch.as_tensor(w, dtype=torch.float64), dims=(0,))
    return theta, w


def sphere_grid_points(nlat: int, nlon: int, grid: str = "equiangular", dtype=None) -> tuple[Tensor, Tensor]:
    """Nodes and quadrature weights of the ``(nlat, nlon)`` grid on the unit sphere, in the
    C-order of a ``(..., nlat, nlon)`` tensor: row ``i * nlon + j`` is colatitude
    ``theta_i`` (``i = 0`` nearest the north pole, the order of torch-harmonics' ``RealSHT``)
    and longitude ``phi_j = 2 pi j / nlon``.

    Returns
    -------
    points : (nlat * nlon, 3), ``(sin t cos p, sin t sin p, cos t)``
    weights : (nlat * nlon,), area weights ``w_i 2 pi / nlon`` summing to ``4 pi``
    (default dtype unless ``dtype`` is given)
    """
    _check_grid_size(nlat, nlon)
    theta, w = sphere_colatitudes(nlat, grid)
    phi = torch.arange(int(nlon), dtype=torch.float64) * (2.0 * math.pi / int(nlon))
    t, p = torch.meshgrid(theta, phi, indexing="ij")
    pts = torch.stack((torch.sin(t) * torch.cos(p), torch.sin(t) * torch.sin(p), torch.cos(t)), dim=-1)
    wts = (w * (2.0 * math.pi / int(nlon))).repeat_interleave(int(nlon))
    dtype = dtype or torch.get_default_dtype()
    return pts.reshape(-1, 3).to(dtype), wts.to(dtype)


def _inverse_sht_traceable(isht, xh: Tensor) -> Tensor:
    """``torch_harmonics.InverseRealSHT.forward`` without its in-place ``x[..., 0].imag = 0``,
    which ``torch.compile`` cannot trace (a graph break): the same Legendre contraction with
    its ``pct`` buffer, the imaginary parts of the m = 0 (and Nyquist) column zeroed by a
    multiplication, then the same ``irfft``. Tested against the library's module.

    Shapes: ``xh`` (..., lmax, mmax) complex -> (..., nlat, nlon) real."""
    x = torch.view_as_real(xh)
    xs = torch.einsum("...lmr, mlk->...kmr", x, isht.pct.to(x.dtype))  # (..., nlat, mmax, 2)
    keep = torch.ones(isht.mmax, 2, dtype=xs.dtype, device=xs.device)
    keep[0, 1] = 0.0
    if isht.nlon % 2 == 0 and isht.nlon // 2 < isht.mmax:
        keep[isht.nlon // 2, 1] = 0.0
    x = torch.view_as_complex((xs * keep).contiguous())
    return torch.fft.irfft(x, n=isht.nlon, dim=-1, norm="forward")


def sphere_quadrature_weights(nlat: int, nlon: int, grid: str = "equiangular", dtype=None) -> Tensor:
    """The weights of :func:`sphere_grid_points` alone: ``(nlat * nlon,)``, summing to ``4 pi``."""
    return sphere_grid_points(nlat, nlon, grid, dtype)[1]


class SphericalConv(nn.Module):
    r"""Spectral convolution on the sphere, one channel matrix per degree ``l``
    (see module docstring).

    Parameters
    ----------
    in_channels, out_channels : int
    nlat, nlon : int, grid size
    lmax, mmax : int, optional; number of degrees / orders kept (defaults: ``lmax =``
        :func:`default_lmax` (``nlat`` on Gauss grids, ``(nlat + 1) // 2`` on equiangular
        ones, where the SHT is exact), ``mmax = min(lmax, nlon // 2 + 1)``)
    grid : "equiangular" | "legendre-gauss"
    factorization : None | "tucker" | "cp"; rank : float in (0, 1] or int
    complex_weights : bool (default False: rotation-equivariant real zonal multiplier)
    bias : bool
    active_lmax : int <= lmax, optional: an incremental layer using the degrees ``l < active_lmax``
        (module docstring); None: all degrees, no buffer

    Shapes
    ------
    x : (B, C_in, nlat, nlon)  ->  (B, C_out, nlat, nlon)
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        nlat: int,
        nlon: int,
        lmax: Optional[int] = None,
        mmax: Optional[int] = None,
        grid: str = "equiangular",
        factorization: Optional[str] = None,
        rank: Union[int, float] = 0.5,
        complex_weights: bool = False,
        bias: bool = True,
        active_lmax: Optional[int] = None,
    ):
        super().__init__()
        th = require("torch_harmonics", "SFNO")
        _check_grid_size(nlat, nlon)
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.nlat, self.nlon = int(nlat), int(nlon)
        self.grid = resolve_sphere_grid(grid)
        lmax = default_lmax(self.nlat, self.grid) if lmax is None else int(lmax)
        if not 1 <= lmax <= self.nlat:
            raise ConfigError(f"lmax: expected 1 <= lmax <= nlat={self.nlat}, got {lmax}")
        mmax = min(lmax, self.nlon // 2 + 1) if mmax is None else int(mmax)
        if not 1 <= mmax <= min(lmax, self.nlon // 2 + 1):
            raise ConfigError(
                f"mmax: expected 1 <= mmax <= min(lmax, nlon // 2 + 1)={min(lmax, self.nlon // 2 + 1)}, got {mmax}"
            )
        self.lmax, self.mmax = lmax, mmax
        self.sht = th.RealSHT(self.nlat, self.nlon, lmax=lmax, mmax=mmax, grid=self.grid, norm="ortho")
        self.isht = th.InverseRealSHT(self.nlat, self.nlon, lmax=lmax, mmax=mmax, grid=self.grid, norm="ortho")
        self.weight = SpectralWeight(
            self.in_channels, self.out_channels, (lmax,), factorization, rank, complex_weights=complex_weights
        )
        self.bias = nn.Parameter(torch.zeros(self.out_channels)) if bias else None
        self._active = lmax  # degrees in use (all unless incremental)
        self.incremental = active_lmax is not None
        if self.incremental:
            self.register_buffer("lmax_active", torch.tensor([lmax], dtype=torch.long))
            self.set_active_lmax(active_lmax)

    @property
    def active_lmax(self) -> int:
        """The number of degrees in use (``lmax`` unless the layer is incremental)."""
        return self._active

    def set_active_lmax(self, lmax: int) -> None:
        """Use the degrees ``l < lmax`` (1 <= lmax <= the layer's ``lmax``); only for a layer
        built with ``active_lmax`` (ConfigError)."""
        if not self.incremental:
            raise ConfigError(f"{type(self).__name__}: built without active_lmax, its degrees are fixed at lmax={self.lmax}")
        if isinstance(lmax, bool) or not isinstance(lmax, int) or not 1 <= lmax <= self.lmax:
            raise ConfigError(f"active lmax: expected an int between 1 and lmax={self.lmax}, got {lmax!r}")
        self._active = int(lmax)
        with torch.no_grad():
            self.lmax_active.fill_(self._active)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if self.incremental and prefix + "lmax_active" in state_dict:  # the checkpoint's degrees
            self.set_active_lmax(int(state_dict[prefix + "lmax_active"].reshape(-1)[0]))

    def check_input(self, x: Tensor) -> None:
        """Raise :class:`ShapeError` unless ``x`` is ``(B, C_in, nlat, nlon)``."""
        if x.dim() != 4 or tuple(x.shape[1:]) != (self.in_channels, self.nlat, self.nlon):
            raise ShapeError(
                f"{type(self).__name__} input: expected (B, {self.in_channels}, {self.nlat}, {self.nlon}) "
                f"(B, C, nlat, nlon), got {tuple(x.shape)}"
            )

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        xh = self.sht(x)  # (B, C_in, lmax, mmax) complex
        a = self._active
        if a == self.lmax:
            w = self.weight().to(xh.dtype)  # (C_in, C_out, lmax), same for every order m
            yh = torch.einsum("bilm,iol->bolm", xh, w)
        else:  # degrees l < a only, the others zero
            w = self.weight([torch.arange(a, device=x.device)]).to(xh.dtype)  # (C_in, C_out, a)
            yh = torch.einsum("bilm,iol->bolm", xh[:, :, :a], w)
            yh = torch.cat([yh, yh.new_zeros(yh.shape[0], yh.shape[1], self.lmax - a, yh.shape[3])], dim=2)
        y = _inverse_sht_traceable(self.isht, yh) if torch.compiler.is_compiling() else self.isht(yh)
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1)
        return y

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels} -> {self.out_channels}, grid=({self.nlat}, {self.nlon}, {self.grid}), "
            f"lmax={self.lmax}, mmax={self.mmax}" + (f", active_lmax={self._active}" if self.incremental else "")
        )


class SFNOBlock(SpectralBlock):
    r"""One SFNO block: ``x <- act(norm(K x + S x)); x <- x + MLP(x)``.

    Shapes
    ------
    x : (B, C, nlat, nlon)  ->  (B, C, nlat, nlon)
    """

    def __init__(
        self,
        channels: int,
        nlat: int,
        nlon: int,
        lmax: Optional[int] = None,
        mmax: Optional[int] = None,
        grid: str = "equiangular",
        factorization: Optional[str] = None,
        rank: Union[int, float] = 0.5,
        complex_weights: bool = False,
        mlp_expansion: Optional[float] = 0.5,
        act="gelu",
        skip: str = "linear",
        norm: Optional[str] = None,
        active_lmax: Optional[int] = None,
    ):
        spectral = SphericalConv(
            channels, channels, nlat, nlon, lmax, mmax, grid, factorization, rank, complex_weights,
            active_lmax=active_lmax,
        )
        super().__init__(spectral, channels, mlp_expansion, act, skip, norm)


class SFNOBlocks(nn.Module):
    r"""A stack of ``n_layers`` :class:`SFNOBlock` s on an ``(nlat, nlon)`` sphere grid.

    Parameters
    ----------
    channels : int
    nlat, nlon : int
    n_layers : int
    lmax, mmax : int, optional, spectral truncation (see :class:`SphericalConv`)
    grid : "equiangular" | "legendre-gauss"
    factorization : None | "tucker" | "cp"; rank : float in (0, 1] or int
    complex_weights : bool
    mlp_expansion : float or None; act : activation name; skip : "linear" | "identity";
    norm : None | "instance" | "group"
    checkpoint : recompute each block's activations in backward instead of keeping them
        (:func:`geoop.nn.channel_mlp.run_blocks`); same outputs and gradients
    active_lmax : int, optional: incremental blocks starting with these degrees
        (:meth:`SphericalConv.set_active_lmax`; grown with :meth:`set_active_modes`)

    Shapes
    ------
    x : (B, C, nlat, nlon)  ->  (B, C, nlat, nlon)
    """

    def __init__(
        self,
        channels: int,
        nlat: int,
        nlon: int,
        n_layers: int = 4,
        lmax: Optional[int] = None,
        mmax: Optional[int] = None,
        grid: str = "equiangular",
        factorization: Optional[str] = None,
        rank: Union[int, float] = 0.5,
        complex_weights: bool = False,
        mlp_expansion: Optional[float] = 0.5,
        act="gelu",
        skip: str = "linear",
        norm: Optional[str] = None,
        checkpoint: bool = False,
        active_lmax: Optional[int] = None,
    ):
        super().__init__()
        if int(n_layers) < 1:
            raise ConfigError(f"n_layers: expected >= 1, got {n_layers}")
        self.checkpoint = bool(checkpoint)
        self.channels, self.nlat, self.nlon = int(channels), int(nlat), int(nlon)
        self.grid = resolve_sphere_grid(grid)
        self.blocks = nn.ModuleList(
            SFNOBlock(
                channels, nlat, nlon, lmax, mmax, self.grid, factorization, rank, complex_weights,
                mlp_expansion, act, skip, norm, active_lmax,
            )
            for _ in range(int(n_layers))
        )

    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    @property
    def n_modes(self) -> tuple[int]:
        """``(lmax,)``: the degrees the weights are allocated for."""
        return (self.blocks[0].spectral.lmax,)

    @property
    def active_modes(self) -> tuple[int]:
        """``(active lmax,)``: the degrees in use (the same in every block)."""
        return (self.blocks[0].spectral.active_lmax,)

    def set_active_modes(self, modes) -> None:
        """:meth:`SphericalConv.set_active_lmax` on every block (an int or a 1-tuple)."""
        a = modes[0] if isinstance(modes, (tuple, list)) and len(modes) == 1 else modes
        for blk in self.blocks:
            blk.spectral.set_active_lmax(a)

    def grid_points(self, dtype=None) -> Tensor:
        """The grid nodes ``sphere_grid_points(nlat, nlon, grid)[0]``: (nlat * nlon, 3)."""
        return sphere_grid_points(self.nlat, self.nlon, self.grid, dtype)[0]

    def quadrature_weights(self, dtype=None) -> Tensor:
        """``sphere_quadrature_weights(nlat, nlon, grid)``: (nlat * nlon,)."""
        return sphere_quadrature_weights(self.nlat, self.nlon, self.grid, dtype)

    def forward(self, x: Tensor) -> Tensor:
        self.blocks[0].spectral.check_input(x)
        return run_blocks(self.blocks, x, self.checkpoint)
