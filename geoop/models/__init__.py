"""Models composed of geoop.nn layers: :class:`GINO` (GNO encoder -> FNO/SFNO -> GNO decoder)
and :class:`GraphedGINO` (a GINO bound to one batch geometry, replayed as CUDA graphs)."""
from .gino import GINO, sphere_grid_points  # noqa: F401
from .graphed import GraphedGINO  # noqa: F401
from .nested import LatentLevel, NestedGINO, NestedLatent  # noqa: F401

__all__ = ["GINO", "GraphedGINO", "LatentLevel", "NestedGINO", "NestedLatent", "sphere_grid_points"]
