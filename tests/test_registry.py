"""The registry: strict names, aliases, patterns, specs and their size checks."""

from __future__ import annotations

import pytest

from bbruntime.errors import InputSizeError, UnknownModelError
from model_defs import (
    create_model,
    definition_sha256,
    get_spec,
    list_families,
    list_models,
    model_stats,
    register_model,
    resolve_name,
)
from model_defs._registry import spec_with_size


def test_duplicate_name_is_an_error() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        @register_model(family="resnet", paper="-")
        def resnet18():  # noqa: ANN202 - the name is the point
            raise AssertionError("never built")


def test_unknown_name_suggests_close_names() -> None:
    with pytest.raises(UnknownModelError, match="did you mean.*resnet50"):
        resolve_name("resnet05")


def test_unknown_name_without_close_match_points_to_list() -> None:
    with pytest.raises(UnknownModelError, match="bbexport list"):
        resolve_name("zzzzzz")


def test_pattern_and_family_filters() -> None:
    assert list_models("resnet1*") == ["resnet18", "resnet101", "resnet152"]
    assert "resnet" in list_families()
    assert all(get_spec(n).family == "resnet" for n in list_models(family="resnet"))


def test_create_model_is_in_eval_mode() -> None:
    assert not create_model("resnet18").training


def test_stats_on_meta_device_match_torchvision_ops() -> None:
    stats = model_stats("resnet50")
    assert stats.params == 25_557_032
    assert round(stats.gmacs, 3) == 4.089  # torchvision's _ops for resnet50


def test_spec_with_size_checks_divisor() -> None:
    spec = get_spec("resnet18")
    assert spec_with_size(spec, 320).input_size == (3, 320, 320)
    with pytest.raises(InputSizeError, match="multiple of 32"):
        spec_with_size(spec, 100)
    with pytest.raises(InputSizeError, match="at least"):
        spec_with_size(spec, 0)


def test_definition_hash_follows_the_family_file():
    assert definition_sha256("resnet18") == definition_sha256("resnet50")  # one family file
    assert definition_sha256("resnet18") != definition_sha256("ghostnet_100")
    assert len(definition_sha256("ghostnet")) == 64  # aliases resolve
