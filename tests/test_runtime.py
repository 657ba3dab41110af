"""The runtime layer (``bbruntime``) is what a device runs: it must import and work with torch, onnx and
bbexport's build-side packages absent, and compute what the build side measured."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from bbruntime.preprocess import Preprocess, preprocess
from calibration import preprocess as calibration_preprocess
from calibration import sample_photos
from model_defs import get_spec

from .conftest import run_without_build_side


def test_runtime_imports_without_torch_or_onnx() -> None:
    done = run_without_build_side("""
        import bbruntime.cuda, bbruntime.errors, bbruntime.metrics, bbruntime.preprocess
        import bbruntime.infer, bbruntime.runners, bbruntime.sources, bbruntime.timing, bbruntime.trt
        print(bbruntime.trt.trt_available())
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()  # here: what is missing for TensorRT, in words


def test_runtime_runs_an_exported_graph_without_torch(tmp_path: Path) -> None:
    """The build side exports and measures; the runtime alone preprocesses a photo from the transform's
    JSON and runs the graph to the same logits."""
    from bbruntime.runners import OrtRunner
    from exporter.pipeline import ExportOptions, export_onnx

    spec = replace(get_spec("mobilenetv2_050"), input_size=(3, 96, 96))
    outcome = export_onnx(spec.name, ExportOptions(out=tmp_path, img_size=(96, 96)))
    photo = sample_photos(("chelsea",))[0][1]
    np.save(tmp_path / "photo.npy", photo)
    (tmp_path / "transform.json").write_text(json.dumps(Preprocess.of(spec).to_dict()))
    done = run_without_build_side(f"""
        import json, pathlib, numpy as np
        from bbruntime.preprocess import Preprocess, preprocess
        from bbruntime.runners import OrtRunner
        folder = pathlib.Path({str(tmp_path)!r})
        transform = Preprocess.from_dict(json.loads((folder / "transform.json").read_text()))
        x = preprocess(np.load(folder / "photo.npy"), transform)[None]
        np.save(folder / "logits.npy", OrtRunner({str(outcome.onnx_path)!r}).infer(x))
    """)
    assert done.returncode == 0, done.stderr
    expected = OrtRunner(outcome.onnx_path).infer(calibration_preprocess(photo, spec)[None])
    np.testing.assert_array_equal(np.load(tmp_path / "logits.npy"), expected)


@pytest.mark.parametrize("fields", [
    {"interpolation": "bicubic"}, {"interpolation": "nearest", "crop_pct": 1.0},
    {"channel_order": "BGR", "pixel_scale": 255.0, "mean": (104.0, 117.0, 128.0), "std": (1.0, 1.0, 1.0)},
    {"input_size": (1, 32, 32), "mean": (0.5,), "std": (0.5,)},
])
def test_preprocess_round_trips_through_json(fields: dict) -> None:
    """A transform written to a bundle's JSON and read back preprocesses to the same tensor."""
    transform = Preprocess(**{"input_size": (3, 64, 64), "mean": (0.485, 0.456, 0.406),
                              "std": (0.229, 0.224, 0.225), **fields})
    again = Preprocess.from_dict(json.loads(json.dumps(transform.to_dict())))
    assert again == transform
    photo = sample_photos(("coffee",))[0][1]
    np.testing.assert_array_equal(preprocess(photo, again), preprocess(photo, transform))


def test_unknown_preprocess_field_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown preprocessing fields: resize"):
        Preprocess.from_dict({"input_size": [3, 8, 8], "mean": [0, 0, 0], "std": [1, 1, 1], "resize": "stretch"})
