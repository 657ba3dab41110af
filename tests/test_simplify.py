"""Stage 2: onnxsim, verified, with an honest fallback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch

from bbruntime.runners import OrtRunner
from exporter.onnx_export import onnx_from_model
from exporter.simplify import simplified_from_onnx
from model_defs import create_model


def _exported(tmp_path: Path, **kwargs) -> Path:
    torch.manual_seed(0)
    return onnx_from_model(create_model("resnet18"), tmp_path / "raw.onnx", (3, 64, 64), **kwargs).path


def test_simplify_folds_and_keeps_numbers(tmp_path: Path) -> None:
    raw = _exported(tmp_path)
    check = np.random.default_rng(0).standard_normal((1, 3, 64, 64), dtype=np.float32)
    result = simplified_from_onnx(raw, tmp_path / "simple.onnx", check)
    assert result.simplified and result.reason == ""
    assert result.nodes_after <= result.nodes_before
    assert result.max_abs_change is not None and result.max_abs_change < 1e-4


def test_failure_keeps_the_unsimplified_graph_and_says_why(tmp_path: Path) -> None:
    raw = _exported(tmp_path)
    wrong_shape = np.zeros((1, 3, 32, 32), np.float32)  # a real onnxsim/ORT failure: input does not fit
    result = simplified_from_onnx(raw, tmp_path / "simple.onnx", wrong_shape)
    assert not result.simplified and result.reason
    assert (tmp_path / "simple.onnx").read_bytes() == raw.read_bytes()


def test_external_data_survives_the_fallback(tmp_path: Path) -> None:
    raw = _exported(tmp_path, external_data_threshold=1)
    result = simplified_from_onnx(raw, tmp_path / "simple.onnx", np.zeros((1, 3, 32, 32), np.float32))
    assert not result.simplified
    assert (tmp_path / "simple.onnx.data").exists()


def test_external_data_is_published_under_the_model_name(tmp_path: Path) -> None:
    """onnxsim decides itself whether (and under which name) weights go to a sidecar; whatever it
    does, the graph must reference only ``<file>.data`` beside it, and run."""
    raw = _exported(tmp_path, external_data_threshold=1)
    check = np.random.default_rng(0).standard_normal((1, 3, 64, 64), dtype=np.float32)
    result = simplified_from_onnx(raw, tmp_path / "simple.onnx", check)
    assert result.simplified, result.reason
    locations = {e.value for t in onnx.load(str(tmp_path / "simple.onnx"), load_external_data=False).graph.initializer
                 for e in t.external_data if e.key == "location"}
    assert locations <= {"simple.onnx.data"}
    assert OrtRunner(tmp_path / "simple.onnx").infer(check).shape == (1, 1000)
