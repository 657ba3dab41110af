"""SKNet beyond the registry suite (which checks every variant's count, its state_dict parity with timm
and its dynamic-batch export at batch 4 and 10): the exported selective-kernel conv itself (P-5D), in
both of timm's forms, against timm's module on ONNX Runtime at batch 1 and 3."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from bbruntime.runners import OrtRunner
from exporter.onnx_export import onnx_from_model
from model_defs.sknet import SelectiveKernel

from .conftest import PARITY_TOLERANCE, randomize_norm_stats

# (in, out) channels and the options of the SK-ResNet basic blocks and of SKNet-50's bottlenecks (sknet.py).
FORMS = {
    "split_input": ((64, 128), dict(groups=1, rd_ratio=1 / 8, rd_divisor=16, split_input=True)),
    "grouped": ((128, 128), dict(groups=32, rd_ratio=1 / 16, rd_divisor=32, split_input=False)),
}


@pytest.mark.parametrize("form", FORMS)
def test_exported_selective_kernel_matches_timm_at_batch_1_and_3(form: str, tmp_path) -> None:
    """A strided SK conv with timm's weights (norm statistics randomized) exported with a dynamic batch
    and simplified: no shape is read from the trace, every Reshape has a constant shape of at most four
    axes with -1 (or 0) for the batch, the one Softmax runs on the paths axis of a (B, 2, C) reshape,
    the second path is a 3x3 with dilation 2 (the paper's 5x5), and ONNX Runtime gives timm's output
    at batch 1 and 3 (odd sides, so the strided, dilated padding is exercised too)."""
    import onnxsim
    layers = pytest.importorskip("timm.layers", reason="parity reference: pip install -e '.[test]'")
    (in_ch, out_ch), options = FORMS[form]
    torch.manual_seed(0)
    reference = layers.SelectiveKernel(in_ch, out_ch, stride=2, **options).eval()
    randomize_norm_stats(reference)
    ours = SelectiveKernel(in_ch, out_ch, stride=2, **options).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    path = tmp_path / f"sk_{form}.onnx"
    onnx_from_model(ours, path, (in_ch, 15, 13), dynamic_batch=True)
    graph, ok = onnxsim.simplify(onnx.load(str(path)))
    assert ok
    onnx.save(graph, str(path))

    nodes = {node.name: node for node in graph.graph.node}
    constants = {init.name: onnx.numpy_helper.to_array(init) for init in graph.graph.initializer}
    producers = {out: node for node in nodes.values() for out in node.output}
    attrs = {name: {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute} for name, node in nodes.items()}
    ops = [node.op_type for node in nodes.values()]
    assert "Shape" not in ops, "a shape is read from the trace"
    reshape_shapes = [constants[node.input[1]].tolist() for node in nodes.values() if node.op_type == "Reshape"]
    assert reshape_shapes and all(len(s) <= 4 and s[0] in (-1, 0) for s in reshape_shapes), reshape_shapes
    (softmax,) = (node for node in nodes.values() if node.op_type == "Softmax")
    assert attrs[softmax.name]["axis"] == 1
    assert constants[producers[softmax.input[0]].input[1]].tolist() == [-1, 2, out_ch]
    convs = [name for name, node in nodes.items() if node.op_type == "Conv" and attrs[name]["kernel_shape"] == [3, 3]]
    assert sorted(attrs[name]["dilations"] for name in convs) == [[1, 1], [2, 2]]

    x = torch.randn(3, in_ch, 15, 13, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference(x).numpy()
    runner = OrtRunner(path)
    for batch in (1, 3):
        got = runner.infer(x[:batch].numpy())
        assert got.shape == expected[:batch].shape
        assert np.abs(got - expected[:batch]).max() <= PARITY_TOLERANCE * max(1.0, np.abs(expected).max()), batch
