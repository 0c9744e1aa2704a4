"""JSON that refuses a key repeated in one object (``json`` silently keeps the last one).

Used wherever geoop reads a file a person writes: run configs (:mod:`geoop.train.config`)
and split / manifest files (:mod:`geoop.data.cases`).
"""
from __future__ import annotations

import json
from typing import Any

__all__ = ["DuplicateKeyError", "unique_pairs", "loads", "load"]


class DuplicateKeyError(ValueError):
    """A key given twice in one JSON object."""


def unique_pairs(items) -> dict:
    """``object_pairs_hook``: the object as a dict; a repeated key is a :class:`DuplicateKeyError`."""
    out = {}
    for k, v in items:
        if k in out:
            raise DuplicateKeyError(f"duplicate key {k!r}; each key may appear once in an object")
        out[k] = v
    return out


def loads(text: str) -> Any:
    return json.loads(text, object_pairs_hook=unique_pairs)


def load(stream) -> Any:
    return json.load(stream, object_pairs_hook=unique_pairs)
