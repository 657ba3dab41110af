"""TensorRT: the checks that need no GPU always run; engine builds carry the ``gpu`` marker and skip
with the reason where TensorRT or a CUDA device is missing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from bbruntime.errors import BBExportError, ExportError
from exporter.cli import cli
from exporter.pipeline import ExportOptions
from exporter.trt import (
    BatchProfile,
    ParserIssue,
    TrtOptions,
    TrtRunner,
    batch_profile,
    calibration_key,
    check_precision_request,
    onnx_precision_problem,
    parser_failure_message,
    trt_available,
    trt_from_model,
    trt_major,
)

MISSING = trt_available()
needs_trt = pytest.mark.skipif(MISSING is not None, reason=f"TensorRT engines: {MISSING}")
SMALL = ("resnet18", "--img-size", "64")  # a small, fast export for the end-to-end checks


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


# ----------------------------------------------------------------------------- batch profiles

@pytest.mark.parametrize("given, static, expected", [
    ((None, None, None), None, BatchProfile(1, 8, 32)),
    ((None, None, 4), None, BatchProfile(1, 4, 4)),        # opt shrinks to a small max
    ((16, None, None), None, BatchProfile(16, 16, 32)),    # opt grows to a large min
    ((None, 64, None), None, BatchProfile(1, 64, 64)),     # max grows to a large opt
    ((2, 3, 5), None, BatchProfile(2, 3, 5)),
    ((None, None, None), 4, BatchProfile(4, 4, 4)),        # a static ONNX batch is the whole profile
    ((4, 4, 4), 4, BatchProfile(4, 4, 4)),
])
def test_batch_profile(given, static, expected) -> None:
    assert batch_profile(*given, static_batch=static) == expected
    assert expected.dynamic == (expected.min != expected.max)


@pytest.mark.parametrize("given, static, fragment", [
    ((4, 2, 8), None, "min <= opt <= max; got min 4, opt 2, max 8"),
    ((None, 16, 8), None, "got min 1, opt 16, max 8"),
    ((8, None, 4), None, "got min 8, opt 4, max 4"),
    ((0, None, None), None, "--min-batch must be >= 1; got 0"),
    ((None, None, 8), 1, "static batch of 1, so --max-batch 8 cannot apply; export with --dynamic-batch"),
])
def test_batch_profile_errors_are_one_line(given, static, fragment) -> None:
    with pytest.raises(BBExportError) as error:
        batch_profile(*given, static_batch=static)
    assert fragment in str(error.value) and "\n" not in str(error.value)


# ----------------------------------------------------------------------------- precision requests

@pytest.mark.parametrize("precision, mode, major, fragment", [
    ("int4", "explicit", None, "unknown precision 'int4'"),
    ("int8", "calibrated", None, "unknown INT8 mode"),
    ("fp16", "implicit", 10, "applies to --precision int8 only, not fp16"),
    ("int8", "implicit", 11, "needs TensorRT 10.x"),
])
def test_precision_requests_rejected(precision, mode, major, fragment) -> None:
    with pytest.raises(BBExportError, match=fragment):
        check_precision_request(precision, mode, major)


@pytest.mark.parametrize("precision, mode, major", [
    ("int8", "implicit", 10), ("int8", "implicit", None), ("int8", "explicit", 11), ("fp16", "explicit", 11),
])
def test_precision_requests_accepted(precision, mode, major) -> None:
    check_precision_request(precision, mode, major)


def _conv_model(path: Path, nodes_before: list, extra_inits: list) -> Path:
    """A one-conv model on ``x`` (1x3x8x8), optionally preceded by ``nodes_before`` producing ``xin``."""
    weight = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    conv_input = "xin" if nodes_before else "x"
    graph = helper.make_graph(
        [*nodes_before, helper.make_node("Conv", [conv_input, "w"], ["y"], name="conv")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])],
        [weight, *extra_inits])
    onnx.save(helper.make_model(graph), path)
    return path


def test_onnx_precision_evidence(tmp_path: Path) -> None:
    """A strongly typed build computes the ONNX's own types: an FP32 file must not become an "int8"
    or "fp16" engine by name only."""
    plain = _conv_model(tmp_path / "fp32.onnx", [], [])
    qdq = _conv_model(tmp_path / "qdq.onnx", [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xin"]),
    ], [numpy_helper.from_array(np.array(0.1, np.float32), "s"), numpy_helper.from_array(np.array(0, np.int8), "z")])
    half = _conv_model(tmp_path / "fp16.onnx", [
        helper.make_node("Cast", ["x"], ["xh"], to=TensorProto.FLOAT16),
        helper.make_node("Cast", ["xh"], ["xin"], to=TensorProto.FLOAT),
    ], [])
    onnx.checker.check_model(onnx.load(str(qdq)))
    assert "no DequantizeLinear" in onnx_precision_problem(plain, "int8")
    assert "no float16 tensor" in onnx_precision_problem(plain, "fp16")
    assert onnx_precision_problem(plain, "fp32") is None
    assert onnx_precision_problem(qdq, "int8") is None
    assert onnx_precision_problem(half, "fp16") is None
    assert "no DequantizeLinear" in onnx_precision_problem(half, "int8")


def test_parser_failure_lists_each_node() -> None:
    issues = [ParserIssue(12, "/layer1/0/act/Mish", "Mish", "No importer registered for op: Mish", "UNSUPPORTED_NODE"),
              ParserIssue(-1, "", "", "Model has no opset import", "INVALID_GRAPH")]
    lines = parser_failure_message(Path("m.onnx"), issues, "10.13.3").splitlines()
    assert lines == ["TensorRT 10.13.3 could not parse m.onnx: 2 error(s)",
                     "  node 12 (/layer1/0/act/Mish, Mish): No importer registered for op: Mish [UNSUPPORTED_NODE]",
                     "  graph: Model has no opset import [INVALID_GRAPH]"]


def test_calibration_key_follows_every_input() -> None:
    key = calibration_key("a" * 64, "d" * 64, 8)
    assert key == calibration_key("a" * 64, "d" * 64, 8) and len(key) == 16
    assert len({key, calibration_key("b" * 64, "d" * 64, 8), calibration_key("a" * 64, "e" * 64, 8),
                calibration_key("a" * 64, "d" * 64, 4)}) == 4


# ----------------------------------------------------------------------------- without TensorRT

@pytest.mark.skipif(MISSING is None, reason="TensorRT and CUDA are both here")
def test_missing_backend_named() -> None:
    assert any(reason in MISSING for reason in ("tensorrt", "no CUDA device"))


@pytest.mark.skipif(MISSING is None, reason="TensorRT and CUDA are both here: the engine gets built")
@pytest.mark.parametrize("precision, product", [
    ("fp32", "resnet18.onnx"),
    pytest.param("fp16", "resnet18.fp16.onnx", marks=pytest.mark.slow),
    pytest.param("int8", "resnet18.int8-trt.onnx", marks=pytest.mark.slow),
])
def test_cli_makes_onnx_then_exits_3(tmp_path: Path, precision: str, product: str) -> None:
    result = run("trt", *SMALL, "--out", str(tmp_path), "--precision", precision)
    assert result.exit_code == 3, result.output
    lines = result.stderr.strip().splitlines()
    assert lines == [f"bbexport: error: TensorRT engine not built: {MISSING} "
                     f"(the ONNX-side products are in {tmp_path / 'resnet18'})"]
    assert "validate ✓" in result.stdout
    manifest = json.loads((tmp_path / "resnet18" / product).with_suffix(".json").read_text())
    assert manifest["validation"]["passed"] and (tmp_path / "resnet18" / product).is_file()
    assert not list((tmp_path / "resnet18").glob("*.engine*"))


@pytest.mark.parametrize("args, fragment", [
    (("--max-batch", "8"), "static batch of 1, so --max-batch 8 cannot apply"),
    (("--dynamic-batch", "--min-batch", "8", "--max-batch", "2"), "min <= opt <= max; got min 8, opt 2, max 2"),
    (("--precision", "fp16", "--int8-mode", "implicit"), "applies to --precision int8 only"),
    (("--calib", "photos"), "--calib applies to --precision int8 only, not fp32"),
])
def test_cli_rejects_bad_requests_before_exporting(tmp_path: Path, args, fragment) -> None:
    result = run("trt", *SMALL, "--out", str(tmp_path), *args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0]
    assert not any(tmp_path.iterdir())


# ----------------------------------------------------------------------------- with TensorRT and a GPU

@pytest.mark.gpu
@needs_trt
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_fp32_engine_dynamic_batch(tmp_path: Path, cuda_graph: bool) -> None:
    export = ExportOptions(img_size=64, dynamic_batch=True, out=tmp_path)
    cache = tmp_path / "timing.cache"
    outcome = trt_from_model("resnet18", TrtOptions(min_batch=1, opt_batch=2, max_batch=4, timing_cache=cache),
                             export)
    sidecar = json.loads(outcome.sidecar_path.read_text())
    assert outcome.engine_path.name == "resnet18.fp32.engine" and sidecar["validation"]["passed"]
    assert sidecar["precision_source"] == "strongly-typed ONNX" and sidecar["tensorrt"]
    assert sidecar["profiles"][0]["min"][0] == 1 and sidecar["profiles"][0]["max"][0] == 4
    assert sidecar["gpu"]["compute_capability"] and cache.stat().st_size > 0
    runner = TrtRunner(outcome.engine_path, cuda_graph=cuda_graph)
    batch = np.random.default_rng(0).standard_normal((7, 3, 64, 64), dtype=np.float32)  # 4 + 3: two shapes
    first, again = runner.infer(batch), runner.infer(batch)  # the second pass replays captured graphs
    np.testing.assert_allclose(first, again, rtol=0, atol=1e-5)
    assert len(runner.timings_ms) == 4 and all(t > 0 for t in runner.timings_ms)


@pytest.mark.gpu
@needs_trt
def test_timing_cache_is_reused(tmp_path: Path) -> None:
    export = ExportOptions(img_size=64, out=tmp_path)
    cache = tmp_path / "timing.cache"
    trt_from_model("resnet18", TrtOptions(timing_cache=cache), export)
    again = trt_from_model("resnet18", TrtOptions(timing_cache=cache), export)
    assert again.sidecar["timing_cache"]["reused"] is True


@pytest.mark.gpu
@needs_trt
def test_parser_errors_name_the_node(tmp_path: Path) -> None:
    from exporter.trt import engine_from_onnx

    graph = helper.make_graph(
        [helper.make_node("NoSuchOp", ["x"], ["y"], name="mystery", domain="bbexport.test")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("bbexport.test", 1)])
    onnx.save(model, tmp_path / "bad.onnx")
    with pytest.raises(ExportError) as error:
        engine_from_onnx(tmp_path / "bad.onnx", tmp_path / "bad.fp32.engine", precision="fp32")
    assert "node 0 (mystery, NoSuchOp)" in str(error.value)
    assert not (tmp_path / "bad.fp32.engine").exists()


@pytest.mark.gpu
@pytest.mark.skipif(MISSING is not None or (trt_major() or 0) >= 11,
                    reason=f"implicit INT8 needs TensorRT 10.x and a GPU ({MISSING or f'TensorRT {trt_major()}.x'})")
def test_implicit_int8_calibrates_once(tmp_path: Path) -> None:
    export = ExportOptions(img_size=64, out=tmp_path)
    options = TrtOptions(precision="int8", int8_mode="implicit")
    first = trt_from_model("resnet18", options, export)
    assert first.sidecar["precision_source"] == "builder flags + calibrator"
    assert first.sidecar["calibration"]["images"] > 0 and not first.sidecar["calibration"]["cache_reused"]
    second = trt_from_model("resnet18", options, export)
    assert second.sidecar["calibration"]["cache_reused"] and second.sidecar["calibration"]["images"] == 0


def test_trt_takes_every_quantization_option() -> None:
    """``bbexport trt`` builds its FP16/INT8 ONNX with ``bbexport quantize``'s options, and the budget."""
    shown = run("trt", "--help").output
    for option in ("--calib", "--calib-limit", "--no-calib-augment", "--method", "--exclude", "--auto-exclude", "--quantize-all",
                   "--budget"):
        assert option in shown, option
