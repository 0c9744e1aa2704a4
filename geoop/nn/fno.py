r"""Fourier neural operator layers on regular 1-D, 2-D and 3-D grids.

Spectral convolution
--------------------
For a periodic field ``v : (C_in, N_1, ..., N_d)`` on the grid ``x_n = n / N`` (per axis),
with Fourier coefficients (``torch.fft.rfftn``, ``norm="forward"``)

.. math::  \hat v_k = \frac{1}{\prod_j N_j} \sum_n v_n\, e^{-2\pi i\, k\cdot n / N},

the layer keeps the modes ``K = K_1 x ... x K_{d-1} x {0..m_d-1}`` with
``K_j = {0..m_j-1} \cup {-m_j..-1}`` (the ``2^{d-1}`` "corners" of the non-last axes, times
the first ``m_d`` modes of the last, half-spectrum axis) and returns

.. math::  (\mathcal K v)_n = \mathrm{Re} \sum_{k\in K} a_k\,
           \Big(\sum_i \hat v_{k,i} W_{i,o,k}\Big) e^{2\pi i\, k\cdot n/N} + b_o ,
           \qquad a_k = 1 \text{ if } k_d = 0 \text{ else } 2,

which is what ``torch.fft.irfftn(s=grid, norm="forward")`` computes from the truncated
half spectrum (the factor 2 accounts for the implicit conjugate modes ``-k``).  Because
``\hat v_k`` and the inverse series are normalised per point, the same weights ``W`` give
the same operator at every resolution with ``N_j >= 2 m_j``: for an input band-limited to
the retained modes, the outputs at 32 and at 64 points agree at the shared points (tested).

Incremental modes
-----------------
``active_modes=a`` (``a_j <= m_j``) makes the layer *incremental*: ``W`` is allocated at the
full ``m`` but only the modes with ``|k_j| < a_j`` are used (the sub-block
``W[:, :, {0..a_1-1} u {2m_1-a_1..2m_1-1}, ..., {0..a_d-1}]``), so the layer is exactly a
layer with ``n_modes=a`` whose weights are that sub-block, and costs what it costs.
:meth:`SpectralConv.set_active_modes` grows (or shrinks) ``a``; the parameter tensor and
therefore the optimizer's moments keep their shape and their values, and at ``a = m`` the
layer is the plain one with the same weights (tested). The other weights get no gradient
(AdamW's decoupled weight decay still scales them). ``a`` is a buffer (``modes_active``),
so checkpoints store and restore it.

``W : (C_in, C_out, 2m_1, ..., 2m_{d-1}, m_d)`` is dense or Tucker/CP factorised
(:class:`~geoop.nn.spectral.SpectralWeight`); it is applied mode by mode with
:func:`complex_mode_matmul` (CP weights are contracted factor by factor instead, never
forming the dense tensor).

FNO block
---------
Each of the ``n_layers`` blocks of :class:`FNOBlocks` is

.. math::  x \leftarrow \sigma\big(\mathrm{norm}(\mathcal K x + S x)\big),\qquad
           x \leftarrow x + \mathrm{MLP}(x),

with ``S`` a learned pointwise linear map (``skip="linear"``) or the identity, and the MLP a
two-layer pointwise channel MLP of width ``mlp_expansion * C``.  Everything but
``\mathcal K`` is pointwise, so *one* block is exactly resolution invariant on band-limited
inputs; stacked blocks are only approximately so (the pointwise nonlinearity creates modes
above the band that alias differently at different resolutions).

Shapes
------
x : (B, C, N_1, ..., N_d) float, d = len(n_modes) in {1, 2, 3}, N_j >= 2 m_j
out : (B, C, N_1, ..., N_d) float
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
from torch import Tensor, nn

from ..errors import ConfigError, ShapeError
from ._func import under_func_transform
from .channel_mlp import SpectralBlock, run_blocks
from .spectral import SpectralWeight

__all__ = ["SpectralConv", "FNOBlock", "FNOBlocks"]


def _check_modes(n_modes) -> tuple[int, ...]:
    if isinstance(n_modes, int):
        n_modes = (n_modes,)
    modes = tuple(int(m) for m in n_modes)
    if not 1 <= len(modes) <= 3 or any(m < 1 for m in modes):
        raise ConfigError(f"n_modes: expected 1 to 3 positive ints (one per grid axis), got {n_modes!r}")
    return modes


def _einsum_contraction(x: Tensor) -> bool:
    """Whether :class:`_ModeMatmul` uses complex ``einsum`` s (batched library products, on
    a GPU) instead of its channel loops (faster on the CPU)."""
    return x.is_cuda


class _ModeMatmul(torch.autograd.Function):
    r"""``y[b,o,k] = sum_i x[b,i,k] W[i,o,k]`` with hand-written, temporary-free passes.

    Forward accumulates ``y += x[:, i] * W[i]`` over the input channels ``i`` (one
    ``addcmul_`` per channel: ``W`` is read once, the ``(B, O, K)`` accumulator stays in
    cache, nothing of size ``(B, I, O, K)`` is formed). Backward, with PyTorch's convention
    for complex gradients (``grad_x = grad_y conj(dy/dx)``):

    * ``grad_x[b,i,k] = sum_o g[b,o,k] conj(W[i,o,k])``, accumulated over the output
      channels ``o`` as ``conj(sum_o conj(g[b,o,k]) W[i,o,k])`` (no conjugated copy of W);
    * ``grad_W[i,o,k] = sum_b conj(x[b,i,k]) g[b,o,k]``, written straight into the gradient
      tensor with one broadcast multiply(-add) per sample (B passes instead of I*B small
      ones).

    When a graph of the backward is requested (``create_graph=True``: double backward) the
    gradients are computed with differentiable ``einsum`` s instead. On a GPU forward and
    backward are complex ``einsum`` s (batched cuBLAS products instead of a loop of small
    kernels); as they run inside this function, the mode-major copies of ``x`` and ``W``
    that ``einsum`` makes for its ``bmm`` are transient, never saved for backward.

    Shapes: ``x : (B, I, K)``, ``w : (I, O, K)`` complex (``K`` the flattened modes) ->
    ``(B, O, K)``.
    """

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor) -> Tensor:
        ctx.save_for_backward(x, w)
        if _einsum_contraction(x):  # batched cuBLAS products; their permuted operand copies are transient
            return torch.einsum("bik,iok->bok", x, w)
        y = x.new_zeros((x.shape[0], w.shape[1], x.shape[2]))
        for i in range(x.shape[1]):
            y.addcmul_(x[:, i : i + 1], w[i])
        return y

    @staticmethod
    def backward(ctx, g: Tensor):
        x, w = ctx.saved_tensors
        need_x, need_w = ctx.needs_input_grad[:2]
        if torch.is_grad_enabled() or _einsum_contraction(x):  # double backward (differentiable) / GPU
            gx = torch.einsum("bok,iok->bik", g, w.conj()) if need_x else None
            gw = torch.einsum("bik,bok->iok", x.conj(), g) if need_w else None
            return gx, gw
        g = g.contiguous()
        gx = gw = None
        if need_x:  # conj(grad_x) = sum_o conj(g[:, o]) W[:, o]: one addcmul_ per output channel
            gc = g.conj().resolve_conj()
            gx = torch.zeros_like(x)
            for o in range(w.shape[1]):
                gx.addcmul_(gc[:, o : o + 1], w[:, o])
            gx = gx.conj().resolve_conj()
        if need_w:  # grad_W = sum_b conj(x[b])[:, None] * g[b][None]: one broadcast pass per sample
            xc = x.conj().resolve_conj()
            gw = torch.mul(xc[0][:, None], g[0][None])
            for b in range(1, x.shape[0]):
                gw.addcmul_(xc[b][:, None], g[b][None])
        return gx, gw


def complex_mode_matmul(xc: Tensor, w: Tensor) -> Tensor:
    r"""``y[b,o,k] = sum_i x[b,i,k] W[i,o,k]`` for every retained mode ``k``.

    A custom autograd function (:class:`_ModeMatmul`) that loops over the input channels
    and never forms a ``(B, I, O, K)`` temporary, forward or backward (faster on the CPU than
    a broadcast multiply-sum or a complex ``einsum``, and without their per-layer
    temporaries; ``docs/experiments.md``). On a GPU complex ``einsum`` s (batched cuBLAS
    products) replace the channel loop.

    Shapes: ``xc : (B, I, *K)`` complex, ``w : (I, O, *K)`` complex -> ``(B, O, *K)`` complex.
    """
    b, i = xc.shape[:2]
    modes = tuple(xc.shape[2:])
    if tuple(w.shape[2:]) != modes or w.shape[0] != i:
        raise ShapeError(f"complex_mode_matmul: x {tuple(xc.shape)} and w {tuple(w.shape)} do not match")
    if under_func_transform(xc, w):  # torch.func.vmap (stacked ensemble members): plain differentiable einsum
        return torch.einsum("bik,iok->bok", xc.reshape(b, i, -1), w.reshape(i, w.shape[1], -1)).reshape(b, w.shape[1], *modes)
    y = _ModeMatmul.apply(xc.reshape(b, i, -1), w.reshape(i, w.shape[1], -1))
    return y.reshape(b, w.shape[1], *modes)


class SpectralConv(nn.Module):
    r"""Spectral convolution on a periodic regular grid (see module docstring for the maths).

    Parameters
    ----------
    in_channels, out_channels : int
    n_modes : int or tuple of d ints. ``m_j`` retained modes per corner on axis j (the last
        axis keeps modes ``0..m_d-1`` of the half spectrum).
    factorization : None | "tucker" | "cp", factorisation of the spectral weight
    rank : float in (0, 1] (fraction of dense parameters) or int
    bias : bool, add a per-channel constant
    active_modes : int or tuple of d ints <= n_modes, optional: an incremental layer that
        uses only these modes (module docstring); None: all modes, no buffer

    Shapes
    ------
    x : (B, C_in, N_1, ..., N_d), N_j >= 2 m_j  ->  (B, C_out, N_1, ..., N_d)
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        n_modes: Union[int, Sequence[int]],
        factorization: Optional[str] = None,
        rank: Union[int, float] = 0.5,
        bias: bool = True,
        active_modes: Union[int, Sequence[int], None] = None,
    ):
        super().__init__()
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.n_modes = _check_modes(n_modes)
        weight_modes = [2 * m for m in self.n_modes[:-1]] + [self.n_modes[-1]]
        self.weight = SpectralWeight(self.in_channels, self.out_channels, weight_modes, factorization, rank)
        self.bias = nn.Parameter(torch.zeros(self.out_channels)) if bias else None
        self._index_cache: dict = {}  # (grid, device, active) -> flat mode positions, see _mode_index;
        # ("weight", device, active) -> the active weight sub-block, see _weight_index
        self._active = self.n_modes  # the modes in use (all unless incremental)
        self.incremental = active_modes is not None
        if self.incremental:
            self.register_buffer("modes_active", torch.tensor(self.n_modes, dtype=torch.long))
            self.set_active_modes(active_modes)

    @property
    def dim(self) -> int:
        return len(self.n_modes)

    @property
    def active_modes(self) -> tuple[int, ...]:
        """The modes in use per axis (``n_modes`` unless the layer is incremental)."""
        return self._active

    def set_active_modes(self, modes: Union[int, Sequence[int]]) -> None:
        """Use the modes ``|k_j| < modes[j]`` (an int: the same on every axis), each between 1
        and ``n_modes[j]``; only for a layer built with ``active_modes`` (ConfigError)."""
        if not self.incremental:
            raise ConfigError(f"{type(self).__name__}: built without active_modes, its modes are fixed at {self.n_modes}")
        a = (int(modes),) * self.dim if isinstance(modes, int) else tuple(int(m) for m in modes)
        if len(a) != self.dim or any(not 1 <= v <= m for v, m in zip(a, self.n_modes)):
            raise ConfigError(f"active modes: expected {self.dim} ints between 1 and n_modes={self.n_modes}, got {modes!r}")
        self._active = a
        with torch.no_grad():
            self.modes_active.copy_(torch.tensor(a, dtype=torch.long))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if self.incremental and prefix + "modes_active" in state_dict:  # the checkpoint's modes
            self.set_active_modes(tuple(int(v) for v in state_dict[prefix + "modes_active"].tolist()))

    def _weight_index(self, device: torch.device) -> Optional[list]:
        """Per weight mode axis, the positions of the active modes in the ``(2m_1, .., m_d)``
        block (non-last axes: ``0..a-1`` then ``2m-a..2m-1``), None where all are active;
        None when every mode is. Cached per device and active modes, as :meth:`_mode_index`."""
        if self._active == self.n_modes:
            return None
        if torch.compiler.is_compiling():
            return self._build_weight_index(device)
        key = ("weight", str(device), self._active)
        idx = self._index_cache.get(key)
        if idx is None:
            idx = self._index_cache[key] = self._build_weight_index(device)
        return idx

    def _build_weight_index(self, device: torch.device) -> list:
        """The per-axis positions of :meth:`_weight_index`, computed."""
        out = []
        for j, (a, m) in enumerate(zip(self._active, self.n_modes)):
            if a == m:
                out.append(None)
            elif j == self.dim - 1:
                out.append(torch.arange(a, device=device))
            else:
                out.append(torch.cat([torch.arange(a, device=device), torch.arange(2 * m - a, 2 * m, device=device)]))
        return out

    def check_input(self, x: Tensor) -> None:
        """Raise :class:`ShapeError` unless ``x`` is ``(B, C_in, N_1..N_d)`` with ``N_j >= 2 m_j``."""
        d = self.dim
        if x.dim() != d + 2 or x.shape[1] != self.in_channels:
            raise ShapeError(
                f"{type(self).__name__} input: expected (B, {self.in_channels}, "
                f"{', '.join(f'N_{j + 1}' for j in range(d))}), got {tuple(x.shape)}"
            )
        grid = tuple(x.shape[2:])
        need = tuple(2 * m for m in self.n_modes)
        if any(n < k for n, k in zip(grid, need)):
            raise ShapeError(
                f"{type(self).__name__} input grid: expected at least {need} points per axis "
                f"(2 x n_modes={self.n_modes}), got {grid}"
            )

    def _mode_index(self, grid: tuple, device: torch.device) -> Tensor:
        """Flat positions (K,) of the retained modes in the flattened half spectrum
        ``(N_1, .., N_{d-1}, N_d//2+1)``, in the C order of the compact block
        ``(2m_1, .., 2m_{d-1}, m_d)`` (per non-last axis: ``0..m-1`` then ``N-m..N-1``).

        Built once per grid and device and cached on the module (not in the state dict), so
        a forward gathers and scatters the retained corners with one ``index_select`` and
        one ``index_copy`` instead of a gather per axis and a copy per corner (on a GPU each
        of those is a kernel launch, and the car step is launch-bound)."""
        if torch.compiler.is_compiling():  # built in the graph: filling the cache while tracing would
            return self._build_mode_index(grid, device)  # fail the next call's guard on it (one recompilation)
        key = (grid, str(device), self._active)
        idx = self._index_cache.get(key)
        if idx is None:
            idx = self._index_cache[key] = self._build_mode_index(grid, device)
        return idx

    def _build_mode_index(self, grid: tuple, device: torch.device) -> Tensor:
        """The flat mode positions of :meth:`_mode_index`, computed."""
        half = list(grid[:-1]) + [grid[-1] // 2 + 1]
        axes = [torch.cat([torch.arange(m, device=device), torch.arange(n - m, n, device=device)])
                for m, n in zip(self._active[:-1], grid[:-1])]
        axes.append(torch.arange(self._active[-1], device=device))
        idx = torch.zeros((), dtype=torch.long, device=device)
        for ax, n in zip(axes, half):  # C order: idx * N_j + i_j, one axis at a time
            idx = idx[..., None] * n + ax
        return idx.reshape(-1)

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        d = self.dim
        b = x.shape[0]
        grid = tuple(x.shape[2:])
        dims = tuple(range(-d, 0))
        xf = torch.fft.rfftn(x, dim=dims, norm="forward")  # (B, C, N_1..N_{d-1}, N_d//2+1)
        half = tuple(xf.shape[2:])
        idx = self._mode_index(grid, x.device)
        # gather the retained corners into a compact (B, C, 2m_1..2m_{d-1}, m_d) block
        compact = [2 * a for a in self._active[:-1]] + [self._active[-1]]
        xc = xf.reshape(b, xf.shape[1], -1).index_select(2, idx).reshape(b, xf.shape[1], *compact)
        yc = self._contract(xc, self._weight_index(x.device))
        # scatter the compact block back into a zero half spectrum
        out = yc.new_zeros((b, self.out_channels, math.prod(half))).index_copy(2, idx, yc.reshape(b, self.out_channels, -1))
        y = torch.fft.irfftn(out.reshape(b, self.out_channels, *half), s=grid, dim=dims, norm="forward")
        if self.bias is not None:
            y = y + self.bias.view(1, -1, *([1] * d))
        return y

    def _contract(self, xc: Tensor, index: Optional[list] = None) -> Tensor:
        """``y[b,o,k] = sum_i x[b,i,k] W[i,o,k]`` over the compact modes ``k`` (the active
        sub-block of ``W`` selected by ``index``, see :meth:`_weight_index`).

        Dense and Tucker: :func:`complex_mode_matmul` with the dense weight. CP: contracted
        factor by factor, ``y = sum_r lambda_r B[o,r] prod_j A_j[k_j,r] sum_i A[i,r] x[b,i,k]``,
        so the dense weight is never formed (memory ``B R prod(modes)``).
        """
        if self.weight.factorization != "cp":
            return complex_mode_matmul(xc, self.weight(index).to(xc.dtype))
        lam, fs = self.weight.cp_factors(index)
        fs = [f.to(xc.dtype) for f in fs]
        r = lam.shape[0]
        t = torch.einsum("bi...,ir->br...", xc, fs[0])  # (B, R, *modes)
        for j, f in enumerate(fs[2:]):
            shape = [1, r] + [1] * self.dim
            shape[2 + j] = f.shape[0]
            t = t * f.transpose(0, 1).reshape(shape)
        return torch.einsum("br...,or->bo...", t, fs[1] * lam.to(xc.dtype))

    def extra_repr(self) -> str:
        act = f", active_modes={self._active}" if self.incremental else ""
        return f"{self.in_channels} -> {self.out_channels}, n_modes={self.n_modes}{act}"


class FNOBlock(SpectralBlock):
    r"""One FNO block: ``x <- act(norm(K x + S x)); x <- x + MLP(x)`` with ``K`` a
    :class:`SpectralConv` (see module docstring and :class:`SpectralBlock`).

    Shapes
    ------
    x : (B, C, N_1, ..., N_d)  ->  (B, C, N_1, ..., N_d)
    """

    def __init__(
        self,
        channels: int,
        n_modes: Union[int, Sequence[int]],
        factorization: Optional[str] = None,
        rank: Union[int, float] = 0.5,
        mlp_expansion: Optional[float] = 0.5,
        act="gelu",
        skip: str = "linear",
        norm: Optional[str] = None,
        active_modes: Union[int, Sequence[int], None] = None,
    ):
        spectral = SpectralConv(channels, channels, n_modes, factorization, rank, active_modes=active_modes)
        super().__init__(spectral, channels, mlp_expansion, act, skip, norm)


class FNOBlocks(nn.Module):
    r"""A stack of ``n_layers`` :class:`FNOBlock` s at constant width ``channels``.

    Parameters
    ----------
    channels : int
    n_modes : tuple of d ints (d = 1, 2 or 3 grid axes); retained modes per corner and axis
    n_layers : int
    factorization : None | "tucker" | "cp"; rank : float in (0, 1] or int
    mlp_expansion : float or None, hidden width of the channel MLP as a multiple of
        ``channels`` (None or 0: no MLP)
    act : "gelu" | "relu" | "silu" | "tanh" | "identity"
    skip : "linear" | "identity"
    norm : None | "instance" | "group"
    checkpoint : recompute each block's activations in backward instead of keeping them
        (:func:`geoop.nn.channel_mlp.run_blocks`); same outputs and gradients
    active_modes : int or tuple, optional: incremental blocks starting with these modes
        (:meth:`SpectralConv.set_active_modes`; grown with :meth:`set_active_modes`)

    Shapes
    ------
    x : (B, C, N_1, ..., N_d), N_j >= 2 n_modes[j]  ->  (B, C, N_1, ..., N_d)
    """

    def __init__(
        self,
        channels: int,
        n_modes: Union[int, Sequence[int]],
        n_layers: int = 4,
        factorization: Optional[str] = None,
        rank: Union[int, float] = 0.5,
        mlp_expansion: Optional[float] = 0.5,
        act="gelu",
        skip: str = "linear",
        norm: Optional[str] = None,
        checkpoint: bool = False,
        active_modes: Union[int, Sequence[int], None] = None,
    ):
        super().__init__()
        if int(n_layers) < 1:
            raise ConfigError(f"n_layers: expected >= 1, got {n_layers}")
        self.checkpoint = bool(checkpoint)
        self.channels = int(channels)
        self.n_modes = _check_modes(n_modes)
        self.blocks = nn.ModuleList(
            FNOBlock(channels, self.n_modes, factorization, rank, mlp_expansion, act, skip, norm, active_modes)
            for _ in range(int(n_layers))
        )

    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    @property
    def active_modes(self) -> tuple[int, ...]:
        """The modes in use (the same in every block)."""
        return self.blocks[0].spectral.active_modes

    def set_active_modes(self, modes: Union[int, Sequence[int]]) -> None:
        """:meth:`SpectralConv.set_active_modes` on every block (incremental blocks only)."""
        for blk in self.blocks:
            blk.spectral.set_active_modes(modes)

    def forward(self, x: Tensor) -> Tensor:
        if len(self.blocks):
            self.blocks[0].spectral.check_input(x)
        return run_blocks(self.blocks, x, self.checkpoint)
