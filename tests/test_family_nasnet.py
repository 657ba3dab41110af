"""NASNet-A beyond the registry suite: TF "SAME" padding at both parities, Cadene's Mobile, the graph.

Random-init NASNet logits barely depend on the input (the registry's logit parity cannot tell much
apart), so these compare the pre-pool features, which do.
"""

from __future__ import annotations

import onnx
import pytest
import torch

from exporter.onnx_export import onnx_from_model
from model_defs import create_model

from .conftest import cadene_pair, randomize_norm_stats


def _assert_close(expected: torch.Tensor, got: torch.Tensor) -> None:
    scale = expected.abs().max().item()
    assert scale > 0.1, "degenerate features: the comparison would prove nothing"
    assert (got - expected).abs().max().item() <= 1e-4 * scale


@pytest.mark.slow
def test_nasnetalarge_matches_timm_at_odd_and_even_sizes() -> None:
    """67 rows stay odd at every reduction (SAME pads both ends), 66 columns stay even (SAME pads one
    less at the start), so one input exercises both branches of every TF-SAME layer."""
    timm = pytest.importorskip("timm", reason="parity reference: pip install -e '.[test]'")
    torch.manual_seed(0)
    reference = timm.create_model("nasnetalarge", pretrained=False).eval()
    randomize_norm_stats(reference)
    ours = create_model("nasnetalarge")
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(1, 3, 67, 66, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        _assert_close(reference.forward_features(x), ours.forward_features(x))


def test_nasnetamobile_matches_cadene() -> None:
    """Cadene's port (pretrainedmodels) is the reference for Mobile: its state_dict loads as it is."""
    reference, ours = cadene_pair("nasnetamobile")
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))  # Cadene's head needs 224
    with torch.no_grad():
        expected, got = reference.features(x), ours.forward_features(x)
        _assert_close(torch.relu(expected), got)
        _assert_close(reference.logits(expected), ours.last_linear(torch.flatten(ours.global_pool(got), 1)))


def test_nasnet_graph_has_no_shape_ops_or_negative_pads(tmp_path) -> None:
    """SAME pads fold to constants at export (even with a dynamic batch), and every Pad left after
    simplification is a constant, non-negative zero pad (P-SAME, P-NEGPAD)."""
    import onnxsim
    path = tmp_path / "nasnetamobile.onnx"
    onnx_from_model(create_model("nasnetamobile"), path, (3, 67, 66), dynamic_batch=True)
    raw = onnx.load(str(path))
    assert not [node.name for node in raw.graph.node if node.op_type == "Shape"]
    simplified, ok = onnxsim.simplify(raw)
    assert ok
    constants = {init.name: onnx.numpy_helper.to_array(init) for init in simplified.graph.initializer}
    pads = [node for node in simplified.graph.node if node.op_type == "Pad"]
    assert pads, "the odd-sized input should need SAME pads"
    for node in pads:
        assert node.input[1] in constants and (constants[node.input[1]] >= 0).all(), node.name
