"""Engineering quantities from fields on geometries: pressure / wall-shear forces, moments
and aerodynamic coefficients on body surfaces (:func:`forces`). Imports only
:mod:`geoop.geometry`."""
from .forces import LOCATIONS, ORIENTATIONS, ForceResult, forces, surface_vector_areas

__all__ = ["forces", "ForceResult", "surface_vector_areas", "ORIENTATIONS", "LOCATIONS"]
