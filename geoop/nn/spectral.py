r"""Spectral weight tensors (complex or real), dense or tensor-factorised (Tucker, CP).

A spectral convolution multiplies each retained Fourier (or spherical-harmonic) mode of the
input by a complex matrix,  ``W : (C_in, C_out, M_1, ..., M_d)``.  For a 3-D FNO with
64 channels and ``n_modes=(16, 16, 16)`` (a compact block of 32x32x16 modes) that is
64*64*32*32*16 complex numbers (134 M reals) per layer: most of an FNO's parameters.
Factorising ``W`` cuts that (4 such layers: 537 M parameters dense, 51 M with Tucker and
54 M with CP at ``rank=0.1``):

* **Tucker**:  ``W = G x_1 U^{(1)} x_2 ... x_n U^{(n)}``, i.e.
  ``W[i_1..i_n] = \sum_{r_1..r_n} G[r_1..r_n] \prod_k U^{(k)}[i_k, r_k]`` with a core
  ``G : (R_1, ..., R_n)`` and one factor ``U^{(k)} : (I_k, R_k)`` per mode
  (parameters ``\prod_k R_k + \sum_k I_k R_k``).
* **CP** (CANDECOMP/PARAFAC):  ``W[i_1..i_n] = \sum_r \lambda_r \prod_k A^{(k)}[i_k, r]``
  with ``\lambda : (R,)`` and ``A^{(k)} : (I_k, R)`` (parameters ``R (1 + \sum_k I_k)``).

The factors are ``nn.Parameter`` s, contracted into the dense tensor when the layer runs
(the dense tensor is an activation, not a parameter), without intermediates larger than it;
:class:`~geoop.nn.fno.SpectralConv` contracts CP factors with its input directly. The
conventions are those of tensorly's ``tucker_to_tensor`` / ``cp_to_tensor`` (the tests
compare against them).

Complex parameters are stored as real tensors with a trailing dimension of 2 (real,
imaginary) and viewed as complex on use, so every optimizer, ``.double()`` and DDP work.

``rank`` is a float in (0, 1] (target fraction of the dense parameter count) or an int
(CP rank, or the same Tucker rank for every mode, capped at each mode's size).

Shapes
------
weight() : (C_in, C_out, *modes) complex (real with ``complex_weights=False``)
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
from torch import Tensor, nn

from ..errors import ConfigError

__all__ = ["FACTORIZATIONS", "SpectralWeight", "tucker_ranks", "cp_rank", "resolve_factorization"]

#: valid values of ``factorization``
FACTORIZATIONS = (None, "dense", "tucker", "cp")


def resolve_factorization(factorization: Optional[str]) -> str:
    """``None``/"dense" -> "dense"; "tucker"/"cp" (any case) -> itself; else ConfigError."""
    if factorization is None:
        return "dense"
    key = str(factorization).lower()
    if key in ("dense", "none"):
        return "dense"
    if key in ("tucker", "cp"):
        return key
    raise ConfigError(
        f"factorization: unknown value {factorization!r}; valid choices: {list(FACTORIZATIONS)}"
    )


def _check_rank(rank) -> None:
    if isinstance(rank, bool) or not isinstance(rank, (int, float)):
        raise ConfigError(f"rank: expected a float in (0, 1] or a positive int, got {rank!r}")
    if isinstance(rank, float) and not (0.0 < rank <= 1.0):
        raise ConfigError(f"rank: expected a float in (0, 1] or a positive int, got {rank}")
    if isinstance(rank, int) and rank < 1:
        raise ConfigError(f"rank: expected a positive int, got {rank}")


def cp_rank(shape: Sequence[int], rank: Union[int, float]) -> int:
    """CP rank R so that ``R (1 + sum(shape))`` is about ``rank * prod(shape)`` (float rank)."""
    _check_rank(rank)
    if isinstance(rank, int):
        return rank
    return max(1, int(round(rank * math.prod(shape) / (1 + sum(shape)))))


def tucker_ranks(shape: Sequence[int], rank: Union[int, float]) -> tuple[int, ...]:
    """Tucker ranks ``R_k = max(1, round(s I_k))`` with ``s`` chosen by bisection so that
    ``prod R_k + sum I_k R_k`` is about ``rank * prod(shape)`` (float rank)."""
    _check_rank(rank)
    if isinstance(rank, int):
        return tuple(min(rank, int(n)) for n in shape)
    target = rank * math.prod(shape)

    def ranks(s: float) -> tuple[int, ...]:
        return tuple(max(1, min(int(n), int(round(s * n)))) for n in shape)

    def count(r) -> int:
        return math.prod(r) + sum(n * k for n, k in zip(shape, r))

    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if count(ranks(mid)) > target:
            hi = mid
        else:
            lo = mid
    return ranks(lo)


def _khatri_rao(mats: Sequence[Tensor]) -> Tensor:
    """Column-wise Kronecker product of ``(I_k, R)`` matrices -> ``(prod I_k, R)``
    (row index in C order over the ``I_k``)."""
    out = mats[0]
    for m in mats[1:]:
        out = (out[:, None, :] * m[None, :, :]).reshape(-1, m.shape[1])
    return out


def _complex_param(shape: Sequence[int], std: float) -> nn.Parameter:
    """Real (…, 2) storage of a complex normal tensor with E|z|^2 = std^2."""
    return nn.Parameter(torch.randn(*shape, 2) * (std / math.sqrt(2.0)))


def _real_param(shape: Sequence[int], std: float) -> nn.Parameter:
    return nn.Parameter(torch.randn(*shape) * std)


class SpectralWeight(nn.Module):
    r"""A complex (or real) tensor ``(C_in, C_out, *modes)``, dense or Tucker/CP factorised.

    Parameters
    ----------
    in_channels, out_channels : int
    modes : sequence of int, sizes of the mode axes (e.g. ``(2 m_1, 2 m_2, m_3)`` for an FNO,
        ``(L,)`` for an SFNO)
    factorization : None | "dense" | "tucker" | "cp"
    rank : float in (0, 1] or int (see module docstring)
    std : float, target standard deviation of the entries of the dense tensor at
        initialisation (default ``sqrt(2 / (C_in + C_out))``)
    complex_weights : bool, complex (default) or real tensor

    Shapes
    ------
    forward() : (C_in, C_out, *modes) complex
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        modes: Sequence[int],
        factorization: Optional[str] = None,
        rank: Union[int, float] = 0.5,
        std: Optional[float] = None,
        complex_weights: bool = True,
    ):
        super().__init__()
        self.complex_weights = bool(complex_weights)
        new = _complex_param if self.complex_weights else _real_param
        self.shape = (int(in_channels), int(out_channels), *[int(m) for m in modes])
        if any(s < 1 for s in self.shape):
            raise ConfigError(f"SpectralWeight shape: expected positive sizes, got {self.shape}")
        self.factorization = resolve_factorization(factorization)
        std = math.sqrt(2.0 / (in_channels + out_channels)) if std is None else float(std)
        n = len(self.shape)
        if self.factorization == "dense":
            self.dense = new(self.shape, std)
            self.rank = None
        elif self.factorization == "tucker":
            ranks = tucker_ranks(self.shape, rank)
            self.rank = ranks
            # Var(W) = prod(R_k) * var(G) * prod(var(U_k)); var(U_k) = 1/R_k -> var(G) = std^2
            self.core = new(ranks, std)
            self.factors = nn.ParameterList(
                [new((i, r), 1.0 / math.sqrt(r)) for i, r in zip(self.shape, ranks)]
            )
        else:  # cp
            r = cp_rank(self.shape, rank)
            self.rank = r
            self.cp_weights = nn.Parameter(torch.ones(r))
            # Var(W) = R * prod(var(A_k)) -> var(A_k) = (std^2 / R)^(1/n)
            a_std = (std * std / r) ** (0.5 / n)
            self.factors = nn.ParameterList([new((i, r), a_std) for i in self.shape])

    @property
    def n_params(self) -> int:
        """Number of real parameters (a complex number counts as 2)."""
        return sum(p.numel() for p in self.parameters())

    @property
    def dense_n_params(self) -> int:
        """Number of real parameters the dense tensor would have."""
        return (2 if self.complex_weights else 1) * math.prod(self.shape)

    def _view(self, p: Tensor) -> Tensor:
        return torch.view_as_complex(p) if self.complex_weights else p

    def forward(self, index: Optional[Sequence[Optional[Tensor]]] = None) -> Tensor:
        """The dense tensor ``(C_in, C_out, *modes)`` (complex unless ``complex_weights=False``),
        or with ``index`` (one LongTensor or None per mode axis) its sub-tensor
        ``W[:, :, index_1, ..., index_n]`` (None: the whole axis): the retained modes of an
        incrementally grown layer. Factorised weights select rows of the mode factors
        before contracting, so the sub-tensor costs only its own size.

        Tucker: one mode product per factor (``tensordot``), so no intermediate is larger
        than the dense tensor. CP: ``(KR(A_1, A_2) diag(lambda)) KR(A_3, ..)^T`` with
        Khatri-Rao products, never an intermediate with the rank *and* all modes (a plain
        left-to-right ``einsum`` would build one of ``prod(shape) * R`` entries).
        """
        if self.factorization == "dense":
            w = self._view(self.dense)
            for j, idx in enumerate(index or ()):
                if idx is not None:
                    w = w.index_select(2 + j, idx)
            return w
        lam, factors = self._factors(index)
        if self.factorization == "tucker":
            w = self._view(self.core)
            for u in factors:  # contract the leading rank axis, append the mode axis
                w = torch.tensordot(w, u, dims=([0], [1]))
            return w
        shape = tuple(f.shape[0] for f in factors)
        left = _khatri_rao(factors[:2]) * lam  # (C_in * C_out, R)
        right = _khatri_rao(factors[2:]) if len(factors) > 2 else None  # (prod(modes), R)
        if right is None:
            return left.sum(-1).reshape(shape)
        return (left @ right.transpose(0, 1)).reshape(shape)

    def _factors(self, index: Optional[Sequence[Optional[Tensor]]] = None) -> tuple[Optional[Tensor], list[Tensor]]:
        """CP weights (None for Tucker) and the factors as complex views, the mode factors
        restricted to the rows ``index`` (one LongTensor or None per mode axis)."""
        factors = [self._view(f) for f in self.factors]
        for j, idx in enumerate(index or ()):
            if idx is not None:
                factors[2 + j] = factors[2 + j].index_select(0, idx)
        lam = self.cp_weights.to(factors[0].dtype) if self.factorization == "cp" else None
        return lam, factors

    def cp_factors(self, index: Optional[Sequence[Optional[Tensor]]] = None) -> tuple[Tensor, list[Tensor]]:
        """CP weights ``lambda (R,)`` and factors ``[(I_k, R)]`` (views, complex when the
        weight is complex), for contracting with an input without the dense tensor; with
        ``index`` the mode factors keep only those rows (see :meth:`forward`)."""
        if self.factorization != "cp":
            raise ConfigError(f"cp_factors: this weight is {self.factorization}, not cp")
        return self._factors(index)

    def extra_repr(self) -> str:
        return (
            f"shape={self.shape}, factorization={self.factorization}, rank={self.rank}, "
            f"params={self.n_params} (dense {self.dense_n_params})"
        )
