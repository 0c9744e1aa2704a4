"""MeshFolderDataset settings as typed groups (geoop.data.specs): the same dataset as the
flat keywords, round trips through TOML and YAML, clear errors."""
import json

import pytest
import torch

from geoop.data import MeshFolderDataset
from geoop.data.specs import CacheSpec, FilesSpec, NormalizationSpec, SamplingSpec, SplitSpec
from geoop.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    from geoop.data import airfoil

    root = tmp_path_factory.mktemp("af")
    airfoil.generate(str(root), 3, seed=5, n_volume=300, n_panels=40)
    (root / "manifest.json").unlink()
    return root


def test_groups_build_the_same_dataset_as_the_flat_keywords(cases):
    import tomllib

    import tomli_w
    import yaml

    flat = MeshFolderDataset(cases, inputs=["Cp"], targets=["p"], input_file="{case}_surface.vtp", query_file="{case}_volume.vtu",
                             test_fraction=0.34, seed=2, geometry_normalization="case", drop_flat_z=True,
                             subsample={"queries": 50}, memory_cache_mb=64)
    groups = {"files": FilesSpec(input_file="{case}_surface.vtp", query_file="{case}_volume.vtu"),
              "splitting": SplitSpec(test_fraction=0.34, seed=2),
              "normalization": NormalizationSpec(geometry="case", drop_flat_z=True),
              "sampling": SamplingSpec(queries=50), "caching": CacheSpec(memory_mb=64)}
    typed = MeshFolderDataset(cases, inputs=["Cp"], targets=["p"], **groups)
    assert typed.cases == flat.cases and typed.split_of == flat.split_of and typed.dim == flat.dim == 2
    a, b = flat[0], typed[0]
    assert torch.equal(a.queries.points, b.queries.points) and torch.equal(a.geometry.fields["Cp"], b.geometry.fields["Cp"])
    for dump, load in ((tomli_w.dumps, tomllib.loads), (yaml.safe_dump, yaml.safe_load)):
        plain = load(dump({k: v.to_dict() for k, v in groups.items()}))
        again = MeshFolderDataset(cases, inputs=["Cp"], targets=["p"], **plain)
        assert again.split_of == flat.split_of and torch.equal(again[0].queries.points, a.queries.points)
    assert json.dumps(NormalizationSpec(geometry={"scale": 2.0}).to_dict())


def test_dataset_group_errors_name_the_keys(cases):
    with pytest.raises(ConfigError, match="given both"):
        MeshFolderDataset(cases, targets=["p"], seed=3, splitting=SplitSpec(seed=4))
    with pytest.raises(ConfigError, match="pattern.*valid keys"):
        MeshFolderDataset(cases, targets=["p"], files={"pattern": "*.vtu"})
    with pytest.raises(ConfigError):
        NormalizationSpec(geometry="unit")
    with pytest.raises(ConfigError):
        SplitSpec(test_fraction=1.5)
