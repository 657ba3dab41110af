"""SqueezeNet beyond the registry suite (parity and export at 224): the ceil-mode max pools export as
ONNX MaxPool ceil_mode=1 and keep torchvision's feature sizes at a size where floor mode differs
(P-CEIL); the spec's smallest size is the smallest input the network runs on."""

from __future__ import annotations

import copy

import onnx
import pytest
import torch
from torch import nn

from bbruntime.errors import InputSizeError
from bbruntime.runners import OrtRunner
from exporter.onnx_export import onnx_from_model
from model_defs import create_model, get_spec, spec_with_size

from .conftest import reference_model

VARIANTS = ["squeezenet1_0", "squeezenet1_1"]


@pytest.mark.parametrize("name", VARIANTS)
def test_ceil_mode_pools_export_with_torchvision_feature_sizes(name: str, tmp_path) -> None:
    """At 72 px (a small size, for CI time) the features are 4x4, 3x3 in floor mode: our export's
    features, run on ONNX Runtime at batch 2, match torchvision's in size and value."""
    torch.manual_seed(0)
    reference = reference_model(f"torchvision:{name}", 1000)
    ours = create_model(name)
    ours.load_state_dict(reference.state_dict(), strict=True)
    path = tmp_path / f"{name}_features.onnx"
    onnx_from_model(ours.features, path, (3, 72, 72), dynamic_batch=True)
    pools = [n for n in onnx.load(str(path)).graph.node if n.op_type == "MaxPool"]
    ceil_modes = [onnx.helper.get_attribute_value(a) for n in pools for a in n.attribute if a.name == "ceil_mode"]
    assert ceil_modes == [1, 1, 1]
    x = torch.randn(2, 3, 72, 72, generator=torch.Generator().manual_seed(1))
    got = torch.from_numpy(OrtRunner(path).infer(x.numpy()))
    floor_mode = copy.deepcopy(reference.features)
    for m in floor_mode.modules():
        if isinstance(m, nn.MaxPool2d):
            m.ceil_mode = False
    with torch.no_grad():
        expected = reference.features(x)
        assert floor_mode(x).shape[-2:] == (3, 3)
    assert got.shape == expected.shape == (2, 512, 4, 4)
    assert (got - expected).abs().max().item() <= 1e-4 * expected.abs().max().item()


@pytest.mark.parametrize("name", VARIANTS)
def test_min_size_is_the_smallest_input_that_runs(name: str) -> None:
    spec = get_spec(name)
    model = create_model(name)
    with torch.no_grad():
        assert model.forward_features(torch.zeros(1, 3, spec.min_size, spec.min_size)).shape[-2:] == (1, 1)
        with pytest.raises(RuntimeError):
            model(torch.zeros(1, 3, spec.min_size - 1, spec.min_size - 1))
    with pytest.raises(InputSizeError, match=f"at least {spec.min_size}"):
        spec_with_size(spec, spec.min_size - 1)
