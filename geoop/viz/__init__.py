"""Visualisation: off-screen PyVista pictures (:func:`render`) and ParaView-ready VTK
export (:func:`export_vtk`). PyVista is imported only when a picture is drawn."""
from .export import export_vtk, with_error
from .render import field_values, relative_l2_error, render, surface_plot


def render_html(*args, **kw):
    """One self-contained interactive HTML page (see :func:`geoop.viz.html.render_html`)."""
    from .html import render_html as _render_html

    return _render_html(*args, **kw)


__all__ = ["render", "render_html", "surface_plot", "export_vtk", "with_error", "field_values", "relative_l2_error"]
