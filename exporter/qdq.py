"""FP32 ONNX + cached activation ranges -> explicitly quantized (Q/DQ) INT8 ONNX.

Two flavours, both written by ONNX Runtime's ``quantize_static`` in ``QuantFormat.QDQ``:

- ``trt``: what TensorRT's explicit-quantization builder fuses (the placement NVIDIA ModelOpt
  uses, set through ORT's public options rather than by patching ORT's registries): symmetric int8
  activations, per-channel symmetric int8 weights kept as float with a Q->DQ pair (TensorRT folds
  them), Q/DQ on the *inputs* of Conv/ConvTranspose/Gemm/MatMul, residual Adds and pools only, no
  output quantization, biases left in float. Slow on a CPU (ORT runs most of it as fake-quant).
- ``cpu``: ONNX Runtime's fast path: uint8 asymmetric activations, per-channel int8 weights stored
  as int8, every op ORT has a quantized kernel for. On x86 CPUs without VNNI, ORT's uint8 x int8
  kernels (VPMADDUBSW) sum product pairs into saturating int16; ``reduce_range`` then keeps the
  weights to 7 bits so no pair can overflow (ORT's own advice). ARM and VNNI CPUs need full range.

Why not ModelOpt itself: its ``[onnx]`` extra pins onnx 1.21 and onnxruntime-gpu 1.24 (clobbering
onnxruntime 1.32 here) and always recalibrates, so cached ranges and per-layer sensitivity
searches would each pay a full calibration.
"""

from __future__ import annotations

import contextlib
import fnmatch
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from bbruntime.errors import BBExportError

from .artifacts import sidecar_of
from .calib_cache import ort_calibration_method

# Ops whose inputs get Q/DQ in the TensorRT flavour (Add only where it joins two activations).
TRT_QUANTIZED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "AveragePool", "GlobalAveragePool",
                     "MaxPool")
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass(frozen=True)
class QdqResult:
    path: Path
    quantized_nodes: tuple[str, ...]
    excluded_nodes: tuple[str, ...]


def qdq_from_onnx(src: Path, dst: Path, ranges_file: Path, flavour: str, method: str,
                  exclude_nodes: tuple[str, ...] = (), reduce_range: bool = False) -> QdqResult:
    """Quantize ``src`` into ``dst`` with the ranges in ``ranges_file`` (never recalibrates).
    ``reduce_range`` (cpu flavour): 7-bit weights, for x86 CPUs without VNNI."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    model = onnx.load(str(src), load_external_data=False)
    candidates = quantizable_nodes(model, flavour)
    nodes = tuple(n for n in candidates if n not in set(exclude_nodes))
    if flavour == "trt":
        op_types = list(TRT_QUANTIZED_OPS)
        options = {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                   "AddQDQPairToWeight": True, "DedicatedQDQPair": False, "ForceQuantizeNoInputCheck": True,
                   "OpTypesToExcludeOutputQuantization": sorted({n.op_type for n in model.graph.node}),
                   "QDQOpTypePerChannelSupportToAxis": {"Conv": 0, "ConvTranspose": 1, "MatMul": 1}}
        activation = QuantType.QInt8
    else:
        op_types, options, activation = None, {"ActivationSymmetric": False, "WeightSymmetric": True}, QuantType.QUInt8
    with _quiet_quantizer():
        quantize_static(str(src), str(dst), calibration_data_reader=None, quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=op_types, per_channel=True, activation_type=activation,
                        weight_type=QuantType.QInt8, reduce_range=reduce_range and flavour == "cpu",
                        nodes_to_quantize=list(nodes) if flavour == "trt" else None,
                        nodes_to_exclude=list(exclude_nodes), calibrate_method=ort_calibration_method(method),
                        extra_options=options, calibration_cache_path=ranges_file,
                        use_external_data_format=sidecar_of(src).exists())
    return QdqResult(dst, nodes, tuple(exclude_nodes))


def without_quantization(quantized: onnx.ModelProto, fp32: onnx.ModelProto, nodes,
                         kept_float=()) -> onnx.ModelProto:
    """A copy of ``quantized`` in which ``nodes`` compute in float, as a re-quantization with them
    excluded (and ``kept_float``, excluded when ``quantized`` was made) would write it: their weights
    come from the FP32 graph (or from before their QuantizeLinear, the trt flavour's float weights),
    and an activation's Q/DQ pair is skipped where no quantized node is left to need it (none reads
    it, nor makes it: the cpu flavour quantizes a quantized op's output for the next one). ORT folds
    a Relu/Clip that follows a quantized op into the QuantizeLinear's range; where a skipped pair had
    it, the activation is put back.

    The cheap probe of the sensitivity search: one graph edit instead of a re-quantization. It is
    close to, not the same as, quantizing with these nodes excluded (ORT fuses the neighbours of an
    excluded node its own way), so published graphs are always made by :func:`qdq_from_onnx`."""
    model = onnx.ModelProto()
    model.CopyFrom(quantized)
    edit = _FloatEdit(model, fp32, set(nodes), set(nodes) | set(kept_float))
    ordered: list[onnx.NodeProto] = []
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and edit.skippable(node):
            node = edit.pass_through(node, ordered)
        elif node.name in edit.wanted:
            edit.float_weights(node)
        ordered.append(node)
    del model.graph.node[:]
    model.graph.node.extend(ordered)
    return model


class _FloatEdit:
    """What :func:`without_quantization` looks up while it edits one graph."""

    def __init__(self, model: onnx.ModelProto, fp32: onnx.ModelProto, wanted: set[str], float_nodes: set[str]):
        self.model, self.wanted = model, wanted
        self.quantized = set(dequantized_consumers(model)) - float_nodes
        self.producers = {out: n for n in model.graph.node for out in n.output}
        self.readers: dict[str, list[str]] = {}
        for n in model.graph.node:
            for name in n.input:
                self.readers.setdefault(name, []).append(n.name)
        self.fp32_inputs = {n.name: list(n.input) for n in fp32.graph.node}
        self.fp32_initializers = {init.name: init for init in fp32.graph.initializer}
        kept = {n.name for n in model.graph.node}
        self.folded = {n.output[0]: n for n in fp32.graph.node if n.op_type in ("Relu", "Clip") and n.name not in kept}
        self.present = {init.name for init in model.graph.initializer} | set(self.producers)

    def quantize_of(self, dq: onnx.NodeProto) -> onnx.NodeProto | None:
        q = self.producers.get(dq.input[0])
        return q if q is not None and q.op_type == "QuantizeLinear" else None

    def skippable(self, dq: onnx.NodeProto) -> bool:
        q = self.quantize_of(dq)
        if q is None:
            return False  # the cpu flavour's int8 weight or int32 bias: see float_weights
        producer = self.producers.get(q.input[0])
        return ((producer is None or producer.name not in self.quantized)
                and not any(r in self.quantized for r in self.readers.get(dq.output[0], [])))

    def pass_through(self, dq: onnx.NodeProto, ordered: list) -> onnx.NodeProto:
        """The pair made an Identity (its output keeps its name), with a folded activation put back."""
        source = self.quantize_of(dq).input[0]
        if source in self.folded:
            restored = f"{source}__float"
            if restored not in self.present:
                activation = onnx.NodeProto()
                activation.CopyFrom(self.folded[source])
                activation.name += "__float"
                activation.input[0], activation.output[0] = source, restored
                ordered.append(activation)
                self.present.add(restored)
            source = restored
        return onnx.helper.make_node("Identity", [source], [dq.output[0]], name=f"{dq.name}__float")

    def float_weights(self, node: onnx.NodeProto) -> None:
        """The cpu flavour's int8 weights and int32 biases of ``node`` replaced by the FP32 graph's."""
        originals = self.fp32_inputs.get(node.name, [])
        for k, name in enumerate(node.input):
            dq = self.producers.get(name)
            original = originals[k] if k < len(originals) else None
            if dq is None or dq.op_type != "DequantizeLinear" or self.quantize_of(dq) is not None \
                    or original not in self.fp32_initializers:
                continue
            # The quantized graph may already name a tensor after it (a DequantizeLinear's output).
            float_name = f"{original}__float"
            if float_name not in self.present:
                weight = self.model.graph.initializer.add()
                weight.CopyFrom(self.fp32_initializers[original])
                weight.name = float_name
                self.present.add(float_name)
            node.input[k] = float_name


@contextlib.contextmanager
def _quiet_quantizer():
    """Silence ORT's progress prints and its advice to pre-process (our graphs are already
    simplified), for the duration of one call: other warnings still show."""
    advice = _DropMessages("Please consider")
    root = logging.getLogger()
    root.addFilter(advice)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.removeFilter(advice)


class _DropMessages(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def quantizable_nodes(model: onnx.ModelProto, flavour: str) -> tuple[str, ...]:
    """Names of the nodes the flavour puts Q/DQ on: the candidates for exclusion and sensitivity."""
    constants = {init.name for init in model.graph.initializer}
    constants |= {out for n in model.graph.node if n.op_type == "Constant" for out in n.output}
    ops = TRT_QUANTIZED_OPS if flavour == "trt" else WEIGHTED_OPS + ("Add", "Mul")
    names = []
    for node in model.graph.node:
        if node.op_type not in ops:
            continue
        if node.op_type in ("Add", "Mul") and any(i in constants for i in node.input):
            continue  # a bias or scale, not a join of two activations: TensorRT fuses it into the producer
        names.append(node.name)
    return tuple(names)


def dequantized_consumers(quantized: onnx.ModelProto) -> tuple[str, ...]:
    """Nodes of a Q/DQ graph that read a dequantized tensor: every op the quantizer actually touched
    (for the cpu flavour that is more than :func:`quantizable_nodes`: pools, sigmoids, concats …)."""
    dequantized = {out for n in quantized.graph.node if n.op_type == "DequantizeLinear" for out in n.output}
    return tuple(n.name for n in quantized.graph.node
                 if n.op_type not in ("QuantizeLinear", "DequantizeLinear") and any(i in dequantized for i in n.input))


def resolve_exclusions(model: onnx.ModelProto, patterns: tuple[str, ...]) -> tuple[str, ...]:
    """Node names matched by each pattern: an exact node name, a glob over names (``*/fc/*``) or an
    op type (``Gemm``). A pattern that matches nothing is an error: a typo must not pass silently."""
    names = [n.name for n in model.graph.node]
    matched: list[str] = []
    for pattern in patterns:
        hits = [n.name for n in model.graph.node
                if n.name == pattern or n.op_type == pattern or fnmatch.fnmatchcase(n.name, pattern)]
        if not hits:
            close = [n for n in names if pattern.lower() in n.lower()][:3]
            raise BBExportError(f"--exclude {pattern!r} matches no node name or op type"
                                + (f" (did you mean {', '.join(close)}?)" if close else ""))
        matched += [h for h in hits if h not in matched]
    return tuple(matched)


@dataclass(frozen=True)
class WeightQuantization:
    node: str
    op_type: str
    per_channel: bool  # one scale per output channel
    channels: int
    scales: int


def weight_quantization(model: onnx.ModelProto) -> list[WeightQuantization]:
    """How the weight input of every Conv/Gemm/MatMul with a constant weight is quantized."""
    producers = {out: n for n in model.graph.node for out in n.output}
    initializers = {init.name: init for init in model.graph.initializer}
    report = []
    for node in model.graph.node:
        if node.op_type not in WEIGHTED_OPS or len(node.input) < 2:
            continue
        dq = producers.get(node.input[1])
        if node.input[1] in initializers:  # a float weight without Q/DQ: not quantized
            weight = initializers[node.input[1]]
            report.append(WeightQuantization(node.name, node.op_type, False, _out_channels(node, weight.dims), 0))
            continue
        if dq is None or dq.op_type != "DequantizeLinear":
            continue  # an activation x activation MatMul: no weight
        source = dq.input[0]
        q = producers.get(source)
        weight = initializers.get(q.input[0] if q is not None and q.op_type == "QuantizeLinear" else source)
        scale = initializers.get(dq.input[1])
        if weight is None or scale is None:
            continue
        scales = int(np.prod(numpy_helper.to_array(scale).shape)) if scale.dims else 1
        channels = _out_channels(node, weight.dims)
        report.append(WeightQuantization(node.name, node.op_type, scales == channels and channels > 1, channels,
                                         scales))
    return report


def _out_channels(node: onnx.NodeProto, dims) -> int:
    if node.op_type == "Conv":
        return dims[0]
    if node.op_type == "ConvTranspose":
        return dims[1]
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return dims[0] if trans_b else dims[1]
    return dims[-1]  # MatMul: [K, N]
