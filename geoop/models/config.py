"""Typed, nested configuration of :class:`geoop.models.GINO`.

Each stage of the model has one small dataclass that validates itself on construction:

=====================  =======================================================
``latent=``            :class:`BoxLatent` (FNO on a box grid) or :class:`SphereLatent`
                       (SFNO on a lat-lon grid); latent features by name (``"sdf"``)
``encoder=``           :class:`EncoderSpec`: the GNO from the input points to the
                       latent nodes, and the point inputs by name
``blocks=``            :class:`FNOSpec` (box) or :class:`SFNOSpec` (sphere)
``decoder=``           :class:`GNOSpec`: the GNO from the latent nodes to the queries
``local=``             :class:`LocalSpec`: sub-grid features of the queries
``memory=``            :class:`MemorySpec`: edge chunking and recomputation
=====================  =======================================================

Every spec is ``to_dict()`` -> plain dict (lists, no None: TOML has no null) and
``from_dict(d)`` -> spec, so a TOML/YAML ``[model.encoder]`` section maps one-to-one onto
:class:`EncoderSpec`; unknown keys raise :class:`~geoop.errors.ConfigError` naming the valid
ones. Specs given as dicts (or, for ``latent``, the strings ``"box"``/``"sphere"``) are
accepted wherever a spec is.

Radii are given either in coordinates (``radius=0.05``) or in latent cells
(``radius_cells=1.6``, or ``radius="1.6 cells"``); one cell is the largest latent grid
spacing, :func:`cell_size`: ``max_k (hi_k - lo_k) / (n_k - 1)`` for a box, the chord of the
largest angular spacing ``max(pi / (nlat - 1), 2 pi / nlon)`` for a sphere.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Optional, Sequence, Union

from ..errors import ConfigError

__all__ = [
    "BoxLatent", "SphereLatent", "GNOSpec", "EncoderSpec", "FNOSpec", "SFNOSpec", "IncrementalSpec", "LocalSpec",
    "MemorySpec", "INCREMENTAL_RULES",
    "latent_spec", "blocks_spec", "spec", "cell_size", "resolve_radius", "LEGACY_KEYS", "from_flat",
]

_CELLS = re.compile(r"^\s*([0-9.eE+-]+)\s*cells?\s*$")


def _plain(v: Any) -> Any:
    if isinstance(v, (tuple, list)):
        return [_plain(a) for a in v]
    if isinstance(v, Mapping):
        return {str(k): _plain(a) for k, a in v.items() if a is not None}
    return v


def _tuple(v: Any) -> Any:
    """Lists (from TOML/YAML) -> tuples, recursively; other values unchanged."""
    if isinstance(v, (list, tuple)):
        return tuple(_tuple(a) for a in v)
    return v


@dataclass
class _Spec:
    """Base of every spec: key checking, ``to_dict``/``from_dict``."""

    kind: ClassVar[Optional[str]] = None  # written as "kind" when set (latent / blocks)

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, d: Optional[Mapping]) -> "_Spec":
        """Build from a mapping; unknown keys raise :class:`ConfigError` listing the valid ones."""
        if d is None:
            return cls()
        if isinstance(d, cls):
            return d
        if not isinstance(d, Mapping):
            raise ConfigError(f"{cls.__name__}: expected a mapping, got {type(d).__name__} {d!r}")
        d = dict(d)
        kind = d.pop("kind", cls.kind)
        if kind != cls.kind:
            raise ConfigError(f"{cls.__name__}: kind {kind!r} does not match {cls.kind!r}")
        valid = cls.keys()
        unknown = sorted(set(d) - set(valid))
        if unknown:
            raise ConfigError(f"{cls.__name__}: unknown key{'s' if len(unknown) > 1 else ''} {unknown}; "
                              f"valid keys: {sorted(valid + (['kind'] if cls.kind else []))}")
        return cls(**{k: _tuple(v) for k, v in d.items()})

    def to_dict(self) -> dict:
        """Plain dict (lists, None values left out), accepted back by :meth:`from_dict`."""
        out = {"kind": self.kind} if self.kind else {}
        out.update({k: _plain(getattr(self, k)) for k in self.keys() if getattr(self, k) is not None})
        return out

    # -- validation helpers
    def _err(self, msg: str) -> ConfigError:
        return ConfigError(f"{type(self).__name__}: {msg}")

    def _int(self, name: str, lo: int, allow_none: bool = False) -> None:
        v = getattr(self, name)
        if v is None and allow_none:
            return
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise self._err(f"{name} must be an integer >= {lo}, got {v!r}")

    def _choice(self, name: str, valid: Sequence, allow_none: bool = False) -> None:
        v = getattr(self, name)
        if v is None and allow_none:
            return
        if v not in valid:
            raise self._err(f"{name} {v!r} is unknown; valid: {list(valid)}")

    def _radius(self, name: str = "radius", cells: str = "radius_cells", allow_zero: bool = False) -> None:
        r = getattr(self, name)
        if isinstance(r, str):
            m = _CELLS.match(r)
            if not m:
                raise self._err(f"{name} {r!r} must be a number (coordinates) or a string like '1.6 cells'")
            if getattr(self, cells) is not None:
                raise self._err(f"give {name} or {cells}, not both")
            object.__setattr__(self, cells, float(m.group(1)))
            object.__setattr__(self, name, None)
            r = None
        rc = getattr(self, cells)
        if r is not None and rc is not None:
            raise self._err(f"give {name} (coordinates) or {cells} (latent cells), not both; got {r!r} and {rc!r}")
        for n, v in ((name, r), (cells, rc)):
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
                raise self._err(f"{n} must be a finite number {'>=' if allow_zero else '>'} 0, got {v!r}")
            object.__setattr__(self, n, float(v))


# ---------------------------------------------------------------------------- latent
@dataclass
class BoxLatent(_Spec):
    """A regular box grid: ``shape`` nodes per axis (default 16 per axis) spanning ``domain``
    = ``(lower corner, upper corner)`` (default the unit cube), nodes at both ends.

    features : latent features computed by the model from the input geometry, by name
        (``"sdf"``: the signed distance from each node to the geometry's boundary, one channel)
    channels : width of further latent features given by hand (``Sample.latent_features``)
    """

    kind: ClassVar[str] = "box"
    shape: Optional[tuple] = None
    domain: Optional[tuple] = None
    features: tuple = ()
    channels: int = 0

    def __post_init__(self):
        if self.shape is not None:
            self.shape = tuple(self.shape) if isinstance(self.shape, (list, tuple)) else (self.shape,)
            if not self.shape or any(isinstance(n, bool) or not isinstance(n, int) or n < 2 for n in self.shape):
                raise self._err(f"shape must be integers >= 2 per axis, got {self.shape!r}")
        if self.domain is not None:
            dom = _tuple(self.domain)
            ok = len(dom) == 2 and all(isinstance(c, tuple) for c in dom) and len(dom[0]) == len(dom[1]) and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for c in dom for v in c)
            if not ok:
                raise self._err(f"domain must be (lower corner, upper corner), e.g. [[0, 0], [1, 1]], got {self.domain!r}")
            if any(hi <= lo for lo, hi in zip(*dom)):
                raise self._err(f"domain upper corner must exceed the lower one on every axis, got {self.domain!r}")
            self.domain = tuple(tuple(float(v) for v in c) for c in dom)
            if self.shape is not None and len(self.shape) != len(self.domain[0]):
                raise self._err(f"shape {self.shape} and domain {self.domain} have different numbers of axes")
        _check_latent_features(self)
        self._int("channels", 0)


@dataclass
class SphereLatent(_Spec):
    """The unit sphere on an ``(nlat, nlon)`` grid: ``grid`` ``"equiangular"`` (poles included)
    or ``"legendre-gauss"``; ``features``/``channels`` as for :class:`BoxLatent`."""

    kind: ClassVar[str] = "sphere"
    shape: tuple = (16, 32)
    grid: str = "equiangular"
    features: tuple = ()
    channels: int = 0

    def __post_init__(self):
        self.shape = tuple(self.shape)
        if len(self.shape) != 2 or any(isinstance(n, bool) or not isinstance(n, int) or n < 2 for n in self.shape):
            raise self._err(f"shape must be (nlat, nlon), integers >= 2, got {self.shape!r}")
        from ..nn.sfno import SPHERE_GRIDS

        self._choice("grid", SPHERE_GRIDS)
        _check_latent_features(self)
        self._int("channels", 0)


#: latent features the model computes itself
LATENT_FEATURES = ("sdf",)


def _check_latent_features(s) -> None:
    s.features = tuple(s.features) if isinstance(s.features, (list, tuple)) else (s.features,)
    bad = [f for f in s.features if f not in LATENT_FEATURES]
    if bad:
        raise s._err(f"unknown latent features {bad}; valid: {list(LATENT_FEATURES)} (other latent features: "
                     "give their width as channels and pass them as Sample.latent_features)")
    if len(set(s.features)) != len(s.features):
        raise s._err(f"latent features repeated: {list(s.features)}")


LatentSpec = Union[BoxLatent, SphereLatent]


def latent_spec(v: Union[None, str, Mapping, LatentSpec]) -> LatentSpec:
    """``None``/``"box"``/``{"kind": "box", ...}``/a spec -> :class:`BoxLatent` or :class:`SphereLatent`."""
    kinds = {"box": BoxLatent, "sphere": SphereLatent}
    if v is None:
        return BoxLatent()
    if isinstance(v, (BoxLatent, SphereLatent)):
        return v
    if isinstance(v, str):
        if v not in kinds:
            raise ConfigError(f"GINO latent: unknown kind {v!r}; valid: {list(kinds)}")
        return kinds[v]()
    if isinstance(v, Mapping):
        kind = v.get("kind", "box")
        if kind not in kinds:
            raise ConfigError(f"GINO latent: unknown kind {kind!r}; valid: {list(kinds)}")
        return kinds[kind].from_dict(v)
    raise ConfigError(f"GINO latent: expected BoxLatent, SphereLatent, a dict or 'box'/'sphere', got {type(v).__name__}")


# ---------------------------------------------------------------------------- GNOs
_KERNELS = ("linear", "nonlinear", "kernel_only")
_REDUCTIONS = ("mean", "weighted", "sum")
_EMBEDS = ("nerf", "sinusoidal", None)


@dataclass
class GNOSpec(_Spec):
    """A GNO between point sets (the decoder; :class:`EncoderSpec` adds the encoder's keys).

    radius / radius_cells : ball radius in coordinates or in latent cells (default 0.1
        coordinates); ``radius="1.6 cells"`` is the same as ``radius_cells=1.6``
    mlp : hidden widths of the kernel MLP
    kernel : ``"linear"`` (``k(x, y) * f(y)``), ``"nonlinear"`` (``k(x, y, f(y))``) or
        ``"kernel_only"`` (no features; the encoder's default without inputs); None: the default
    reduction : ``"mean"``, ``"weighted"`` (quadrature weights) or ``"sum"`` over each ball
    pos_embed, n_freqs : positional embedding of the coordinates (``"nerf"``,
        ``"sinusoidal"`` or None) and its number of frequencies
    search_backend : backend of :func:`geoop.radius_search` when neighbourhoods are computed
    """

    radius: Union[float, str, None] = None
    radius_cells: Optional[float] = None
    mlp: tuple = (64, 64)
    kernel: Optional[str] = None
    reduction: str = "mean"
    pos_embed: Optional[str] = "nerf"
    n_freqs: int = 8
    search_backend: str = "auto"

    def __post_init__(self):
        self._radius()
        self.mlp = tuple(self.mlp)
        if any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in self.mlp):
            raise self._err(f"mlp must be hidden widths >= 1, got {self.mlp!r}")
        self._choice("kernel", _KERNELS, allow_none=True)
        self._choice("reduction", _REDUCTIONS)
        self._choice("pos_embed", _EMBEDS)
        self._int("n_freqs", 1)
        from ..neighbors.backends import BACKENDS

        self._choice("search_backend", ("auto",) + tuple(b for b in BACKENDS if b != "auto"))

    def to_dict(self) -> dict:
        d = super().to_dict()
        if self.pos_embed is None:
            d["pos_embed"] = "none"  # TOML has no null
        return d

    @classmethod
    def from_dict(cls, d):
        if isinstance(d, Mapping) and d.get("pos_embed") == "none":
            d = {**d, "pos_embed": None}
        return super().from_dict(d)


@dataclass
class EncoderSpec(GNOSpec):
    """The encoder GNO (input points -> latent nodes) and the model's point inputs.

    inputs : the point features, by name, concatenated in this order (the model's
        ``in_channels`` is their total width; see :mod:`geoop.models.features`):
        ``"normals"`` (the geometry's normals, d), ``"coords"`` (the point coordinates, d),
        ``"const=1.5"`` (a constant, 1), ``"p"`` (point field ``p``, 1 component),
        ``"U[0:2]"`` / ``"U[2]"`` (components of a vector field)
    channels : encoder output width (default: the blocks' width)
    """

    inputs: tuple = ()
    channels: Optional[int] = None

    def __post_init__(self):
        super().__post_init__()
        from .features import parse_point_feature

        self.inputs = tuple(self.inputs) if isinstance(self.inputs, (list, tuple)) else (self.inputs,)
        for f in self.inputs:
            parse_point_feature(f)
        self._int("channels", 1, allow_none=True)


# ---------------------------------------------------------------------------- latent blocks
_FACTORIZATIONS = (None, "tucker", "cp")

#: rules that decide when incremental blocks grow their modes
INCREMENTAL_RULES = ("loss_plateau", "energy")


@dataclass
class IncrementalSpec(_Spec):
    """Incremental modes of the latent blocks (``[model.blocks.incremental]``): the blocks
    start with ``start`` modes (FNO: an int or one per axis; SFNO: degrees) and grow by
    ``step`` up to the blocks' ``modes`` / ``lmax`` (:mod:`geoop.nn.incremental`). After every
    ``every`` epochs the ``rule`` is checked (:class:`geoop.train.incremental.IncrementalModes`):

    * ``"loss_plateau"``: grow when the training loss improved by less than ``eps`` (absolute,
      the loss is a relative L2) over each of the last ``patience`` epochs;
    * ``"energy"``: grow when the modes below the outer ``buffer`` frequency shells hold less
      than ``threshold`` of the active spectral weights' energy (the explained ratio).
    """

    start: Union[int, tuple] = 4
    rule: str = "loss_plateau"
    step: int = 1
    every: int = 1
    eps: float = 1e-3
    patience: int = 1
    threshold: float = 0.99
    buffer: int = 1

    def __post_init__(self):
        st = tuple(self.start) if isinstance(self.start, (list, tuple)) else (self.start,)
        if not st or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in st):
            raise self._err(f"start must be an int >= 1 or one per axis, got {self.start!r}")
        self.start = st if isinstance(self.start, (list, tuple)) else self.start
        self._choice("rule", INCREMENTAL_RULES)
        for k in ("step", "every", "patience", "buffer"):
            self._int(k, 1)
        for k, hi in (("eps", math.inf), ("threshold", 1.0)):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= hi:
                raise self._err(f"{k} must be a number in [0, {hi}], got {v!r}")
            setattr(self, k, float(v))

    def start_modes(self, final: Sequence[int], where: str = "blocks", final_key: str = "modes") -> tuple:
        """``start`` as one int per axis of ``final``; ConfigError naming ``where`` when it
        has the wrong length or exceeds the final modes (the setting ``where.final_key``)."""
        st = self.start if isinstance(self.start, tuple) else (self.start,) * len(final)
        if len(st) != len(final):
            raise ConfigError(f"{where}.incremental.start {list(st)}: expected one value per axis of the "
                              f"final modes {list(final)}")
        if any(a > m for a, m in zip(st, final)):
            raise ConfigError(f"{where}.incremental.start {list(st)} exceeds the final modes "
                              f"{where}.{final_key} = {list(final)}")
        return st


def _incremental(s) -> None:
    """Validate ``s.incremental`` (None or a mapping) and store it as a plain dict."""
    if s.incremental is None:
        return
    if isinstance(s.incremental, IncrementalSpec):
        s.incremental = s.incremental.to_dict()
    try:
        s.incremental = IncrementalSpec.from_dict(s.incremental).to_dict()
    except ConfigError as e:
        raise s._err(f"incremental: {e}") from None


@dataclass
class FNOSpec(_Spec):
    """FNO blocks on a box latent: ``width`` channels, ``modes`` retained per corner (int or
    one per axis; ``m`` keeps ``2m`` frequencies on every axis but the last), ``layers``
    blocks; ``factorization``/``rank`` of the spectral weights, ``mlp_expansion``, ``skip``,
    ``norm`` of each block (see :class:`geoop.nn.FNOBlocks`); ``activation`` of every MLP of
    the model; ``projection_hidden``: hidden width of the output MLP (default ``2 * width``);
    ``incremental``: start with fewer modes and grow them to ``modes`` while training
    (:class:`IncrementalSpec`, a dict; None: fixed modes)."""

    kind: ClassVar[str] = "fno"
    width: int = 32
    modes: Union[int, tuple] = 8
    layers: int = 4
    factorization: Optional[str] = None
    rank: float = 0.5
    mlp_expansion: float = 0.5
    skip: str = "linear"
    norm: Optional[str] = None
    activation: str = "gelu"
    projection_hidden: Optional[int] = None
    incremental: Optional[dict] = None

    def __post_init__(self):
        self._int("width", 1)
        self._int("layers", 1)
        self._int("projection_hidden", 1, allow_none=True)
        m = tuple(self.modes) if isinstance(self.modes, (list, tuple)) else (self.modes,)
        if not m or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in m):
            raise self._err(f"modes must be an int >= 1 or one per axis, got {self.modes!r}")
        self.modes = m if isinstance(self.modes, (list, tuple)) else self.modes
        self._choice("factorization", _FACTORIZATIONS)
        self._choice("skip", ("linear", "identity"))
        self._choice("norm", (None, "instance", "group"))
        _incremental(self)
        if self.incremental is not None:
            inc = IncrementalSpec.from_dict(self.incremental)
            final = self.modes if isinstance(self.modes, tuple) else (
                (self.modes,) * (len(inc.start) if isinstance(inc.start, tuple) else 1))
            inc.start_modes(final)

    def block_kwargs(self) -> dict:
        return dict(factorization=self.factorization, rank=self.rank, mlp_expansion=self.mlp_expansion,
                    skip=self.skip, norm=self.norm)


@dataclass
class SFNOSpec(_Spec):
    """SFNO blocks on a sphere latent (see :class:`geoop.nn.SFNOBlocks`): ``lmax``/``mmax``
    spectral truncation (default from the grid), the other keys as for :class:`FNOSpec`
    (``incremental.start``: the degrees to start with, grown up to ``lmax``)."""

    kind: ClassVar[str] = "sfno"
    width: int = 32
    layers: int = 4
    lmax: Optional[int] = None
    mmax: Optional[int] = None
    factorization: Optional[str] = None
    rank: float = 0.5
    complex_weights: bool = False
    mlp_expansion: float = 0.5
    skip: str = "linear"
    norm: Optional[str] = None
    activation: str = "gelu"
    projection_hidden: Optional[int] = None
    incremental: Optional[dict] = None

    def __post_init__(self):
        self._int("width", 1)
        self._int("layers", 1)
        self._int("lmax", 1, allow_none=True)
        self._int("mmax", 1, allow_none=True)
        self._int("projection_hidden", 1, allow_none=True)
        self._choice("factorization", _FACTORIZATIONS)
        self._choice("skip", ("linear", "identity"))
        self._choice("norm", (None, "instance", "group"))
        _incremental(self)
        if self.incremental is not None:
            st = IncrementalSpec.from_dict(self.incremental).start
            if isinstance(st, tuple) and len(st) != 1:
                raise self._err(f"incremental.start must be one int (degrees) for SFNO blocks, got {list(st)}")
            if self.lmax is not None:
                IncrementalSpec.from_dict(self.incremental).start_modes((self.lmax,), final_key="lmax")

    def block_kwargs(self) -> dict:
        return dict(lmax=self.lmax, mmax=self.mmax, factorization=self.factorization, rank=self.rank,
                    complex_weights=self.complex_weights, mlp_expansion=self.mlp_expansion, skip=self.skip, norm=self.norm)


BlocksSpec = Union[FNOSpec, SFNOSpec]


def blocks_spec(v: Union[None, Mapping, BlocksSpec], latent: LatentSpec) -> BlocksSpec:
    """The latent blocks' spec; the default kind follows the latent (box: FNO, sphere: SFNO)."""
    kinds = {"fno": FNOSpec, "sfno": SFNOSpec}
    want = "sfno" if isinstance(latent, SphereLatent) else "fno"
    if v is None:
        v = kinds[want]()
    elif isinstance(v, Mapping):
        kind = v.get("kind", want)
        if kind not in kinds:
            raise ConfigError(f"GINO blocks: unknown kind {kind!r}; valid: {list(kinds)}")
        v = kinds[kind].from_dict(v)
    elif not isinstance(v, (FNOSpec, SFNOSpec)):
        raise ConfigError(f"GINO blocks: expected FNOSpec, SFNOSpec or a dict, got {type(v).__name__}")
    if v.kind != want:
        raise ConfigError(f"GINO: a {latent.kind} latent needs {kinds[want].__name__} blocks, got {type(v).__name__}")
    return v


# ---------------------------------------------------------------------------- local, memory
@dataclass
class LocalSpec(_Spec):
    """Sub-grid features of each query from the input points (GINO docstring, step 5):
    ``radius``/``radius_cells`` > 0 adds a small GNO branch ``channels`` wide; ``nearest``
    adds the offset to the nearest input point and its features. Default: off."""

    radius: Union[float, str, None] = None
    radius_cells: Optional[float] = None
    channels: int = 16
    nearest: bool = False

    def __post_init__(self):
        self._radius(allow_zero=True)
        self._int("channels", 1)
        if not isinstance(self.nearest, bool):
            raise self._err(f"nearest must be true or false, got {self.nearest!r}")


@dataclass
class MemorySpec(_Spec):
    """Memory bounds of the GNOs: ``chunk_edges`` edges per kernel-MLP chunk;
    ``checkpoint_encoder`` recomputes the encoder's edge MLP in backward (first-order
    gradients only; False for double backward); calls with more than ``checkpoint_edges``
    edges recompute the decoder's (and local branch's) edge MLP in backward (0: always).
    ``checkpoint_latent`` recomputes each latent (FNO/SFNO) block in backward instead of
    keeping its activations (about ten ``(B, width, *grid)`` tensors per block; costs one
    more forward of the blocks); default off."""

    chunk_edges: int = 1 << 14
    checkpoint_encoder: bool = True
    checkpoint_edges: int = 1 << 19
    checkpoint_latent: bool = False

    def __post_init__(self):
        self._int("chunk_edges", 1)
        self._int("checkpoint_edges", 0)
        for key in ("checkpoint_encoder", "checkpoint_latent"):
            if not isinstance(getattr(self, key), bool):
                raise self._err(f"{key} must be true or false, got {getattr(self, key)!r}")


def spec(cls, v):
    """``v`` (None, a dict or a ``cls``) as a ``cls``."""
    if isinstance(v, cls):
        return v
    if v is None or isinstance(v, Mapping):
        return cls.from_dict(v)
    raise ConfigError(f"GINO: expected {cls.__name__} or a dict, got {type(v).__name__} {v!r}")


# ---------------------------------------------------------------------------- radii in cells
def cell_size(latent: LatentSpec, coord_dim: int) -> float:
    """Largest latent grid spacing (see the module docstring)."""
    if isinstance(latent, SphereLatent):
        nlat, nlon = latent.shape
        ang = max(math.pi / max(nlat - 1, 1), 2 * math.pi / nlon)
        return 2.0 * math.sin(ang / 2)
    shape = latent.shape or (16,) * coord_dim
    dom = latent.domain or ((0.0,) * coord_dim, (1.0,) * coord_dim)
    return max((hi - lo) / (n - 1) for lo, hi, n in zip(dom[0], dom[1], shape))


def resolve_radius(s, latent: LatentSpec, coord_dim: int, default: float) -> float:
    """A spec's radius in coordinates (``radius_cells * cell_size``, else ``radius``, else ``default``)."""
    if s.radius_cells is not None:
        return float(s.radius_cells) * cell_size(latent, coord_dim)
    return float(default if s.radius is None else s.radius)


# ---------------------------------------------------------------------------- flat (deprecated) keywords
#: the flat keyword of GINO's first release -> (section, key) of the nested config
LEGACY_KEYS = {
    "latent_shape": ("latent", "shape"), "domain": ("latent", "domain"), "sphere_grid": ("latent", "grid"),
    "latent_channels": ("latent", "channels"),
    "radius_in": ("encoder", "radius"), "gno_kernel_in": ("encoder", "kernel"),
    "gno_reduction_in": ("encoder", "reduction"), "gno_channels": ("encoder", "channels"),
    "radius_out": ("decoder", "radius"), "gno_kernel_out": ("decoder", "kernel"),
    "gno_reduction_out": ("decoder", "reduction"),
    "gno_mlp": ("encoder+decoder", "mlp"), "pos_embed": ("encoder+decoder", "pos_embed"),
    "n_freqs": ("encoder+decoder", "n_freqs"), "search_backend": ("encoder+decoder", "search_backend"),
    "fno_width": ("blocks", "width"), "fno_modes": ("blocks", "modes"), "fno_layers": ("blocks", "layers"),
    "fno_kwargs": ("blocks", "*"), "activation": ("blocks", "activation"),
    "projection_hidden": ("blocks", "projection_hidden"),
    "local_radius": ("local", "radius"), "local_channels": ("local", "channels"), "local_nearest": ("local", "nearest"),
    "chunk_size": ("memory", "chunk_edges"), "checkpoint_encoder": ("memory", "checkpoint_encoder"),
    "checkpoint_edges": ("memory", "checkpoint_edges"),
}


def from_flat(latent, flat: Mapping[str, Any]) -> dict:
    """Flat keywords (:data:`LEGACY_KEYS`) -> ``{section: dict}`` of the nested config.
    ``latent`` is the (legacy) kind string or None."""
    unknown = sorted(set(flat) - set(LEGACY_KEYS))
    if unknown:
        raise ConfigError(
            f"GINO: unknown keyword{'s' if len(unknown) > 1 else ''} {unknown}; valid: in_channels, out_channels, "
            f"coord_dim, latent, encoder, blocks, decoder, local, memory (and the deprecated flat keywords "
            f"{sorted(LEGACY_KEYS)})")
    out: dict = {"latent": {"kind": latent if isinstance(latent, str) else "box"}, "encoder": {}, "decoder": {},
                 "blocks": {}, "local": {}, "memory": {}}
    for k, v in flat.items():
        section, key = LEGACY_KEYS[k]
        if k == "fno_kwargs":
            out["blocks"].update(dict(v or {}))
        elif k == "sphere_grid" and out["latent"]["kind"] != "sphere":
            continue  # ignored by a box latent, as before
        elif k == "domain" and out["latent"]["kind"] == "sphere":
            continue
        elif k == "gno_channels" and not v:
            continue
        elif section == "encoder+decoder":
            out["encoder"][key] = v
            out["decoder"][key] = v
        else:
            out[section][key] = v
    if out["latent"]["kind"] == "sphere":
        out["blocks"]["kind"] = "sfno"
    return out


