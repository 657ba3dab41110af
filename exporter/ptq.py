"""Post-training quantization on the ONNX graph, beyond what ONNX Runtime's quantizer does.

ORT's ``quantize_static`` builds the Q/DQ graph (:mod:`exporter.qdq`); this module prepares the
FP32 graph it quantizes:

- :func:`weights_as_initializers`: onnxsim may fold a Mul into a Conv's weight as a ``Constant``
  node, not an initializer. ORT's quantizer then takes that weight for an activation: float
  weights left in the INT8 file, quantized per tensor at run time. Such constants become
  initializers first.
- :func:`bias_corrected`: empirical bias correction (Nagel et al. 2019, "Data-Free Quantization
  Through Weight Equalization and Bias Correction", section 4.2, the empirical variant). Rounding a
  layer's weights, and the quantization error of everything before it, shift the mean of its output
  channels; on real EfficientNet-Lite the depthwise layers' shifts are a sizeable part of the INT8
  loss. The per-channel mean of each Conv/Gemm output is measured on the calibration samples in the
  quantized graph (Q/DQ run as written) and in the FP32 graph, and the difference is taken out of
  the layer's bias in the FP32 graph, which is then quantized again. One round corrects every layer
  at once; layers downstream see their inputs change, so a few rounds converge it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from .artifacts import sidecar_of
from .onnx_export import save_onnx

# Ops whose weight (input 1) and bias (input 2) must be initializers for ORT to quantize them as weights.
WEIGHTED_INPUTS = {"Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (1, 2), "MatMul": (1,)}
BIASED_OPS = ("Conv", "Gemm")  # ops whose output channels (axis 1) get a bias correction
BIAS_CORRECTION_ROUNDS = 2
MEASURE_BATCH = 8  # samples per ORT run while the channel means are accumulated


def weights_as_initializers(model: onnx.ModelProto) -> tuple[str, ...]:
    """Turn every ``Constant`` node that feeds a weight or bias input of a weighted op into an
    initializer, in place; returns the tensors converted."""
    feeding = {node.input[i] for node in model.graph.node for i in WEIGHTED_INPUTS.get(node.op_type, ())
               if i < len(node.input)}
    converted, kept = [], []
    for node in model.graph.node:
        value = next((a.t for a in node.attribute if a.name == "value"), None) if node.op_type == "Constant" else None
        if value is None or node.output[0] not in feeding:
            kept.append(node)
            continue
        tensor = onnx.TensorProto()
        tensor.CopyFrom(value)
        tensor.name = node.output[0]
        model.graph.initializer.append(tensor)
        converted.append(tensor.name)
    del model.graph.node[:]
    model.graph.node.extend(kept)
    return tuple(converted)


@dataclass(frozen=True)
class BiasCorrection:
    """What a correction did, for the manifest: the layers corrected and, per round, the largest
    per-channel mean shift it found, over the layer's output scale (max |shift| / the FP32 output's
    within-channel standard deviation): the first is the uncorrected graph's, each next one what the
    rounds before left."""

    layers: int
    relative_shifts: tuple[float, ...]

    def to_dict(self) -> dict:
        return {"layers": self.layers, "rounds": len(self.relative_shifts),
                "relative_shifts": [round(s, 6) for s in self.relative_shifts]}


def bias_corrected(fp32: onnx.ModelProto, quantize: Callable[[onnx.ModelProto], Path], batch: np.ndarray,
                   work: Path, rounds: int = BIAS_CORRECTION_ROUNDS, external_data: bool = False
                   ) -> tuple[onnx.ModelProto, BiasCorrection]:
    """A copy of ``fp32`` whose Conv/Gemm biases cancel the mean shift its quantization (by
    ``quantize``: FP32 graph -> Q/DQ file) leaves in their outputs on ``batch``. ``external_data``:
    the graphs measured are written with a weights sidecar (past protobuf's 2 GB).

    A layer's output shift is its own (its rounded weights) plus what it inherits: its input's shift
    carried through its weights (the sum of each kernel times each input channel's shift). Every layer
    is measured in one run, so only its own part is taken out of its bias: taking out all of it
    would correct the inherited part twice, once upstream and once here (real Lite1: cosine 0.15)."""
    corrected = onnx.ModelProto()
    corrected.CopyFrom(fp32)
    layers = [n for n in corrected.graph.node if n.op_type in BIASED_OPS and _has_constant_weight(corrected, n)]
    tensors = list(dict.fromkeys(t for n in layers for t in (n.input[0], n.output[0])))
    reference, spread = channel_statistics(corrected, tensors, batch, work / "reference.onnx", False, external_data)
    biases = {n.name: _bias_of(corrected, n) for n in layers}
    shifts = []
    for _ in range(rounds):
        graph = onnx.load(str(quantize(corrected)))
        quantized = {n.name: n for n in graph.graph.node}
        measured = list(dict.fromkeys(t for n in layers for t in (quantized[n.name].input[0],
                                                                  quantized[n.name].output[0])))
        means, _ = channel_statistics(graph, measured, batch, work / "measured.onnx", True, external_data)
        round_shifts = []
        for node in layers:
            q = quantized[node.name]
            inherited = _carried(corrected, node, means[q.input[0]] - reference[node.input[0]])
            own = means[q.output[0]] - reference[node.output[0]] - inherited
            round_shifts.append(float(np.abs(own).max() / max(spread[node.output[0]], 1e-12)))
            biases[node.name] -= own.astype(np.float32)
            _write_bias(corrected, node, biases[node.name])
        shifts.append(max(round_shifts, default=0.0))
    return corrected, BiasCorrection(len(layers), tuple(shifts))


def _carried(model: onnx.ModelProto, node: onnx.NodeProto, input_shift: np.ndarray) -> np.ndarray:
    """The output-channel mean shift that a per-channel ``input_shift`` causes through the node's
    float weights (padding's zeros ignored: they shift nothing, and are a thin border)."""
    weight = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == node.input[1]))
    weight = weight.astype(np.float64)
    if node.op_type == "Gemm":
        attrs = {a.name: a for a in node.attribute}
        matrix = weight if "transB" in attrs and attrs["transB"].i else weight.T
        return (attrs["alpha"].f if "alpha" in attrs else 1.0) * matrix @ input_shift
    groups = next((a.i for a in node.attribute if a.name == "group"), 1)
    kernel_sums = weight.reshape(weight.shape[0], weight.shape[1], -1).sum(axis=2)  # [Cout, Cin / groups]
    per_group = input_shift.reshape(groups, -1)  # [groups, Cin / groups]
    group_of = np.arange(weight.shape[0]) // (weight.shape[0] // groups)
    return (kernel_sums * per_group[group_of]).sum(axis=1)


def probe_session(model: onnx.ModelProto, tensors: list[str], path: Path, fake_quant: bool = False,
                  external_data: bool = False):
    """An ONNX Runtime session (CPU) of ``model`` saved to ``path`` with ``tensors`` added to its outputs.
    ``fake_quant`` runs Q/DQ pairs as written, the arithmetic every flavour's weights are rounded for."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    present = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.ValueInfoProto(name=t) for t in dict.fromkeys(tensors) if t not in present)
    save_onnx(probe, path, external_data=external_data)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if fake_quant:
        options.add_session_config_entry("session.disable_quant_qdq", "1")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def channel_statistics(model: onnx.ModelProto, tensors: list[str], batch: np.ndarray, path: Path,
                       fake_quant: bool, external_data: bool = False) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Per tensor: the mean of each channel (axis 1) over samples and positions, and the tensor's
    standard deviation, accumulated over ``batch`` in runs of ``MEASURE_BATCH``. ``fake_quant`` runs
    Q/DQ pairs as written, the arithmetic every flavour's weights are rounded for."""
    session = probe_session(model, tensors, path, fake_quant, external_data)
    feed_name = session.get_inputs()[0].name
    static = session.get_inputs()[0].shape[0]
    step = static if isinstance(static, int) else MEASURE_BATCH
    end = len(batch) - len(batch) % step if isinstance(static, int) else len(batch)  # whole static batches
    sums: dict[str, np.ndarray] = {}
    squares = dict.fromkeys(tensors, 0.0)
    count = dict.fromkeys(tensors, 0)
    for start in range(0, end, step):
        values = session.run(tensors, {feed_name: np.ascontiguousarray(batch[start:start + step], np.float32)})
        for name, value in zip(tensors, values, strict=True):
            # float64 accumulation without a float64 copy of the tensor: these are the graph's largest
            flat = value.reshape(-1)
            sums[name] = sums.get(name, 0.0) + value.sum(axis=(0, *range(2, value.ndim)), dtype=np.float64)
            squares[name] += float(np.einsum("i,i->", flat, flat, dtype=np.float64))
            count[name] += value.size // value.shape[1]
    means = {name: sums[name] / count[name] for name in tensors}
    spread = {name: float(np.sqrt(max(squares[name] / (count[name] * len(means[name])) - (means[name] ** 2).mean(),
                                      0.0))) for name in tensors}
    return means, spread


def _has_constant_weight(model: onnx.ModelProto, node: onnx.NodeProto) -> bool:
    initializers = {i.name for i in model.graph.initializer}
    return len(node.input) > 1 and node.input[1] in initializers and (
        node.op_type != "Gemm" or not any(a.name == "transA" and a.i for a in node.attribute))


def _bias_of(model: onnx.ModelProto, node: onnx.NodeProto) -> np.ndarray:
    """The node's bias as a float array; a zero bias where it has none (one per output channel)."""
    initializers = {i.name: i for i in model.graph.initializer}
    if len(node.input) > 2 and node.input[2] in initializers:
        return numpy_helper.to_array(initializers[node.input[2]]).astype(np.float32).copy()
    weight = numpy_helper.to_array(initializers[node.input[1]])
    trans_b = any(a.name == "transB" and a.i for a in node.attribute)
    channels = weight.shape[0] if node.op_type == "Conv" or trans_b else weight.shape[1]
    return np.zeros(channels, np.float32)


def _write_bias(model: onnx.ModelProto, node: onnx.NodeProto, bias: np.ndarray) -> None:
    """Store ``bias`` as the node's bias initializer (a new one, owned by the node, where it had none
    or shared one with another node)."""
    name = node.input[2] if len(node.input) > 2 and node.input[2] else ""
    shared = sum(name in n.input for n in model.graph.node) > 1 if name else True
    if shared:
        name = f"{node.name}/corrected_bias"
        while len(node.input) < 3:
            node.input.append("")
        node.input[2] = name
    existing = next((i for i in model.graph.initializer if i.name == name), None)
    tensor = numpy_helper.from_array(bias.astype(np.float32), name)
    if existing is None:
        model.graph.initializer.append(tensor)
    else:
        existing.CopyFrom(tensor)


class Int8Source:
    """The FP32 graph an INT8 graph is made from: its constant weights as initializers and, where
    asked, its weights rounded by learning (:func:`exporter.rounding.learned_rounding`) and its biases
    corrected (:func:`bias_corrected`), in that order: the correction measures what the rounding left.

    Both are measured once, for the first set of float layers asked for (the fixed exclusions). A
    layer's rounding and correction are its own, so they hold whatever else is kept in float; a layer
    that is itself kept in float has no rounding, and gets its trained weight and bias back. The
    sensitivity search re-quantizes with many sets of float layers: none of them re-measures.

    ``qdq(src, dst, excluded)`` is the Q/DQ pass (:func:`exporter.qdq.qdq_from_onnx` with the
    flavour's settings); every graph this source quantizes goes through it."""

    def __init__(self, fp32_onnx: Path, qdq: Callable[[Path, Path, tuple[str, ...]], object], batch: np.ndarray,
                 work: Path, bias_correction: bool, learned_rounding: bool = False):
        self.model = onnx.load(str(fp32_onnx))
        self.constants = weights_as_initializers(self.model)
        self.external = sidecar_of(fp32_onnx).exists()
        self.qdq, self.batch, self.work = qdq, batch, work
        self.bias_correction, self.learned_rounding = bias_correction, learned_rounding
        self.correction: BiasCorrection | None = None
        self.rounding = None  # exporter.rounding.RoundingReport, once measured
        self._prepared: tuple[onnx.ModelProto, tuple[str, ...]] | None = None  # and the float layers it was made for
        self._graphs: dict[tuple[str, ...], Path] = {}

    def graph_for(self, excluded: tuple[str, ...]) -> Path:
        """The prepared FP32 file for these float layers (made once per set)."""
        key = tuple(sorted(excluded))
        if key in self._graphs:
            return self._graphs[key]
        path = self.work / f"source-{len(self._graphs)}.onnx"
        prepared = self._prepared_for(excluded) if self.bias_correction or self.learned_rounding else self.model
        save_onnx(prepared, path, external_data=self.external)
        self._graphs[key] = path
        return path

    def quantize(self, excluded: tuple[str, ...], dst: Path):
        """The Q/DQ graph with ``excluded`` in float, from the source prepared for them."""
        return self.qdq(self.graph_for(excluded), dst, excluded)

    def _prepared_for(self, excluded: tuple[str, ...]) -> onnx.ModelProto:
        if self._prepared is None:
            self._prepared = (self._prepare(excluded), tuple(excluded))
        model, measured_with = self._prepared
        newly_float = set(excluded) - set(measured_with)
        if not newly_float:
            return model
        restored = onnx.ModelProto()
        restored.CopyFrom(model)
        initializers = {i.name: i for i in restored.graph.initializer}
        for node in restored.graph.node:
            if node.name in newly_float and node.op_type in BIASED_OPS and _has_constant_weight(self.model, node):
                original = next(n for n in self.model.graph.node if n.name == node.name)
                _write_bias(restored, node, _bias_of(self.model, original))
                trained = next(i for i in self.model.graph.initializer if i.name == original.input[1])
                if node.input[1] != original.input[1]:  # a rounded copy of a shared weight: the shared one back
                    node.input[1] = original.input[1]
                elif node.input[1] in initializers:
                    initializers[node.input[1]].CopyFrom(trained)
        return restored

    def _prepare(self, excluded: tuple[str, ...]) -> onnx.ModelProto:
        model = self.model
        if self.learned_rounding:
            from .rounding import learned_rounding

            first = onnx.load(str(self._quantized(model, excluded)))
            model, self.rounding = learned_rounding(model, first, self.batch, self.work, external_data=self.external)
        if self.bias_correction:
            model, self.correction = bias_corrected(model, lambda graph: self._quantized(graph, excluded),
                                                    self.batch, self.work, external_data=self.external)
        return model

    def _quantized(self, graph: onnx.ModelProto, excluded: tuple[str, ...]) -> Path:
        src, dst = self.work / "correcting.onnx", self.work / "correcting.int8.onnx"
        save_onnx(graph, src, external_data=self.external)
        self.qdq(src, dst, excluded)
        return dst
