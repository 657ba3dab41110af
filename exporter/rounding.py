"""Learned weight rounding on the ONNX graph (AdaRound: Nagel et al. 2020, "Up or Down? Adaptive
Rounding for Post-Training Quantization").

Rounding each weight to its nearest int8 step minimises the error of each weight, not of the
layer's output: on real EfficientNet-Lite2, per-channel int8 weights alone, rounded to nearest,
keep 0.88 of the FP32 top-1 on the crop set (PyTorch fake-quant, activations in float). AdaRound
chooses, per weight, the step below or above it so that the layer reproduces its FP32 output on
calibration samples: a rectified sigmoid ``h(V)`` in [0, 1] is added to ``floor(W / s)`` and ``V``
is trained on the output's squared error plus a term that pushes every ``h`` to 0 or 1 as its
temperature ``beta`` falls from 20 to 2 (the paper's eq. 21-25, its defaults for zeta, gamma, lambda
and the warm-up share). Layers are rounded in graph order, each on its input in the network whose
earlier layers are rounded already (the paper's asymmetric reconstruction), so a layer also
compensates for what the ones before it changed.

The grid is the one the Q/DQ pass uses (its per-channel weight scales, read off a first Q/DQ graph),
and the learned weights are written back as floats on that grid: quantizing them again reproduces
exactly the learned integers (the channel's largest weight, which sets the scale, keeps its step).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from .ptq import probe_session

ROUNDING_SAMPLES = 16  # calibration samples the rounding is learned on (a seeded subset)
ROUNDING_ITERATIONS = 300  # per layer (the paper: 10k; 300 already takes real Lite2 from 0.88 to 0.95)
ROUNDING_BATCH = 4  # samples per step
ZETA, GAMMA = 1.1, -0.1  # the rectified sigmoid's stretch (eq. 23)
REGULARIZATION = 0.01  # lambda (eq. 24)
BETA_START, BETA_END = 20.0, 2.0
WARMUP = 0.2  # share of the steps on the reconstruction alone
LEARNING_RATE = 1e-2


@dataclass(frozen=True)
class RoundingReport:
    """What the learned rounding did, for the manifest: the layers rounded and their output error
    (squared error over the FP32 output's variance, the median over layers), nearest against learned."""

    layers: int
    samples: int
    iterations: int
    nearest_error: float
    learned_error: float
    seconds: float

    def to_dict(self) -> dict:
        return {"layers": self.layers, "samples": self.samples, "iterations": self.iterations,
                "median_relative_error": {"nearest": round(self.nearest_error, 6),
                                          "learned": round(self.learned_error, 6)},
                "seconds": round(self.seconds, 1)}


@dataclass(frozen=True)
class WeightGrid:
    """The int8 grid of one layer's weight: its per-output-channel scales and the largest step."""

    node: str
    scales: np.ndarray
    steps: int


def weight_grids(quantized: onnx.ModelProto) -> dict[str, WeightGrid]:
    """Per Conv/Gemm whose weight is quantized per output channel (axis 0) with zero points of 0
    (both flavours' weights): the grid, read off the Q/DQ graph (the cpu flavour stores the integers,
    the trt flavour the float weight and its QuantizeLinear)."""
    producers = {out: n for n in quantized.graph.node for out in n.output}
    initializers = {init.name: init for init in quantized.graph.initializer}
    grids = {}
    for node in quantized.graph.node:
        dq = producers.get(node.input[1]) if node.op_type in ("Conv", "Gemm") and len(node.input) > 1 else None
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[1] not in initializers:
            continue
        scales = numpy_helper.to_array(initializers[dq.input[1]]).astype(np.float64)
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        q = producers.get(dq.input[0])
        stored = initializers.get(q.input[0] if q is not None and q.op_type == "QuantizeLinear" else dq.input[0])
        if scales.ndim != 1 or scales.size < 2 or stored is None or axis != 0:
            continue  # per tensor, or per channel along another axis than the output channels'
        values = numpy_helper.to_array(stored).astype(np.float64)
        largest = np.abs(values.reshape(len(scales), -1)).max(axis=1) / (1.0 if q is None else scales)
        grids[node.name] = WeightGrid(node.name, scales, int(np.round(largest.max())))
    return grids


def learned_rounding(fp32: onnx.ModelProto, quantized: onnx.ModelProto, batch: np.ndarray, work: Path,
                     iterations: int = ROUNDING_ITERATIONS, seed: int = 0, external_data: bool = False
                     ) -> tuple[onnx.ModelProto, RoundingReport]:
    """A copy of ``fp32`` whose weights, for every layer ``quantized`` rounds per channel, lie on that
    grid, rounded up or down to reconstruct the layer's FP32 output on a seeded ``ROUNDING_SAMPLES``
    of ``batch``."""
    import torch

    started = time.perf_counter()
    rounded = onnx.ModelProto()
    rounded.CopyFrom(fp32)
    grids = weight_grids(quantized)
    layers = [n for n in rounded.graph.node if n.name in grids and _supported(n)
              and grids[n.name].scales.size == _initializer(rounded, n.input[1]).shape[0]]
    rng = np.random.default_rng(seed)
    samples = batch[np.sort(rng.permutation(len(batch))[:ROUNDING_SAMPLES])]
    fp32_inputs = _tensors(fp32, [n.input[0] for n in layers], samples, work / "rounding-reference.onnx",
                           external_data)
    errors = []
    generator = torch.Generator().manual_seed(seed)
    for node in layers:
        learned_input = _tensors(rounded, [node.input[0]], samples, work / "rounding.onnx",
                                 external_data)[node.input[0]]
        weight = _initializer(rounded, node.input[1])
        layer = _Layer(node, rounded)
        with torch.no_grad():
            target = layer(torch.from_numpy(fp32_inputs[node.input[0]]), torch.from_numpy(weight))  # inputs may be shared
        integers, error = _learn(layer, weight, grids[node.name], torch.from_numpy(learned_input), target,
                                 iterations, generator)
        errors.append(error)
        shape = (-1,) + (1,) * (weight.ndim - 1)
        _write_weight(rounded, node, (integers * grids[node.name].scales.reshape(shape)).astype(np.float32))
    nearest, learned = (float(np.median([e[i] for e in errors])) if errors else 0.0 for i in (0, 1))
    return rounded, RoundingReport(len(layers), len(samples), iterations, nearest, learned,
                                   time.perf_counter() - started)


def _learn(layer, weight: np.ndarray, grid: WeightGrid, learned_input, target, iterations: int, generator
           ) -> tuple[np.ndarray, tuple[float, float]]:
    """The integer weights of one layer, and its relative output error with nearest and learned rounding."""
    import torch

    shape = (-1,) + (1,) * (weight.ndim - 1)
    scales = torch.from_numpy(grid.scales.reshape(shape))
    steps = torch.from_numpy(weight.astype(np.float64)) / scales
    base = torch.floor(steps)
    # the largest weight of a channel sets its scale: it keeps its step, so re-quantizing finds the same scale
    pinned = steps.abs() >= grid.steps - 0.5
    rest = ((steps - base - GAMMA) / (ZETA - GAMMA)).clamp(1e-4, 1 - 1e-4)
    v = torch.log(rest / (1 - rest)).requires_grad_()  # h(v) starts at the weight itself
    optimizer = torch.optim.Adam([v], lr=LEARNING_RATE)
    variance = float(target.var()) or 1.0

    def integers(soft: torch.Tensor) -> torch.Tensor:
        return torch.where(pinned, torch.round(steps), base + soft).clamp(-grid.steps, grid.steps)

    for step in range(iterations):
        pick = torch.randint(0, len(target), (min(ROUNDING_BATCH, len(target)),), generator=generator)
        h = (torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA).clamp(0, 1)
        loss = (layer(learned_input[pick], (integers(h) * scales).float()) - target[pick]).pow(2).mean() / variance
        progress = step / iterations
        if progress >= WARMUP:
            beta = BETA_START + (BETA_END - BETA_START) * (progress - WARMUP) / (1 - WARMUP)
            loss = loss + REGULARIZATION * (1 - (2 * h - 1).abs().pow(beta)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        learned = integers((v >= 0).double())
        error = [float((layer(learned_input, (q * scales).float()) - target).pow(2).mean()) / variance
                 for q in (torch.round(steps).clamp(-grid.steps, grid.steps), learned)]
    return learned.numpy(), (error[0], error[1])


class _Layer:
    """A Conv or Gemm node as a PyTorch function of its input and a weight (its bias and attributes fixed)."""

    def __init__(self, node: onnx.NodeProto, model: onnx.ModelProto):
        import torch

        self.op, self.attrs = node.op_type, {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        bias = _initializer(model, node.input[2]) if len(node.input) > 2 and node.input[2] else None
        self.bias = torch.from_numpy(bias) if bias is not None else None

    def __call__(self, x, weight):
        import torch.nn.functional as F

        if self.op == "Gemm":
            return F.linear(x, weight if self.attrs.get("transB", 0) else weight.T, self.bias)
        pads = list(self.attrs.get("pads", [0] * 4))
        half = len(pads) // 2  # ONNX: begins then ends, per spatial axis; F.pad: last axis first
        x = F.pad(x, [p for axis in reversed(range(half)) for p in (pads[axis], pads[axis + half])])
        return F.conv2d(x, weight, self.bias, self.attrs.get("strides", 1), 0, self.attrs.get("dilations", 1),
                        self.attrs.get("group", 1))


def _supported(node: onnx.NodeProto) -> bool:
    """2-D convolutions with explicit pads, and Gemms without transA, alpha or beta."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "Gemm":
        return not attrs.get("transA", 0) and attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0
    return attrs.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET") and len(attrs.get("kernel_shape", [0, 0])) == 2


def _tensors(model: onnx.ModelProto, names: list[str], batch: np.ndarray, path: Path, external_data: bool
             ) -> dict[str, np.ndarray]:
    """The values of ``names`` in ``model`` on ``batch``, one sample at a time (any static batch of 1)."""
    session = probe_session(model, names, path, external_data=external_data)
    feed = session.get_inputs()[0].name
    runs = [session.run(names, {feed: batch[i:i + 1].astype(np.float32)}) for i in range(len(batch))]
    return {name: np.concatenate([run[k] for run in runs]) for k, name in enumerate(names)}


def _initializer(model: onnx.ModelProto, name: str) -> np.ndarray:
    return numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == name)).copy()


def _write_weight(model: onnx.ModelProto, node: onnx.NodeProto, weight: np.ndarray) -> None:
    """Store ``weight`` as the node's weight initializer (a new one, owned by the node, where another
    node shares it: the folded all-zero weights onnxsim stores once)."""
    name = node.input[1]
    if sum(name in n.input for n in model.graph.node) > 1:
        name = node.input[1] = f"{node.name}/rounded_weight"
        model.graph.initializer.append(numpy_helper.from_array(weight, name))
        return
    next(i for i in model.graph.initializer if i.name == name).CopyFrom(numpy_helper.from_array(weight, name))
