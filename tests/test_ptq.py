"""exporter.ptq on small graphs: constant weights made initializers, and empirical bias correction."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from calibration.data import CalibrationSet
from exporter import ptq
from exporter.calib_cache import calibrated_ranges, mse_range
from exporter.qdq import qdq_from_onnx, weight_quantization

CHANNELS = 4


def _conv_graph(weight: np.ndarray, bias: np.ndarray, weight_as_constant: bool = False) -> onnx.ModelProto:
    """x [1, 3, 16, 16] -> Conv(weight, bias) -> y, the weight an initializer or a Constant node's output."""
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", pads=[1, 1, 1, 1])]
    initializers = [numpy_helper.from_array(bias, "b")]
    if weight_as_constant:  # how onnxsim leaves a Mul it folded into the weight
        nodes.insert(0, helper.make_node("Constant", [], ["w"], name="folded", value=numpy_helper.from_array(weight)))
    else:
        initializers.append(numpy_helper.from_array(weight, "w"))
    graph = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, CHANNELS, 16, 16])],
                              initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _quantizer(tmp_path, model: onnx.ModelProto, batch: np.ndarray, flavour: str):
    """The Q/DQ pass of ``flavour`` with max ranges calibrated on ``batch``: FP32 graph -> Q/DQ file."""
    src = tmp_path / "fp32.onnx"
    onnx.save(model, str(src))
    ranges = calibrated_ranges(src, CalibrationSet(batch, "test", "test"), "max", flavour, tmp_path / "calib").path

    def quantize(graph: onnx.ModelProto):
        onnx.save(graph, str(tmp_path / "source.onnx"))
        return qdq_from_onnx(tmp_path / "source.onnx", tmp_path / "int8.onnx", ranges, flavour, "max").path

    return quantize


def _rounding_down_weight() -> np.ndarray:
    """Per output channel one weight of 1 (sets the scale to 1/127), the others 0.4 of a step above an
    integer step: per-channel int8 rounds every one of them down, so on positive inputs each channel's
    output mean falls by the same share of its input mean."""
    rng = np.random.default_rng(0)
    steps = rng.integers(-60, 60, size=(CHANNELS, 3, 3, 3))
    weight = ((steps + 0.4) / 127.0).astype(np.float32)
    weight[:, 0, 1, 1] = 1.0
    return weight


def test_constant_weights_become_initializers_and_are_quantized_as_weights(tmp_path):
    weight, bias = _rounding_down_weight(), np.zeros(CHANNELS, np.float32)
    batch = np.random.default_rng(1).uniform(0, 1, (4, 3, 16, 16)).astype(np.float32)
    folded = _conv_graph(weight, bias, weight_as_constant=True)
    quantize = _quantizer(tmp_path, folded, batch, "cpu")
    as_found = weight_quantization(onnx.load(str(quantize(folded))))
    assert not any(w.per_channel for w in as_found)  # ORT took the Constant for an activation: the defect
    prepared = onnx.ModelProto()
    prepared.CopyFrom(folded)
    assert ptq.weights_as_initializers(prepared) == ("w",)
    assert not [n for n in prepared.graph.node if n.op_type == "Constant"]
    quantized = onnx.load(str(quantize(prepared)))
    [report] = weight_quantization(quantized)
    assert report.per_channel and report.scales == CHANNELS
    stored = {i.name: i.data_type for i in quantized.graph.initializer}
    assert TensorProto.INT8 in stored.values() and stored.get("w") != TensorProto.FLOAT  # no float weight left


@pytest.mark.parametrize("flavour", ["trt", "cpu"])
def test_bias_correction_takes_out_the_mean_shift_of_rounded_weights(tmp_path, flavour):
    weight, bias = _rounding_down_weight(), np.full(CHANNELS, 0.1, np.float32)
    model = _conv_graph(weight, bias)
    batch = np.random.default_rng(2).uniform(0.5, 1.0, (16, 3, 16, 16)).astype(np.float32)
    quantize = _quantizer(tmp_path, model, batch, flavour)

    def mean_shift(graph: onnx.ModelProto) -> np.ndarray:
        measured, _ = ptq.channel_statistics(onnx.load(str(quantize(graph))), ["y"], batch, tmp_path / "q.onnx", True)
        reference, _ = ptq.channel_statistics(model, ["y"], batch, tmp_path / "r.onnx", False)
        return measured["y"] - reference["y"]

    before = mean_shift(model)
    # 26 weights of 27 each 0.4/127 low, inputs averaging 0.75 (less at the padded border): about -0.05
    assert np.all(before < -0.03), before
    corrected, report = ptq.bias_corrected(model, quantize, batch, tmp_path)
    after = mean_shift(corrected)
    assert np.abs(after).max() < 0.05 * np.abs(before).min(), (before, after)
    assert report.layers == 1 and report.relative_shifts[0] > report.relative_shifts[-1]
    new_bias = numpy_helper.to_array(next(i for i in corrected.graph.initializer if i.name == corrected.graph.node[0].input[2]))
    np.testing.assert_allclose(new_bias - bias, -before, rtol=0.1)  # the shift, taken out of the bias
    np.testing.assert_array_equal(numpy_helper.to_array(model.graph.initializer[0]), bias)  # the input is untouched


def test_bias_correction_takes_out_only_a_layers_own_shift(tmp_path):
    """Two convs in a row: the second inherits the first's shift through its weights. Measured in one
    run, each takes out its own part only; correcting the inherited part too would overshoot."""
    weight = _rounding_down_weight()
    second = np.zeros((CHANNELS, CHANNELS, 1, 1), np.float32)
    second[np.arange(CHANNELS), np.arange(CHANNELS)] = 1.0  # the identity: exact in int8, inherits everything
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["h"], name="first", pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["h", "w2", "b2"], ["y"], name="second")]
    graph = helper.make_graph(nodes, "two", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, CHANNELS, 16, 16])],
                              [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(np.zeros(CHANNELS, np.float32), "b"),
                               numpy_helper.from_array(second, "w2"), numpy_helper.from_array(np.zeros(CHANNELS, np.float32), "b2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    batch = np.random.default_rng(3).uniform(0.5, 1.0, (16, 3, 16, 16)).astype(np.float32)
    quantize = _quantizer(tmp_path, model, batch, "trt")
    corrected, _ = ptq.bias_corrected(model, quantize, batch, tmp_path, rounds=1)
    biases = {i.name: numpy_helper.to_array(i) for i in corrected.graph.initializer}
    measured, _ = ptq.channel_statistics(onnx.load(str(quantize(corrected))), ["y"], batch, tmp_path / "q.onnx", True)
    reference, _ = ptq.channel_statistics(model, ["y"], batch, tmp_path / "r.onnx", False)
    assert np.all(biases["b"] > 0.03) and np.abs(biases["b2"]).max() < 0.1 * biases["b"].min()
    assert np.abs(measured["y"] - reference["y"]).max() < 0.1 * biases["b"].min()


def test_mse_range_clips_a_long_tail_and_keeps_a_compact_tensor_whole():
    """Uniform values: any clipping costs more than it saves. Laplace values (a long thin tail): the
    8-bit optimum clips near 9.9 scales (Banner et al. 2019, ACIQ), well below the largest of a million."""
    rng = np.random.default_rng(0)
    for values, largest_kept in ((rng.uniform(-1, 1, 1_000_000), (0.97, 1.0)),
                                 (rng.laplace(0, 1, 1_000_000), (0.5, 0.85))):
        amax = np.abs(values).max()
        hist, edges = np.histogram(values, bins=4096, range=(-amax, amax))
        low, high = mse_range(hist.astype(np.float64), edges, values.min(), values.max(), symmetric=True)
        assert low == -high and largest_kept[0] <= high / amax <= largest_kept[1], (high, amax)


def test_a_layer_kept_in_float_gets_its_trained_bias_back(tmp_path):
    """The correction is measured once; a set of float layers asked for later (the sensitivity search)
    keeps every other layer's correction and gives the float layers their trained biases back."""
    weight, bias = _rounding_down_weight(), np.full(CHANNELS, 0.1, np.float32)
    model = _conv_graph(weight, bias)
    batch = np.random.default_rng(4).uniform(0.5, 1.0, (8, 3, 16, 16)).astype(np.float32)
    _quantizer(tmp_path, model, batch, "trt")  # writes fp32.onnx and its ranges
    ranges = next((tmp_path / "calib").glob("*.json"))
    source = ptq.Int8Source(tmp_path / "fp32.onnx", lambda src, dst, excluded: qdq_from_onnx(
        src, dst, ranges, "trt", "max", excluded), batch, tmp_path, bias_correction=True)

    def bias_of(excluded):
        graph = onnx.load(str(source.graph_for(excluded)))
        return numpy_helper.to_array(next(i for i in graph.graph.initializer if i.name == graph.graph.node[0].input[2]))

    assert np.all(bias_of(()) > bias + 0.03)  # corrected: the weights round down
    np.testing.assert_array_equal(bias_of(("conv",)), bias)
    assert source.correction.layers == 1
