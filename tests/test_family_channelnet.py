"""ChannelNets beyond the registry suite (which counts every variant and exports it with a dynamic batch).
No library defines the network, so the authors' TensorFlow graph (HongyangGao/ChannelNets ``model.py``,
``utils/ops.py``) is re-run here with torch functional ops on TF-layout tensors built from their variable
names and shapes (SAME pads written out, the channel-wise conv as a real 3-D conv), and compared with
ours loaded through the family's remap. Also: the channel-wise conv against a numpy loop of TF's conv3d
definition, TF's SAME pads, the CCL's fixed size, and the channel-wise conv's graph (2-D Conv only,
batch 1 and 3).
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
import torch
from torch.nn import functional as F

from bbruntime.errors import InputSizeError
from bbruntime.runners import OrtRunner
from exporter.onnx_export import onnx_from_model
from exporter.weights import load_weights, model_source
from model_defs import create_model, get_spec, spec_with_size
from model_defs.channelnet import ChannelwiseConv, _same_pads

from .conftest import PARITY_TOLERANCE

VARIANTS = {"channelnet_v1": (False, False), "channelnet_v1_ccl": (False, True), "channelnet_v1_concat": (True, False)}
# Trainable parameters per variant, as derived in the family docstring (README: 3.7M for ChannelNet-v1).
COUNTS = {"channelnet_v1": 3_703_432, "channelnet_v1_ccl": 2_688_873, "channelnet_v1_concat": 3_875_112}


# --- the authors' variables ---------------------------------------------------------------------

def _dw_block(scope: str, in_chs: int, out_chs: int) -> dict[str, tuple[int, ...]]:
    """ops.dw_block: dw_conv2d's ``weight_depths`` [3, 3, C, 1], contrib conv2d ``weights`` [1, 1, in, out]
    (no bias), tensorpack BatchNorm under ``bn``."""
    bn = {f"{scope}/conv2/bn/{v}": (out_chs,) for v in ("gamma", "beta", "mean/EMA", "variance/EMA")}
    return {f"{scope}/conv1/conv/weight_depths": (3, 3, in_chs, 1), f"{scope}/conv2/weights": (1, 1, in_chs, out_chs),
            **bn}


def _groups(scope: str, width: int) -> dict[str, tuple[int, ...]]:
    """single_block per group: ``{scope}/group_g/conv_i``, 2 groups of 2 dw_blocks."""
    return {k: v for g in range(2) for i in range(2) for k, v in _dw_block(f"{scope}/group_{g}/conv_{i}", width,
                                                                           width).items()}


def _tf_layout(concat: bool, ccl: bool) -> dict[str, tuple[int, ...]]:
    """Variable name -> shape of ``MobileNet(conf).inference`` with main.py's defaults (ch_num 32,
    block_num 2, group_num 2), written from model.py; ``concat`` keeps its three tf.concat skips."""
    layout = {"conv_s/weights": (3, 3, 3, 32), **{f"conv_s/bn/{v}": (32,) for v in ("gamma", "beta", "mean/EMA",
                                                                                      "variance/EMA")}}
    for scope, in_chs, out_chs in (("conv_1_0", 32, 64), ("conv_1_1", 96 if concat else 64, 128),
                                   ("conv_1_2", 128, 128), ("conv_1_3", 256 if concat else 128, 256),
                                   ("conv_1_4", 256, 256), ("conv_1_5", 512 if concat else 256, 512),
                                   ("conv_3_0", 512, 1024), ("conv_3_1", 1024, 1024)):
        layout |= _dw_block(scope, in_chs, out_chs)
    layout |= _groups("conv_2_1", 256)
    for scope in ("conv_2_2", "conv_2_3"):  # pure_conv2d: tf.layers.conv3d kernel [d, kh, kw, in, out]
        layout |= {f"{scope}/pure_conv/pure_conv/kernel": (8, 1, 1, 1, 2), **_groups(scope, 256)}
    if ccl:  # conv_out_block
        return layout | {"out/conv/conv/weight_depths": (3, 3, 1024, 1), "out/pure/pure_conv/kernel": (25, 7, 7, 1, 1)}
    return layout | {"out/dense/weights": (1024, 1000), "out/dense/biases": (1000,)}


def _tf_state(layout: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """Random values: He-scaled kernels, non-trivial BN parameters and statistics."""
    gen = torch.Generator().manual_seed(0)
    state = {}
    for name, shape in layout.items():
        if name.endswith("variance/EMA"):
            state[name] = 0.5 + torch.rand(shape, generator=gen)
        elif name.endswith("gamma"):
            state[name] = 1 + 0.2 * torch.randn(shape, generator=gen)
        elif len(shape) == 1:
            state[name] = 0.1 * torch.randn(shape, generator=gen)
        else:  # fan-in: all but the output axis (the depthwise kernel's C is its output)
            fan_in = math.prod(shape[:2]) if name.endswith("weight_depths") else math.prod(shape[:-1])
            state[name] = torch.randn(shape, generator=gen) * math.sqrt(2.0 / fan_in)
    return state


# --- the authors' graph, on those variables -----------------------------------------------------

def _pad_same(x: torch.Tensor, kernel: tuple[int, ...], stride: tuple[int, ...]) -> torch.Tensor:
    """TF "SAME" on the last len(kernel) axes: total max((ceil(n/s) - 1) * s + k - n, 0), the odd one after."""
    pads = []
    for n, k, s in reversed(list(zip(x.shape[-len(kernel):], kernel, stride, strict=True))):
        total = max((-(-n // s) - 1) * s + k - n, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


def _tf_dw_block(w: dict, scope: str, x: torch.Tensor, stride: int = 1) -> torch.Tensor:
    depthwise = w[f"{scope}/conv1/conv/weight_depths"]
    x = F.conv2d(_pad_same(x, (3, 3), (stride, stride)), depthwise.permute(2, 3, 0, 1), stride=stride,
                 groups=x.shape[1])
    return _tf_conv_bn(w, f"{scope}/conv2", x).clamp(0, 6)


def _tf_conv_bn(w: dict, scope: str, x: torch.Tensor, stride: int = 1) -> torch.Tensor:
    kernel = w[f"{scope}/weights"]
    x = F.conv2d(_pad_same(x, kernel.shape[:2], (stride, stride)), kernel.permute(3, 2, 0, 1), stride=stride)
    mean, var, gamma, beta = (w[f"{scope}/bn/{v}"].view(1, -1, 1, 1)
                              for v in ("mean/EMA", "variance/EMA", "gamma", "beta"))
    return (x - mean) / torch.sqrt(var + 1e-5) * gamma + beta


def _tf_pure_conv(w: dict, scope: str, x: torch.Tensor, stride: int, same: bool) -> list[torch.Tensor]:
    """pure_conv2d: conv3d over expand_dims(x, 1) (channels-first), unstacked along the output maps."""
    kernel = w[f"{scope}/pure_conv/kernel"]
    volume = x.unsqueeze(1)
    if same:
        volume = _pad_same(volume, kernel.shape[:3], (stride, 1, 1))
    return list(F.conv3d(volume, kernel.permute(4, 3, 0, 1, 2), stride=(stride, 1, 1)).unbind(1))


def _tf_groups(w: dict, scope: str, parts: list[torch.Tensor]) -> torch.Tensor:
    for g, part in enumerate(parts):
        for i in range(2):
            part = _tf_dw_block(w, f"{scope}/group_{g}/conv_{i}", part)
        parts[g] = part
    return torch.cat(parts, 1)


def _tf_inference(w: dict, x: torch.Tensor, concat: bool, ccl: bool) -> torch.Tensor:
    """model.py's ``inference`` (NCHW), then out_block or conv_out_block."""
    def skip(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.cat([a, b], 1) if concat else b

    x = _tf_conv_bn(w, "conv_s", x, stride=2)  # act_fn=None
    x = skip(x, _tf_dw_block(w, "conv_1_0", x))
    x = _tf_dw_block(w, "conv_1_1", x, 2)
    x = skip(x, _tf_dw_block(w, "conv_1_2", x))
    x = _tf_dw_block(w, "conv_1_3", x, 2)
    x = skip(x, _tf_dw_block(w, "conv_1_4", x))
    x = _tf_dw_block(w, "conv_1_5", x, 2)
    x = x + _tf_groups(w, "conv_2_1", list(x.chunk(2, 1)))
    x = _tf_groups(w, "conv_2_2", _tf_pure_conv(w, "conv_2_2/pure_conv", x, stride=2, same=True))
    x = x + _tf_groups(w, "conv_2_3", _tf_pure_conv(w, "conv_2_3/pure_conv", x, stride=2, same=True))
    x = _tf_dw_block(w, "conv_3_1", _tf_dw_block(w, "conv_3_0", x, 2))
    if ccl:
        x = F.conv2d(_pad_same(x, (3, 3), (1, 1)), w["out/conv/conv/weight_depths"].permute(2, 3, 0, 1),
                     groups=x.shape[1])
        return _tf_pure_conv(w, "out/pure", x, stride=1, same=False)[0].flatten(1)
    return x.mean((2, 3)) @ w["out/dense/weights"] + w["out/dense/biases"]


@pytest.mark.parametrize("name", list(VARIANTS))
def test_tf_checkpoint_loads_through_the_remap_and_matches_the_authors_graph(name: str, tmp_path) -> None:
    """The authors' variables (plus the optimizer's and the step counter, which no inference needs) saved
    by name load strictly through ``--weights``; their trainable count is the variant's, and our model
    computes what their graph computes on those tensors (at 32 px; the CCL at its 224)."""
    from safetensors.torch import save_file

    concat, ccl = VARIANTS[name]
    layout = _tf_layout(concat, ccl)
    trainable = sum(math.prod(shape) for key, shape in layout.items() if not key.endswith("EMA"))
    model = create_model(name)
    assert trainable == COUNTS[name] == sum(p.numel() for p in model.parameters())
    theirs = _tf_state(layout)
    extras = {"global_step": torch.tensor([7.0]), "conv_s/weights/Momentum": torch.zeros(3, 3, 3, 32)}
    save_file(theirs | extras, str(tmp_path / "model-400000.safetensors"))
    load_weights(model, model_source(name), tmp_path / "model-400000.safetensors")
    # 32 px: every stride-2 conv on an even side, down to 1x1; the CCL at its 224, one sample (CI time)
    shape = (1, *get_spec(name).input_size) if ccl else (2, 3, 32, 32)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = _tf_inference(theirs, x, concat, ccl), model(x)
    assert (got - expected).abs().max().item() <= PARITY_TOLERANCE * max(1.0, expected.abs().max().item())


# --- the channel-wise conv and SAME pads ------------------------------------------------------------

def _conv3d_over_channels(x: np.ndarray, kernel: np.ndarray, stride: int, same: bool) -> np.ndarray:
    """TF conv3d (channels-first, 1 input channel) on x (N, C, H, W) with kernel [d, kh, kw, 1, maps], by
    its definition: out[n, m, i, y, z] = sum over (a, b, c) of kernel[a, b, c, 0, m] * x[n, i*stride + a -
    before, y + b, z + c] (zero outside), the maps stacked on the channel axis."""
    depth, kh, kw, _, maps = kernel.shape
    n, channels, height, width = x.shape
    out_c = -(-channels // stride) if same else (channels - depth) // stride + 1
    before = max((out_c - 1) * stride + depth - channels, 0) // 2 if same else 0
    out = np.zeros((n, maps, out_c, height - kh + 1, width - kw + 1))
    for m in range(maps):
        for i in range(out_c):
            for a in range(depth):
                channel = i * stride + a - before
                if 0 <= channel < channels:
                    for b in range(kh):
                        for c in range(kw):
                            window = x[:, channel, b:b + height - kh + 1, c:c + width - kw + 1]
                            out[:, m, i] += kernel[a, b, c, 0, m] * window
    return out.reshape(n, maps * out_c, height - kh + 1, width - kw + 1)


@pytest.mark.parametrize("channels, depth, stride, maps, spatial, same", [
    (16, 8, 2, 2, 1, True),  # the GCWM's form: SAME pads 3 + 3 along the channels
    (12, 12, 3, 3, 1, True),  # 3 groups: SAME pads 4 before, 5 after (asymmetric)
    (30, 6, 1, 1, 3, False),  # the CCL's form: VALID, the kernel covers the whole 3x3 map
])
def test_channelwise_conv_computes_tf_conv3d(channels, depth, stride, maps, spatial, same) -> None:
    conv = ChannelwiseConv(channels, maps, depth, stride=stride, spatial=spatial, same=same)
    x = torch.randn(2, channels, 3, 3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = conv(x).numpy()
    tf_kernel = conv.weight.detach().permute(2, 3, 4, 1, 0).numpy()  # (maps, 1, d, kh, kw) -> TF's layout
    expected = _conv3d_over_channels(x.double().numpy(), tf_kernel.astype(np.float64), stride, same)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_same_pads_are_tensorflows() -> None:
    """TF "SAME": the odd pixel after; symmetric at stride 1 and on an odd side at stride 2."""
    assert _same_pads(8, 3, 2) == (0, 1)
    assert _same_pads(7, 3, 2) == (1, 1)
    assert _same_pads(8, 3, 1) == (1, 1)
    assert _same_pads(512, 8, 2) == (3, 3)
    assert _same_pads(12, 12, 3) == (4, 5)


def test_ccl_takes_only_224() -> None:
    """The CCL's (25, 7, 7) VALID kernel needs the 7x7 map of a 224 input: the spec rejects another size
    in one line, and the head raises on the 8x8 map of a 256 input rather than return a map for logits."""
    with pytest.raises(InputSizeError):
        spec_with_size(get_spec("channelnet_v1_ccl"), 256)
    with pytest.raises(ValueError, match="7x7"), torch.no_grad():
        create_model("channelnet_v1_ccl").head(torch.zeros(1, 1024, 8, 8))


@pytest.mark.parametrize("spatial, map_size", [(1, 14), (7, 7)])
def test_channelwise_conv_exports_as_a_2d_conv_with_a_dynamic_batch(tmp_path, spatial: int, map_size: int) -> None:
    """No 3-D Conv in the graph (a 2-D Conv between two Reshapes), and one graph runs batch 1 and 3."""
    conv = ChannelwiseConv(64, 2 if spatial == 1 else 1, 8, stride=2 if spatial == 1 else 1, spatial=spatial,
                           same=spatial == 1).eval()
    exported = onnx_from_model(conv, tmp_path / "channelwise.onnx", (64, map_size, map_size), dynamic_batch=True)
    convs = [node for node in onnx.load(str(exported.path)).graph.node if node.op_type == "Conv"]
    assert [len(attr.ints) for node in convs for attr in node.attribute if attr.name == "kernel_shape"] == [2]
    runner = OrtRunner(exported.path)
    assert runner.static_batch is None
    x = torch.randn(3, 64, map_size, map_size, generator=torch.Generator().manual_seed(0))
    for batch in (x[:1], x):
        with torch.no_grad():
            np.testing.assert_allclose(runner.infer(batch.numpy()), conv(batch).numpy(), atol=1e-5)
