"""Radius-ball neighbourhoods between point sets (CSR), with several backends."""
from .neighborhoods import Neighborhoods  # noqa: F401
