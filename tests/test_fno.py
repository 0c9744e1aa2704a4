"""Tests of geoop.nn.fno (SpectralConv, FNOBlocks) and geoop.nn.spectral (factorised weights)."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from geoop.errors import ConfigError, ShapeError
from geoop.nn.fno import FNOBlocks, SpectralConv
from geoop.nn.spectral import SpectralWeight


def _direct_reference(conv: SpectralConv, x: torch.Tensor) -> np.ndarray:
    """The operator of the module docstring written with explicit complex exponentials:
    v_hat_k = mean_n v_n exp(-2 pi i k.n/N);  y_n = Re sum_k a_k (v_hat_k W_k) exp(2 pi i k.n/N) + b,
    a_k = 1 if k_last == 0 else 2, k over the retained corner modes."""
    v = x.detach().numpy()
    W = conv.weight().detach().numpy()  # (Ci, Co, *compact modes)
    b = conv.bias.detach().numpy()
    grid = v.shape[2:]
    d = len(grid)
    ms = conv.n_modes
    coords = np.stack(np.meshgrid(*[np.arange(n) / n for n in grid], indexing="ij"), -1)  # (*grid, d)
    axes_k = [list(range(m)) + list(range(-m, 0)) for m in ms[:-1]] + [list(range(ms[-1]))]
    y = np.zeros((v.shape[0], W.shape[1], *grid))
    for k in itertools.product(*axes_k):
        phase = np.exp(2j * np.pi * (coords @ np.asarray(k, dtype=float)))  # (*grid,)
        vhat = (v * phase.conj()).reshape(*v.shape[:2], -1).mean(-1)  # (B, Ci)
        widx = tuple(kk if (j == d - 1 or kk >= 0) else 2 * ms[j] + kk for j, kk in enumerate(k))
        coef = vhat @ W[(slice(None), slice(None)) + widx]  # (B, Co)
        a = 1.0 if k[-1] == 0 else 2.0
        y += a * np.real(coef[:, :, None] * phase.reshape(1, 1, -1)).reshape(y.shape)
    return y + b.reshape(1, -1, *([1] * d))


@pytest.mark.parametrize(
    "grid,modes,factorization",
    [((9,), (3,), None), ((6, 8), (2, 3), None), ((4, 5, 6), (2, 2, 2), "tucker"), ((6, 7), (3, 2), "cp")],
)
def test_spectral_conv_equals_direct_dft(grid, modes, factorization):
    torch.manual_seed(0)
    conv = SpectralConv(2, 3, modes, factorization=factorization).double()
    with torch.no_grad():
        conv.bias.normal_()
    x = torch.randn(2, 2, *grid, dtype=torch.float64)
    np.testing.assert_allclose(conv(x).detach().numpy(), _direct_reference(conv, x), rtol=0, atol=1e-11)


@pytest.mark.parametrize("grid,modes", [((7,), (2,)), ((6, 5), (2, 2)), ((4, 4, 5), (2, 1, 2))])
def test_spectral_conv_gradcheck(grid, modes):
    """First and second derivatives of the corner gather / scatter and contraction, w.r.t.
    the input, the spectral weight and the bias (float64, finite differences)."""
    torch.manual_seed(6)
    conv = SpectralConv(2, 2, modes).double()
    x = torch.randn(2, 2, *grid, dtype=torch.float64, requires_grad=True)
    w, b = conv.weight.dense, conv.bias

    def f(x, w, b):
        return torch.func.functional_call(conv, {"weight.dense": w, "bias": b}, (x,))

    assert torch.autograd.gradcheck(f, (x, w, b))
    assert torch.autograd.gradgradcheck(f, (x, w, b))


def test_spectral_conv_mode_index_is_cached_per_grid():
    conv = SpectralConv(1, 1, (2, 3))
    a = conv._mode_index((8, 8), torch.device("cpu"))
    assert conv._mode_index((8, 8), torch.device("cpu")) is a and a.numel() == 4 * 3
    # positions in the flattened (8, 5) half spectrum: rows 0, 1, 6, 7, columns 0..2
    expect = [r * 5 + c for r in (0, 1, 6, 7) for c in range(3)]
    assert a.tolist() == expect
    assert conv._mode_index((10, 8), torch.device("cpu")).tolist() == [r * 5 + c for r in (0, 1, 8, 9) for c in range(3)]
    assert "_index_cache" not in "".join(conv.state_dict())


def _band_limited(n: int, d: int, kmax: int, seed: int = 0, channels: int = 3) -> torch.Tensor:
    """Sum of random Fourier modes |k_j| <= kmax on the periodic grid (n,)*d, x = i/n."""
    g = torch.Generator().manual_seed(seed)
    coords = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) / n] * d, indexing="ij")
    out = torch.zeros(1, channels, *([n] * d), dtype=torch.float64)
    for k in itertools.product(range(-kmax, kmax + 1), repeat=d):
        ph = sum(2 * math.pi * kk * c for kk, c in zip(k, coords))
        a, b = torch.randn(2, channels, generator=g, dtype=torch.float64)
        out[0] += a.view(-1, *[1] * d) * torch.cos(ph) + b.view(-1, *[1] * d) * torch.sin(ph)
    return out


@pytest.mark.parametrize("d", [1, 2])
def test_spectral_conv_resolution_invariance(d):
    torch.manual_seed(1)
    conv = SpectralConv(3, 4, (4,) * d).double()
    coarse = conv(_band_limited(32, d, kmax=3))
    fine = conv(_band_limited(64, d, kmax=3))
    shared = fine[(slice(None), slice(None)) + (slice(None, None, 2),) * d]
    torch.testing.assert_close(shared, coarse, rtol=0, atol=1e-10)


def test_fno_block_resolution_invariance_one_block():
    """One full block (spectral + linear skip + GELU + channel MLP): pointwise parts commute
    with subsampling, so outputs agree exactly at the shared points."""
    torch.manual_seed(2)
    block = FNOBlocks(3, (4, 4), n_layers=1, mlp_expansion=2.0, act="gelu", skip="linear").double()
    coarse = block(_band_limited(32, 2, kmax=3))
    fine = block(_band_limited(64, 2, kmax=3))
    torch.testing.assert_close(fine[:, :, ::2, ::2], coarse, rtol=0, atol=1e-10)


def test_spectral_conv_commutes_with_circular_shift():
    torch.manual_seed(3)
    conv = SpectralConv(2, 2, (3, 3, 2)).double()
    x = torch.randn(1, 2, 8, 6, 6, dtype=torch.float64)
    shifted = torch.roll(x, shifts=(3, 1, 2), dims=(2, 3, 4))
    torch.testing.assert_close(conv(shifted), torch.roll(conv(x), shifts=(3, 1, 2), dims=(2, 3, 4)))


@pytest.mark.parametrize("factorization", [None, "tucker", "cp"])
@pytest.mark.parametrize("grid,modes", [((16,), (4,)), ((12, 10), (3, 4)), ((8, 8, 6), (2, 3, 3))])
def test_fno_blocks_shapes_and_gradients(grid, modes, factorization):
    torch.manual_seed(4)
    model = FNOBlocks(5, modes, n_layers=2, factorization=factorization, norm="instance")
    x = torch.randn(2, 5, *grid, requires_grad=True)
    y = model(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()
    y.square().mean().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("factorization", ["tucker", "cp"])
def test_factorised_weights_are_fewer_and_train(factorization):
    torch.manual_seed(5)
    dense = FNOBlocks(16, (4, 4, 3), n_layers=1, mlp_expansion=None)
    fact = FNOBlocks(16, (4, 4, 3), n_layers=1, factorization=factorization, rank=0.1, mlp_expansion=None)
    w_dense = dense.blocks[0].spectral.weight
    w_fact = fact.blocks[0].spectral.weight
    assert w_dense.n_params == w_dense.dense_n_params
    ratio = w_fact.n_params / w_fact.dense_n_params
    assert 0.05 < ratio < 0.15, ratio  # about the requested 10 %
    assert sum(p.numel() for p in fact.parameters()) < 0.2 * sum(p.numel() for p in dense.parameters())
    # a few optimisation steps reduce a regression loss: gradients reach the factors
    x = torch.randn(2, 16, 8, 8, 6)
    target = torch.randn(2, 16, 8, 8, 6)
    opt = torch.optim.Adam(fact.parameters(), lr=1e-2)
    losses = []
    for _ in range(4):
        opt.zero_grad()
        loss = (fact(x) - target).square().mean()
        loss.backward()
        for p in w_fact.parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_factorised_weight_matches_tensorly():
    tl = pytest.importorskip("tensorly")
    torch.manual_seed(6)
    tucker = SpectralWeight(3, 4, (5, 2), factorization="tucker", rank=0.6)
    core = torch.view_as_complex(tucker.core).detach().numpy()
    factors = [torch.view_as_complex(f).detach().numpy() for f in tucker.factors]
    ref = tl.tucker_to_tensor((core, factors))
    np.testing.assert_allclose(tucker().detach().numpy(), ref, rtol=1e-5, atol=1e-6)

    cp = SpectralWeight(3, 4, (5, 2), factorization="cp", rank=3)
    with torch.no_grad():
        cp.cp_weights.uniform_(0.5, 2.0)
    factors = [torch.view_as_complex(f).detach().numpy() for f in cp.factors]
    ref = tl.cp_to_tensor((cp.cp_weights.detach().numpy().astype(np.complex64), factors))
    np.testing.assert_allclose(cp().detach().numpy(), ref, rtol=1e-5, atol=1e-6)


def test_grid_too_small_raises_shape_error():
    model = FNOBlocks(4, (8, 5), n_layers=1)
    model(torch.randn(1, 4, 16, 10))  # exactly 2 x modes is allowed
    with pytest.raises(ShapeError, match=r"expected at least \(16, 10\).*got \(15, 10\)"):
        model(torch.randn(1, 4, 15, 10))
    with pytest.raises(ShapeError, match=r"got \(16, 9\)"):
        model(torch.randn(1, 4, 16, 9))
    with pytest.raises(ShapeError, match=r"expected \(B, 4, N_1, N_2\)"):
        model(torch.randn(1, 3, 16, 10))
    with pytest.raises(ShapeError):
        model(torch.randn(1, 4, 16, 10, 10))


def test_unknown_component_names_list_choices():
    with pytest.raises(ConfigError, match="tucker"):
        FNOBlocks(4, (4,), factorization="tt")
    with pytest.raises(ConfigError, match="gelu"):
        FNOBlocks(4, (4,), act="swish2")
    with pytest.raises(ConfigError, match="identity"):
        FNOBlocks(4, (4,), skip="soft-gating")
    with pytest.raises(ConfigError, match="instance"):
        FNOBlocks(4, (4,), norm="batch")
    with pytest.raises(ConfigError):
        FNOBlocks(4, (4, 4, 4, 4))


def test_complex_mode_matmul_equals_complex_einsum_with_gradients():
    from geoop.nn.fno import complex_mode_matmul

    g = torch.Generator().manual_seed(0)
    for b in (1, 2, 3):  # the broadcast path (B <= 2) and the einsum path
        x = torch.randn(b, 5, 4, 6, dtype=torch.complex128, generator=g).requires_grad_()
        w = torch.randn(5, 7, 4, 6, dtype=torch.complex128, generator=g).requires_grad_()
        y = complex_mode_matmul(x, w)
        ref = torch.stack([xb.permute(1, 2, 0)[..., None, :] @ w.permute(2, 3, 0, 1) for xb in x])[..., 0, :]
        ref = ref.permute(0, 3, 1, 2)  # independent reference: per-mode matrix products
        assert torch.allclose(y, ref, atol=1e-12)
        gx, gw = torch.autograd.grad(y.abs().square().sum(), (x, w))
        rx, rw = torch.autograd.grad(ref.abs().square().sum(), (x, w))
        assert torch.allclose(gx, rx, atol=1e-10) and torch.allclose(gw, rw, atol=1e-10)


def test_complex_mode_matmul_gradcheck_and_double_backward():
    """The hand-written backward of the spectral contraction against finite differences,
    and its double-backward path (``create_graph=True``) against finite differences too."""
    from geoop.nn.fno import complex_mode_matmul

    g = torch.Generator().manual_seed(1)
    for b in (1, 3):
        x = torch.randn(b, 3, 2, 5, dtype=torch.complex128, generator=g).requires_grad_()
        w = torch.randn(3, 4, 2, 5, dtype=torch.complex128, generator=g).requires_grad_()
        assert torch.autograd.gradcheck(complex_mode_matmul, (x, w))
        assert torch.autograd.gradgradcheck(complex_mode_matmul, (x, w))
    with pytest.raises(ShapeError, match="do not match"):
        complex_mode_matmul(torch.zeros(1, 3, 4, dtype=torch.cfloat), torch.zeros(3, 2, 5, dtype=torch.cfloat))
