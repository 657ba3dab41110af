"""VGG beyond the registry suite: the export-safe adaptive pool (P-ADAPT) and the sizes the spec admits.

The registry suite checks all eight variants' parity with torchvision at 64 (a 2x2 map pooled up to
7x7: the pool's MatMul path) and exports vgg11 there. These check the pool itself, cheaply, at every
kind of map size, in PyTorch and on ONNX Runtime, and the one-line rejection of other sizes.
"""

from __future__ import annotations

import contextlib

import onnx
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from bbruntime.runners import OrtRunner
from exporter.onnx_export import onnx_from_model
from model_defs._layers import AdaptiveAvgPool2dStatic

from .test_cli import assert_one_line_error, leftovers, run


def test_pool_matches_adaptive_avg_pool_at_every_side() -> None:
    """Sides 1-29 against 7 bins: repeated inputs (side < 7), equal windows (7, 14, 21, 28) and
    overlapping windows of two sizes (every other side), with different sides on the two axes."""
    pool = AdaptiveAvgPool2dStatic(7)
    gen = torch.Generator().manual_seed(0)
    for height in range(1, 30):
        for width in (2, 7, 8, 14):
            x = torch.randn(2, 3, height, width, generator=gen)
            torch.testing.assert_close(pool(x), F.adaptive_avg_pool2d(x, 7), rtol=0, atol=1e-6)


@pytest.mark.parametrize("side", [2, 8, 7])
def test_pool_exports_where_torch_refuses(side: int, tmp_path) -> None:
    """On a 2x2 or 8x8 map the TorchScript exporter rejects nn.AdaptiveAvgPool2d(7) (7 is no factor);
    ours exports as two MatMuls with a dynamic batch and agrees with it on ONNX Runtime at batch 3. On
    a 7x7 map (VGG at 224) it adds no node."""
    path = tmp_path / "pool.onnx"
    refused = pytest.raises(torch.onnx.errors.SymbolicValueError, match="not factor")
    with refused if side % 7 else contextlib.nullcontext():
        torch.onnx.export(nn.AdaptiveAvgPool2d(7), (torch.randn(1, 4, side, side),), str(path), dynamo=False)
    model = nn.Sequential(nn.Conv2d(4, 4, 1), AdaptiveAvgPool2dStatic(7)).eval()
    onnx_from_model(model, path, (4, side, side), dynamic_batch=True)
    ops = {node.op_type for node in onnx.load(str(path)).graph.node} - {"Conv", "Constant"}
    assert ops == ({"MatMul"} if side % 7 else set())
    x = torch.randn(3, 4, side, side, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = nn.AdaptiveAvgPool2d(7)(model[0](x))
    torch.testing.assert_close(torch.from_numpy(OrtRunner(path).infer(x.numpy())), expected, rtol=0, atol=1e-5)


def test_other_sizes_are_rejected_in_one_line(tmp_path) -> None:
    """The pool takes any map, so the spec admits every multiple of 32 (the total stride) from 32 on;
    any other size stops before the model is built, in one line naming the sizes that work."""
    assert_one_line_error(run("onnx", "vgg11", "--img-size", "100", "--out", str(tmp_path)), "multiple of 32",
                          "at least 32")
    assert leftovers(tmp_path) == []
