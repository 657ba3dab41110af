"""``bbexport bundle``: one folder that deploys a model to an edge device and proves it there.

The bundle is made from the pipeline's own products: the FP32 export or the FP16/INT8 file of
:mod:`exporter.quantize` (reused under the one reuse rule), with the drift its stage measured. Beside
it: the deployment contract ``bbexport.json`` (what the input must look like, what was measured, what
the device must reproduce), ``golden.npz`` (the most confident held-out photos, raw and preprocessed,
with their FP32 PyTorch logits), ``labels.txt``, ``infer.py`` (:mod:`bbruntime.infer`) and a verbatim
copy of the ``bbruntime`` modules it imports, each hashed in the contract: the code that measured the
drift here is the code that runs on the device. The folder is staged and renamed into place whole.

``--target`` names the device, not this machine: it decides the INT8 cpu flavour's weight range
(7-bit on x86 without VNNI, whose uint8 x int8 kernels saturate; full 8-bit on VNNI and ARM CPUs).
"""

from __future__ import annotations

import ast
import json
import math
import shutil
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from string import Template

import numpy as np

import bbruntime
from bbruntime.errors import BBExportError
from bbruntime.infer import CONTRACT, CONTRACT_FORMAT
from bbruntime.metrics import confidence_margins
from bbruntime.preprocess import Preprocess
from calibration import sample_set

from .artifacts import (
    check_writable,
    ensure_writable_dir,
    publish_folder,
    sha256_file,
    sidecar_of,
    staging_dir,
    write_json,
)
from .budget import PRECISIONS
from .calib_cache import FLAVOURS
from .pipeline import ExportOptions, ExportOutcome, export_onnx, subject_of
from .quantize import QuantizeOptions, QuantizeOutcome, check_quantize_options, quantize_model
from .subject import Logger, StageLog, Subject
from .targets import TARGETS, host_target, int8_weights_saturate
from .trt import engine_sidecar_path
from .weights import WeightsSource

GOLDEN_PHOTOS = 3
RUNTIME = Path(bbruntime.__file__).parent
ENTRY = RUNTIME / "infer.py"
README_TEMPLATE = Path(__file__).with_name("bundle_README.md")
# ImageNet-1k's class names in class order, as data: written from torchvision's weights metadata
# (ResNet50_Weights.IMAGENET1K_V2.meta["categories"]; tests/test_bundle.py checks they still agree), kept
# here because torchvision is only a test dependency of bbexport.
IMAGENET_CLASSES = Path(__file__).with_name("imagenet_classes.txt")


@dataclass(frozen=True)
class BundleOptions:
    precision: str = "fp32"
    flavour: str | None = None  # int8: "cpu" or "trt"; None: trt for a Jetson, else cpu
    target: str | None = None  # one of TARGETS; None: this machine
    engine: Path | None = None  # an engine built by `bbexport trt`, with its .json sidecar
    out: Path = Path("bundles")
    # How the FP16/INT8 ONNX is made (`bbexport quantize`'s options); precision, flavour and weight
    # range are the bundle's to decide. None: quantize's defaults.
    quantization: QuantizeOptions | None = None

    @property
    def resolved_target(self) -> str:
        return self.target or host_target()

    @property
    def resolved_flavour(self) -> str | None:
        if self.precision != "int8":
            return None
        return self.flavour or ("trt" if self.resolved_target == "jetson" else "cpu")

    def quantize_options(self) -> QuantizeOptions:
        """The precision stage's options, the INT8 cpu weight range chosen for the target device."""
        flavour = self.resolved_flavour or "trt"
        base = self.quantization or QuantizeOptions(self.precision, flavour=flavour)
        return replace(base, precision=self.precision, flavour=flavour,
                       reduce_range=flavour == "cpu" and int8_weights_saturate(self.resolved_target))


@dataclass(frozen=True)
class BundleOutcome:
    folder: Path
    contract: dict
    stage: ExportOutcome | QuantizeOutcome


def bundle_model(model: str | Subject, options: BundleOptions = BundleOptions(),
                 export: ExportOptions | None = None, log: Logger | None = None) -> BundleOutcome:
    """Make (or reuse) ``model``'s artifact at ``options.precision`` and publish its bundle folder
    ``<out>/<model>-<precision>/``. Every input is checked before any export."""
    log = log or (lambda entry: None)
    export = export or ExportOptions()
    engine = check_bundle_request(options, export)
    subject = subject_of(model, export)
    stage = (export_onnx(subject, export, log=log) if options.precision == "fp32"
             else quantize_model(subject, options.quantize_options(), export, log=log))
    if engine is not None and engine["onnx"]["sha256"] != stage.manifest["onnx"]["sha256"]:
        raise BBExportError(f"{options.engine} was built from another ONNX file than {stage.onnx_path.name} "
                            f"(sha256 {engine['onnx']['sha256'][:12]}, not {stage.manifest['onnx']['sha256'][:12]}); "
                            "rebuild it with bbexport trt and the same options")
    started = time.perf_counter()
    out = ensure_writable_dir(Path(options.out))
    name = f"{subject.name}-{options.precision}"
    with staging_dir(out) as tmp:
        contract = write_bundle(tmp / name, subject, options, stage, engine)
        folder = publish_folder(tmp / name, out / name)
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    log(StageLog("bundle", True, time.perf_counter() - started, path=folder, bytes=size))
    return BundleOutcome(folder, contract, stage)


def check_bundle_request(options: BundleOptions, export: ExportOptions) -> dict | None:
    """Every request a bundle cannot be made from, rejected in one line before any work; the given
    engine's sidecar (or None)."""
    if options.precision not in PRECISIONS:
        raise BBExportError(f"unknown precision {options.precision!r}; choose one of {', '.join(PRECISIONS)}")
    if options.target is not None and options.target not in TARGETS:
        raise BBExportError(f"unknown target {options.target!r}; choose one of {', '.join(TARGETS)}")
    if options.flavour is not None and options.precision != "int8":
        raise BBExportError(f"--flavour applies to --precision int8 only, not {options.precision}")
    if options.flavour is not None and options.flavour not in FLAVOURS:
        raise BBExportError(f"unknown INT8 flavour {options.flavour!r}; choose one of {', '.join(FLAVOURS)}")
    if options.precision == "fp32":
        if options.quantization is not None and replace(options.quantization, precision="fp32", flavour="trt",
                                                        reduce_range=False) != QuantizeOptions("fp32", "trt"):
            raise BBExportError("the quantization options (--calib, --method, --exclude, …) apply to --precision "
                                "fp16 and int8 only, not fp32")
    else:
        check_quantize_options(options.quantize_options())
    check_writable(Path(options.out))
    check_writable(Path(export.out))
    return engine_sidecar(Path(options.engine), options) if options.engine is not None else None


def engine_sidecar(engine: Path, options: BundleOptions) -> dict:
    """The sidecar of an engine `bbexport trt` built, checked against the engine file and the request."""
    if not engine.is_file():
        raise BBExportError(f"engine not found: {engine}")
    sidecar_path = engine_sidecar_path(engine)
    try:
        sidecar = json.loads(sidecar_path.read_text())
        recorded, precision = sidecar["engine"]["sha256"], sidecar["precision"]
    except OSError as e:
        raise BBExportError(f"{engine} has no {sidecar_path.name} beside it: a bundle takes engines built by "
                            "bbexport trt, whose sidecar records the TensorRT version and GPU that built them (or "
                            "build the engine on the device from the bundled ONNX)") from e
    except (ValueError, KeyError, TypeError) as e:
        raise BBExportError(f"{sidecar_path} is not an engine sidecar written by bbexport trt ({e})") from e
    if recorded != sha256_file(engine):
        raise BBExportError(f"{engine} is not the engine {sidecar_path.name} describes (its sha256 differs)")
    if precision != options.precision:
        raise BBExportError(f"{engine} is a {precision} engine, not --precision {options.precision}")
    if precision == "int8" and options.resolved_flavour != "trt":
        raise BBExportError("an INT8 engine is built from the trt flavour's Q/DQ graph: bundle it with --flavour trt")
    return sidecar


# ----------------------------------------------------------------------------- the folder

def write_bundle(folder: Path, subject: Subject, options: BundleOptions, stage, engine: dict | None) -> dict:
    """Every file of the bundle into ``folder`` (a staging folder); the contract, written last."""
    folder.mkdir()
    for part in (stage.onnx_path, sidecar_of(stage.onnx_path)):
        if part.exists():
            shutil.copyfile(part, folder / part.name)
    if engine is not None:
        shutil.copyfile(options.engine, folder / engine["engine"]["file"])
    golden = golden_arrays(subject)
    np.savez_compressed(folder / "golden.npz", **golden)
    labels = class_names(subject.spec)
    if labels is not None:
        (folder / "labels.txt").write_text("\n".join(labels) + "\n")
    runtime = {path: sha256_file(folder / path) for path in copy_runtime(folder)}
    contract = bundle_contract(subject, options, stage, engine, labels is not None, list(golden["names"]), runtime)
    (folder / "README.md").write_text(bundle_readme(contract))
    write_json(folder / CONTRACT, contract)
    return contract


def golden_arrays(subject: Subject) -> dict[str, np.ndarray]:
    """The held-out photos whose FP32 top-1 leads most clearly (an in-budget rounding does not flip them):
    preprocessed tensors, FP32 PyTorch logits, names, and the raw images (``image_<i>``) for the device
    to preprocess and compare."""
    photos = sample_set(subject.spec, "held_out")
    reference = subject.reference["photos"]
    chosen = np.argsort(-confidence_margins(reference), kind="stable")[:GOLDEN_PHOTOS]
    images = photos.images()
    return {"inputs": subject.inputs["photos"][chosen], "logits": reference[chosen],
            "names": np.array([photos.names[i] for i in chosen]),
            **{f"image_{k}": images[i] for k, i in enumerate(chosen)}}


def class_names(spec) -> list[str] | None:
    """The class names of an ImageNet-1k head or of the digits; None where they are unknown."""
    if spec.samples == "digits":
        return [str(digit) for digit in range(spec.num_classes)]
    return IMAGENET_CLASSES.read_text().splitlines() if spec.num_classes == 1000 else None


def runtime_modules() -> list[Path]:
    """The ``bbruntime`` modules ``infer.py`` imports, directly or through each other (lazy imports too)."""
    needed, todo = [RUNTIME / "__init__.py"], [ENTRY]
    while todo:
        for node in ast.walk(ast.parse(todo.pop().read_text())):
            if not isinstance(node, ast.ImportFrom) or not (node.level or (node.module or "").startswith("bbruntime")):
                continue
            module = (node.module or "").removeprefix("bbruntime").lstrip(".")
            for name in [module] if module else [alias.name for alias in node.names]:
                path = RUNTIME / f"{name}.py"
                if path not in needed:
                    needed.append(path)
                    todo.append(path)
    return sorted(needed)


def copy_runtime(folder: Path) -> list[str]:
    """``infer.py`` and its ``bbruntime`` modules, byte for byte, into ``folder``; their bundle paths."""
    shutil.copyfile(ENTRY, folder / "infer.py")
    (folder / "bbruntime").mkdir()
    for module in runtime_modules():
        shutil.copyfile(module, folder / "bbruntime" / module.name)
    return ["infer.py", *(f"bbruntime/{module.name}" for module in runtime_modules())]


def bundle_contract(subject: Subject, options: BundleOptions, stage, engine: dict | None, labels: bool,
                    golden: list[str], runtime: dict[str, str]) -> dict:
    """``bbexport.json``: what the device must feed the model, what was measured here, what it must reproduce."""
    manifest, transform = stage.manifest, Preprocess.of(subject.spec)
    onnx, validation, budget = manifest["onnx"], manifest["validation"], stage.validation.budget
    channels, height, width = transform.input_size
    details = manifest.get("details") or {}
    return {
        "format": CONTRACT_FORMAT,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": subject.name, "family": subject.spec.family,
        "precision": options.precision, "flavour": options.resolved_flavour, "target": options.resolved_target,
        "int8_weight_bits": details.get("weight_bits") if options.precision == "int8" else None,
        "input": {"name": onnx["input"]["name"], "layout": "NCHW", "dtype": "float32", "shape": onnx["input"]["shape"],
                  "batch": onnx["batch"], "channels": channels, "height": height, "width": width},
        "output": {"name": onnx["output"]["name"], "shape": onnx["output"]["shape"], "values": "logits"},
        "resize": {"rule": "resize the short side, the long side in proportion, then centre-crop",
                   "short_side": [math.floor(height / transform.crop_pct), math.floor(width / transform.crop_pct)],
                   "crop_pct": transform.crop_pct, "crop": [height, width]},
        "preprocess": transform.to_dict(),
        "num_classes": subject.spec.num_classes, "labels": "labels.txt" if labels else None,
        "onnx": {"file": onnx["file"], "sha256": onnx["sha256"], "bytes": onnx["bytes"],
                 "external_data": sidecar_of(Path(onnx["file"])).name if sidecar_of(stage.onnx_path).exists() else None},
        "engine": _engine_entry(engine),
        "weights": manifest["weights"], "weights_source": WeightsSource(**manifest["weights"]).describe(),
        "drift": {"reference": "FP32 PyTorch on this build machine", "budget": validation["budget"],
                  "passed": stage.validation.passed, "measured_with": details.get("measured_with", "ONNX Runtime, CPU"),
                  "onnx": validation["drift"], "engine": engine["validation"]["drift"] if engine else None},
        "verify": {"golden": "golden.npz", "photos": golden, "min_cosine": budget.min_cosine,
                   "max_rel_abs": budget.max_rel_abs, "top1": "equal on every golden photo"},
        "runtime": runtime,
        "versions": manifest["versions"],
    }


def _engine_entry(sidecar: dict | None) -> dict | None:
    if sidecar is None:
        return None
    return {"file": sidecar["engine"]["file"], "sha256": sidecar["engine"]["sha256"], "tensorrt": sidecar["tensorrt"],
            "gpu": sidecar["gpu"]["name"], "compute_capability": sidecar["gpu"]["compute_capability"],
            "precision_source": sidecar["precision_source"], "profiles": sidecar["profiles"]}


def bundle_readme(contract: dict) -> str:
    fields = {"model": contract["model"], "precision": contract["precision"], "onnx": contract["onnx"]["file"],
              "target": contract["target"], "weights": contract["weights_source"],
              "flavour": f" ({contract['flavour']} flavour)" if contract["flavour"] else "",
              "engine": (f"`{contract['engine']['file']}` (TensorRT {contract['engine']['tensorrt']}, compute "
                         f"capability {contract['engine']['compute_capability']})") if contract["engine"] else "none"}
    return Template(README_TEMPLATE.read_text()).substitute(fields)

