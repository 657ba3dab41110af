"""exporter.rounding on a small graph: learned rounding lowers a layer's output error, stays on the
Q/DQ pass's grid, and gives a layer kept in float its trained weight back."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from exporter import ptq
from exporter.qdq import qdq_from_onnx
from exporter.rounding import learned_rounding, weight_grids
from tests.test_ptq import CHANNELS, _conv_graph, _quantizer, _rounding_down_weight


@pytest.fixture()
def conv(tmp_path):
    """A 3x3 Conv whose weights all lie 0.4 of a step above an int8 step (nearest rounds each one
    down: every channel's output falls on positive inputs), positive inputs."""
    weight = _rounding_down_weight()
    model = _conv_graph(weight, np.zeros(CHANNELS, np.float32))
    batch = np.random.default_rng(5).uniform(0, 1, (16, 3, 16, 16)).astype(np.float32)
    return model, weight, batch


def _weight_of(graph: onnx.ModelProto) -> np.ndarray:
    return numpy_helper.to_array(next(i for i in graph.graph.initializer if i.name == graph.graph.node[0].input[1]))


def _output(model: onnx.ModelProto, batch: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"x": batch[i:i + 1]})[0] for i in range(len(batch))])


@pytest.mark.parametrize("flavour", ["trt", "cpu"])
def test_learned_rounding_lowers_the_output_error_on_the_quantizers_grid(tmp_path, conv, flavour):
    model, weight, batch = conv
    quantize = _quantizer(tmp_path, model, batch, flavour)
    nearest_graph = onnx.load(str(quantize(model)))
    [grid] = weight_grids(nearest_graph).values()
    rounded, report = learned_rounding(model, nearest_graph, batch, tmp_path, iterations=200)
    assert report.layers == 1 and report.learned_error < 0.5 * report.nearest_error, report

    steps = _weight_of(rounded).astype(np.float64) / grid.scales.reshape(-1, 1, 1, 1)
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-3)  # on the grid
    exact = weight.astype(np.float64) / grid.scales.reshape(-1, 1, 1, 1)
    assert np.all((np.round(steps) == np.floor(exact)) | (np.round(steps) == np.ceil(exact)))  # up or down
    assert np.any(np.round(steps) != np.round(exact))  # not nearest everywhere

    learned_graph = onnx.load(str(quantize(rounded)))  # the quantizer re-rounds it to the same integers
    [again] = weight_grids(learned_graph).values()
    np.testing.assert_allclose(again.scales, grid.scales, rtol=1e-6)
    stored = [numpy_helper.to_array(i) for i in learned_graph.graph.initializer]
    integers = [v for v in stored if v.dtype == np.int8 and v.shape == weight.shape]  # the cpu flavour's
    assert len(integers) == (flavour == "cpu")
    for values in integers:
        np.testing.assert_array_equal(values, np.round(steps).astype(np.int8))

    # weight rounding alone (activations in float): the rounded FP32 graph against the trained one
    reference = _output(model, batch)
    nearest_weights = onnx.ModelProto()
    nearest_weights.CopyFrom(model)
    nearest_weights.graph.initializer[1].CopyFrom(numpy_helper.from_array(
        (np.round(exact) * grid.scales.reshape(-1, 1, 1, 1)).astype(np.float32), "w"))
    assert (np.square(_output(rounded, batch) - reference).mean()
            < 0.5 * np.square(_output(nearest_weights, batch) - reference).mean())


def test_a_layer_kept_in_float_gets_its_trained_weight_back(tmp_path, conv):
    model, weight, batch = conv
    _quantizer(tmp_path, model, batch, "trt")  # writes fp32.onnx and its ranges
    ranges = next((tmp_path / "calib").glob("*.json"))
    source = ptq.Int8Source(tmp_path / "fp32.onnx", lambda src, dst, excluded: qdq_from_onnx(
        src, dst, ranges, "trt", "max", excluded), batch, tmp_path, bias_correction=False, learned_rounding=True)
    assert not np.array_equal(_weight_of(onnx.load(str(source.graph_for(())))), weight)
    assert source.rounding.layers == 1
    np.testing.assert_array_equal(_weight_of(onnx.load(str(source.graph_for(("conv",))))), weight)
