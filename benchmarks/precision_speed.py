"""FP32 against FP16 / INT8 ONNX on ONNX Runtime's CPU provider, measured side by side in one run.

Issue 3's done-criterion: the CPU-flavour INT8 ResNet-50 is at least 2.5x faster than FP32 here.
Each precision is timed in alternating rounds (FP32, INT8, FP32, INT8, ...) and the median of the
round medians is kept, so load from other processes hits every precision alike.

    .venv/bin/python benchmarks/precision_speed.py --model resnet50 --out benchmarks/precision_speed.md
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bbruntime.runners import OrtRunner  # noqa: E402
from bbruntime.timing import TimingOptions, alternating_median_ms  # noqa: E402
from exporter.pipeline import ExportOptions, export_onnx, reusable_export  # noqa: E402
from exporter.quantize import QuantizeOptions, quantize_model  # noqa: E402

TARGET_SPEEDUP = 2.5  # INT8 (cpu flavour) over FP32, issue 3
LABELS = {"fp32": ("fp32", None), "fp16": ("fp16", None), "int8-cpu": ("int8", "cpu"), "int8-trt": ("int8", "trt")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--precisions", default="fp32,int8-cpu", help=f"comma-separated, from {', '.join(LABELS)}")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="measured time per precision and round")
    parser.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads (default: all cores)")
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/precision_speed.md"))
    args = parser.parse_args()

    export = ExportOptions(out=args.artifacts)
    fp32 = reusable_export(args.model, export) or export_onnx(args.model, export)
    files = {}
    for label in args.precisions.split(","):
        if label not in LABELS:
            parser.error(f"unknown precision {label!r}")
        precision, flavour = LABELS[label]
        files[label] = fp32.onnx_path if precision == "fp32" else quantize_model(
            args.model, QuantizeOptions(precision=precision, flavour=flavour or "trt"), export).onnx_path
    runners = {label: OrtRunner(path, threads=args.threads) for label, path in files.items()}
    batch = np.random.default_rng(0).standard_normal((1, *fp32.manifest["onnx"]["input"]["shape"][1:])
                                                     ).astype(np.float32)
    timing = TimingOptions(min_iters=10, min_seconds=args.seconds, threads=args.threads)
    ms = alternating_median_ms(runners, batch, args.rounds, timing)
    table = _markdown(args.model, ms, files, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table)
    print(table)
    if "fp32" in ms and "int8-cpu" in ms:
        return 0 if ms["fp32"] / ms["int8-cpu"] >= TARGET_SPEEDUP else 1
    return 0


def _markdown(model: str, ms: dict[str, float], files: dict[str, Path], args) -> str:
    lines = [f"# {model}: ONNX Runtime CPU latency by precision", "",
             f"{platform.processor() or platform.machine()}, batch 1, {args.rounds} alternating rounds of "
             f"≥ {args.seconds:g} s each, median of round medians; threads: {args.threads or 'default'}.", "",
             "| precision | file | median ms | speed-up vs FP32 |", "| --- | --- | ---: | ---: |"]
    for label, value in ms.items():
        speedup = f"{ms['fp32'] / value:.2f}×" if "fp32" in ms else "n/a"
        lines.append(f"| {label} | {files[label].name} | {value:.2f} | {speedup} |")
    if "fp32" in ms and "int8-cpu" in ms:
        verdict = "meets" if ms["fp32"] / ms["int8-cpu"] >= TARGET_SPEEDUP else "misses"
        lines += ["", f"INT8 (cpu flavour) {verdict} the {TARGET_SPEEDUP}× target."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
