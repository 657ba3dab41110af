"""Networks the catalog lacks, through the same path: ``timm:NAME`` and ``torchvision:NAME``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from exporter.cli import cli
from exporter.foreign import foreign_source, is_foreign

pytest.importorskip("timm", reason="foreign sources need timm and torchvision (pip install -e '.[test]')")


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_specs_come_from_the_libraries_eval_transforms() -> None:
    convnext = foreign_source("timm:convnext_tiny").spec
    assert (convnext.name, convnext.family, convnext.interpolation, convnext.crop_pct) == (
        "timm-convnext_tiny", "timm", "bicubic", 0.95)
    regnet = foreign_source("torchvision:regnet_y_400mf").spec
    assert regnet.input_size == (3, 224, 224) and regnet.crop_pct == pytest.approx(224 / 232)
    assert is_foreign("timm:resnet18") and not is_foreign("resnet18") and not is_foreign("timm")


def test_timm_network_exports_and_validates(tmp_path: Path) -> None:
    result = run("onnx", "timm:convnext_tiny", "--img-size", "64", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "timm-convnext_tiny" / "timm-convnext_tiny.json").read_text())
    assert manifest["validation"]["passed"] and manifest["inputs"]["definition"].startswith("timm ")
    assert manifest["model"]["reference"] == "timm:convnext_tiny"


def test_torchvision_network_quantizes_to_int8(tmp_path: Path) -> None:
    """The issue's own command, at the network's 224 px (random weights: INT8 cosine 0.990 here; at 64 px
    the few pixels leave random RegNet's INT8 short of the budget)."""
    command = ("quantize", "torchvision:regnet_y_400mf", "--precision", "int8", "--out", str(tmp_path))
    result = run(*command)
    assert result.exit_code == 0, result.output
    folder = tmp_path / "torchvision-regnet_y_400mf"
    manifest = json.loads((folder / "torchvision-regnet_y_400mf.int8-trt.json").read_text())
    assert manifest["validation"]["passed"] and manifest["weights"]["kind"] == "random"
    again = run(*command)
    assert again.exit_code == 0 and "re-used" in again.output  # the one reuse rule holds for foreign networks too


@pytest.mark.parametrize("name, fragment", [
    ("timm:not_a_network", "timm has no model 'not_a_network'"),
    ("torchvision:resnet5", "torchvision has no classification model 'resnet5'"),
])
def test_unknown_foreign_network_is_one_line(tmp_path: Path, name: str, fragment: str) -> None:
    result = run("onnx", name, "--out", str(tmp_path))
    assert result.exit_code == 2 and fragment in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())
