"""Models composed of geoop.nn layers: :class:`GINO` (GNO encoder -> FNO/SFNO -> GNO decoder)
and :class:`GraphedGINO` (a GINO bound to one batch geometry, replayed as CUDA graphs);
:func:`compile_gino` (``torch.compile`` with dynamic sizes) and :class:`RaggedGraphedGINO`
(CUDA graphs for batches of any geometry, padded to capacity buckets)."""
from .gino import GINO, sphere_grid_points  # noqa: F401
from .graphed import GraphedGINO  # noqa: F401
from .compiled import CompiledGINO, RaggedGraphedGINO, compile_gino  # noqa: F401

__all__ = ["GINO", "GraphedGINO", "CompiledGINO", "RaggedGraphedGINO", "compile_gino", "sphere_grid_points"]
