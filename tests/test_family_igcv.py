"""IGCV beyond the registry suite. No library defines these networks, so the authors' MXNet graphs are
re-run here op by op (IGCV1's custom Reorder op, IGCV3's reshape/swapaxes permutation) on state_dicts
built from their key names and shapes, and compared with ours loaded through the family remaps. Also:
the README's IGCV1 parameter figures, IGCV2's complementary and balance conditions, and a graph of
every IGC block exported with a dynamic batch and constant shuffle shapes, validated at batch 1 and 3.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn
from torch.nn import functional as F

from bbruntime.runners import OrtRunner
from model_defs import create_model, get_entry
from model_defs._layers import channel_shuffle
from model_defs.igcv import IGCBasicBlock, IGCV2Block, IGCV3Block, shuffle_channels

from .conftest import PARITY_TOLERANCE, randomize_norm_stats, simplified_dynamic_graph

# The released symbols (models/IGC-*_ImageNet/resnet_gcwf_noshare_imagenet_d18b*-symbol.json): stem
# width, stage widths and L (groups of the 3x3 and projection convs) per stage; two blocks a stage.
IGCV1_SYMBOLS = {
    "igcv1_l100m2": (100, (200, 400, 800, 1600), (100, 200, 400, 800)),
    "igcv1_l16m16": (256, (256, 512, 1024, 2048), (16, 16, 16, 16)),
    "igcv1_l4m32": (128, (128, 256, 512, 1024), (4, 4, 4, 4)),
}
# homles11/IGCV3 symbols/igcv3.py: t, c, n, s after a 32-channel stem; a 1280-channel head.
IGCV3_SYMBOL = ((1, 16, 1, 1), (6, 24, 4, 2), (6, 32, 6, 2), (6, 64, 8, 2), (6, 96, 6, 1), (6, 160, 6, 2),
                (6, 320, 1, 1))
INPUT = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


# --- the authors' layouts and graphs ---------------------------------------------------------------

def _bn_shapes(name: str, channels: int) -> dict[str, tuple[int, ...]]:
    return {f"arg:{name}_gamma": (channels,), f"arg:{name}_beta": (channels,),
            f"aux:{name}_moving_mean": (channels,), f"aux:{name}_moving_var": (channels,)}


def _random_state(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """He-scaled conv/fc weights and non-trivial BN parameters and statistics."""
    gen = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("_weight"):
            value = torch.randn(shape, generator=gen) * math.sqrt(2.0 / math.prod(shape[1:]))
        elif key.endswith("_moving_var"):
            value = 0.5 + torch.rand(shape, generator=gen)
        elif key.endswith("_gamma"):
            value = 1 + 0.2 * torch.randn(shape, generator=gen)
        else:
            value = 0.1 * torch.randn(shape, generator=gen)
        state[key] = value
    return state


def _mxnet_igcv1_shapes(stem: int, widths: tuple[int, ...], partitions: tuple[int, ...]) -> dict:
    """network/resnet_igc_imgnet_d18.py's names: g0 the stem, g<s>_b<b> the blocks, conv<i>_conv1/2 the
    primary (L groups) and secondary (M = width / L groups, so L channels a group) convs of IGC i."""
    shapes = {"arg:g0_conv_weight": (stem, 3, 7, 7), **_bn_shapes("g0_bn", stem)}
    in_chs = stem
    for stage, (width, groups) in enumerate(zip(widths, partitions, strict=True), 1):
        for block in (1, 2):
            name = f"g{stage}_b{block}"
            if in_chs != width:
                shapes[f"arg:{name}_proj_conv_weight"] = (width, in_chs // groups, 1, 1)
                shapes |= _bn_shapes(f"{name}_proj_bn", width)
            for conv, conv_in in ((1, in_chs), (2, width)):
                shapes[f"arg:{name}_conv{conv}_conv1_weight"] = (width, conv_in // groups, 3, 3)
                shapes[f"arg:{name}_conv{conv}_conv2_weight"] = (width, groups, 1, 1)
                shapes |= _bn_shapes(f"{name}_conv{conv}_bn", width)
            in_chs = width
    return shapes | {"arg:fc_score_weight": (1000, in_chs), "arg:fc_score_bias": (1000,)}


def mxnet_reorder(x: torch.Tensor, branch_factor: int) -> torch.Tensor:
    """src/reorder-inl.h ``ReorderOp::Forward`` step by step: swapaxis<1,0>, reshape to (branch_factor,
    C / branch_factor, N*H*W), swapaxis<1,0>, reshape to (C, N, H, W), swapaxis<1,0>."""
    n, c, h, w = x.shape
    units = x.transpose(0, 1).reshape(branch_factor, c // branch_factor, n * h * w)
    return units.transpose(0, 1).reshape(c, n, h, w).transpose(0, 1)


def mxnet_permutation(x: torch.Tensor, groups: int) -> torch.Tensor:
    """symbols/igcv3.py ``permutation``: reshape(0, -4, groups, -1, -2), swapaxes(1, 2), reshape(0, -3, -2)."""
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).swapaxes(1, 2).reshape(n, c, h, w)


def _conv(x: torch.Tensor, weight: torch.Tensor, stride: int = 1) -> torch.Tensor:
    """MXNet Convolution as the symbols use it: pad k // 2, num_group read off the weight."""
    return F.conv2d(x, weight, stride=stride, padding=weight.shape[-1] // 2, groups=x.shape[1] // weight.shape[1])


def _bn(x: torch.Tensor, state: dict, name: str, eps: float) -> torch.Tensor:
    return F.batch_norm(x, state[f"aux:{name}_moving_mean"], state[f"aux:{name}_moving_var"],
                        state[f"arg:{name}_gamma"], state[f"arg:{name}_beta"], eps=eps)


def mxnet_igcv1(state: dict, x: torch.Tensor) -> torch.Tensor:
    """The IGCV1 symbol (BN eps 2e-5); its final 7x7 average pool is the global one at 224."""
    def igc(name: str, x: torch.Tensor, stride: int) -> torch.Tensor:
        """Each conv's Reorder has branch_factor = its num_group (L, then M)."""
        primary, secondary = state[f"arg:{name}_conv1_weight"], state[f"arg:{name}_conv2_weight"]
        x = mxnet_reorder(_conv(x, primary, stride), x.shape[1] // primary.shape[1])
        x = mxnet_reorder(_conv(x, secondary), x.shape[1] // secondary.shape[1])
        return _bn(x, state, f"{name}_bn", 2e-5)

    x = F.max_pool2d(F.relu(_bn(_conv(x, state["arg:g0_conv_weight"], 2), state, "g0_bn", 2e-5)), 3, 2, 1)
    for stage in range(1, 5):
        for block in (1, 2):
            name, stride = f"g{stage}_b{block}", 2 if stage > 1 and block == 1 else 1
            shortcut = x
            if f"arg:{name}_proj_conv_weight" in state:
                shortcut = _bn(_conv(x, state[f"arg:{name}_proj_conv_weight"], stride), state, f"{name}_proj_bn", 2e-5)
            deep = igc(f"{name}_conv2", F.relu(igc(f"{name}_conv1", x, stride)), 1)
            x = F.relu(deep + shortcut)
    return F.linear(x.mean((2, 3)), state["arg:fc_score_weight"], state["arg:fc_score_bias"])


def _mxnet_igcv3_shapes() -> dict:
    """symbols/igcv3.py's names: first-3x3-conv, seq-<stage>-block<j>-{exp,depthwise,linear}, last-1x1-conv."""
    shapes = {"arg:first-3x3-conv-conv2d_weight": (32, 3, 3, 3), **_bn_shapes("first-3x3-conv-batchnorm", 32)}
    in_chs = 32
    for stage, (expansion, out_chs, repeats, _) in enumerate(IGCV3_SYMBOL):
        for index in range(repeats):
            name, mid_chs = f"seq-{stage}-block{index}", in_chs * expansion
            for part, shape in (("exp", (mid_chs, in_chs // 2, 1, 1)), ("depthwise", (mid_chs, 1, 3, 3)),
                                ("linear", (out_chs, mid_chs // 2, 1, 1))):
                shapes[f"arg:{name}-{part}-conv2d_weight"] = shape
                shapes |= _bn_shapes(f"{name}-{part}-batchnorm", shape[0])
            in_chs = out_chs
    shapes |= {"arg:last-1x1-conv-conv2d_weight": (1280, in_chs, 1, 1), **_bn_shapes("last-1x1-conv-batchnorm", 1280)}
    return shapes | {"arg:fc_weight": (1000, 1280), "arg:fc_bias": (1000,)}


def mxnet_igcv3(state: dict, x: torch.Tensor) -> torch.Tensor:
    """The IGCV3 symbol: no activation after the expand, ReLU6 (clip 0..6) after the depthwise conv."""
    def unit(name: str, x: torch.Tensor, stride: int = 1) -> torch.Tensor:
        return _bn(_conv(x, state[f"arg:{name}-conv2d_weight"], stride), state, f"{name}-batchnorm", 1e-5)

    x = unit("first-3x3-conv", x, 2).clamp(0, 6)
    for stage, (_, _, repeats, stride) in enumerate(IGCV3_SYMBOL):
        for index in range(repeats):
            name = f"seq-{stage}-block{index}"
            out = mxnet_permutation(unit(f"{name}-exp", x), 2)
            out = unit(f"{name}-linear", unit(f"{name}-depthwise", out, stride if index == 0 else 1).clamp(0, 6))
            x = out + x if index > 0 else out
    x = unit("last-1x1-conv", x).clamp(0, 6)
    return F.linear(x.mean((2, 3)), state["arg:fc_weight"], state["arg:fc_bias"])


def _assert_close(expected: torch.Tensor, got: torch.Tensor) -> None:
    scale = max(1.0, expected.abs().max().item())
    assert (expected[0] - expected[1]).abs().max().item() > 0.1 * scale, "outputs ignore the input"
    assert (got - expected).abs().max().item() <= PARITY_TOLERANCE * scale


def _igcv1_pair(name: str) -> tuple[dict, nn.Module]:
    """A random state_dict in the authors' layout for ``name`` and our model holding it (strict load)."""
    state = _random_state(_mxnet_igcv1_shapes(*IGCV1_SYMBOLS[name]))
    ours = create_model(name)
    ours.load_state_dict(get_entry(name).remap(state), strict=True)
    return state, ours


@pytest.mark.parametrize("name", sorted(IGCV1_SYMBOLS))
def test_igcv1_loads_the_mxnet_layout(name: str) -> None:
    _igcv1_pair(name)


# L100M2 (a projection in every stage, L doubling) and L4M32 (none in stage 1, M doubling) between them
# run every code path; L16M16 is L4M32's with other numbers, and loading its layout checks those.
@pytest.mark.parametrize("name", ["igcv1_l100m2", "igcv1_l4m32"])
def test_igcv1_matches_the_mxnet_graph(name: str) -> None:
    state, ours = _igcv1_pair(name)
    with torch.no_grad():
        _assert_close(mxnet_igcv1(state, INPUT), ours(INPUT))


def test_igcv3_loads_the_mxnet_layout_and_matches_its_graph() -> None:
    state = _random_state(_mxnet_igcv3_shapes())
    ours = create_model("igcv3_d100")
    ours.load_state_dict(get_entry("igcv3_d100").remap(state), strict=True)
    with torch.no_grad():
        _assert_close(mxnet_igcv3(state, INPUT), ours(INPUT))


def test_remap_names_an_unknown_key() -> None:
    with pytest.raises(ValueError, match="not an IGCV MXNet parameter name: 'g5_b1_conv1_conv1_weight'"):
        get_entry("igcv1_l4m32").remap({"g5_b1_conv1_conv1_weight": torch.zeros(1)})


def test_shuffle_is_the_authors_permutation() -> None:
    x = torch.arange(2 * 12 * 2 * 3, dtype=torch.float32).reshape(2, 12, 2, 3)
    for groups in (2, 3, 4):
        assert torch.equal(shuffle_channels(x, groups), mxnet_reorder(x, groups))
        assert torch.equal(shuffle_channels(x, groups), mxnet_permutation(x, groups))
        assert torch.equal(shuffle_channels(x, groups), channel_shuffle(x, groups))


# --- counts and structure ------------------------------------------------------------------------

# README "Results", #Params (M). L100M2's figure is the whole network (8,637,900); L4M32's and L16M16's
# are those of the network without its 1000-way classifier, as is the README's ResNet-18 row (11.151
# against torchvision resnet18's 11,176,512 without fc): the released symbols count 12,251,240 and
# 13,528,296 in all.
README_PARAMS = {"igcv1_l100m2": (8.61e6, True), "igcv1_l4m32": (11.205e6, False), "igcv1_l16m16": (11.329e6, False)}


@pytest.mark.parametrize("name", sorted(README_PARAMS))
def test_igcv1_parameter_count_within_2_percent_of_the_readme(name: str) -> None:
    figure, with_classifier = README_PARAMS[name]
    with torch.device("meta"):
        model = create_model(name)
    params = sum(p.numel() for p in model.parameters())
    if not with_classifier:
        params -= sum(p.numel() for p in model.fc.parameters())
    assert abs(params - figure) <= 0.02 * figure, f"{name}: {params:,} parameters against {figure:,.0f}"


def test_igcv2_blocks_meet_the_complementary_and_balance_conditions() -> None:
    """With positive weights and identity BNs, a one-hot input channel reaches every output channel
    exactly when the product of the block's group convs is dense (the complementary condition)."""
    blocks = [m for m in create_model("igcv2").modules() if isinstance(m, IGCV2Block)]
    assert len(blocks) == 13
    for block in blocks:
        _, first, second = block.convs
        in_chs = first.in_channels
        assert (in_chs // first.groups) * (second.in_channels // second.groups) == in_chs  # K2 * K3 = C_in
        with torch.no_grad():
            for conv in block.convs:
                conv.weight.fill_(1.0)
            reach = block(torch.eye(in_chs).reshape(in_chs, in_chs, 1, 1))
        assert bool((reach > 0).all()), f"{in_chs} -> {second.out_channels}: the product is not dense"


# --- export ---------------------------------------------------------------------------------------

def test_igc_blocks_export_with_constant_shuffle_shapes_and_a_dynamic_batch(tmp_path) -> None:
    """Every block kind (IGCV1's with a projection, IGCV2's, IGCV3's) in one small graph: after
    simplification no Shape op is left, every Reshape target is a constant with -1 for the batch
    (P-SHUF), and ONNX Runtime matches PyTorch at batch 1 and 3."""
    torch.manual_seed(0)
    blocks = nn.Sequential(IGCBasicBlock(8, 16, 2, 4), IGCV2Block(16, 32, 1), IGCV3Block(32, 32, 1, 2)).eval()
    randomize_norm_stats(blocks)
    path = simplified_dynamic_graph(blocks, tmp_path, (8, 8, 8), "igc")
    graph = onnx.load(str(path)).graph
    assert not [node.name for node in graph.node if node.op_type == "Shape"]
    constants = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer}
    targets = [constants[node.input[1]] for node in graph.node if node.op_type == "Reshape"]
    assert len(targets) == 12 and all(target[0] == -1 for target in targets)  # 6 shuffles, 2 reshapes each
    runner = OrtRunner(path)
    assert runner.static_batch is None
    for batch in (1, 3):
        x = torch.randn(batch, 8, 8, 8)
        with torch.no_grad():
            expected = blocks(x).numpy()
        got = runner.infer(x.numpy())
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= 1e-4 * max(1.0, np.abs(expected).max())
