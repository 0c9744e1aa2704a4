"""Tests of geoop.nn.sfno (SphericalConv, SFNOBlocks, sphere grid helpers)."""
from __future__ import annotations

import math

import pytest
import torch
import torch_harmonics  # noqa: F401  (a core dependency: fail, never skip)

from geoop.errors import ConfigError, ShapeError  # noqa: E402
from geoop.nn.sfno import (  # noqa: E402
    SFNOBlocks,
    SphericalConv,
    default_lmax,
    sphere_grid_points,
    sphere_quadrature_weights,
)

GRIDS = ["equiangular", "legendre-gauss"]


def _band_limited_coeffs(lmax, mmax, band, seed=0, dtype=torch.complex64, channels=1):
    """Random SH coefficients with l < band (m <= l, m = 0 real): (1, C, lmax, mmax)."""
    g = torch.Generator().manual_seed(seed)
    re = torch.randn(1, channels, lmax, mmax, generator=g)
    im = torch.randn(1, channels, lmax, mmax, generator=g)
    l = torch.arange(lmax)[:, None]
    m = torch.arange(mmax)[None]
    mask = ((l < band) & (m <= l)).to(re.dtype)
    im[..., 0] = 0.0
    return torch.complex(re * mask, im * mask).to(dtype)


def _identity_conv(nlat, nlon, grid, channels=2, lmax=None):
    conv = SphericalConv(channels, channels, nlat, nlon, grid=grid, lmax=lmax)
    with torch.no_grad():
        conv.weight.dense.zero_()
        conv.weight.dense[torch.arange(channels), torch.arange(channels)] = 1.0
    return conv


@pytest.mark.parametrize("grid", GRIDS)
def test_sht_round_trip_of_band_limited_field_is_exact(grid):
    """With W_l = identity the spherical convolution is SHT -> ISHT: it must reproduce
    any field band-limited to its lmax (float32, 1e-5 relative)."""
    nlat, nlon = 24, 48
    conv = _identity_conv(nlat, nlon, grid)
    assert conv.lmax == default_lmax(nlat, grid)
    f = conv.isht(_band_limited_coeffs(conv.lmax, conv.mmax, band=conv.lmax, channels=2))
    assert f.abs().max() > 0.1
    out = conv(f)
    err = (out - f).abs().max() / f.abs().max()
    assert err < 1e-5, err
    # a field with energy above lmax is not reproduced (the layer truncates)
    trunc = _identity_conv(nlat, nlon, grid, lmax=8)
    assert ((trunc(f) - f).abs().max() / f.abs().max()) > 1e-2


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("complex_weights", [False, True])
def test_polar_rotation_commutes_with_blocks(grid, complex_weights):
    torch.manual_seed(0)
    model = SFNOBlocks(3, 12, 24, n_layers=2, grid=grid, complex_weights=complex_weights, norm="instance")
    with torch.no_grad():
        for blk in model.blocks:
            blk.spectral.bias.normal_()
    x = torch.randn(2, 3, 12, 24)
    for shift in (1, 5):
        rotated = model(torch.roll(x, shifts=shift, dims=-1))
        torch.testing.assert_close(rotated, torch.roll(model(x), shifts=shift, dims=-1), rtol=1e-4, atol=1e-5)


def test_weights_depend_on_degree_only():
    """A single harmonic of degree l and any order m is an eigenfunction with eigenvalue W_l:
    the multiplier is the same for every m (what makes the layer rotation equivariant)."""
    torch.manual_seed(1)
    conv = SphericalConv(1, 1, 16, 32, grid="legendre-gauss", bias=False).double()
    w = conv.weight().detach()[0, 0]  # (lmax,) real
    for l, m in [(0, 0), (3, 0), (3, 2), (3, 3), (7, 1), (7, 5)]:
        c = torch.zeros(1, 1, conv.lmax, conv.mmax, dtype=torch.complex128)
        c[0, 0, l, m] = 1.0 if m == 0 else (0.6 - 0.8j)
        f = conv.isht(c)
        torch.testing.assert_close(conv(f), w[l] * f, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("factorization", [None, "tucker", "cp"])
def test_sfno_gradients_finite(factorization):
    torch.manual_seed(2)
    model = SFNOBlocks(4, 10, 20, n_layers=2, factorization=factorization, rank=0.5)
    x = torch.randn(2, 4, 10, 20, requires_grad=True)
    y = model(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.square().mean().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_sfno_gradcheck_float64():
    torch.manual_seed(3)
    conv = SphericalConv(2, 2, 6, 12, complex_weights=True).double()
    x = torch.randn(1, 2, 6, 12, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(conv, (x,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("grid", GRIDS)
def test_grid_points_and_weights_match_the_sht_convention(grid):
    nlat, nlon = 10, 20
    pts, w = sphere_grid_points(nlat, nlon, grid, dtype=torch.float64)
    torch.testing.assert_close(w, sphere_quadrature_weights(nlat, nlon, grid, dtype=torch.float64))
    assert pts.shape == (nlat * nlon, 3) and w.shape == (nlat * nlon,)
    torch.testing.assert_close(pts.norm(dim=1), torch.ones(nlat * nlon, dtype=torch.float64))
    assert torch.all(pts[:nlon, 2] > pts[-nlon:, 2])  # row 0 is the northernmost latitude
    # quadrature: area 4 pi, integral of z^2 = 4 pi / 3
    assert math.isclose(w.sum().item(), 4 * math.pi, rel_tol=1e-12)
    assert math.isclose((w * pts[:, 2] ** 2).sum().item(), 4 * math.pi / 3, rel_tol=1e-10)
    # C-order and orientation agree with the SHT: z = sqrt(4 pi / 3) Y_1^0 and the
    # (l, m) = (1, 1) coefficients of y and x differ by a factor -i
    conv = SphericalConv(1, 1, nlat, nlon, grid=grid).double()
    x, y, z = (pts[:, k].reshape(1, 1, nlat, nlon) for k in range(3))
    cz, cx, cy = conv.sht(z)[0, 0], conv.sht(x)[0, 0], conv.sht(y)[0, 0]
    assert abs(cz[1, 0].item() - math.sqrt(4 * math.pi / 3)) < 1e-9
    cz[1, 0] = 0
    assert cz.abs().max() < 1e-9
    assert abs(cx[1, 1]) > 0.5
    assert abs(cy[1, 1] - (-1j) * cx[1, 1]) < 1e-9


def test_bad_inputs_raise():
    model = SFNOBlocks(3, 8, 16, n_layers=1)
    with pytest.raises(ShapeError, match=r"expected \(B, 3, 8, 16\).*got \(1, 3, 8, 15\)"):
        model(torch.randn(1, 3, 8, 15))
    with pytest.raises(ShapeError):
        model(torch.randn(3, 8, 16))
    with pytest.raises(ConfigError, match="legendre-gauss"):
        SFNOBlocks(3, 8, 16, grid="healpix")
    with pytest.raises(ConfigError, match="lmax"):
        SFNOBlocks(3, 8, 16, lmax=9)
    with pytest.raises(ConfigError, match="grid"):
        sphere_grid_points(8, 16, "gaussian")
