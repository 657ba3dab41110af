"""Stage 1: PyTorch -> ONNX, checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from bbruntime.errors import OpsetError
from bbruntime.runners import OrtRunner
from exporter.onnx_export import onnx_from_model
from exporter.runners import TorchRunner
from model_defs import create_model


@pytest.fixture(scope="module")
def resnet18() -> nn.Module:
    torch.manual_seed(0)
    return create_model("resnet18")


def test_static_export_is_checked_and_named(resnet18, tmp_path: Path) -> None:
    result = onnx_from_model(resnet18, tmp_path / "m.onnx", (3, 64, 64), opset=13, batch=2)
    assert result.input_shape == [2, 3, 64, 64] and result.output_shape == [2, 1000]
    assert (result.input_name, result.output_name) == ("input", "logits")
    assert onnx.load(str(result.path)).opset_import[0].version == 13
    assert not result.external_data


def test_dynamic_batch_runs_any_batch(resnet18, tmp_path: Path) -> None:
    result = onnx_from_model(resnet18, tmp_path / "m.onnx", (3, 64, 64), dynamic_batch=True)
    assert result.input_shape[0] == "batch"
    batch = np.random.default_rng(0).standard_normal((3, 3, 64, 64), dtype=np.float32)
    ort_out = OrtRunner(result.path).infer(batch)
    np.testing.assert_allclose(ort_out, TorchRunner(resnet18).infer(batch), atol=1e-4)
    np.testing.assert_allclose(OrtRunner(result.path).infer(batch[:1]), ort_out[:1], atol=1e-5)


def test_external_data_sidecar(resnet18, tmp_path: Path) -> None:
    """Large models keep their weights beside the graph (protobuf stops at 2 GB)."""
    result = onnx_from_model(resnet18, tmp_path / "m.onnx", (3, 64, 64), external_data_threshold=1)
    assert result.external_data and (tmp_path / "m.onnx.data").stat().st_size > 30e6
    assert (tmp_path / "m.onnx").stat().st_size < 1e6
    batch = np.zeros((1, 3, 64, 64), np.float32)
    np.testing.assert_allclose(OrtRunner(result.path).infer(batch), TorchRunner(resnet18).infer(batch), atol=1e-4)


class _Attention(nn.Module):
    """Fused attention: the TorchScript exporter has it from opset 14 on."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = x.flatten(2).transpose(1, 2)
        return nn.functional.scaled_dot_product_attention(q, q, q).mean(1)


def test_opset_too_low_names_op_and_minimum(tmp_path: Path) -> None:
    with pytest.raises(OpsetError, match=r"scaled_dot_product_attention needs opset >= 14 \(got --opset 13\)"):
        onnx_from_model(_Attention(), tmp_path / "a.onnx", (8, 4, 4), opset=13)
    onnx_from_model(_Attention(), tmp_path / "a.onnx", (8, 4, 4), opset=14)


def test_opset_outside_exporter_range(resnet18, tmp_path: Path) -> None:
    with pytest.raises(OpsetError, match="opsets 11-20"):
        onnx_from_model(resnet18, tmp_path / "m.onnx", (3, 64, 64), opset=21)
