"""Stage 1: PyTorch model -> checked ONNX file."""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch
from torch import nn

from bbruntime.errors import ExportError, MissingDependencyError, OpsetError, first_line

from .artifacts import sidecar_of

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
# The TorchScript exporter stops at opset 20; ONNX's checker and ORT know newer ones.
TORCHSCRIPT_MAX_OPSET = 20
MIN_OPSET = 11
# Models above this many bytes of weights exceed protobuf's 2 GB limit: weights go to a sidecar.
EXTERNAL_DATA_THRESHOLD = 1_800_000_000
LARGE_INITIALIZER_BYTES = 1 << 16


@dataclass(frozen=True)
class ExportResult:
    path: Path
    opset: int
    exporter: str
    input_name: str
    output_name: str
    input_shape: list[int | str]
    output_shape: list[int | str]
    nodes: int
    external_data: bool


def onnx_from_model(model: nn.Module, path: Path, input_size: tuple[int, int, int], *, opset: int = 17,
                    batch: int = 1, dynamic_batch: bool = False, exporter: str = "torchscript",
                    external_data_threshold: int = EXTERNAL_DATA_THRESHOLD) -> ExportResult:
    """Export ``model`` (eval mode) to ``path`` and run the full ONNX checker on the result."""
    if exporter == "torchscript" and not MIN_OPSET <= opset <= TORCHSCRIPT_MAX_OPSET:
        raise OpsetError(f"the TorchScript exporter writes opsets {MIN_OPSET}-{TORCHSCRIPT_MAX_OPSET}; got {opset} "
                         "(use --exporter dynamo for newer opsets)")
    model = model.eval()
    sample = torch.randn(batch, *input_size)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    external = weight_bytes > external_data_threshold
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # exporter chatter (deprecations, tracer notes) is not ours
            if exporter == "torchscript":
                _export_torchscript(model, sample, path, opset, dynamic_batch)
            elif exporter == "dynamo":
                _export_dynamo(model, sample, path, opset, dynamic_batch, external)
            else:
                raise ExportError(f"unknown exporter {exporter!r} (expected torchscript or dynamo)")
    except torch.onnx.errors.UnsupportedOperatorError as e:
        raise OpsetError(_opset_message(str(e), opset)) from e
    except torch.onnx.errors.SymbolicValueError as e:
        raise ExportError(f"ONNX export failed: {first_line(e)}") from e
    if external or not _fits_protobuf(path):
        _move_weights_to_sidecar(path)
        external = True
    check_onnx(path)
    proto = onnx.load(str(path), load_external_data=False)
    return ExportResult(
        path=path, opset=opset, exporter=exporter, input_name=proto.graph.input[0].name,
        output_name=proto.graph.output[0].name, input_shape=_shape(proto.graph.input[0]),
        output_shape=_shape(proto.graph.output[0]), nodes=len(proto.graph.node), external_data=external,
    )


def _export_torchscript(model: nn.Module, sample: torch.Tensor, path: Path, opset: int, dynamic_batch: bool) -> None:
    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    torch.onnx.export(model, (sample,), str(path), dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
                      output_names=[OUTPUT_NAME], dynamic_axes=axes, do_constant_folding=True)


def _export_dynamo(model: nn.Module, sample: torch.Tensor, path: Path, opset: int, dynamic_batch: bool,
                   external: bool) -> None:
    try:
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise MissingDependencyError("--exporter dynamo needs the onnxscript package (pip install onnxscript)") from e
    shapes = ({0: torch.export.Dim("batch", min=1, max=1024)},) if dynamic_batch else None
    program = torch.onnx.export(model, (sample,), dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
                                output_names=[OUTPUT_NAME], dynamic_shapes=shapes, optimize=True)
    program.save(str(path), external_data=external)


def check_onnx(path: Path) -> None:
    """``onnx.checker`` with shape inference (full check); by path, so >2 GB models work."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ExportError(f"onnx.checker rejected {path.name}: {first_line(e)}") from e


def _fits_protobuf(path: Path) -> bool:
    return path.stat().st_size < 2_000_000_000


def _move_weights_to_sidecar(path: Path) -> None:
    save_onnx(onnx.load(str(path)), path, external_data=True)


def save_onnx(proto: onnx.ModelProto, path: Path, external_data: bool) -> None:
    """Save ``proto`` to ``path``, its weights in the one sidecar readers expect where asked."""
    if external_data:
        onnx.save_model(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=sidecar_of(path).name, size_threshold=1024)
    else:
        onnx.save(proto, str(path))


def infer_shapes(proto: onnx.ModelProto) -> onnx.ModelProto:
    """``onnx.shape_inference.infer_shapes`` for models of any size: ONNX serializes the model to
    infer, which protobuf refuses past 2 GB, so the bytes of large initializers are set aside
    meanwhile (inference reads only small constants' values: shapes, axes, pads)."""
    held = {}
    for tensor in proto.graph.initializer:
        if len(tensor.raw_data) > LARGE_INITIALIZER_BYTES:
            held[tensor.name] = tensor.raw_data
            tensor.ClearField("raw_data")
    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
    finally:
        for tensor in proto.graph.initializer:
            if tensor.name in held:
                tensor.raw_data = held[tensor.name]
    for tensor in inferred.graph.initializer:
        if tensor.name in held:
            tensor.raw_data = held[tensor.name]
    return inferred


def _opset_message(text: str, opset: int) -> str:
    op = re.search(r"operator '([^']+)'", text)
    needed = re.search(r"added in (?:opset |version )(\d+)", text)
    name = op.group(1) if op else "an operator"
    if needed:
        return f"{name} needs opset >= {needed.group(1)} (got --opset {opset})"
    return f"{name} cannot be exported at opset {opset}: {first_line(text)}"


def _shape(value_info: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]
