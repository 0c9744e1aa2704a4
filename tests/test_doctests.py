"""The ``>>>`` examples on the public entry points run and print what they say."""
import doctest

import pytest

import geoop
from geoop.batch import GeometryBatch
from geoop.models import GINO

ENTRY_POINTS = [geoop.read, geoop.radius_search, GeometryBatch.from_geometries, GINO, GINO.query]


@pytest.mark.parametrize("obj", ENTRY_POINTS, ids=lambda o: o.__qualname__)
def test_docstring_examples(obj, one_thread):
    tests = [t for t in doctest.DocTestFinder(recurse=False).find(obj, obj.__qualname__, globs={}) if t.examples]
    assert tests, f"{obj.__qualname__} has no >>> example"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for t in tests:
        runner.run(t)
    assert runner.failures == 0 and runner.tries >= 3
