"""Visualisation: off-screen PyVista pictures (:func:`render`) and ParaView-ready VTK
export (:func:`export_vtk`). PyVista is imported only when a picture is drawn."""
from .export import export_vtk, with_error
from .render import field_values, relative_l2_error, render

__all__ = ["render", "export_vtk", "with_error", "field_values", "relative_l2_error"]
