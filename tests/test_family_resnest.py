"""ResNeSt beyond the registry suite (which checks every variant's state_dict parity with timm and
its dynamic-batch export): the radix-softmax layout where the cardinality makes the transpose matter,
and the exported split attention itself (P-5D)."""

from __future__ import annotations

import onnx
import pytest
import torch

from bbruntime.runners import OrtRunner
from exporter.onnx_export import onnx_from_model
from model_defs import create_model
from model_defs.resnest import SplitAttn

from .conftest import PARITY_TOLERANCE, assert_same_outputs, randomize_norm_stats


@pytest.mark.parametrize("radix", [2, 4])
def test_split_attention_matches_timm_with_cardinality_2(radix: int) -> None:
    """With one group (the registered variants) timm's (B, card, radix, -1) transpose is close to a
    no-op; with two it decides which logits share a softmax and which map each weight scales."""
    layers = pytest.importorskip("timm.layers", reason="parity reference: pip install -e '.[test]'")
    torch.manual_seed(0)
    reference = layers.SplitAttn(64, radix=radix, groups=2, norm_layer=torch.nn.BatchNorm2d).eval()
    randomize_norm_stats(reference)
    ours = SplitAttn(64, radix=radix, cardinality=2).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    assert_same_outputs(reference, ours, torch.randn(3, 64, 9, 7, generator=torch.Generator().manual_seed(1)))


def test_exported_radix_softmax_keeps_the_batch_dynamic(tmp_path) -> None:
    """resnest14d exported with a dynamic batch and simplified: every Reshape takes a constant shape
    with -1 (or 0) for the batch, never a traced or baked 1; each block's softmax runs on the radix axis
    (axis 1, after timm's (0, 2, 1, 3) transpose); ONNX Runtime matches PyTorch at batch 1 and 3."""
    import onnxsim
    torch.manual_seed(0)
    model = create_model("resnest14d")
    randomize_norm_stats(model)  # BN statistics far from identity, so a misplaced weight shows
    path = tmp_path / "resnest14d.onnx"
    onnx_from_model(model, path, (3, 64, 64), dynamic_batch=True)
    simplified, ok = onnxsim.simplify(onnx.load(str(path)))
    assert ok
    onnx.save(simplified, str(path))

    nodes = simplified.graph.node
    constants = {init.name: onnx.numpy_helper.to_array(init) for init in simplified.graph.initializer}
    producers = {out: node for node in nodes for out in node.output}
    assert not [node.name for node in nodes if node.op_type == "Shape"], "a shape is read from the trace"
    reshapes = [node for node in nodes if node.op_type == "Reshape"]
    assert reshapes
    for node in reshapes:
        assert node.input[1] in constants and constants[node.input[1]][0] in (-1, 0), node.name
    softmaxes = [node for node in nodes if node.op_type == "Softmax"]
    assert len(softmaxes) == 4  # one per block of resnest14d
    for node in softmaxes:
        assert _attribute(node, "axis") == 1, node.name
        transpose = producers[node.input[0]]
        assert transpose.op_type == "Transpose" and list(_attribute(transpose, "perm")) == [0, 2, 1, 3]

    runner = OrtRunner(path)
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(x).numpy()
    scale = max(1.0, abs(expected).max())
    for batch in (1, 3):
        got = runner.infer(x[:batch].numpy())
        assert got.shape == expected[:batch].shape
        assert abs(got - expected[:batch]).max() <= PARITY_TOLERANCE * scale, f"batch {batch}"


def _attribute(node: onnx.NodeProto, name: str):
    return next(onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == name)
