r"""Ensembles of GINOs with stacked parameters: a predictive mean and standard deviation.

:class:`Ensemble` holds K GINO members built from one configuration with independent
initialisations. Their parameters are stacked (``torch.func.stack_module_state``: every
parameter of shape ``s`` is one ``(K, *s)`` tensor of the ensemble) and the members run in
ONE vectorised call, ``torch.func.vmap`` over ``torch.func.functional_call`` of a template
GINO. What depends on the geometry only is computed once per batch and shared by the members:
the point inputs ``x``, the latent features (SDF), the encoder / decoder neighbourhoods and
the local-geometry searches.

Predictive distribution
-----------------------
Member k predicts :math:`\mu_k(x)` (and, with ``variance=True``, a heteroscedastic variance
:math:`\sigma_k^2(x) = \mathrm{softplus}(s_k(x)) + \epsilon` from ``C`` extra output
channels). The ensemble is the equally weighted mixture of the members:

.. math::

    \bar\mu = \frac1K \sum_k \mu_k, \qquad
    \bar\sigma^2 = \frac1K \sum_k (\mu_k - \bar\mu)^2 + \frac1K \sum_k \sigma_k^2,

reported as :math:`T_c\,\bar\sigma` with a per-channel temperature :math:`T_c` (1 until
:func:`geoop.train.calibration.fit_temperature` sets it from a validation split; stored in
the state dict as ``temperature``).

Training
--------
:meth:`Ensemble.member_losses` gives every member its own loss (the trainer's relative L2
on its mean; plus, with a variance head, the Gaussian negative log-likelihood
:math:`\tfrac12(\log\sigma_k^2 + (y - \mathrm{sg}[\mu_k])^2/\sigma_k^2)` with the mean
detached, so the mean is trained exactly as a plain member's) and averages them over the
members: the members share no parameter, so each one follows its own gradient (scaled by
1/K, to which AdamW is invariant). With ``bootstrap=True`` member k weights case c by a
Poisson(1) count drawn from ``(seed, k, case name)`` (the online bootstrap: a resample of
the cases with replacement, consistent across epochs).

Why ``vmap``: the members' layers are unchanged GINO code (GNO segment sums with
``index_add``, FNO with FFTs), so the stacked members need no second implementation; under
``vmap`` a layer's matrix products become batched products over the members. The layers'
hand-written autograd functions (the checkpointed GNO edge chunks, the CPU spectral
contraction) do not batch under ``vmap`` and take their plain differentiable paths
(:func:`geoop.nn._func.under_func_transform`). The encoder's edge activations are recomputed
in backward as in a single GINO (``memory.checkpoint_encoder``), by a reentrant checkpoint
around the members' encoder call; the layers' own recomputation (GNO edge chunks,
``memory.checkpoint_latent``) is off inside the members.

Shapes
------
member outputs : (K, ΣQ, C) (``(K, ΣQ, 2C)`` with the variance head)
mean, std : (ΣQ, C)
"""
from __future__ import annotations

import copy
import zlib
from typing import Callable, Mapping, NamedTuple, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from ..batch import GeometryBatch
from ..errors import CheckpointError, ConfigError, ShapeError
from ..geometry.geometry import Geometry
from ..nn.gno import GNO
from .gino import GINO, points_and_weights

__all__ = ["Ensemble", "Predictive", "mixture", "ensemble_spec"]

#: keys of the ``ensemble`` table of a model config (``[model] ensemble = K`` is ``{size = K}``)
ENSEMBLE_KEYS = ("size", "variance", "bootstrap", "seed", "vectorize", "recompute")
_VAR_EPS = 1e-6


class Predictive(NamedTuple):
    """Predictive distribution at the queries: ``mean``, ``std`` (ΣQ, C) (``std`` with the
    temperature applied), the members' means ``members`` (K, ΣQ, C) and their variances
    ``member_var`` (K, ΣQ, C) with a variance head (else None)."""

    mean: Tensor
    std: Tensor
    members: Tensor
    member_var: Optional[Tensor] = None


def mixture(members: Tensor, member_var: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    r"""Mean and standard deviation of the equal-weight mixture of K members:
    :math:`\bar\mu = \mathrm{mean}_k \mu_k`, :math:`\bar\sigma^2 = \mathrm{mean}_k (\mu_k -
    \bar\mu)^2 + \mathrm{mean}_k \sigma_k^2`. Shapes: (K, ...) [, (K, ...)] -> (...), (...)."""
    mean = members.mean(0)
    var = (members - mean).square().mean(0)
    if member_var is not None:
        var = var + member_var.mean(0)
    return mean, var.clamp(min=0).sqrt()


def ensemble_spec(value, where: str = "model.ensemble") -> dict:
    """The ensemble settings ``{size, variance, bootstrap, seed, vectorize, recompute}`` from an int K or
    a table; :class:`ConfigError` naming ``where`` for anything else."""
    if isinstance(value, bool) or not isinstance(value, (int, Mapping)):
        raise ConfigError(f"{where}: expected the member count K (an int >= 1) or a table with keys "
                          f"{list(ENSEMBLE_KEYS)}, got {value!r}")
    d = {"size": value} if isinstance(value, int) else dict(value)
    unknown = sorted(set(d) - set(ENSEMBLE_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; valid keys: {list(ENSEMBLE_KEYS)}")
    size = d.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ConfigError(f"{where}: size (the member count K) must be an int >= 1, got {size!r}")
    out = {"size": size, "variance": d.get("variance", False), "bootstrap": d.get("bootstrap", False),
           "seed": d.get("seed", 0), "vectorize": d.get("vectorize", "auto"), "recompute": d.get("recompute", False)}
    for k in ("variance", "bootstrap", "recompute"):
        if not isinstance(out[k], bool):
            raise ConfigError(f"{where}: {k} must be true or false, got {out[k]!r}")
    if out["vectorize"] not in (True, False, "auto"):
        raise ConfigError(f"{where}: vectorize must be true, false or 'auto', got {out['vectorize']!r}")
    if isinstance(out["seed"], bool) or not isinstance(out["seed"], int):
        raise ConfigError(f"{where}: seed must be an int, got {out['seed']!r}")
    return out


class _Call(nn.Module):
    """The template GINO's stages behind one ``forward`` (``torch.func.functional_call``
    calls ``forward`` only)."""

    def __init__(self, gino: GINO):
        super().__init__()
        self.gino = gino

    def forward(self, stage: str, *args, **kwargs):
        return getattr(self.gino, stage)(*args, **kwargs)


class Ensemble(nn.Module):
    """K GINO members with stacked parameters, evaluated in one vectorised call (see the
    module docstring for the maths).

    Parameters
    ----------
    config : the members' GINO config (:attr:`GINO.config`; ``out_channels`` = the width C of
        the predicted fields); a config with an ``ensemble`` key gives the settings below
    size : K, the number of members
    variance : a heteroscedastic variance head per member (C more output channels)
    bootstrap : Poisson(1) case weights per member in :meth:`member_losses`
    seed : seed of the bootstrap weights (the initialisations draw from the global RNG, one
        member after the other, as K ``GINO(**config)`` calls would)
    vectorize : run the members with ``torch.func.vmap`` in one call (True), one after the
        other through ``functional_call`` (False; the same numbers), or ``"auto"`` (default):
        vmap on CUDA, where it replaces K launches of every small kernel by one, one after
        the other on the CPU, where vmap saves no arithmetic and its batched per-chunk edge
        tensors raise the step's peak memory (``benchmarks/README.md``)
    recompute : recompute every member's lifting, latent blocks and decoder in backward
        (reentrant ``torch.utils.checkpoint``; without vmap one member at a time, so a step
        keeps about one member's activations; costs one more forward of those stages)

    Shapes
    ------
    forward(batch, x) -> (ΣQ, C) mean; :meth:`predict` / :meth:`query` -> :class:`Predictive`;
    :meth:`member_outputs` -> (K, ΣQ, C or 2C)
    """

    is_ensemble = True

    def __init__(self, config: Mapping, size: Optional[int] = None, *, variance: bool = False, bootstrap: bool = False,
                 seed: int = 0, vectorize: Union[bool, str] = "auto", recompute: bool = False):
        super().__init__()
        config = dict(config)
        if "ensemble" in config:
            ens = ensemble_spec(config.pop("ensemble"))
            if size is not None and size != ens["size"]:
                raise ConfigError(f"Ensemble: size={size} but the config's ensemble.size is {ens['size']}")
        else:
            ens = ensemble_spec({"size": size if size is not None else 2, "variance": variance, "bootstrap": bootstrap,
                                 "seed": seed, "vectorize": vectorize, "recompute": recompute}, "Ensemble")
        lat = config.get("latent")
        if isinstance(lat, Mapping) and lat.get("kind") == "nested":
            raise ConfigError("model.ensemble: ensembles of nested-latent models are not supported; use a box or sphere latent")
        self.size, self.variance, self.bootstrap = ens["size"], ens["variance"], ens["bootstrap"]
        self.seed, self.vectorize, self.recompute = ens["seed"], ens["vectorize"], ens["recompute"]
        self.fields_channels = int(config.get("out_channels", 1))
        self.member_config = {**config, "out_channels": self.fields_channels * (2 if self.variance else 1)}
        members = [GINO.from_config(self.member_config) for _ in range(self.size)]
        self._init_from(members)
        self.config = {**config, "ensemble": dict(ens)}

    def _init_from(self, members: Sequence[GINO]) -> None:
        from torch.func import stack_module_state

        params, _ = stack_module_state(list(members))
        self._names = list(params)
        for n in self._names:
            self.register_parameter(self._key(n), nn.Parameter(params[n].detach().clone()))
        template = copy.deepcopy(members[0])
        for p in template.parameters():
            p.requires_grad_(False)
        for m in template.modules():
            # recomputation in backward reads the module's own parameters (GNO edge chunks) or
            # uses saved-tensor hooks (latent blocks), which functional_call / vmap do not carry
            if isinstance(m, GNO):
                m.checkpoint = False
                m._chunks_one_member = (m.chunk_edges, m.chunk_edges_cuda)
            elif hasattr(m, "checkpoint") and isinstance(m.checkpoint, bool):
                m.checkpoint = False
        object.__setattr__(self, "_call", _Call(template))  # not a submodule: its parameters are not the ensemble's
        self.register_buffer("temperature", torch.ones(self.fields_channels))

    @staticmethod
    def _key(name: str) -> str:
        return name.replace(".", "__")

    @classmethod
    def from_config(cls, config: Mapping) -> "Ensemble":
        """An ensemble from :attr:`config` (a GINO config with an ``ensemble`` key)."""
        if "ensemble" not in config:
            raise ConfigError("Ensemble.from_config: the config has no 'ensemble' key ([model] ensemble = K)")
        return cls(config)

    @classmethod
    def from_members(cls, members: Sequence[GINO], **kw) -> "Ensemble":
        """An ensemble of given GINOs (same configuration, e.g. trained separately); their
        parameters are copied into the stacked tensors."""
        members = list(members)
        if not members or not all(isinstance(m, GINO) for m in members):
            raise ConfigError(f"Ensemble.from_members: expected a non-empty list of GINOs, got {[type(m).__name__ for m in members]}")
        cfg = members[0].config
        for i, m in enumerate(members[1:], 1):
            if m.config != cfg:
                raise ConfigError(f"Ensemble.from_members: member {i}'s config differs from member 0's; members must share one config")
        base = dict(cfg)
        if kw.get("variance"):
            if base["out_channels"] % 2:
                raise ConfigError(f"Ensemble.from_members: variance=True needs members with 2C outputs, got {base['out_channels']}")
            base["out_channels"] //= 2
        ens = cls.__new__(cls)
        nn.Module.__init__(ens)
        spec_ = ensemble_spec({"size": len(members), **kw}, "Ensemble.from_members")
        ens.size, ens.variance, ens.bootstrap = spec_["size"], spec_["variance"], spec_["bootstrap"]
        ens.seed, ens.vectorize, ens.recompute = spec_["seed"], spec_["vectorize"], spec_["recompute"]
        ens.fields_channels = int(base["out_channels"])
        ens.member_config = dict(cfg)
        ens._init_from(members)
        ens.config = {**base, "ensemble": dict(spec_)}
        return ens

    # ------------------------------------------------------------------ module plumbing
    @property
    def template(self) -> GINO:
        """The GINO whose code runs every member (its own parameters are unused)."""
        return self._call.gino

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            # geometry-side attributes of the members (coord_dim, point_inputs, latent, domain, ...)
            if name.startswith("_") or "_call" not in self.__dict__ or name in ("gno_in", "gno_out", "blocks", "lifting", "projection", "gno_local"):
                raise
            return getattr(self.__dict__["_call"].gino, name)

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self._call._apply(fn, recurse)
        return self

    def stacked_parameters(self) -> dict:
        """``{GINO parameter name: (K, *shape) tensor}``."""
        return {n: getattr(self, self._key(n)) for n in self._names}

    def member(self, i: int) -> GINO:
        """Member ``i`` as a plain GINO (a copy; with a variance head its outputs are ``[mean
        (C), raw variance (C)]``, the variance being ``softplus(raw) + 1e-6``)."""
        if not -self.size <= int(i) < self.size:
            raise IndexError(f"Ensemble.member: index {i} out of range for {self.size} members")
        m = GINO.from_config(self.member_config)
        m.load_state_dict({n: t[int(i)].detach().clone() for n, t in self.stacked_parameters().items()})
        dev = self.temperature.device
        return m.to(device=dev, dtype=next(iter(self.stacked_parameters().values())).dtype)

    def check_state(self, state_dict: Mapping, source: str = "state") -> None:
        """:class:`CheckpointError` naming ``model.ensemble`` when ``state_dict`` holds another
        member count, or a single model's parameters."""
        for n in self._names:
            t = state_dict.get(self._key(n))
            if t is not None and t.dim() >= 1 and t.shape[0] != self.size:
                raise CheckpointError(f"{source}: the state has {t.shape[0]} members ({self._key(n)} of shape "
                                      f"{tuple(t.shape)}) but this model has model.ensemble = {self.size}; "
                                      "set [model] ensemble to the checkpoint's member count")
        if self._names and self._key(self._names[0]) not in state_dict and self._names[0] in state_dict:
            raise CheckpointError(f"{source}: the state is a single model's (key {self._names[0]!r}) but this model has "
                                  f"model.ensemble = {self.size}; remove [model] ensemble, or build an ensemble of "
                                  "trained models with Ensemble.from_members")

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """As :meth:`nn.Module.load_state_dict`, after :meth:`check_state`."""
        self.check_state(state_dict)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    # ------------------------------------------------------------------ running the members
    def _map(self, fn: Callable, *batched: Tensor, params: Optional[dict] = None) -> Tensor:
        """``fn(params, *batched)`` for every member, stacked -> (K, ...): one ``vmap`` call
        (``vectorize``) or one call per member. ``params``: ``{name: (K, ...)}`` (default: all
        stacked parameters)."""
        if params is None:
            params = {"gino." + n: t for n, t in self.stacked_parameters().items()}
        vec = self._vectorized()
        for m in self.template.modules():
            if isinstance(m, GNO):  # under vmap a chunk holds every member's edges: K times fewer edges per chunk
                m.chunk_edges, m.chunk_edges_cuda = (max(1, c // (self.size if vec else 1)) for c in m._chunks_one_member)
        if vec:
            from torch.func import vmap

            return vmap(fn, randomness="different")(params, *batched)
        return torch.stack([fn({n: t[k] for n, t in params.items()}, *(b[k] for b in batched)) for k in range(self.size)])

    def _stage(self, params: dict, stage: str, *args, **kwargs) -> Tensor:
        from torch.func import functional_call

        return functional_call(self._call, params, (stage, *args), kwargs, strict=False)

    def member_outputs(self, batch: GeometryBatch, x: Optional[Tensor] = None) -> Tensor:
        """Every member's raw output at the batch's queries, (K, ΣQ, C or 2C). The point
        inputs, latent features and all neighbourhood searches are computed once, here."""
        if not isinstance(batch, GeometryBatch):
            raise ShapeError(f"Ensemble: expected a GeometryBatch, got {type(batch).__name__}")
        t = self.template
        B = batch.num_samples
        if x is None and t.point_inputs:
            x = t.point_features(batch)
        lf = t._batch_latent_features(batch)
        dtype = self.temperature.dtype
        with torch.no_grad():
            nin = batch.neighbors_in if batch.neighbors_in is not None else t.neighbors_in(batch.points, batch.batch, B)
            nout = batch.neighbors_out if batch.neighbors_out is not None else t.neighbors_out(batch.queries, batch.query_batch, B)
            local = None
            if t.gno_local is not None or t.local_nearest:
                local = t.local_neighbors(batch.queries.to(dtype), batch.points, batch.query_batch, batch.batch, B)

        sums, counts = self._encoder_sums(batch.points, x, batch.weights, batch.batch, B, nin)

        def run(params, s):
            lat = self._stage(params, "encode_finish", s, counts, lf, B)
            return self._stage(params, "decode", lat, batch.queries, batch.query_batch, nout, batch.points, x,
                               batch.batch, local=local)

        if not (self.recompute and torch.is_grad_enabled() and sums.requires_grad):
            return self._map(run, sums)
        # recompute every member's lifting, latent blocks and decoder in backward: one member
        # at a time without vmap (peak: about one member's activations), all at once with it
        from torch.utils.checkpoint import checkpoint

        names, stacked = ["gino." + n for n in self._names], list(self.stacked_parameters().values())

        def part(s_, *tensors):
            return self._map(run, s_, params=dict(zip(names, tensors)))

        if self._vectorized():
            return checkpoint(part, sums, *stacked, use_reentrant=True)
        return torch.stack([checkpoint(lambda s_, *ts: run(dict(zip(names, ts)), s_), sums[k], *(t[k] for t in stacked),
                                       use_reentrant=True) for k in range(self.size)])

    def _vectorized(self) -> bool:
        return (self.vectorize if self.vectorize != "auto" else self.temperature.is_cuda) and self.size > 1

    def _encoder_sums(self, points, x, weights, point_batch, B, nin) -> tuple[Tensor, Optional[Tensor]]:
        """Every member's encoder GNO sums (K, B*G, enc) and the (shared) edge counts of a
        ``"mean"`` reduction. With ``memory.checkpoint_encoder`` and gradients, the members'
        edge activations are recomputed in backward, as a single GINO's: the vmapped call sits
        inside a reentrant ``torch.utils.checkpoint`` (which runs its forward without a graph
        and needs no saved-tensor hooks, which ``torch.func`` does not support)."""
        names = [n for n in self._names if n.startswith("gno_in.")]
        stacked = self.stacked_parameters()

        def sums(*tensors):
            p = {"gino." + n: t for n, t in zip(names, tensors)}
            return self._map(lambda pp: self._stage(pp, "encode_partial", points, x, weights, point_batch, B, nin)[0],
                             params=p)

        tensors = [stacked[n] for n in names]
        recompute = (self.member_config.get("memory") or {}).get("checkpoint_encoder", True)
        if recompute and torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
            from torch.utils.checkpoint import checkpoint

            out = checkpoint(sums, *tensors, use_reentrant=True)
        else:
            out = sums(*tensors)
        counts = None
        if self.template.gno_in.reduction == "mean":
            counts = nin.counts().to(device=out.device, dtype=out.dtype)
        return out, counts

    def split(self, out: Tensor) -> tuple[Tensor, Optional[Tensor]]:
        """Raw member outputs (K, Q, C or 2C) -> member means (K, Q, C) and variances or None."""
        C = self.fields_channels
        if not self.variance:
            return out, None
        return out[..., :C], nn.functional.softplus(out[..., C:]) + _VAR_EPS

    def check_std(self) -> None:
        """:class:`ConfigError` naming ``model.ensemble`` when this model has no standard deviation."""
        if self.size < 2 and not self.variance:
            raise ConfigError(f"Ensemble: a standard deviation needs model.ensemble >= 2 members or a variance head "
                              f"(ensemble.variance = true); this model has {self.size} member and no variance head")

    def distribution(self, out: Tensor, calibrated: bool = True) -> Predictive:
        """:class:`Predictive` from raw member outputs (K, Q, C or 2C)."""
        self.check_std()
        mu, var = self.split(out)
        mean, std = mixture(mu, var)
        if calibrated:
            std = std * self.temperature.to(std.dtype)
        return Predictive(mean, std, mu, var)

    def forward(self, batch: GeometryBatch, x: Optional[Tensor] = None) -> Tensor:
        """The ensemble mean at the batch's queries, (ΣQ, C) (as :meth:`GINO.forward`)."""
        mu, _ = self.split(self.member_outputs(batch, x))
        return mu.mean(0)

    def predict(self, batch: GeometryBatch, x: Optional[Tensor] = None, calibrated: bool = True) -> Predictive:
        """Mean and standard deviation (temperature applied when ``calibrated``) at the
        batch's queries."""
        return self.distribution(self.member_outputs(batch, x), calibrated)

    def query(self, geometry: Union[Geometry, Tensor], points: Tensor, x: Optional[Tensor] = None,
              chunk_size: int = 65536, latent_features: Optional[Tensor] = None, calibrated: bool = True,
              distribution: bool = True):
        """As :meth:`GINO.query` for every member (encoded once each, in one vectorised call;
        queries decoded ``chunk_size`` at a time): a :class:`Predictive` over the Q points, or
        with ``distribution=False`` the raw member outputs (K, Q, C or 2C)."""
        if distribution:
            self.check_std()
        t = self.template
        pts, w = points_and_weights(geometry)
        q = torch.as_tensor(points, device=pts.device)
        for what, a, n in (("points", q, "Q"), ("geometry points", pts, "N")):
            if a.dim() != 2 or a.shape[1] != t.coord_dim:
                raise ShapeError(f"Ensemble.query: {what} must have shape ({n}, {t.coord_dim}), got {tuple(a.shape)}")
        if x is None and t.point_inputs:
            if not isinstance(geometry, Geometry):
                raise ShapeError(f"Ensemble.query: the model's inputs {list(t.point_inputs)} are taken from a Geometry; got bare points")
            x = t.point_features(geometry)
        if latent_features is None and t.latent_feature_names:
            if not isinstance(geometry, Geometry):
                raise ShapeError("Ensemble.query: the latent features are computed from a Geometry; got bare points")
            latent_features = t.latent_features(geometry)[0].to(pts.device)
        lf = None if latent_features is None else latent_features.unsqueeze(0)
        with torch.no_grad():
            nin = t.neighbors_in(pts, None, 1)
        sums, counts = self._encoder_sums(pts, x, w, None, 1, nin)
        lat = self._map(lambda p, s: self._stage(p, "encode_finish", s, counts, lf, 1), sums)
        cs = max(1, int(chunk_size))
        outs = []
        for i in range(0, q.shape[0], cs):
            qc = q[i : i + cs]
            with torch.no_grad():
                nout = t.neighbors_out(qc.to(lat.dtype), None, 1)
                local = t.local_neighbors(qc.to(lat.dtype), pts, None, None, 1) if (t.gno_local is not None or t.local_nearest) else None
            outs.append(self._map(lambda p, la: self._stage(p, "decode", la, qc, None, nout, pts, x, None, local=local), lat))
        K = self.size
        out = torch.cat(outs, 1) if outs else lat.new_zeros((K, 0, self.member_config["out_channels"]))
        return self.distribution(out, calibrated) if distribution else out

    # ------------------------------------------------------------------ training
    def bootstrap_weights(self, meta: Sequence[Mapping], device=None) -> Tensor:
        """(K, B) Poisson(1) case counts of the batch's items (``meta[b]["case"]``), the same
        for a case in every epoch; ones without ``bootstrap``."""
        B = len(meta)
        if not self.bootstrap:
            return torch.ones(self.size, B, device=device)
        import numpy as np

        w = np.zeros((self.size, B))
        for b, m in enumerate(meta):
            case = m.get("case") if isinstance(m, Mapping) else None
            if case is None:
                raise ConfigError("model.ensemble.bootstrap: the batch items carry no case name (meta['case']) to resample by")
            h = zlib.crc32(str(case).encode())
            for k in range(self.size):
                w[k, b] = np.random.default_rng([self.seed, k, h]).poisson(1.0)
        return torch.as_tensor(w, dtype=torch.float32, device=device)

    def member_losses(self, batch: GeometryBatch, x: Optional[Tensor], y: Tensor, widths: Sequence[int],
                      loss: Callable[[Tensor], Tensor], extra: Optional[Callable[[Tensor], Tensor]] = None,
                      mask: Optional[Tensor] = None):
        """The training objective per item and field, (B, F): every member's ``loss(mean_k)``
        (B, F) (plus its Gaussian NLL with a variance head; times its bootstrap weights),
        averaged over the members. ``y`` (ΣQ, C) the normalised targets, ``widths`` the
        fields' channel counts; ``mask`` (ΣQ, F), when given, the queries that count in each
        field's NLL (1) and those that do not (0; e.g. another query set's rows).
        ``extra``: a per-member term ``extra(mean_k)`` (B,) (e.g. a coefficient loss); when
        given, returns ``((B, F), (B,))``, both bootstrap-weighted and member-averaged."""
        mu, var = self.split(self.member_outputs(batch, x))
        errs = torch.stack([loss(mu[k]) for k in range(self.size)])  # (K, B, F)
        if var is not None:
            r2 = (y.to(mu.dtype) - mu.detach()).square()
            nll = 0.5 * (var.log() + r2 / var)  # (K, ΣQ, C)
            B = batch.num_samples
            if mask is None:
                counts = torch.bincount(batch.query_batch, minlength=B).clamp(min=1).to(nll.dtype)[:, None]
            else:  # per field: its own queries only
                cm = torch.repeat_interleave(mask.to(nll.dtype), torch.as_tensor(list(widths), device=mask.device), dim=1)
                nll = nll * cm
                counts = nll.new_zeros((B, cm.shape[1])).index_add_(0, batch.query_batch, cm).clamp(min=1)
            per = nll.new_zeros((self.size, B, nll.shape[2])).index_add_(1, batch.query_batch, nll) / counts[None]
            cols = torch.split(per, list(widths), dim=2)
            errs = errs + torch.stack([c.mean(2) for c in cols], 2)
        wts = self.bootstrap_weights(batch.meta or [{}] * batch.num_samples, errs.device)
        out = (errs * wts[:, :, None]).mean(0)
        if extra is None:
            return out
        ex = torch.stack([extra(mu[k]) for k in range(self.size)])  # (K, B)
        return out, (ex * wts.to(ex.dtype)).mean(0)
