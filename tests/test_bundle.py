"""``bbexport bundle``: the folder it writes (the contract, golden inputs, labels, the runtime copied byte
for byte), the weight range chosen for the target device, and inputs rejected before any export."""

from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from bbruntime.preprocess import Preprocess, preprocess_batch
from bbruntime.runners import OrtRunner, int8_runner
from exporter.artifacts import publish_folder, sha256_file
from exporter.bundle import IMAGENET_CLASSES, BundleOptions, runtime_modules
from exporter.cli import cli
from exporter.targets import TARGETS, host_target
from model_defs import get_spec

ROOT = Path(__file__).resolve().parents[1]
CONTRACT_FIELDS = {"format", "created", "model", "family", "precision", "flavour", "target", "int8_weight_bits",
                   "input", "output", "resize", "preprocess", "num_classes", "labels", "onnx", "engine", "weights",
                   "weights_source", "drift", "verify", "runtime", "versions"}


def contract_of(bundle: Path) -> dict:
    return json.loads((bundle / "bbexport.json").read_text())


@pytest.mark.parametrize("fixture, precision, flavour", [("resnet18_bundle", "fp32", None),
                                                         ("mobilenet_int8_bundle", "int8", "cpu")])
def test_the_contract_describes_the_bundle(fixture, precision, flavour, request) -> None:
    bundle = request.getfixturevalue(fixture)
    contract = contract_of(bundle)
    assert set(contract) == CONTRACT_FIELDS
    assert bundle.name == f"{contract['model']}-{precision}"
    assert (contract["precision"], contract["flavour"]) == (precision, flavour)
    spec = get_spec(contract["model"])
    assert Preprocess.from_dict(contract["preprocess"]) == Preprocess.of(spec)
    assert contract["input"] | {"shape": None} == {"name": "input", "layout": "NCHW", "dtype": "float32", "shape": None,
                                                  "batch": 1, "channels": 3, "height": 224, "width": 224}
    assert contract["resize"]["short_side"] == [256, 256] and contract["resize"]["crop"] == [224, 224]
    assert sha256_file(bundle / contract["onnx"]["file"]) == contract["onnx"]["sha256"]
    assert contract["weights_source"] == "random (seed 0, BN-recalibrated)"
    assert contract["drift"]["passed"] and contract["drift"]["onnx"]["photos"]["samples"] == 10
    assert contract["engine"] is None and not list(bundle.glob("*.engine"))
    assert "torch" in contract["versions"] and "onnxruntime" in contract["versions"]
    readme = (bundle / "README.md").read_text()
    assert f"# {contract['model']}, {precision}" in readme and "python infer.py --verify" in readme


@pytest.mark.parametrize("fixture", ["resnet18_bundle", "mobilenet_int8_bundle"])
def test_the_runtime_is_copied_byte_for_byte_and_hashed(fixture, request) -> None:
    """The device runs the code that measured the drift: infer.py is bbruntime/infer.py, and every
    bbruntime module it imports is there unchanged, each with its sha256 in the contract."""
    bundle = request.getfixturevalue(fixture)
    recorded = contract_of(bundle)["runtime"]
    repository = {"infer.py": ROOT / "bbruntime" / "infer.py",
                  **{f"bbruntime/{m.name}": m for m in runtime_modules()}}
    assert set(recorded) == set(repository) == {str(p.relative_to(bundle)) for p in bundle.rglob("*.py")}
    for name, source in repository.items():
        assert recorded[name] == hashlib.sha256(source.read_bytes()).hexdigest() == sha256_file(bundle / name)
    assert {"preprocess.py", "runners.py", "trt.py", "cuda.py", "sources.py"} <= {m.name for m in runtime_modules()}


def test_golden_inputs_are_the_preprocessed_photos_and_their_fp32_logits(resnet18_bundle) -> None:
    contract, golden = contract_of(resnet18_bundle), np.load(resnet18_bundle / "golden.npz")
    assert list(golden["names"]) == contract["verify"]["photos"] and len(golden["names"]) == 3
    images = [golden[f"image_{i}"] for i in range(3)]
    np.testing.assert_array_equal(preprocess_batch(images, Preprocess.from_dict(contract["preprocess"])),
                                  golden["inputs"])
    logits = OrtRunner(resnet18_bundle / contract["onnx"]["file"]).infer(golden["inputs"])
    assert np.abs(logits - golden["logits"]).max() <= 1e-3 * np.abs(golden["logits"]).max()
    assert contract["verify"]["max_rel_abs"] == 0.001 and contract["verify"]["min_cosine"] is None


def test_int8_weight_range_is_chosen_for_the_target(mobilenet_int8_bundle) -> None:
    """Bundled for an AVX2 target, the cpu flavour has 7-bit weights whatever this machine has."""
    contract = contract_of(mobilenet_int8_bundle)
    assert contract["target"] == "x86-avx2" and contract["int8_weight_bits"] == 7
    assert contract["verify"]["min_cosine"] == 0.98
    golden = np.load(mobilenet_int8_bundle / "golden.npz")
    runner = int8_runner(mobilenet_int8_bundle / contract["onnx"]["file"], "cpu")
    assert (runner.infer(golden["inputs"]).argmax(1) == golden["logits"].argmax(1)).all()


@pytest.mark.parametrize("target, flavour, reduce_range", [
    ("x86-avx2", "cpu", True), ("x86-vnni", "cpu", False), ("arm", "cpu", False), ("jetson", "trt", False),
])
def test_each_target_gets_its_flavour_and_weight_range(target, flavour, reduce_range) -> None:
    options = BundleOptions(precision="int8", target=target)
    assert options.resolved_flavour == flavour
    assert options.quantize_options().reduce_range is reduce_range
    assert target in TARGETS


def test_labels_are_torchvisions_imagenet_classes(resnet18_bundle) -> None:
    models = pytest.importorskip("torchvision.models", reason="torchvision (the reference extra) wrote the names")
    categories = models.ResNet50_Weights.IMAGENET1K_V2.meta["categories"]
    assert IMAGENET_CLASSES.read_text().splitlines() == categories
    assert (resnet18_bundle / "labels.txt").read_text().splitlines() == categories


@pytest.mark.parametrize("args, fragment", [
    (["nosuchnet"], "unknown model 'nosuchnet'"),
    (["resnet18", "--flavour", "cpu"], "--flavour applies to --precision int8 only, not fp32"),
    (["resnet18", "--method", "max"], "apply to --precision fp16 and int8 only, not fp32"),
    (["resnet18", "--precision", "fp16", "--calib", "x"], "--auto-exclude, --calib and --adaround apply to INT8 only"),
    (["resnet18", "--precision", "fp16", "--adaround"], "--auto-exclude, --calib and --adaround apply to INT8 only"),
    (["resnet18", "--engine", "missing.engine"], "engine not found: missing.engine"),
    (["resnet18", "--engine", "{tmp}/plain.engine"], "has no plain.engine.json beside it"),
    (["resnet18", "--out", "{tmp}/a-file/sub"], "is not a folder"),
])
def test_bad_input_fails_in_one_line_before_any_work(args, fragment, tmp_path) -> None:
    (tmp_path / "plain.engine").write_bytes(b"not an engine")
    (tmp_path / "a-file").write_text("")
    args = [a.format(tmp=tmp_path) for a in args]
    out_args = [] if "--out" in args else ["--out", str(tmp_path / "bundles")]
    result = CliRunner().invoke(cli, ["bundle", *args, "--artifacts", str(tmp_path / "artifacts"), *out_args])
    assert result.exit_code == 2, result.output
    assert fragment in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "artifacts").exists() and not (tmp_path / "bundles").exists()


def test_an_engine_must_be_the_one_its_sidecar_describes(tmp_path) -> None:
    engine = tmp_path / "resnet18.fp32.engine"
    engine.write_bytes(b"plan")
    sidecar = {"engine": {"file": engine.name, "sha256": "0" * 64}, "precision": "fp32"}
    (tmp_path / "resnet18.fp32.engine.json").write_text(json.dumps(sidecar))
    result = CliRunner().invoke(cli, ["bundle", "resnet18", "--engine", str(engine), "--out", str(tmp_path / "b"),
                                      "--artifacts", str(tmp_path / "a")])
    assert result.exit_code == 2 and "is not the engine resnet18.fp32.engine.json describes" in result.output
    sidecar["engine"]["sha256"] = sha256_file(engine)
    (tmp_path / "resnet18.fp32.engine.json").write_text(json.dumps(sidecar))
    result = CliRunner().invoke(cli, ["bundle", "resnet18", "--precision", "int8", "--engine", str(engine),
                                      "--out", str(tmp_path / "b"), "--artifacts", str(tmp_path / "a")])
    assert result.exit_code == 2 and "is a fp32 engine, not --precision int8" in result.output


def test_a_published_bundle_is_replaced_whole(tmp_path) -> None:
    (tmp_path / "staging" / "m-fp32").mkdir(parents=True)
    (tmp_path / "staging" / "m-fp32" / "new").write_text("new")
    (tmp_path / "out" / "m-fp32").mkdir(parents=True)
    (tmp_path / "out" / "m-fp32" / "old").write_text("old")
    publish_folder(tmp_path / "staging" / "m-fp32", tmp_path / "out" / "m-fp32")
    assert [p.name for p in (tmp_path / "out" / "m-fp32").iterdir()] == ["new"]


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="reads x86 CPU flags")
def test_this_machine_as_a_target(tmp_path) -> None:
    """Without --target, a bundle is made for this machine: VNNI flags decide x86-vnni over x86-avx2, and
    unreadable flags count as no VNNI (7-bit weights are always safe)."""
    (tmp_path / "vnni").write_text("flags\t\t: fpu sse avx2 avx512_vnni\n")
    (tmp_path / "avx2").write_text("flags\t\t: fpu sse avx2\n")
    assert host_target(tmp_path / "vnni") == "x86-vnni"
    assert host_target(tmp_path / "avx2") == host_target(tmp_path / "missing") == "x86-avx2"
