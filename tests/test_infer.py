"""A bundle's ``infer.py`` on the device: run from the bundle in a Python that cannot import torch, onnx or
bbexport's build side, on every kind of source, against what ``bbexport validate``'s ONNX Runtime run
predicts on the same images; its errors and exit codes; its TensorRT and CUDA calls against the real
bindings of the versions it must run on."""

from __future__ import annotations

import ast
import csv
import io
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bbruntime import infer
from bbruntime.preprocess import Preprocess, read_image
from bbruntime.runners import int8_runner
from bbruntime.sources import csi_pipeline
from bbruntime.trt import trt_available
from calibration import preprocess_batch, sample_photos
from model_defs import get_spec, list_models

from .conftest import run_without_build_side

BINDINGS = json.loads((Path(__file__).parent / "data" / "runtime_bindings.json").read_text())
RUNTIME = Path(infer.__file__).parent
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "camera", "coins")
JSONL_FIELDS = {"source", "frame", "class", "label", "score", "topk"}


def run_bundled(bundle: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python BUNDLE/infer.py ARGS`` with torch, onnx and bbexport's build side blocked; exit 99 if the
    repository's bbruntime ran instead of the bundle's own copy."""
    script = bundle / "infer.py"
    return run_without_build_side(f"""
        import runpy, sys
        sys.argv = [{str(script)!r}, *{list(args)!r}]
        sys.path.insert(0, {str(bundle)!r})
        try:
            runpy.run_path({str(script)!r}, run_name="__main__")
        finally:
            runtime = sys.modules.get("bbruntime")
            if runtime is not None and not runtime.__file__.startswith({str(bundle)!r}):
                sys.exit(99)
    """, cwd=cwd)


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory) -> Path:
    """Held-out photos as JPEG and PNG files, one in a subfolder, and one corrupt JPEG."""
    folder = tmp_path_factory.mktemp("photos")
    (folder / "more").mkdir()
    for i, (name, image) in enumerate(sample_photos(PHOTOS)):
        path = folder / ("more" if i == 0 else "") / (f"{name}.png" if i % 2 else f"{name}.jpg")
        Image.fromarray(image).save(path, quality=90)
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    return folder


def expected_top1(bundle: Path, images: list[np.ndarray]) -> list[int]:
    """What ``bbexport validate`` predicts: the project's validation preprocessing (the variant's spec)
    and ONNX Runtime on the bundled graph, in this process."""
    contract = json.loads((bundle / "bbexport.json").read_text())
    spec = get_spec(contract["model"])
    runner = int8_runner(bundle / contract["onnx"]["file"], contract["flavour"] or "cpu")
    return [int(c) for c in runner.infer(preprocess_batch(images, spec)).argmax(1)]


@pytest.fixture(params=["resnet18_bundle", "mobilenet_int8_bundle"])
def bundle(request) -> Path:
    """Each bundle in turn: ResNet-18 FP32, MobileNetV2 INT8 cpu."""
    return request.getfixturevalue(request.param)


def test_folder_jsonl_and_verify_without_torch(bundle, photo_folder, tmp_path) -> None:
    """The done-when command: a folder of JPEG and PNG photos (recursive) to JSONL, after --verify passes;
    the corrupt file is skipped and counted; each top-1 is ONNX Runtime's through the validation preprocessing."""
    done = run_bundled(bundle, "--verify", str(photo_folder), "--topk", "5", "--format", "jsonl",
                       "--output", "out.jsonl", "--benchmark", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("verify ✓ 3 golden photos"), done.stdout
    assert "infer: 6 images, 1 unreadable skipped" in done.stderr
    assert "corrupt.jpg: not a readable image" in done.stderr
    assert "images/s end to end" in done.stderr and "  infer " in done.stderr
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert all(set(r) == JSONL_FIELDS and len(r["topk"]) == 5 and r["frame"] is None for r in records)
    assert all(r["class"] == r["topk"][0]["class"] and r["score"] >= r["topk"][1]["score"] for r in records)
    assert all(isinstance(r["label"], str) for r in records)  # labels.txt
    paths = [Path(r["source"]) for r in records]
    assert paths == sorted(p for p in photo_folder.rglob("*") if p.is_file() and p.name != "corrupt.jpg")
    assert [r["class"] for r in records] == expected_top1(bundle, [read_image(p) for p in paths])


def test_glob_to_csv(resnet18_bundle, photo_folder, tmp_path) -> None:
    done = run_bundled(resnet18_bundle, str(photo_folder / "**" / "*.jpg"), "--format", "csv", "--topk", "2",
                       "--batch", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert list(rows[0]) == ["source", "frame", "rank", "class", "label", "score"]
    files = sorted(p for p in photo_folder.rglob("*.jpg") if p.name != "corrupt.jpg")
    assert [r["source"] for r in rows] == [str(p) for p in files for _ in range(2)]
    assert [r["rank"] for r in rows] == ["1", "2"] * len(files) and all(r["frame"] == "" for r in rows)
    assert [int(r["class"]) for r in rows if r["rank"] == "1"] == expected_top1(
        resnet18_bundle, [read_image(p) for p in files])


def test_list_file_to_text(resnet18_bundle, photo_folder, tmp_path) -> None:
    """Paths relative to the list file; comments and blank lines ignored; a missing entry skipped, counted."""
    listed = ["# two photos and a file that is gone", "more/chelsea.jpg", "", str(photo_folder / "coffee.png"),
              "gone.jpg"]
    (photo_folder / "list.txt").write_text("\n".join(listed) + "\n")
    done = run_bundled(resnet18_bundle, str(photo_folder / "list.txt"), "--topk", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "infer: 2 images, 1 unreadable skipped" in done.stderr
    lines = done.stdout.splitlines()
    files = [photo_folder / "more" / "chelsea.jpg", photo_folder / "coffee.png"]
    assert [line.split("  ")[0] for line in lines] == [str(f) for f in files]
    top1 = expected_top1(resnet18_bundle, [read_image(f) for f in files])
    assert [int(line.split("  ")[1].split()[0]) for line in lines] == top1


def test_video_written_with_opencv(resnet18_bundle, tmp_path) -> None:
    cv2 = pytest.importorskip("cv2", reason="videos need OpenCV (opencv-python-headless, the test extra)")
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (320, 240))
    for _, image in sample_photos(("chelsea", "coffee", "astronaut")):
        writer.write(cv2.resize(np.ascontiguousarray(image[..., ::-1]), (320, 240)))
    writer.release()
    done = run_bundled(resnet18_bundle, str(video), "--format", "jsonl", "--topk", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(r["source"], r["frame"]) for r in records] == [(str(video), i) for i in range(3)]
    capture, frames = cv2.VideoCapture(str(video)), []
    while (frame := capture.read())[0]:
        frames.append(np.ascontiguousarray(frame[1][..., ::-1]))
    assert [r["class"] for r in records] == expected_top1(resnet18_bundle, frames)


def test_verify_fails_on_altered_golden_logits(mobilenet_int8_bundle, tmp_path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(mobilenet_int8_bundle, bundle)
    golden = dict(np.load(bundle / "golden.npz"))
    golden["logits"] = np.roll(golden["logits"], 1, axis=1)
    np.savez(bundle / "golden.npz", **golden)
    done = run_bundled(bundle, "--verify", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.startswith("infer: error: verify ✗ cosine below budget; top-1 differs: 3 golden photos")
    assert len(done.stderr.splitlines()) == 1


@pytest.mark.parametrize("args, code, message", [
    (["nowhere.jpg"], 2, "nowhere.jpg: no such file or folder"),
    (["photos/*.tiff"], 2, "photos/*.tiff: no file matches this pattern"),
    (["--backend", "tflite", "x.jpg"], 2, "argument --backend: invalid choice: 'tflite'"),
    (["--engine", "{bundle}/golden.npz", "--backend", "trt", "--verify"], 3, "--backend trt: tensorrt is not installed"),
    (["--dla-core", "0", "--verify"], 2, "--dla-core applies to --backend trt only"),
    (["--providers", "NoSuchExecutionProvider", "--verify"], 3, "ONNX Runtime here has no NoSuchExecutionProvider"),
])
def test_errors_are_one_line_with_their_exit_code(args, code, message, resnet18_bundle, capsys) -> None:
    if code == 3 and "tensorrt" in message and trt_available() is None:
        pytest.skip("TensorRT is installed here")
    assert exit_code([str(resnet18_bundle), *(a.format(bundle=resnet18_bundle) for a in args)]) == code
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


def exit_code(args: list[str]) -> int:
    """infer.py's exit code for ``--bundle BUNDLE ARGS`` run in this process."""
    try:
        return infer.main(["--bundle", *args])
    except SystemExit as e:  # argparse's own exit on a bad option
        return e.code


def test_a_single_unreadable_image_is_bad_input(resnet18_bundle, photo_folder, capsys) -> None:
    assert exit_code([str(resnet18_bundle), str(photo_folder / "corrupt.jpg")]) == 2
    assert "corrupt.jpg: not a readable image" in capsys.readouterr().err


def test_csi_camera_builds_the_argus_pipeline_and_says_how_to_fix_it(resnet18_bundle, capsys) -> None:
    assert csi_pipeline(1).startswith("nvarguscamerasrc sensor-id=1 ! video/x-raw(memory:NVMM)")
    assert "appsink" in csi_pipeline(1)
    pytest.importorskip("cv2", reason="cameras need OpenCV")
    assert exit_code([str(resnet18_bundle), "csi://0"]) == 2
    assert "cannot open csi://0: test the camera with `gst-launch-1.0 nvarguscamerasrc" in capsys.readouterr().err


def _registry_transforms() -> dict[str, Preprocess]:
    """One variant's transform for every interpolation x channel order x pixel scale (x channel count: the
    one-channel luminance path) in the registry."""
    combos = {}
    for name in list_models():
        spec = get_spec(name)
        key = f"{spec.interpolation}-{spec.channel_order}-{spec.pixel_scale:g}-{spec.input_size[0]}ch"
        combos.setdefault(key, Preprocess.of(spec))
    return combos


TRANSFORMS = _registry_transforms()


@pytest.fixture(scope="module")
def bundled_tensors(resnet18_bundle, tmp_path_factory) -> dict[str, np.ndarray]:
    """Every registry transform applied to two photos by the bundle's own copy of bbruntime, torch blocked."""
    folder = tmp_path_factory.mktemp("parity")
    np.savez(folder / "photos.npz", *[image for _, image in sample_photos(("chelsea", "coins"))])
    (folder / "transforms.json").write_text(json.dumps({k: t.to_dict() for k, t in TRANSFORMS.items()}))
    done = run_without_build_side(f"""
        import json, sys, numpy as np
        sys.path.insert(0, {str(resnet18_bundle)!r})
        from bbruntime.preprocess import Preprocess, preprocess_batch
        assert sys.modules["bbruntime"].__file__.startswith({str(resnet18_bundle)!r})
        photos = list(np.load("photos.npz").values())
        transforms = json.load(open("transforms.json"))
        np.savez("tensors.npz", **{{k: preprocess_batch(photos, Preprocess.from_dict(t)) for k, t in transforms.items()}})
    """, cwd=folder)
    assert done.returncode == 0, done.stderr
    return dict(np.load(folder / "tensors.npz"))


@pytest.mark.parametrize("combo", sorted(TRANSFORMS))
def test_bundled_preprocessing_matches_calibration_preprocessing(combo, bundled_tensors) -> None:
    spec = next(get_spec(n) for n in list_models() if Preprocess.of(get_spec(n)) == TRANSFORMS[combo])
    expected = preprocess_batch([image for _, image in sample_photos(("chelsea", "coins"))], spec)
    np.testing.assert_allclose(bundled_tensors[combo], expected, rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------- TensorRT and CUDA calls

# Which binding each receiver of an attribute in bbruntime's GPU code is: per file, and the library of the file.
RECEIVERS = {
    ("trt.py", "tensorrt"): {"trt": "tensorrt", "trt.Logger": "Logger", "trt.TensorIOMode": "TensorIOMode",
                             "runtime": "Runtime", "self.engine": "ICudaEngine", "self.context": "IExecutionContext"},
    ("cuda.py", "cuda_runtime"): {"rt": "runtime", "cudart()": "runtime", "rt.cudaMemcpyKind": "cudaMemcpyKind",
                                  "rt.cudaStreamCaptureMode": "cudaStreamCaptureMode", "props": "cudaDeviceProp"},
}


def gpu_calls(library: str) -> dict[str, set[str]]:
    """Binding -> the attribute names bbruntime's code for ``library`` uses on it (read from its source)."""
    used: dict[str, set[str]] = {}
    for (file, of), receivers in RECEIVERS.items():
        for node in ast.walk(ast.parse((RUNTIME / file).read_text())):
            if of == library and isinstance(node, ast.Attribute) and (binding := receivers.get(ast.unparse(node.value))):
                used.setdefault(binding, set()).add(node.attr)
    return used


@pytest.mark.parametrize("library", ["tensorrt", "cuda_runtime"])
def test_every_receiver_of_the_gpu_code_is_checked(library) -> None:
    """The table above still names the receivers the code uses (a rename would make the check vacuous)."""
    expected = {b for (_, of), receivers in RECEIVERS.items() if of == library for b in receivers.values()}
    assert set(gpu_calls(library)) == expected


@pytest.mark.parametrize("library, version", [
    (library, version) for library in ("tensorrt", "cuda_runtime") for version in BINDINGS[library]])
def test_gpu_calls_exist_in_the_real_bindings(library, version) -> None:
    """Every TensorRT call is bound by TensorRT 10.3 and 11.1; every CUDA call by cuda-python 12.4's
    cuda.cudart and cuda.bindings.runtime 12.9 and 13.5."""
    bound = BINDINGS[library][version]
    missing = {f"{binding}.{name}" for binding, names in gpu_calls(library).items()
               for name in names if name not in bound.get(binding, ())}
    assert not missing, f"{version} does not bind {sorted(missing)}"


@pytest.mark.gpu
@pytest.mark.skipif(trt_available() is not None, reason=f"TensorRT engines: {trt_available()}")
def test_verify_on_tensorrt(tmp_path) -> None:
    """A small engine built here, bundled, and verified by infer.py on TensorRT."""
    from exporter.bundle import BundleOptions, bundle_model
    from exporter.pipeline import ExportOptions
    from exporter.trt import TrtOptions, trt_from_model

    export = ExportOptions(img_size=64, out=tmp_path / "artifacts")
    built = trt_from_model("resnet18", TrtOptions(), export)
    bundle = bundle_model("resnet18", BundleOptions(engine=built.engine_path, out=tmp_path / "bundles"), export).folder
    done = run_bundled(bundle, "--verify", "--backend", "trt", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("verify ✓")
