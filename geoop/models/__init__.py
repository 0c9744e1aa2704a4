"""Models composed of geoop.nn layers: :class:`GINO` (GNO encoder -> FNO/SFNO -> GNO decoder)
and :class:`GraphedGINO` (a GINO bound to one batch geometry, replayed as CUDA graphs);
:func:`compile_gino` (``torch.compile`` with dynamic sizes) and :class:`RaggedGraphedGINO`
(CUDA graphs for batches of any geometry, padded to capacity buckets); their
nested configuration (:mod:`geoop.models.config`) and inputs by name
(:mod:`geoop.models.features`)."""
from .compiled import CompiledGINO, RaggedGraphedGINO, compile_gino  # noqa: F401
from .config import (  # noqa: F401
    BoxLatent,
    EncoderSpec,
    FNOSpec,
    GNOSpec,
    LocalSpec,
    MemorySpec,
    SFNOSpec,
    SphereLatent,
)
from .ensemble import Ensemble, Predictive  # noqa: F401
from .features import LatentSDF  # noqa: F401
from .gino import GINO, sphere_grid_points  # noqa: F401
from .graphed import GraphedGINO  # noqa: F401
from .nested import LatentLevel, NestedGINO, NestedLatent, model_from_config  # noqa: F401

__all__ = ["GINO", "GraphedGINO", "CompiledGINO", "RaggedGraphedGINO", "compile_gino", "LatentLevel", "NestedGINO",
           "NestedLatent", "model_from_config", "sphere_grid_points", "BoxLatent", "SphereLatent", "EncoderSpec", "GNOSpec", "FNOSpec",
           "SFNOSpec", "LocalSpec", "MemorySpec", "LatentSDF", "Ensemble", "Predictive"]
