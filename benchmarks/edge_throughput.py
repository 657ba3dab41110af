"""A bundle's ``infer.py`` end to end against ONNX Runtime's ``run`` alone, side by side in one run.

For each model a bundle is made (``exporter.bundle``), a folder of JPEGs is written from the
scikit-image photos (seeded crops and mirror images), and two things are timed in alternating rounds:
``infer.py FOLDER --benchmark`` in its own process (decoding, resizing, inference, softmax, top-k and
JSONL output: what a device runs), and ``session.run`` alone on the same images preprocessed
beforehand, with the same intra-op threads. The best round of each counts, so a burst of load on a
shared machine does not decide the ratio. Adds (or replaces) its section in ``docs/benchmarks.md``.

    .venv/bin/python benchmarks/edge_throughput.py [--images 200] [--rounds 2]
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import click
import numpy as np
from PIL import Image

from bbruntime import infer
from bbruntime.preprocess import Preprocess, preprocess_batch, read_image
from bbruntime.runners import usable_cores
from calibration import CALIBRATION_PHOTOS, EVALUATION_PHOTOS, sample_photos
from exporter.artifacts import publish, staging_dir
from exporter.bundle import BundleOptions, bundle_model
from exporter.pipeline import ExportOptions
from exporter.report import machine_info

ROOT = Path(__file__).resolve().parents[1]
MODELS = (("resnet50", "fp32"), ("mobilenetv2_100", "int8"))
TARGET_RATIO = 0.9  # issue 18: infer.py end to end at least 0.9x ONNX Runtime alone on ResNet-50
SECTION = "# Edge inference: infer.py end to end against ONNX Runtime alone"
RATE = re.compile(r"benchmark: ([\d.]+) images/s end to end")
STAGE = re.compile(r"^\s+(pre|infer|post)\s+([\d.]+)", re.M)


@dataclass(frozen=True)
class Result:
    model: str
    precision: str
    detail: str  # flavour and weight bits
    ort_rate: float  # images/s of session.run alone on pre-made tensors
    infer_rate: float  # images/s of infer.py end to end
    stages_ms: dict[str, float]  # infer.py's p50 per stage, from its best round

    @property
    def ratio(self) -> float:
        return self.infer_rate / self.ort_rate


def jpeg_folder(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` JPEGs cut from every scikit-image photo: seeded crops of 50-100% of each side, half mirrored."""
    rng = np.random.default_rng(seed)
    photos = [image for _, image in sample_photos(EVALUATION_PHOTOS + CALIBRATION_PHOTOS)]
    paths = []
    for i in range(count):
        image = photos[i % len(photos)]
        height, width = image.shape[:2]
        h, w = int(height * rng.uniform(0.5, 1.0)), int(width * rng.uniform(0.5, 1.0))
        top, left = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
        crop = image[top:top + h, left:left + w]
        paths.append(folder / f"{i:04d}.jpg")
        Image.fromarray(np.ascontiguousarray(crop[:, ::-1] if i % 2 else crop)).save(paths[-1], quality=90)
    return paths


def ort_alone(bundle: Path, tensors: np.ndarray, threads: int) -> float:
    """Images/s of ``session.run`` on pre-made tensors, one image a run, after one warm-up run; the
    session is infer.py's own (the same options), so the ratio is the script's cost alone."""
    runner = infer.open_runner(infer.load_bundle(bundle), "ort", None, None, threads, None)
    session, name = runner.session, runner.input_name
    session.run(None, {name: tensors[:1]})
    started = time.perf_counter()
    for i in range(len(tensors)):
        session.run(None, {name: tensors[i:i + 1]})
    return len(tensors) / (time.perf_counter() - started)


def infer_end_to_end(bundle: Path, folder: Path, threads: int) -> tuple[float, dict[str, float]]:
    """Images/s and per-stage p50 of ``infer.py FOLDER --benchmark`` as a device runs it."""
    done = subprocess.run([sys.executable, str(bundle / "infer.py"), str(folder), "--benchmark", "--format", "jsonl",
                           "--output", os.devnull, "--threads", str(threads)], capture_output=True, text=True,
                          check=True)
    return float(RATE.search(done.stderr).group(1)), {m[0]: float(m[1]) for m in STAGE.findall(done.stderr)}


def measure(name: str, precision: str, artifacts: Path, scratch: Path, folder: Path, rounds: int, threads: int
            ) -> Result:
    outcome = bundle_model(name, BundleOptions(precision=precision, out=scratch / "bundles"),
                           ExportOptions(out=artifacts))
    bundle, contract = outcome.folder, outcome.contract
    images = [read_image(p) for p in sorted(folder.glob("*.jpg"))]
    tensors = preprocess_batch(images, Preprocess.from_dict(contract["preprocess"]))
    ort_rates, infer_runs = [], []
    for _ in range(rounds):
        ort_rates.append(ort_alone(bundle, tensors, threads))
        infer_runs.append(infer_end_to_end(bundle, folder, threads))
    best = max(infer_runs, key=lambda run: run[0])
    detail = f"{contract['flavour']}, {contract['int8_weight_bits']}-bit weights" if contract["flavour"] else ""
    return Result(name, precision, detail, max(ort_rates), best[0], best[1])


def markdown(results: list[Result], images: int, rounds: int, threads: int, load: tuple[float, float],
             command: str) -> str:
    m = machine_info()
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    lines = [SECTION, "", f"Measured {datetime.now(UTC).isoformat(timespec='seconds')} by `{command}`.", "",
             f"- Machine: {m['cpu']}, {m['usable_cores']} usable of {m['cores']} cores, GPU: {m['gpu'] or 'none'}; "
             f"{m['os']}; load average {load[0]:.2f} at the start and {load[1]:.2f} at the end of the run (a "
             "shared machine: other processes competing for the cores make every figure here less reliable)",
             f"- Libraries: {versions}, Pillow {Image.__version__}",
             f"- Workload: {images} JPEGs (quality 90) cut from the scikit-image photos (seeded crops of 50-100% of "
             "each side, every other one mirrored), batch 1, ONNX Runtime CPU provider with "
             f"{threads} intra-op threads on both sides; {rounds} alternating rounds, the best of each shown.",
             "- infer.py: `python BUNDLE/infer.py FOLDER --benchmark --format jsonl --output /dev/null`, in its own "
             "process: decoding and resizing in a worker thread overlapping inference, softmax, top-5, JSONL. "
             "ONNX Runtime alone: `session.run` on the same images preprocessed beforehand, in infer.py's own "
             "session (same options: intra-op threads sleep rather than spin, which leaves the decode worker its "
             "cycles), so the ratio is what the script costs.",
             "", f"| Model | Precision | ONNX Runtime alone, images/s | infer.py end to end, images/s | "
             f"infer.py / alone (target ≥ {TARGET_RATIO} for ResNet-50) | infer.py p50 ms: pre / infer / post |",
             "|---|---|---|---|---|---|"]
    for r in results:
        stages = " / ".join(f"{r.stages_ms.get(s, float('nan')):.1f}" for s in ("pre", "infer", "post"))
        precision = f"{r.precision} ({r.detail})" if r.detail else r.precision
        lines.append(f"| {r.model} | {precision} | {r.ort_rate:.2f} | {r.infer_rate:.2f} | {r.ratio:.2f}× | {stages} |")
    lines.append("")
    for r in results:
        verdict = ("meets" if r.ratio >= TARGET_RATIO else "misses") if r.model == "resnet50" else "reported"
        lines.append(f"- {r.model}: {r.ratio:.2f}× ({verdict}); decoding and resizing take {r.stages_ms.get('pre', 0):.1f} "
                     f"ms an image against {r.stages_ms.get('infer', 0):.1f} ms of inference, on the same cores.")
    lines += ["", BOUND]
    return "\n".join(lines) + "\n"


# Why the ratio cannot reach 1 on a small CPU: a fact of the workload, printed under every run.
BOUND = ("What bounds the ratio here: on a CPU-only machine decoding and resizing are CPU work that inference "
         "would otherwise have. A JPEG of this set costs about 8 ms to decode and resize on an idle core of this "
         "machine, against about 150 core-ms of ResNet-50 (75 ms on 2 threads): at best 150 / 158 = 0.95. The "
         "decode worker also preempts one of ONNX Runtime's two threads, and the other then waits for it at the "
         "end of each parallel section, so under load the loss is about twice the decode time. MobileNetV2 INT8 "
         "needs less CPU per image than its decoding, so there the decoder sets the pace. On a GPU (TensorRT, "
         "or ONNX Runtime's CUDA provider) inference leaves the CPU cores to the decode workers, up to 4 of them.")


def with_section(page: str, section: str) -> str:
    """``page`` with this benchmark's section replaced (up to the next top-level heading) or appended."""
    start = page.find(SECTION)
    if start < 0:
        return page.rstrip("\n") + "\n\n" + section
    end = page.find("\n# ", start + len(SECTION))
    return page[:start] + section + (page[end + 1:] if end >= 0 else "")


@click.command()
@click.option("--images", type=click.IntRange(1), default=200, show_default=True)
@click.option("--rounds", type=click.IntRange(1), default=2, show_default=True)
@click.option("--threads", type=click.IntRange(1), help="ONNX Runtime intra-op threads (default: all cores).")
@click.option("--artifacts", type=click.Path(path_type=Path), default=Path("artifacts"), show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=ROOT / "docs" / "benchmarks.md", show_default=True)
def main(images: int, rounds: int, threads: int | None, artifacts: Path, out: Path) -> None:
    threads = threads or usable_cores()
    load_before = os.getloadavg()[0]
    results = []
    with tempfile.TemporaryDirectory(prefix="bbexport-edge-") as scratch:
        folder = Path(scratch) / "photos"
        folder.mkdir()
        jpeg_folder(folder, images)
        for name, precision in MODELS:
            click.echo(f"{name} {precision}: bundling and timing ...", err=True)
            result = measure(name, precision, artifacts, Path(scratch), folder, rounds, threads)
            click.echo(f"{name}: alone {result.ort_rate:.2f} images/s, infer.py {result.infer_rate:.2f} images/s "
                       f"({result.ratio:.2f}×)", err=True)
            results.append(result)
    command = ("python benchmarks/edge_throughput.py " + " ".join(sys.argv[1:])).strip()
    section = markdown(results, images, rounds, threads, (load_before, os.getloadavg()[0]), command)
    page = with_section(out.read_text() if out.exists() else "", section)
    with staging_dir(out.parent) as tmp:
        (tmp / out.name).write_text(page)
        publish(tmp / out.name, out)
    click.echo(section)


if __name__ == "__main__":
    main()
