"""One suite over the whole registry: every variant is counted, checked against its reference
library where one exists, and exported, simplified and validated on ONNX Runtime."""

from __future__ import annotations

import pytest
import torch

from bbruntime.runners import OrtRunner
from exporter.pipeline import ExportOptions, export_onnx
from model_defs import create_model, get_entry, get_spec, list_models
from model_defs._registry import spec_with_size

from .conftest import (
    CI_EXPORT_MAX_PARAMS,
    assert_same_outputs,
    exported_here,
    input_size_for_tests,
    is_huge,
    param_count,
    randomize_norm_stats,
    reference_model,
)

ALL = list_models()
WITH_REFERENCE = [n for n in ALL if get_spec(n).reference]


@pytest.mark.parametrize("name", ALL)
def test_parameter_count(name: str) -> None:
    spec = get_spec(name)
    if spec.reference_params is None:
        pytest.skip(f"{name}: no reference parameter count in ../shared/families.md")
    params = param_count(name)
    assert abs(params - spec.reference_params) <= spec.params_tolerance * spec.reference_params, (
        f"{name}: {params:,} parameters, reference {spec.reference_params:,}")


@pytest.mark.parametrize("name", WITH_REFERENCE)
def test_reference_parity(name: str) -> None:
    """The reference library's state_dict loads strictly (through the family remap) and the
    outputs agree on the same input. Variants over HUGE_PARAMS load it on the meta device (every
    key and shape checked, nothing computed): their forward code is the smaller variants'."""
    spec = get_spec(name)
    if is_huge(spec):  # same code as the family's smaller variants: the weights' layout is what is at stake
        with torch.device("meta"):
            reference, ours = reference_model(spec.reference, spec.num_classes), create_model(name)
        ours.load_state_dict(_remapped(name, reference.state_dict(), ours), strict=True, assign=True)
        return
    torch.manual_seed(0)
    reference = reference_model(spec.reference, spec.num_classes)
    randomize_norm_stats(reference)
    ours = create_model(name)
    ours.load_state_dict(_remapped(name, reference.state_dict(), ours), strict=True)
    size = input_size_for_tests(spec)
    if size != spec.input_size and hasattr(ours, "set_input_size"):  # resolution baked into the weights
        ours.set_input_size(size[1:])
        reference.set_input_size(img_size=size[1:])
    x = torch.randn(2, *size, generator=torch.Generator().manual_seed(1))
    assert_same_outputs(reference, ours, x)


def _remapped(name: str, state: dict, ours: torch.nn.Module) -> dict:
    remap = get_entry(name).remap
    return remap(state) if remap is not None and set(state) != set(ours.state_dict()) else state


@pytest.mark.parametrize("name", ALL)
def test_export_simplify_validate(name: str, tmp_path) -> None:
    """Every variant exports with a dynamic batch, and validation runs its 4 random inputs and 10
    photos as two batches: one graph, checked against PyTorch at batch sizes above 1."""
    spec = get_spec(name)
    if name not in exported_here():  # README "Large variants": CI time budget
        why = (f"over {CI_EXPORT_MAX_PARAMS // 1_000_000}M parameters" if param_count(name) > CI_EXPORT_MAX_PARAMS
               else f"the layer kinds of {spec.family}'s exported variants at other widths and depths")
        pytest.skip(f"{name}: {why}; counted and parity-checked above, exported by `make test-all-variants`, "
                    "the catalog report and the CLI")
    size = input_size_for_tests(spec)
    outcome = export_onnx(name, ExportOptions(out=tmp_path, img_size=(size[1], size[2]), dynamic_batch=True))
    assert outcome.validation.passed
    assert outcome.simplify.simplified, f"onnxsim fell back: {outcome.simplify.reason}"
    assert outcome.onnx_path.is_file() and outcome.manifest_path.is_file()
    assert outcome.manifest["onnx"]["batch"] == "dynamic"
    assert OrtRunner(outcome.onnx_path).static_batch is None
    assert outcome.manifest["onnx"]["input"]["shape"][1:] == list(size)
    assert outcome.manifest["onnx"]["output"]["shape"][1:] == [spec.num_classes]


@pytest.mark.parametrize("name", ALL)
def test_spec_is_consistent(name: str) -> None:
    spec = get_spec(name)
    assert spec.family and spec.paper, f"{name}: family and paper must be named"
    assert len(spec.mean) == len(spec.std) == spec.input_size[0]
    assert spec.input_size[1] % spec.size_divisor == 0 or spec.fixed_input_size
    assert spec_with_size(spec, None) is spec
    if spec.reference:
        assert spec.reference.split(":")[0] in ("timm", "torchvision")
    if not spec.dynamic_batch:
        assert spec.dynamic_batch_note, f"{name}: say why the batch cannot be dynamic"
