"""Res2Net beyond the registry suite (which checks every variant's state_dict parity with timm at 64 px,
where the count_include_pad of the stage-first pools decides most pixels, and its dynamic-batch export):
the exported chunking itself, on the widths with the most chunks (res2net50_14w_8s's) at one block a stage:
the block code of every variant, a quarter of the export work (CI time)."""

from __future__ import annotations

import numpy as np
import onnx
import torch

from bbruntime.metrics import drift
from bbruntime.runners import OrtRunner
from exporter.onnx_export import onnx_from_model
from exporter.runners import TorchRunner
from exporter.simplify import simplified_from_onnx
from model_defs.res2net import Bottle2neck
from model_defs.resnet import ResNet

from .conftest import PARITY_TOLERANCE, randomize_norm_stats

# res2net50_14w_8s's widths: 8 chunks per block, 14 channels each per 64 planes. (chunk width, blocks) by stage:
STAGES = ((14, 1), (28, 1), (56, 1), (112, 1))


def test_exported_chunks_are_constant_splits_with_a_dynamic_batch(tmp_path) -> None:
    """res2net50_14w_8s's blocks exported with a dynamic batch and simplified: one Split per block into 8 chunks
    of constant sizes, no shape read from the trace, one AveragePool(3, pads 1, count_include_pad=1) per
    stage-first block; ONNX Runtime matches PyTorch at batch 1 and 3 with every branch live."""
    torch.manual_seed(0)
    model = ResNet(Bottle2neck, tuple(blocks for _, blocks in STAGES), base_width=14, block_args={"scale": 8}).eval()
    blocks = [m for m in model.modules() if isinstance(m, Bottle2neck)]
    assert all(block.bn3.weight.min() > 0 for block in blocks), "random weights must keep the branches live"
    randomize_norm_stats(model)  # far from identity, so a chunk summed or pooled wrongly shows
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1)).numpy()
    raw = onnx_from_model(model, tmp_path / "raw.onnx", (3, 64, 64), dynamic_batch=True).path
    path = tmp_path / "res2net50_14w_8s.onnx"
    assert simplified_from_onnx(raw, path, x[:1]).simplified

    graph = onnx.load(str(path)).graph
    sizes = {init.name: onnx.numpy_helper.to_array(init).tolist() for init in graph.initializer}
    ops = [node.op_type for node in graph.node]
    assert "Shape" not in ops, "a shape is read from the trace"
    splits = [sizes[node.input[1]] for node in graph.node if node.op_type == "Split"]
    assert splits == [[width] * 8 for width, blocks in STAGES for _ in range(blocks)]
    pools = [{a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
             for node in graph.node if node.op_type == "AveragePool"]
    assert len(pools) == 4
    assert all(pool["count_include_pad"] == 1 and pool["pads"] == [1, 1, 1, 1] for pool in pools)

    runner = OrtRunner(path)
    expected = TorchRunner(model).infer(x)
    # The three samples at batch 3, then one by one at batch 1: one graph, both against PyTorch.
    for got in (runner.infer(x), np.concatenate([runner.infer(x[i:i + 1]) for i in range(3)])):
        assert drift(expected, got).rel_max_abs <= PARITY_TOLERANCE
