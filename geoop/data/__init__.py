"""geoop.data: datasets (folders of CFD files, packed case stores, built-in physics generators),
normalisers and the on-disk neighbourhood cache.

Names are resolved lazily, so ``import geoop.data`` imports none of the generators
(``geoop.data.airfoil``, ``body3d``, ``sphere``, ``cars``) nor the dataset machinery until used.
"""
from __future__ import annotations

import importlib

_LAZY = {
    "MeshFolderDataset": "geoop.data.folder",
    "CaseFiles": "geoop.data.folder",
    "discover_cases": "geoop.data.folder",
    "resolve_split": "geoop.data.folder",
    "CaseIndex": "geoop.data.cases",
    "CaseReader": "geoop.data.folder",
    "CaseShape": "geoop.data.folder",
    "FieldNormalizer": "geoop.data.normalize",
    "DatasetNormalizers": "geoop.data.normalize",
    "fit_box_transform": "geoop.data.normalize",
    "DiskNeighborhoodCache": "geoop.data.cache",
    "file_sha256": "geoop.data.cache",
    "cache_key": "geoop.data.cache",
    "Preprocessor": "geoop.data.preprocess",
    "FilesSpec": "geoop.data.specs",
    "SplitSpec": "geoop.data.specs",
    "NormalizationSpec": "geoop.data.specs",
    "SamplingSpec": "geoop.data.specs",
    "CacheSpec": "geoop.data.specs",
    "CaseStore": "geoop.data.store",
    "pack_folder": "geoop.data.store",
    "StoreError": "geoop.data.store",
    "PackedCaseDataset": "geoop.data.store_dataset",
    "StoreCaseReader": "geoop.data.store_dataset",
}

__all__ = sorted(_LAZY)


_SUBMODULES = ("airfoil", "body3d", "sphere", "cars", "cases", "folder", "normalize", "cache", "preprocess", "specs", "store",
               "store_dataset")


def __getattr__(name: str):
    if name in _SUBMODULES:  # geoop.data.airfoil without an explicit import
        return importlib.import_module(f"geoop.data.{name}")
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'geoop.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(mod), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(__all__) | set(_SUBMODULES))
