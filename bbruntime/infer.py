"""Classify images with a bbexport bundle, on the device: ``python infer.py SOURCE ... [options]``.

A bundle (``bbexport bundle``) holds this file as ``infer.py`` beside a verbatim copy of the
``bbruntime`` modules it imports, so the preprocessing and the runners that measured the model's drift
on the build machine are the ones that run here. It needs the standard library, numpy and Pillow, plus
one runtime: ``onnxruntime`` (``--backend ort``) or ``tensorrt`` with ``cuda-python`` (``--backend trt``);
OpenCV only for videos and cameras. Each is imported only when used.

Sources: an image, a folder (recursive), a glob (``'photos/*.jpg'``), a text file of paths, a video
file, a camera index (``0``), ``rtsp://…``, or ``csi://N`` (a Jetson CSI camera through GStreamer).

Output, one record per image (``--format``):

- ``text``: ``SOURCE[#FRAME]  CLASS LABEL SCORE | …`` for the top ``--topk`` classes;
- ``jsonl``: ``{"source", "frame", "class", "label", "score", "topk": [{"class", "label", "score"}, …]}``;
- ``csv``: a header, then ``source,frame,rank,class,label,score``, one row per image and rank.

``frame`` is the frame number in a video or camera stream (null/empty for image files), ``score`` the
softmax probability, ``label`` the class name from ``labels.txt`` (null/empty without one).

``--verify`` runs the bundle's golden inputs and holds them to the build machine's FP32 PyTorch
logits: every top-1 equal and the mean cosine within the bundle's drift budget, else exit 1. Run it
first on a new device. Exit codes: 0 done; 1 verification failed; 2 bad input (a missing file, a
source that does not open; unreadable images in a folder, glob or list are skipped and counted);
3 a backend missing (the message names what to install); 130 interrupted; 141 the reader of the
output went away (``| head``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path

import numpy as np

from bbruntime.errors import BBExportError, ImageError, MissingDependencyError, ValidationFailed
from bbruntime.metrics import drift
from bbruntime.preprocess import Preprocess, preprocess, preprocess_batch
from bbruntime.runners import usable_cores
from bbruntime.sources import Frame, resolve_source

CONTRACT = "bbexport.json"
CONTRACT_FORMAT = "bbexport-bundle/1"
# Golden photos preprocessed here must equal the build machine's tensors up to float rounding: a larger
# difference is a different resize (another Pillow) on the device, which shifts every prediction.
PREPROCESS_TOLERANCE = 1e-4
PREFETCH_BATCHES = 4  # decoded batches kept ready ahead of the runtime
# Decode workers: one core is left to the runtime's own threads, and at most 4 (a bound, not a measured
# optimum: this machine has 2 cores).
MAX_DECODE_WORKERS = 4


# ----------------------------------------------------------------------------- the bundle

@dataclass(frozen=True)
class Bundle:
    folder: Path
    contract: dict  # bbexport.json
    transform: Preprocess
    labels: tuple[str, ...] | None

    @property
    def onnx_path(self) -> Path:
        return self.folder / self.contract["onnx"]["file"]

    @property
    def engine_path(self) -> Path | None:
        engine = self.contract.get("engine")
        return self.folder / engine["file"] if engine else None


def load_bundle(folder: Path) -> Bundle:
    path = Path(folder) / CONTRACT
    try:
        contract = json.loads(path.read_text())
    except OSError as e:
        raise BBExportError(f"no {CONTRACT} in {folder}: pass a bundle folder (bbexport bundle) with --bundle") from e
    except ValueError as e:
        raise BBExportError(f"{path} is not valid JSON ({e})") from e
    if contract.get("format") != CONTRACT_FORMAT:
        raise BBExportError(f"{path} is a {contract.get('format')!r} contract; this infer.py reads {CONTRACT_FORMAT}")
    labels_file = contract.get("labels")
    labels = tuple((Path(folder) / labels_file).read_text().splitlines()) if labels_file else None
    return Bundle(Path(folder), contract, Preprocess.from_dict(contract["preprocess"]), labels)


# ----------------------------------------------------------------------------- backends

def open_runner(bundle: Bundle, backend: str | None, engine: Path | None, providers: tuple[str, ...] | None,
                threads: int | None, dla_core: int | None):
    """The runner of ``backend`` (default: TensorRT where an engine and TensorRT are here, else ONNX
    Runtime); exit 3 with what to install where the runtime is missing."""
    from bbruntime.trt import trt_available

    engine = engine or bundle.engine_path
    if backend is None:
        backend = "trt" if engine is not None and engine.is_file() and trt_available() is None else "ort"
    if backend == "trt":
        return _trt_runner(bundle, engine, dla_core)
    if dla_core is not None:
        raise BBExportError("--dla-core applies to --backend trt only")
    return _ort_runner(bundle, providers or ("CPUExecutionProvider",), threads)


def _trt_runner(bundle: Bundle, engine: Path | None, dla_core: int | None):
    from bbruntime.trt import TrtRunner, trt_available

    if engine is None:
        raise BBExportError(f"--backend trt needs an engine and this bundle has none: build one on this device from "
                            f"{bundle.onnx_path.name} (bbexport trt, or trtexec --onnx=… --saveEngine=…) and pass "
                            "--engine PATH")
    if not engine.is_file():
        raise BBExportError(f"engine not found: {engine}")
    if missing := trt_available():
        raise MissingDependencyError(f"--backend trt: {missing}; install TensorRT's Python package and cuda-python "
                                     "(pip install tensorrt cuda-python; on a Jetson, JetPack's python3-libnvinfer)")
    built_with = (bundle.contract.get("engine") or {}).get("tensorrt") if engine == bundle.engine_path else None
    return TrtRunner(engine, built_with=built_with, dla_core=dla_core)


def _ort_runner(bundle: Bundle, providers: tuple[str, ...], threads: int | None):
    try:
        import onnxruntime
    except ImportError as e:
        raise MissingDependencyError("onnxruntime is not installed: pip install onnxruntime (NVIDIA GPUs: "
                                     "onnxruntime-gpu; Jetson: NVIDIA's Jetson wheel)") from e
    from bbruntime.runners import int8_runner

    missing = [p for p in providers if p not in onnxruntime.get_available_providers()]
    if missing:
        raise MissingDependencyError(f"ONNX Runtime here has no {', '.join(missing)} (it has "
                                     f"{', '.join(onnxruntime.get_available_providers())}); a GPU provider needs "
                                     "onnxruntime-gpu")
    # The arithmetic the build measured: an INT8 trt-flavour graph runs its Q/DQ as written off TensorRT.
    flavour = bundle.contract["flavour"] if bundle.contract["precision"] == "int8" else "cpu"
    # No spinning: the decode workers share the cores with ONNX Runtime's threads, and spin-waiting
    # threads take the cycles they need (docs/benchmarks.md, the edge section).
    runner = int8_runner(bundle.onnx_path, flavour, threads, providers, spin=False)
    dropped = [p for p in providers if p not in runner.session.get_providers()]
    if dropped:  # ONNX Runtime falls back to the CPU silently when a provider fails to load
        raise MissingDependencyError(f"ONNX Runtime could not start {', '.join(dropped)} (see its messages above)")
    return runner


def runner_description(runner) -> str:
    if runner.name == "trt":
        return "TensorRT"
    return f"ONNX Runtime ({', '.join(runner.session.get_providers())}, {runner.threads} threads)"


# ----------------------------------------------------------------------------- verification

def verify(bundle: Bundle, runner) -> str:
    """The golden inputs through ``runner`` against the build machine's FP32 PyTorch logits, held to the
    bundle's budget; the verdict line, or :class:`ValidationFailed` (exit 1) with the numbers."""
    budget = bundle.contract["verify"]
    golden = np.load(bundle.folder / budget["golden"])
    expected, inputs = golden["logits"], golden["inputs"]
    logits = runner.infer(inputs)
    measured = drift(expected, logits)
    top1 = int((expected.argmax(1) == logits.argmax(1)).sum())
    images = [golden[f"image_{i}"] for i in range(len(inputs)) if f"image_{i}" in golden]
    preprocessing = (float(np.abs(preprocess_batch(images, bundle.transform) - inputs).max())
                     if len(images) == len(inputs) else None)
    min_cosine, max_rel_abs = budget.get("min_cosine"), budget.get("max_rel_abs")
    line = ", ".join(part for part in (
        f"{len(inputs)} golden photos ({', '.join(str(n) for n in golden['names'])})",
        f"cosine {measured.cosine:.6f}" + (f" (budget ≥ {min_cosine})" if min_cosine is not None else ""),
        f"max abs error {measured.rel_max_abs:.2e} of the logit scale"
        + (f" (budget ≤ {max_rel_abs})" if max_rel_abs is not None else ""),
        f"top-1 {top1}/{len(inputs)}",
        f"preprocessing max abs {preprocessing:.2e}" if preprocessing is not None else "") if part)
    failures = [what for what, failed in (
        ("cosine below budget", min_cosine is not None and measured.cosine < min_cosine),
        ("error above budget", max_rel_abs is not None and measured.rel_max_abs > max_rel_abs),
        ("top-1 differs", top1 < len(inputs)),
        ("preprocessing differs from the build machine's",
         preprocessing is not None and preprocessing > PREPROCESS_TOLERANCE)) if failed]
    if failures:
        raise ValidationFailed(f"verify ✗ {'; '.join(failures)}: {line}")
    return f"verify ✓ {line}"


# ----------------------------------------------------------------------------- decoding ahead

@dataclass(frozen=True)
class Prepared:
    frame: Frame
    tensor: np.ndarray | None  # None: the file was unreadable and is skipped
    seconds: float  # decode + preprocess
    error: str = ""


class Prefetcher:
    """``work(frame)`` for every frame, in order, computed by ``workers`` threads up to ``depth`` frames
    ahead of the consumer: decoding and resizing overlap inference (Pillow, OpenCV and the runtimes
    release the GIL). Frames are drawn from the sources in one producer thread (a capture reads in order)."""

    _END = object()

    def __init__(self, frames: Iterable[Frame], work: Callable[[Frame], Prepared], workers: int, depth: int):
        self._queue: queue.Queue = queue.Queue(depth)
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="decode")
        self._thread = threading.Thread(target=self._produce, args=(frames, work), daemon=True)
        self._thread.start()

    def _produce(self, frames: Iterable[Frame], work) -> None:
        try:
            for frame in frames:
                if not self._put(self._pool.submit(work, frame)):
                    return
        except Exception as e:  # a source failing mid-way (a camera unplugged) reaches the consumer unchanged
            self._put(e)
        self._put(self._END)

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[Prepared]:
        while (item := self._queue.get()) is not self._END:
            if isinstance(item, Exception):
                raise item
            yield item.result()

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._thread.join()


def prepare(transform: Preprocess) -> Callable[[Frame], Prepared]:
    def work(frame: Frame) -> Prepared:
        started = time.perf_counter()
        try:
            tensor = preprocess(frame.image(), transform)
        except ImageError as e:
            if not frame.skippable:
                raise
            return Prepared(frame, None, time.perf_counter() - started, str(e))
        return Prepared(frame, tensor, time.perf_counter() - started)

    return work


# ----------------------------------------------------------------------------- output

@dataclass(frozen=True)
class Prediction:
    source: str
    frame: int | None
    classes: tuple[int, ...]  # the top-k, best first
    scores: tuple[float, ...]  # softmax probabilities
    labels: tuple[str | None, ...]


def predictions(batch: list[Prepared], logits: np.ndarray, topk: int, labels: tuple[str, ...] | None
                ) -> list[Prediction]:
    shifted = logits - logits.max(axis=1, keepdims=True)
    probabilities = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    top = np.argsort(-probabilities, axis=1, kind="stable")[:, :topk]
    return [Prediction(item.frame.source, item.frame.index, tuple(int(c) for c in classes),
                       tuple(float(probabilities[row, c]) for c in classes),
                       tuple(labels[c] if labels and c < len(labels) else None for c in classes))
            for row, (item, classes) in enumerate(zip(batch, top, strict=True))]


class Output:
    """One renderer per format over the same :class:`Prediction` records."""

    CSV_FIELDS = ("source", "frame", "rank", "class", "label", "score")

    def __init__(self, stream, form: str):
        self.stream, self.form = stream, form
        self.csv = csv.writer(stream, lineterminator="\n") if form == "csv" else None
        if self.csv:
            self.csv.writerow(self.CSV_FIELDS)

    def write(self, p: Prediction) -> None:
        if self.form == "jsonl":
            topk = [{"class": c, "label": label, "score": round(s, 6)}
                    for c, s, label in zip(p.classes, p.scores, p.labels, strict=True)]
            self.stream.write(json.dumps({"source": p.source, "frame": p.frame, **topk[0], "topk": topk}) + "\n")
        elif self.csv:
            for rank, (c, s, label) in enumerate(zip(p.classes, p.scores, p.labels, strict=True), 1):
                self.csv.writerow((p.source, "" if p.frame is None else p.frame, rank, c, label or "", f"{s:.6f}"))
        else:
            where = p.source if p.frame is None else f"{p.source}#{p.frame}"
            ranked = " | ".join(" ".join(part for part in (str(c), label, f"{s:.4f}") if part)
                                for c, s, label in zip(p.classes, p.scores, p.labels, strict=True))
            self.stream.write(f"{where}  {ranked}\n")


# ----------------------------------------------------------------------------- the run

@dataclass
class RunStats:
    images: int = 0
    skipped: list[str] = field(default_factory=list)
    pre_ms: list[float] = field(default_factory=list)  # per image, in the decode workers
    infer_ms: list[float] = field(default_factory=list)  # per batch
    post_ms: list[float] = field(default_factory=list)  # per batch: softmax, top-k, writing
    seconds: float = 0.0
    interrupted: bool = False


def classify(runner, bundle: Bundle, frames: Iterable[Frame], out: Output, batch_size: int, topk: int,
             limit: int | None = None) -> RunStats:
    """Every frame through the runner in batches of ``batch_size`` (``limit``: stop after that many images)."""
    stats, batch = RunStats(), []
    workers = max(1, min(MAX_DECODE_WORKERS, usable_cores() - 1))
    started = time.perf_counter()

    def run(items: list[Prepared]) -> None:
        t = time.perf_counter()
        logits = runner.infer(np.stack([item.tensor for item in items]))
        stats.infer_ms.append((time.perf_counter() - t) * 1e3)
        t = time.perf_counter()
        for prediction in predictions(items, logits, topk, bundle.labels):
            out.write(prediction)
        out.stream.flush()
        stats.post_ms.append((time.perf_counter() - t) * 1e3)
        stats.images += len(items)

    with Prefetcher(frames, prepare(bundle.transform), workers, PREFETCH_BATCHES * batch_size) as prepared:
        try:
            for item in prepared:
                if item.tensor is None:
                    stats.skipped.append(item.error)
                    print(f"infer: skipped {item.error}", file=sys.stderr)
                    continue
                stats.pre_ms.append(item.seconds * 1e3)
                batch.append(item)
                if len(batch) == batch_size:
                    run(batch)
                    batch = []
                if limit is not None and stats.images + len(batch) >= limit:
                    break
            if batch:
                run(batch)
        except KeyboardInterrupt:  # a camera runs until Ctrl-C: what was done is still reported
            stats.interrupted = True
    stats.seconds = time.perf_counter() - started
    return stats


def benchmark_lines(stats: RunStats, batch_size: int, backend: str) -> list[str]:
    lines = [f"benchmark: {stats.images} images, batch {batch_size}, {backend}", "  stage   p50 ms   p90 ms   p99 ms"]
    for stage, values, per in (("pre", stats.pre_ms, "image"), ("infer", stats.infer_ms, "batch"),
                               ("post", stats.post_ms, "batch")):
        p50, p90, p99 = np.percentile(values, (50, 90, 99)) if values else (float("nan"),) * 3
        lines.append(f"  {stage:<6} {p50:8.2f} {p90:8.2f} {p99:8.2f}   per {per}")
    rate = stats.images / stats.seconds if stats.seconds > 0 else 0.0
    lines.append(f"benchmark: {rate:.2f} images/s end to end ({stats.images} images in {stats.seconds:.2f} s)")
    return lines


# ----------------------------------------------------------------------------- the command line

class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line and exit 2, like every other bad input
        self.exit(2, f"infer: error: {message} (see --help)\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = _Parser(prog="infer.py", description=__doc__.split("\n\n")[0],
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("sources", nargs="*", metavar="SOURCE", help="images, folders, globs, list files, videos, 0, rtsp://…, csi://N")
    add("--bundle", type=Path, help="the bundle folder (default: this script's folder)")
    add("--backend", choices=("ort", "trt"), help="default: trt where an engine and TensorRT are here, else ort")
    add("--engine", type=Path, help="a TensorRT engine built on this device (default: the bundle's, if any)")
    add("--providers", help="ONNX Runtime execution providers, comma-separated (default: CPUExecutionProvider)")
    add("--batch", type=_positive, default=1, help="images per inference (default: 1)")
    add("--topk", type=_positive, default=5, help="classes per image (default: 5)")
    add("--format", choices=("text", "jsonl", "csv"), default="text", dest="form")
    add("--output", type=Path, help="write the records here (default: standard output)")
    add("--threads", type=_positive, help="ONNX Runtime intra-op threads (default: one per core)")
    add("--dla-core", type=int, help="TensorRT: run on this DLA core (Jetson)")
    add("--warmup", type=int, default=1, help="batches run before the first image (default: 1)")
    add("--benchmark", type=_positive, nargs="?", const=-1, metavar="N",
        help="time pre/infer/post per stage (p50/p90/p99) and images/s; N: stop after N images")
    add("--verify", action="store_true", help="check the golden inputs against the build machine's logits")
    args = parser.parse_args(argv)
    if not args.sources and not args.verify:
        parser.error("give a SOURCE, or --verify")
    return args


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def run(args: argparse.Namespace) -> int:
    bundle = load_bundle(args.bundle or Path(__file__).resolve().parent)
    sources = [resolve_source(text) for text in args.sources]  # every source opens before any inference
    providers = tuple(p.strip() for p in args.providers.split(",") if p.strip()) if args.providers else None
    runner = open_runner(bundle, args.backend, args.engine, providers, args.threads, args.dla_core)
    if args.verify:
        print(verify(bundle, runner))
    if not sources:
        return 0
    _, height, width = bundle.transform.input_size
    for _ in range(max(args.warmup, 0)):  # first-run graph work stays out of the timings
        runner.infer(np.zeros((args.batch, bundle.transform.input_size[0], height, width), np.float32))
    stream = open(args.output, "w", newline="") if args.output else sys.stdout
    try:
        limit = args.benchmark if args.benchmark and args.benchmark > 0 else None
        stats = classify(runner, bundle, chain.from_iterable(s.frames() for s in sources),
                         Output(stream, args.form), args.batch, args.topk, limit)
    finally:
        if args.output:
            stream.close()
    return _report(stats, args, runner)


def _report(stats: RunStats, args: argparse.Namespace, runner) -> int:
    if stats.images == 0 and not stats.interrupted:
        raise ImageError(f"no readable image in {', '.join(args.sources)} ({len(stats.skipped)} unreadable)")
    skipped = f", {len(stats.skipped)} unreadable skipped" if stats.skipped else ""
    print(f"infer: {stats.images} images{skipped}, {runner_description(runner)}", file=sys.stderr)
    if args.benchmark:
        for line in benchmark_lines(stats, args.batch, runner_description(runner)):
            print(line, file=sys.stderr)
    return 130 if stats.interrupted else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except BBExportError as e:
        print(f"infer: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("infer: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as shell tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush cannot fail again
        return 141


if __name__ == "__main__":
    sys.exit(main())
