"""Engineering quantities from fields on geometries: pressure / wall-shear forces, moments
and aerodynamic coefficients on body surfaces (:func:`forces`). Imports only
:mod:`geoop.geometry`."""
from .coefficients import COEFFICIENT_NAMES, REGIONS, CoefficientWeights, body_regions, coefficient_weights
from .forces import LOCATIONS, ORIENTATIONS, ForceResult, forces, surface_vector_areas

__all__ = ["coefficient_weights", "CoefficientWeights", "body_regions", "REGIONS", "COEFFICIENT_NAMES", "forces", "ForceResult", "surface_vector_areas", "ORIENTATIONS", "LOCATIONS"]
