"""Models composed of geoop.nn layers: :class:`GINO` (GNO encoder -> FNO/SFNO -> GNO decoder)."""
from .gino import GINO, sphere_grid_points  # noqa: F401

__all__ = ["GINO", "sphere_grid_points"]
