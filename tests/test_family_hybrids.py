"""LeViT, PVT, CoAtNet and BoTNet beyond the registry suite (which exports each with a dynamic
batch): the size rule of the fixed-size families, LeViT's Hardswish below and above opset 14, and parity with
learned position tables that are not left at their (zero or tiny) initial values."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from bbruntime.errors import InputSizeError
from exporter.onnx_export import onnx_from_model
from exporter.pipeline import ExportOptions, export_onnx
from model_defs import create_model, get_spec, list_models, spec_with_size

FAMILIES = ("levit", "pvt", "coatnet", "botnet")
FIXED_SIZE = [n for f in FAMILIES for n in list_models(family=f) if get_spec(n).fixed_input_size]
# As in the registry suite: float32 outputs agree within 1e-4 of the logit scale.
TOLERANCE = 1e-4


def _max_rel_error(got: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(got - expected).max() / max(1.0, np.abs(expected).max()))


def _op_types(path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


def test_levit_hardswish_is_one_op_from_opset_14(tmp_path) -> None:
    """P-HSWISH: opset 14 has HardSwish; the exporter must not decompose it there."""
    result = onnx_from_model(create_model("levit_128s").eval(), tmp_path / "levit.onnx", (3, 224, 224), opset=17)
    assert "HardSwish" in _op_types(result.path)


def test_levit_hardswish_below_opset_14(tmp_path) -> None:
    """Opset 13 has no HardSwish: the exporter writes x * HardSigmoid(alpha=1/6), which validates."""
    outcome = export_onnx("levit_128s", ExportOptions(opset=13, out=tmp_path))
    assert outcome.validation.passed
    ops = _op_types(outcome.onnx_path)
    assert "HardSwish" not in ops and "HardSigmoid" in ops


@pytest.mark.parametrize("name", FIXED_SIZE)
def test_fixed_size_rejects_other_sizes(name: str) -> None:
    spec = get_spec(name)
    assert spec_with_size(spec, spec.input_size[1]) is spec
    with pytest.raises(InputSizeError, match=f"takes only {spec.input_size[1]}x{spec.input_size[2]}"):
        spec_with_size(spec, spec.input_size[1] + 32)


def test_pvt_v2_takes_other_sizes() -> None:
    """No position table in v2: a 256 input is allowed and runs."""
    spec = spec_with_size(get_spec("pvt_v2_b0"), 256)
    with torch.no_grad():
        assert create_model("pvt_v2_b0")(torch.randn(1, *spec.input_size)).shape == (1, 1000)


@pytest.mark.parametrize("name", ["levit_128s", "coatnet_0_rw_224"])
def test_parity_with_trained_position_tables(name: str) -> None:
    """timm starts LeViT's attention biases at zero and CoAtNet's tables near it, so the registry
    parity test cannot see a wrong (query, key) index: perturb every parameter of the reference."""
    timm = pytest.importorskip("timm", reason="parity reference: pip install -e '.[test]'")
    reference = timm.create_model(name, pretrained=False).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    ours = create_model(name)
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, *get_spec(name).input_size, generator=gen)
    with torch.no_grad():
        assert _max_rel_error(ours(x).numpy(), reference(x).numpy()) <= TOLERANCE
