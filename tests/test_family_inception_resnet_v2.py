"""Inception-ResNet-v2 beyond the registry suite: what its export pitfalls become in the graph.

timm parity (registry suite) already fails on a 5% error in any residual scale or on an average pool
that counts its padding; this checks the simplified ONNX graph of the first two blocks.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxsim
from torch import nn

from exporter.onnx_export import onnx_from_model
from model_defs import create_model


def test_graph_excludes_pool_padding_and_folds_residual_scale(tmp_path) -> None:
    """Mixed_5b's average pool exports with count_include_pad=0, and the first residual block's 0.17
    is in its 1x1 conv's weights: no Mul or Constant node, the conv's weights an initializer (what the
    INT8 quantizer needs to treat them as weights) equal to 0.17 times ours."""
    model = create_model("inception_resnet_v2")
    blocks = (model.repeat[0], model.repeat_1[0], model.repeat_2[0], model.block8)
    assert [block.conv2d.scale for block in blocks] == [0.17, 0.10, 0.20, 1.0]
    path = tmp_path / "blocks.onnx"
    onnx_from_model(nn.Sequential(model.mixed_5b, model.repeat[0]), path, (192, 9, 9), dynamic_batch=True)
    simplified, ok = onnxsim.simplify(onnx.load(str(path)))
    assert ok
    nodes = simplified.graph.node
    pools = [node for node in nodes if node.op_type == "AveragePool"]
    assert len(pools) == 1
    attributes = {attr.name: onnx.helper.get_attribute_value(attr) for attr in pools[0].attribute}
    assert attributes["count_include_pad"] == 0
    assert not [node.name for node in nodes if node.op_type in ("Mul", "Constant")]
    residual = next(node for node in nodes if node.op_type == "Add")
    conv = next(node for node in nodes if node.output[0] in residual.input and node.op_type == "Conv")
    weights = {init.name: onnx.numpy_helper.to_array(init) for init in simplified.graph.initializer}
    expected = 0.17 * model.repeat[0].conv2d.weight.detach().numpy()
    assert np.allclose(weights[conv.input[1]], expected, atol=1e-7)
