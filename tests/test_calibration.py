"""Calibration data loading, the calibration methods on known distributions, and the range cache."""

from __future__ import annotations

import struct
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from bbruntime.errors import CalibrationDataError
from calibration import CALIBRATION_PHOTOS, EVALUATION_PHOTOS
from calibration.data import CalibrationSet, crops_per_image, load_calibration
from exporter.calib_cache import (
    Feed,
    amax_from_ranges,
    calibrated_ranges,
    calibration_passes,
    collect_histograms,
    ort_calibrator,
    trt_calibration_scales,
    write_trt_calibration_cache,
)
from exporter.onnx_export import onnx_from_model
from model_defs import create_model, get_spec, spec_with_size

SPEC = spec_with_size(get_spec("resnet18"), 32)


# ----------------------------------------------------------------------------- data sources

def _write_images(folder, count=3, size=(40, 30)):
    rng = np.random.default_rng(0)
    paths = []
    for i, suffix in zip(range(count), (".png", ".jpg", ".bmp", ".webp"), strict=False):
        path = folder / f"img{i}{suffix}"
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_folder_is_recursive_ordered_and_skips_corrupt_files(tmp_path):
    _write_images(tmp_path, 2)
    (tmp_path / "sub").mkdir()
    _write_images(tmp_path / "sub", 2)
    (tmp_path / "sub" / "broken.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "notes.txt").write_text("ignored: not an image suffix")
    data = load_calibration(tmp_path, SPEC, augment=False)
    assert data.batch.shape == (4, 3, 32, 32) and data.batch.dtype == np.float32
    assert data.skipped == ("sub/broken.jpg",) and data.augmented == 0
    assert load_calibration(tmp_path, SPEC, augment=False).sha256 == data.sha256  # deterministic order and preprocessing


def test_limit_takes_a_seeded_subset(tmp_path):
    _write_images(tmp_path, 4)
    first = load_calibration(tmp_path, SPEC, limit=2, seed=1, augment=False)
    assert len(first.batch) == 2 and first.sha256 == load_calibration(tmp_path, SPEC, limit=2, seed=1, augment=False).sha256
    augmented = load_calibration(tmp_path, SPEC, limit=2, seed=1)  # the limit counts images, before their crops
    np.testing.assert_array_equal(augmented.batch[:2], first.batch)


def test_a_folder_of_few_photos_gets_seeded_crops_of_each(tmp_path):
    """Few calibration photos (issue 19): each also gives random crops and mirrors, up to about 64
    samples, after the images themselves; seeded, named in the manifest; a large folder, a digits
    spec and ``augment=False`` are calibrated on the images as they are."""
    rng = np.random.default_rng(0)
    for i in range(11):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(tmp_path / f"photo{i:02d}.png")
    data = load_calibration(tmp_path, SPEC)
    assert crops_per_image(11) == 5 and data.augmented == 55 and data.batch.shape == (66, 3, 32, 32)
    plain = load_calibration(tmp_path, SPEC, augment=False)
    np.testing.assert_array_equal(data.batch[:11], plain.batch)
    assert not any(np.array_equal(crop, image) for crop in data.batch[11:] for image in plain.batch)
    assert data.describe()["augmented_crops"] == 55 and load_calibration(tmp_path, SPEC).sha256 == data.sha256
    assert load_calibration(tmp_path, SPEC, seed=1).sha256 != data.sha256
    assert [crops_per_image(n) for n in (1, 32, 63, 64, 1000)] == [6, 1, 1, 0, 0]
    digits = load_calibration(tmp_path, replace(SPEC, samples="digits", input_size=(1, 32, 32), mean=(0.5,), std=(0.5,)))
    assert digits.augmented == 0 and len(digits.batch) == 11


def test_tensor_files(tmp_path):
    batch = np.random.default_rng(0).standard_normal((5, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "calib.npy", batch)
    np.savez(tmp_path / "calib.npz", images=batch)
    for name in ("calib.npy", "calib.npz"):
        data = load_calibration(tmp_path / name, SPEC)
        np.testing.assert_array_equal(data.batch, batch)


def test_built_in_photos_never_include_held_out_ones():
    data = load_calibration(None, SPEC)
    assert len(data.batch) == 2 * len(CALIBRATION_PHOTOS)  # photos and their mirror images
    assert not set(CALIBRATION_PHOTOS) & set(EVALUATION_PHOTOS)
    assert not any(name in data.source for name in EVALUATION_PHOTOS)


@pytest.mark.parametrize("case, message", [
    ("empty", "no images"),
    ("all_corrupt", "could be read"),
    ("channels", "3 channels"),
    ("size", "exported at 32x32"),
    ("missing", "not found"),
    ("text_file", "neither an image folder"),
    ("limit", "at least 1"),
])
def test_bad_calibration_inputs(tmp_path, case, message):
    limit = None
    if case == "empty":
        source = tmp_path
    elif case == "all_corrupt":
        (tmp_path / "a.png").write_bytes(b"garbage")
        source = tmp_path
    elif case == "channels":
        source = tmp_path / "gray.npy"
        np.save(source, np.zeros((2, 1, 32, 32), np.float32))
    elif case == "size":
        source = tmp_path / "big.npy"
        np.save(source, np.zeros((2, 3, 64, 64), np.float32))
    elif case == "missing":
        source = tmp_path / "nowhere"
    elif case == "text_file":
        source = tmp_path / "list.txt"
        source.write_text("x")
    else:
        source, limit = None, 0
    with pytest.raises(CalibrationDataError, match=message):
        load_calibration(source, SPEC, limit=limit)


# ----------------------------------------------------------------------------- methods and cache

def _identity_conv(path, weight_scale: float = 1.0):
    """x -> 1x1 Conv (identity) -> y: the calibrator records the ranges of x and y."""
    weight = numpy_helper.from_array(np.full((1, 1, 1, 1), weight_scale, np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], name="conv")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 64, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 64, 64])], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _samples(seed=0, outlier=100.0):
    """131k standard-normal values and one far outlier (0.0008 % of the values)."""
    batch = np.random.default_rng(seed).standard_normal((32, 1, 64, 64)).astype(np.float32)
    batch[3, 0, 10, 10] = outlier
    return CalibrationSet(batch=batch, source="synthetic", sha256=f"normal-{seed}-{outlier}")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return _identity_conv(tmp_path_factory.mktemp("calib") / "conv.onnx")


@pytest.mark.parametrize("method, low, high", [
    ("max", 100.0, 100.0),  # the largest |x|, outlier included
    ("percentile", 3.5, 6.0),  # 99.999th percentile of |N(0,1)| is 4.4: the outlier is clipped
    # KL-optimal threshold: covers the bulk, clips the outlier (the search starts at 64 of the
    # 2048 histogram bins over [-100, 100], i.e. at 6.25)
    ("entropy", 4.0, 30.0),
])
def test_methods_on_a_known_distribution(tmp_path, model_file, method, low, high):
    cache = calibrated_ranges(model_file, _samples(), method, "trt", tmp_path)
    amax = amax_from_ranges(cache.path)["x"]
    assert low <= amax <= high


def test_trt_ranges_are_symmetric_and_cpu_ranges_are_not(tmp_path, model_file):
    relu_like = CalibrationSet(batch=np.abs(_samples().batch), source="synthetic", sha256="abs")
    from onnxruntime.quantization.calibrate import load_tensors_data

    trt = load_tensors_data(calibrated_ranges(model_file, relu_like, "max", "trt", tmp_path).path).data["x"]
    cpu = load_tensors_data(calibrated_ranges(model_file, relu_like, "max", "cpu", tmp_path).path).data["x"]
    assert np.all(np.asarray(trt.range_value[0]) == -np.asarray(trt.range_value[1]))
    assert np.asarray(cpu.range_value[0]).max() == pytest.approx(0.0, abs=1e-3)


def test_cache_hit_and_invalidation(tmp_path, model_file):
    cache_dir = tmp_path / "calibration"
    first = calibrated_ranges(model_file, _samples(), "max", "trt", cache_dir)
    again = calibrated_ranges(model_file, _samples(), "max", "trt", cache_dir)
    assert not first.hit and again.hit and again.path == first.path
    other_method = calibrated_ranges(model_file, _samples(), "entropy", "trt", cache_dir)
    other_flavour = calibrated_ranges(model_file, _samples(), "max", "cpu", cache_dir)
    other_data = calibrated_ranges(model_file, _samples(seed=1), "max", "trt", cache_dir)
    other_model = calibrated_ranges(_identity_conv(tmp_path / "other.onnx", 2.0), _samples(), "max", "trt", cache_dir)
    assert not any(c.hit for c in (other_method, other_flavour, other_data, other_model))
    assert len({c.key for c in (first, other_method, other_flavour, other_data, other_model)}) == 5
    assert not first.path.exists()  # superseded: one cache per flavour and method
    assert {p.name.split("-")[0] + "-" + p.name.split("-")[1] for p in cache_dir.glob("*.json")} == {
        "trt-max", "trt-entropy", "cpu-max"}


def test_trt_calibration_cache_format(tmp_path):
    path = write_trt_calibration_cache({"input": 2.54, "/conv1/Conv_output_0": 12.7}, tmp_path / "m.calib")
    lines = path.read_text().splitlines()
    assert lines[0] == "TRT-100100-EntropyCalibration2"
    assert lines[1] == f"/conv1/Conv_output_0: {struct.pack('>f', 0.1).hex()}"
    scales = trt_calibration_scales(path)
    assert scales["input"] == pytest.approx(0.02) and scales["/conv1/Conv_output_0"] == pytest.approx(0.1)


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_histograms_collected_by_tensor_group_equal_onnx_runtimes_own(tmp_path, method):
    """Big models calibrate their tensors a group at a time (bounded memory): every histogram comes
    out exactly as ONNX Runtime's own collection, pass for pass."""
    model_path = tmp_path / "resnet18.onnx"
    onnx_from_model(create_model("resnet18"), model_path, (3, 32, 32), dynamic_batch=True)
    batch = np.random.default_rng(0).standard_normal((11, 3, 32, 32), dtype=np.float32)
    passes = calibration_passes(batch, 1)
    own = ort_calibrator(model_path, method, False, tmp_path / "own.onnx")
    for chunk in passes:
        own.collect_data(Feed("input", chunk))
    grouped = ort_calibrator(model_path, method, False, tmp_path / "grouped.onnx")
    collect_histograms(grouped, "input", passes, pass_bytes=500_000)  # a few tensors a group
    expected, got = own.collector.histogram_dict, grouped.collector.histogram_dict
    assert len(passes) == 2 and set(got) == set(expected) and len(got) > 20
    for name, histogram in expected.items():
        assert all(np.array_equal(a, b) for a, b in zip(histogram, got[name], strict=True)), name


# ----------------------------------------------------------------------------- images from the wild


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares a size and holds no pixels: what a decompression bomb's header looks like."""
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) + \
        chunk(b"IEND", b"")


def _wild_folder(folder: Path) -> dict[str, str]:
    """One file of each awkward kind; returns name -> what must happen to it ("read" or "skipped")."""
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8))
    photo.save(folder / "plain.jpg")
    photo.convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray((rng.integers(0, 65535, (30, 30))).astype(np.uint16)).save(folder / "sixteen_bit.png")
    photo.convert("RGBA").quantize(16).save(folder / "palette.png")
    photo.convert("RGBA").save(folder / "alpha.png")
    photo.convert("L").save(folder / "gray.png")
    Image.new("RGB", (1, 1), (200, 10, 10)).save(folder / "one_pixel.png")
    rotated = photo.copy()
    exif = rotated.getexif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    rotated.save(folder / "exif_rotated.jpg", exif=exif)
    data = (folder / "plain.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "garbage.png").write_bytes(b"not an image at all")
    (folder / "bomb.png").write_bytes(_png_header(40_000, 40_000))  # 1.6 gigapixels declared: refused unread
    return {"plain.jpg": "read", "cmyk.jpg": "read", "sixteen_bit.png": "read", "palette.png": "read",
            "alpha.png": "read", "gray.png": "read", "one_pixel.png": "read", "exif_rotated.jpg": "read",
            "truncated.jpg": "skipped", "garbage.png": "skipped", "bomb.png": "skipped"}


def test_images_from_the_wild_are_converted_or_skipped(tmp_path: Path) -> None:
    from bbruntime.errors import ImageError
    from bbruntime.preprocess import read_image

    expected = _wild_folder(tmp_path)
    for name, fate in expected.items():
        if fate == "read":
            image = read_image(tmp_path / name)
            assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, name
        else:
            with pytest.raises(ImageError):
                read_image(tmp_path / name)
    assert read_image(tmp_path / "exif_rotated.jpg").shape[:2] == (60, 40)  # upright, as a viewer shows it
    sixteen = read_image(tmp_path / "sixteen_bit.png")
    assert 100 < sixteen.mean() < 155  # scaled to 8 bits, not clipped to white
    calib = load_calibration(tmp_path, get_spec("resnet18"), augment=False)
    assert len(calib.batch) == 8 and sorted(calib.skipped) == ["bomb.png", "garbage.png", "truncated.jpg"]
    digits = load_calibration(tmp_path, replace(get_spec("resnet18"), input_size=(1, 32, 32), mean=(0.5,), std=(0.5,)),
                              augment=False)
    assert digits.batch.shape == (8, 1, 32, 32)  # RGB files for a one-channel model: their luminance
