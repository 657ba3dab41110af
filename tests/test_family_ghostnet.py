"""GhostNet beyond the registry suite: the graph also exports at opset 13 (TensorRT 8.x parsers)."""

from __future__ import annotations

import onnx

from exporter.pipeline import ExportOptions, export_onnx


def test_ghostnet_exports_at_opset_13(tmp_path) -> None:
    outcome = export_onnx("ghostnet_100", ExportOptions(opset=13, out=tmp_path))
    assert outcome.validation.passed
    graph = onnx.load(outcome.onnx_path)
    assert {o.domain: o.version for o in graph.opset_import}[""] == 13
    # The SE gate stays one HardSigmoid op rather than an Add/Clip/Div chain.
    assert any(node.op_type == "HardSigmoid" for node in graph.graph.node)
