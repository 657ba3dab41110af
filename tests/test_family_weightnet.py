"""WeightNet beyond the registry suite (which counts every variant against the README within its
tolerance and exports each with a dynamic batch): the static-conv form of the per-sample kernels
against the authors' batch-folded conv (P-DYNW), their stride-1 channel split, their MegEngine
checkpoint layout (built here from their code's shape rules) through the family remap, and one graph of
both block kinds whose Convs all have initializer weights, at batch 1 and 3.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from bbruntime.runners import OrtRunner
from model_defs import create_model, get_entry
from model_defs.weightnet import WeightNet, WeightNetDW, WeightNetShuffleBlock, split_even_odd

from .conftest import randomize_norm_stats, simplified_dynamic_graph

# megvii-model/WeightNet shufflenet_v2.py: stage_out_channels per model_size; weightnet.py: M, G.
AUTHORS_MODELS = {
    "weightnet_shufflenet_v2_x0_5": ((24, 48, 96, 192, 1024), 2, 2, 1_463_928),
    "weightnet_shufflenet_v2_x1_0": ((24, 112, 224, 448, 1024), 2, 2, 2_435_832),
    "weightnet_shufflenet_v2_x1_5": ((24, 176, 352, 704, 1024), 2, 2, 3_915_344),
    "weightnet_shufflenet_v2_x2_0": ((24, 248, 496, 992, 1024), 2, 2, 6_198_068),
    "weightnet_shufflenet_v2_x1_0_4x": ((24, 112, 224, 448, 1024), 8, 2, 5_143_896),
}


# --- the authors' computation, written out ------------------------------------------------------

def _per_sample_conv(layer: WeightNet | WeightNetDW, x: torch.Tensor, x_gap: torch.Tensor,
                     depthwise: bool) -> torch.Tensor:
    """weightnet.py's forward: fc2's output reshaped into each sample's kernel, applied as one conv over
    the batch folded into the channels (``groups`` = batch, or batch * channels for WeightNet_DW)."""
    batch, channels = x.shape[:2]
    kernels = layer.wn_fc2(layer.sigmoid(layer.wn_fc1(x_gap)))
    k, stride = layer.conv.kernel_size[0], layer.conv.stride
    weight = kernels.reshape(-1, 1 if depthwise else channels, k, k)
    out = F.conv2d(x.reshape(1, -1, *x.shape[2:]), weight, stride=stride, padding=k // 2,
                   groups=batch * channels if depthwise else batch)
    return out.reshape(batch, -1, *out.shape[2:])


@pytest.mark.parametrize(("m", "k", "stride"), [(2, 1, 1), (8, 1, 1), (2, 3, 2)])
def test_weightnet_static_conv_is_the_per_sample_conv(m: int, k: int, stride: int) -> None:
    """M = 2 (the 1x variants), M = 8 (4x), and a 3x3 kernel for the spatial part of the permutation."""
    torch.manual_seed(0)
    layer = WeightNet(8, 6, k, stride, gap_chs=16, m=m, g=2).eval()
    x, x_gap = torch.randn(3, 8, 7, 7), torch.randn(3, 16, 1, 1)
    with torch.no_grad():
        expected, got = _per_sample_conv(layer, x, x_gap, depthwise=False), layer(x, x_gap)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("m", "stride"), [(2, 2), (8, 1)])
def test_weightnet_dw_static_conv_is_the_per_sample_conv(m: int, stride: int) -> None:
    torch.manual_seed(0)
    layer = WeightNetDW(6, 3, stride, gap_chs=16, m=m, g=2).eval()
    x, x_gap = torch.randn(3, 6, 7, 7), torch.randn(3, 16, 1, 1)
    with torch.no_grad():
        expected, got = _per_sample_conv(layer, x, x_gap, depthwise=True), layer(x, x_gap)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_split_is_the_authors_channel_shuffle() -> None:
    """shufflenet_v2.py: reshape(B*C/2, 2, H*W) -> dimshuffle(1, 0, 2) -> reshape(2, B, C/2, H, W)."""
    x = torch.randn(2, 8, 3, 3)
    theirs = x.reshape(2 * 8 // 2, 2, 9).permute(1, 0, 2).reshape(2, 2, 8 // 2, 3, 3)
    passthrough, branch = split_even_odd(x)
    assert torch.equal(passthrough, theirs[0]) and torch.equal(branch, theirs[1])


def test_weightnet_rejects_indivisible_groups() -> None:
    with pytest.raises(ValueError, match="G to divide"):
        WeightNet(7, 6, 1, 1, gap_chs=16)


# --- the authors' MegEngine layout ---------------------------------------------------------------

def _conv(key: str, inp: int, oup: int, k: int, groups: int = 1, bias: bool = True) -> dict[str, tuple]:
    """megengine.module.Conv2d: (out, in, k, k), grouped (groups, out/g, in/g, k, k); bias (1, out, 1, 1)."""
    weight = (oup, inp, k, k) if groups == 1 else (groups, oup // groups, inp // groups, k, k)
    return {f"{key}.weight": weight, **({f"{key}.bias": (1, oup, 1, 1)} if bias else {})}


def _bn(key: str, channels: int, megengine_0_5: bool) -> dict[str, tuple]:
    """megengine BatchNorm2d: running statistics (1, C, 1, 1); weight and bias (C,) in 0.5, 4-D later."""
    affine = (channels,) if megengine_0_5 else (1, channels, 1, 1)
    stats = (1, channels, 1, 1)
    return {f"{key}.weight": affine, f"{key}.bias": affine, f"{key}.running_mean": stats, f"{key}.running_var": stats}


def _wnet(key: str, inp: int, oup: int, k: int, m: int, g: int) -> dict[str, tuple]:
    gap = max(16, inp // 16)
    return {**_conv(f"{key}.wn_fc1", gap, m * oup, 1),
            **_conv(f"{key}.wn_fc2", m * oup, oup * inp * k * k, 1, groups=g * oup, bias=False)}


def _wnet_dw(key: str, inp: int, k: int, m: int, g: int) -> dict[str, tuple]:
    gap = max(16, inp // 16)
    return {**_conv(f"{key}.wn_fc1", gap, m // g * inp, 1),
            **_conv(f"{key}.wn_fc2", m // g * inp, inp * k * k, 1, groups=inp, bias=False)}


def _block(key: str, inp: int, oup: int, stride: int, m: int, g: int, mge05: bool) -> dict[str, tuple]:
    mid, outputs = oup // 2, oup - inp
    shapes = {**_conv(f"{key}.reduce", inp, max(16, inp // 16), 1),
              **_wnet(f"{key}.wnet1", inp, mid, 1, m, g), **_bn(f"{key}.bn1", mid, mge05),
              **_wnet_dw(f"{key}.wnet2", mid, 3, m, g), **_bn(f"{key}.bn2", mid, mge05),
              **_wnet(f"{key}.wnet3", mid, outputs, 1, m, g), **_bn(f"{key}.bn3", outputs, mge05)}
    if stride == 2:
        shapes |= {**_wnet_dw(f"{key}.wnet_proj_1", inp, 3, m, g), **_bn(f"{key}.bn_proj_1", inp, mge05),
                   **_wnet(f"{key}.wnet_proj_2", inp, inp, 1, m, g), **_bn(f"{key}.bn_proj_2", inp, mge05)}
    return shapes


def _authors_layout(widths: tuple[int, ...], m: int, g: int, mge05: bool = True) -> dict[str, tuple]:
    """Key -> shape of the authors' ``ShuffleNetV2(model_size=...)`` state_dict."""
    stem, *stages, head = widths
    shapes = {**_conv("first_conv.0", 3, stem, 3), **_bn("first_conv.1", stem, mge05)}
    index, in_chs = 0, stem
    for repeats, out_chs in zip((4, 8, 4), stages, strict=True):
        for i in range(repeats):
            stride = 2 if i == 0 else 1
            shapes |= _block(f"features.{index}", in_chs if stride == 2 else in_chs // 2, out_chs, stride, m, g, mge05)
            index, in_chs = index + 1, out_chs
    shapes |= {**_conv("conv_last.0", in_chs, head, 1), **_bn("conv_last.1", head, mge05)}
    return shapes | {"classifier.0.weight": (1000, head), "classifier.0.bias": (1000,)}


@pytest.mark.parametrize("name", sorted(AUTHORS_MODELS))
def test_authors_layout_has_the_docstring_count(name: str) -> None:
    widths, m, g, count = AUTHORS_MODELS[name]
    layout = _authors_layout(widths, m, g)
    assert sum(int(np.prod(shape)) for key, shape in layout.items() if ".running_" not in key) == count


@pytest.mark.parametrize(("name", "mge05"), [("weightnet_shufflenet_v2_x0_5", True),
                                             ("weightnet_shufflenet_v2_x1_0_4x", False)])
def test_megengine_state_dict_loads_through_the_remap(name: str, mge05: bool) -> None:
    """A state_dict with the authors' keys and MegEngine shapes (0.5's BN and later versions') loads
    strictly through the remap, each tensor unchanged in element order."""
    widths, m, g, _ = AUTHORS_MODELS[name]
    gen = torch.Generator().manual_seed(0)
    state = {key: torch.randn(shape, generator=gen) for key, shape in _authors_layout(widths, m, g, mge05).items()}
    model = create_model(name)
    model.load_state_dict(get_entry(name).remap(state), strict=True)
    ours = model.state_dict()
    assert all(torch.equal(ours[key].flatten(), value.flatten()) for key, value in state.items())


# --- export --------------------------------------------------------------------------------------

def test_blocks_export_with_initializer_kernels_and_a_dynamic_batch(tmp_path) -> None:
    """A stride-2 and a stride-1 block of the 4x form (M/G = 4: every gate sum and both split paths):
    after simplification every Conv's W is an initializer (no per-sample kernel), no Shape op is left,
    and ONNX Runtime matches PyTorch at batch 1 and 3 on one graph."""
    torch.manual_seed(0)
    blocks = nn.Sequential(WeightNetShuffleBlock(16, 32, 16, 2, m=8, g=2),
                           WeightNetShuffleBlock(16, 32, 16, 1, m=8, g=2)).eval()
    randomize_norm_stats(blocks)
    path = simplified_dynamic_graph(blocks, tmp_path, (16, 8, 8), "wn")
    graph = onnx.load(str(path)).graph
    constants = {tensor.name for tensor in graph.initializer}
    convs = [node for node in graph.node if node.op_type == "Conv"]
    assert len(convs) == 18 and all(node.input[1] in constants for node in convs)  # reduce + 2 per WeightNet
    assert not [node.name for node in graph.node if node.op_type == "Shape"]
    runner = OrtRunner(path)
    assert runner.static_batch is None
    x = torch.randn(3, 16, 8, 8)
    for batch in (x[:1], x):  # one graph, batch 1 and 3
        with torch.no_grad():
            expected = blocks(batch).numpy()
        np.testing.assert_allclose(runner.infer(batch.numpy()), expected, rtol=0,
                                   atol=1e-4 * max(1.0, np.abs(expected).max()))
