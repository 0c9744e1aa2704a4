"""Nested GINO configuration: specs validate and round-trip through TOML and YAML, the flat
keywords stay a deprecated alias that builds the same model, radii in latent cells."""
import dataclasses
import inspect
import warnings

import pytest
import torch

from geoop.errors import ConfigError
from geoop.models import GINO
from geoop.models.config import (
    BoxLatent,
    EncoderSpec,
    FNOSpec,
    GNOSpec,
    LocalSpec,
    MemorySpec,
    SFNOSpec,
    SphereLatent,
    cell_size,
)

SPECS = [
    BoxLatent(shape=(8, 6), domain=((-1.0, 0.0), (1.0, 1.5)), features=("sdf",), channels=2),
    SphereLatent(shape=(8, 16), grid="legendre-gauss"),
    EncoderSpec(radius="1.5 cells", mlp=(16,), kernel="nonlinear", reduction="weighted", pos_embed=None,
                inputs=("normals", "p", "U[0:2]", "const=2.5"), channels=12),
    GNOSpec(radius=0.2, reduction="sum", pos_embed="sinusoidal", n_freqs=4),
    FNOSpec(width=8, modes=(4, 3), layers=2, factorization="tucker", rank=0.3, norm="group", activation="silu"),
    SFNOSpec(width=8, layers=2, lmax=6, complex_weights=True),
    LocalSpec(radius_cells=0.7, channels=4, nearest=True),
    MemorySpec(chunk_edges=1000, checkpoint_encoder=False, checkpoint_edges=0),
]


def _toml_roundtrip(d):
    import tomllib

    import tomli_w

    return tomllib.loads(tomli_w.dumps(d))


def _yaml_roundtrip(d):
    import yaml

    return yaml.safe_load(yaml.safe_dump(d))


@pytest.mark.parametrize("s", SPECS, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("fmt", [_toml_roundtrip, _yaml_roundtrip], ids=["toml", "yaml"])
def test_every_spec_roundtrips(s, fmt):
    d = s.to_dict()
    back = type(s).from_dict(fmt({"section": d})["section"])
    assert back == s
    assert back.to_dict() == d


@pytest.mark.parametrize("cls", [BoxLatent, SphereLatent, EncoderSpec, GNOSpec, FNOSpec, SFNOSpec, LocalSpec, MemorySpec])
def test_unknown_keys_name_the_valid_ones(cls):
    with pytest.raises(ConfigError) as e:
        cls.from_dict({"no_such_key": 1})
    msg = str(e.value)
    assert "no_such_key" in msg
    for f in dataclasses.fields(cls):
        assert f.name in msg


@pytest.mark.parametrize("bad", [
    lambda: FNOSpec(width=0), lambda: FNOSpec(modes=(4, 0)), lambda: GNOSpec(reduction="max"),
    lambda: GNOSpec(radius=-1.0), lambda: GNOSpec(radius=0.1, radius_cells=2.0), lambda: GNOSpec(radius="2 km"),
    lambda: BoxLatent(shape=(1, 4)), lambda: BoxLatent(domain=((0, 0), (1, 0))), lambda: BoxLatent(features=("curvature",)),
    lambda: EncoderSpec(inputs=("U[2:1]",)), lambda: EncoderSpec(inputs=("const=abc",)), lambda: MemorySpec(checkpoint_edges=-1),
    lambda: LocalSpec(nearest="yes"), lambda: SphereLatent(grid="healpix"),
])
def test_specs_validate_themselves(bad):
    with pytest.raises(ConfigError):
        bad()


def test_signature_is_small_and_config_roundtrips_through_toml_and_yaml():
    assert len(inspect.signature(GINO).parameters) <= 10
    model = GINO(out_channels=2, coord_dim=2,
                 latent=BoxLatent(shape=(12, 10), domain=((-1.0, -1.0), (1.0, 0.8)), features=("sdf",)),
                 encoder=EncoderSpec(radius_cells=1.6, inputs=("normals", "p")),
                 blocks=FNOSpec(width=8, modes=(3, 3), layers=2), decoder=GNOSpec(radius="1.9 cells"),
                 local=LocalSpec(radius=0.05, nearest=True), memory=MemorySpec(chunk_edges=512))
    assert model.in_channels == 3 and model.latent_channels == 1
    for fmt in (_toml_roundtrip, _yaml_roundtrip):
        cfg = fmt(model.config)
        assert cfg == model.config
        twin = GINO.from_config(cfg)
        assert twin.config == model.config
        assert {k: v.shape for k, v in twin.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


def test_radius_in_cells():
    lat = BoxLatent(shape=(64, 48), domain=((-0.5, -0.75), (1.5, 0.75)))
    h = max(2.0 / 63, 1.5 / 47)
    assert cell_size(lat, 2) == pytest.approx(h)
    m = GINO(0, 1, 2, latent=lat, encoder={"radius": "1.6 cells"}, decoder={"radius_cells": 1.9},
             blocks={"width": 4, "modes": 2, "layers": 1}, local={"radius_cells": 1.0})
    assert m.radius_in == pytest.approx(1.6 * h) and m.radius_out == pytest.approx(1.9 * h)
    assert m.local_radius == pytest.approx(h) and m.gno_local is not None
    # changing the grid moves every radius with it
    m2 = GINO.from_config({**m.config, "latent": {**m.config["latent"], "shape": [32, 24]}})
    assert m2.radius_in == pytest.approx(1.6 * max(2.0 / 31, 1.5 / 23))


def test_flat_keywords_are_a_deprecated_alias_for_the_same_model():
    with pytest.warns(DeprecationWarning, match="fno_modes"):
        old = GINO(in_channels=1, out_channels=2, coord_dim=2, latent_shape=(8, 8), radius_in=0.2, radius_out=0.3,
                   fno_width=8, fno_modes=3, fno_layers=2, gno_mlp=(16,), local_radius=0.05, local_nearest=True,
                   chunk_size=100, checkpoint_edges=7, fno_kwargs={"factorization": "cp", "rank": 0.5})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = GINO(1, 2, 2, latent=BoxLatent(shape=(8, 8)), encoder=EncoderSpec(radius=0.2, mlp=(16,)),
                   decoder=GNOSpec(radius=0.3, mlp=(16,)), blocks=FNOSpec(width=8, modes=3, layers=2, factorization="cp"),
                   local=LocalSpec(radius=0.05, nearest=True), memory=MemorySpec(chunk_edges=100, checkpoint_edges=7))
    assert old.config == new.config
    torch.manual_seed(0)
    old.load_state_dict(new.state_dict())
    pts, q = torch.rand(50, 2), torch.rand(30, 2)
    x = torch.rand(50, 1)
    with torch.no_grad():
        assert torch.equal(old.query(pts, q, x=x), new.query(pts, q, x=x))
    # the README's short form keeps working
    with pytest.warns(DeprecationWarning):
        GINO(in_channels=0, out_channels=1, fno_modes=4)
    # an old flat checkpoint config still loads
    with pytest.warns(DeprecationWarning):
        again = GINO.from_config({"in_channels": 1, "out_channels": 2, "coord_dim": 2, "latent_shape": [8, 8],
                                  "radius_in": 0.2, "fno_width": 8, "fno_modes": 3, "fno_layers": 2})
    assert again.config["blocks"]["modes"] == 3


def test_flat_and_nested_together_or_unknown_keywords_are_errors():
    with pytest.raises(ConfigError, match="nested"):
        GINO(0, 1, fno_modes=4, blocks=FNOSpec(width=8))
    with pytest.raises(ConfigError, match="valid"):
        GINO(0, 1, fno_mode=4)
    with pytest.raises(ConfigError, match="in_channels"):
        GINO(5, 1, 2, encoder=EncoderSpec(inputs=("normals",)))
    with pytest.raises(ConfigError, match="SFNOSpec"):
        GINO(0, 1, 3, latent="sphere", blocks=FNOSpec())


def test_sphere_latent_nested():
    m = GINO(0, 1, 3, latent=SphereLatent(shape=(8, 16)), blocks=SFNOSpec(width=8, layers=1, lmax=4),
             encoder={"radius": 0.6}, decoder={"radius": 0.6})
    assert m.config["blocks"]["kind"] == "sfno" and m.sphere_grid == "equiangular"
    assert GINO.from_config(_toml_roundtrip(m.config)).config == m.config
