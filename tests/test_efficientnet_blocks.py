"""The shared MBConv blocks: the block-string decoder and TF "SAME" padding (P-SAME)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from model_defs._efficientnet_blocks import Conv2dSame, EfficientNet, decode_arch, decode_block


def test_decode_block_reads_every_option() -> None:
    block = decode_block("ir_r2_k5_s2_e6_c40_se0.25_noskip_nsw")
    assert (block.kind, block.repeats, block.kernel, block.stride, block.out_chs) == ("ir", 2, 5, 2, 40)
    assert (block.expansion, block.se_ratio, block.skip, block.act) == (6.0, 0.25, False, nn.SiLU)


@pytest.mark.parametrize("text, bad", [
    ("xx_r1_k3_s1_c16", "'xx'"),  # unknown block type
    ("ir_r1_k3_s1_e6_c16_q4", "'q4'"),  # unknown token
    ("ir_r1_k3_s1_c16", "e<ratio>"),  # ir without expansion
    ("ds_r1_k3_s1_e6_c16", "'e6'"),  # ds does not expand
    ("ir_r1.5_k3_s1_e6_c16", "r1.5"),  # fractional repeats
    ("ir_r1_k3_s1_s2_e6_c16", "'s2'"),  # repeated option
    ("ir_r1_k3_e6_c16", "missing option(s) s"),
    ("ir_r1_k3_s1_e6_c16_g2", "'g2'"),  # grouped pw convs: ds only
])
def test_decode_block_names_the_bad_token(text: str, bad: str) -> None:
    with pytest.raises(ValueError, match="block string") as excinfo:
        decode_block(text)
    assert bad in str(excinfo.value)


def test_depth_scaling_matches_efficientnet_b7_stage_depths() -> None:
    stages = decode_arch([["ds_r1_k3_s1_c16"], ["ir_r2_k3_s2_e6_c24"], ["ir_r4_k5_s2_e6_c192"]], 3.1)
    assert [len(s) for s in stages] == [4, 7, 13]
    assert [b.stride for b in stages[1]] == [2] + [1] * 6  # only a stage's first block downsamples


@pytest.mark.parametrize("size", [(1, 2), (32, 32), (33, 47), (224, 225)])
@pytest.mark.parametrize("kernel, stride", [(3, 2), (5, 2), (4, 1), (3, 1)])
def test_conv2d_same_matches_timm(size: tuple[int, int], kernel: int, stride: int) -> None:
    conv2d_same = pytest.importorskip("timm.layers.conv2d_same", reason="parity reference: pip install -e '.[test]'")
    torch.manual_seed(0)
    ours = Conv2dSame(4, 6, kernel, stride)
    reference = conv2d_same.Conv2dSame(4, 6, kernel, stride, bias=False)
    reference.load_state_dict(ours.state_dict())
    x = torch.randn(1, 4, *size)
    with torch.no_grad():
        assert torch.equal(ours(x), reference(x))


def _tiny_same_padded_model() -> EfficientNet:
    torch.manual_seed(0)
    return EfficientNet(decode_arch([["ds_r1_k3_s1_c8"], ["ir_r1_k5_s2_e3_c16_se0.25"]]), stem_size=8,
                        num_features=32, num_classes=10, pad_same=True).eval()


def _export(model: nn.Module, path, dynamic_axes: dict | None = None) -> None:
    torch.onnx.export(model, (torch.randn(1, 3, 64, 64),), str(path), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"], dynamic_axes=dynamic_axes)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter announces its retirement
def test_same_padding_static_export_has_static_shapes(tmp_path) -> None:
    """For a static input the pads fold away: ONNX shape inference sees every size (F.pad would not)."""
    import onnx
    path = tmp_path / "same.onnx"
    _export(_tiny_same_padded_model(), path)
    output = onnx.load(str(path)).graph.output[0]
    assert [d.dim_value or d.dim_param for d in output.type.tensor_type.shape.dim] == [1, 10]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_same_padding_exports_with_dynamic_height_and_width(tmp_path) -> None:
    """One ONNX file serves several input sizes: the pads follow the run-time shape."""
    import onnxruntime as ort
    model = _tiny_same_padded_model()
    path = tmp_path / "same.onnx"
    _export(model, path, {"input": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch"}})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch, size in ((1, (64, 64)), (3, (77, 50)), (2, (31, 96))):
        x = torch.randn(batch, 3, *size)
        with torch.no_grad():
            expected = model(x).numpy()
        got = session.run(None, {"input": x.numpy()})[0]
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
