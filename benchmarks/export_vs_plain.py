"""bbexport's graphs against a plain ``torch.onnx.export`` of the reference model, in one run.

For each model: the reference (torchvision/timm, per the variant's spec) gets bbexport's weights
(random, BN-recalibrated, seed 0), is exported with a plain ``torch.onnx.export`` call, and both
graphs are timed on ONNX Runtime in alternating rounds (the best median of each counts, so a
burst of load on a shared machine does not decide the ratio). The CPU-flavour INT8 ONNX is timed
in the same rounds against the FP32 graph. Writes ``docs/benchmarks.md``.

    .venv/bin/python benchmarks/export_vs_plain.py [--models resnet50,mobilenetv2_100,efficientnet_b0]
"""

from __future__ import annotations

import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import click
import onnx
import torch

from bbruntime.metrics import Drift
from bbruntime.runners import OrtRunner
from bbruntime.timing import TimingOptions, time_runner
from exporter.artifacts import human_size, publish, staging_dir
from exporter.budget import load_budget
from exporter.pipeline import ExportOptions
from exporter.report import fp32_artifact, machine_info, quantized_artifact
from exporter.runners import set_torch_threads
from exporter.subject import subject_for
from exporter.validate import top1_text
from model_defs import get_entry, get_spec  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
INT8_MIN_COSINE = load_budget().budget("resnet50", "resnet", "int8").min_cosine

TARGET_RATIO = 0.9  # issue 4: our graph at most 0.9x the plain export's latency
TARGET_INT8 = 3.0  # issue 4: CPU-flavour INT8 at least 3x faster than FP32 on ResNet-50


@dataclass(frozen=True)
class Result:
    model: str
    weights_note: str
    plain_nodes: int
    ours_nodes: int
    plain_ms: float
    ours_ms: float
    int8_ms: float
    int8_bytes: int
    fp32_bytes: int
    int8_drift: Drift
    same_after_ort: bool  # ONNX Runtime's optimized graphs have the same op-type counts

    @property
    def ratio(self) -> float:
        return self.ours_ms / self.plain_ms

    @property
    def int8_speedup(self) -> float:
        return self.ours_ms / self.int8_ms


def reference_with_our_weights(name: str, model: torch.nn.Module) -> tuple[torch.nn.Module, str]:
    """The reference library's model carrying ``model``'s weights where the keys line up."""
    library, _, ref_name = get_spec(name).reference.partition(":")
    if library == "timm":
        import timm

        reference = timm.create_model(ref_name, pretrained=False, num_classes=get_spec(name).num_classes)
    else:
        import torchvision

        reference = torchvision.models.get_model(ref_name, weights=None, num_classes=get_spec(name).num_classes)
    ours = model.state_dict()
    try:
        reference.load_state_dict(ours, strict=True)
        return reference.eval(), "same weights in both graphs"
    except RuntimeError:
        pass
    # Keys differ: invert the family's remap (reference -> ours) by following each reference tensor
    # to the key it lands on; a remap that reshapes or merges tensors cannot be inverted this way.
    remap = get_entry(name).remap
    if remap is not None:
        theirs = reference.state_dict()
        landed = {id(t): key for key, t in remap(theirs).items()}
        inverse = {ref_key: landed.get(id(t)) for ref_key, t in theirs.items()}
        if all(inverse.values()):
            reference.load_state_dict({ref_key: ours[key] for ref_key, key in inverse.items()}, strict=True)
            return reference.eval(), "same weights in both graphs (through the family's remap)"
    return reference.eval(), "reference keeps its own random weights (keys differ): latency and nodes only"


def plain_export(reference: torch.nn.Module, path: Path, input_size: tuple[int, int, int]) -> Path:
    """What most users write: one ``torch.onnx.export`` call, opset 17, no simplifier."""
    with torch.no_grad():
        torch.onnx.export(reference, torch.randn(1, *input_size), str(path), opset_version=17,
                          input_names=["input"], output_names=["logits"], dynamo=False)
    return path


def ort_optimized_ops(path: Path, scratch: Path) -> Counter:
    """Op-type counts of the graph ONNX Runtime actually runs (after its session-time optimizations)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.optimized_model_filepath = str(scratch / f"{path.stem}.ort-optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return Counter(n.op_type for n in onnx.load(options.optimized_model_filepath, load_external_data=False).graph.node)


def node_count(path: Path) -> int:
    return len(onnx.load(str(path), load_external_data=False).graph.node)


def best_medians(runners: dict[str, OrtRunner], batch, timing: TimingOptions, rounds: int) -> dict[str, float]:
    """Time the runners in alternating rounds; keep each one's best median."""
    best = {name: float("inf") for name in runners}
    for _ in range(rounds):
        for name, runner in runners.items():
            best[name] = min(best[name], time_runner(runner, batch, timing).median_ms)
    return best


def measure(name: str, artifacts: Path, scratch: Path, timing: TimingOptions, rounds: int, method: str) -> Result:
    subject = subject_for(name)
    spec, export = subject.spec, ExportOptions(out=artifacts)
    fp32 = fp32_artifact(subject, export)
    int8 = quantized_artifact(subject, "int8", "cpu", export, method)
    reference, note = reference_with_our_weights(name, subject.model)
    plain = plain_export(reference, scratch / f"{name}.plain.onnx", spec.input_size)
    runners = {"plain": OrtRunner(plain, threads=timing.threads), "ours": OrtRunner(fp32.path, threads=timing.threads),
               "int8": OrtRunner(int8.path, threads=timing.threads)}
    batch = torch.randn(1, *spec.input_size).numpy()
    ms = best_medians(runners, batch, timing, rounds)
    return Result(name, note, node_count(plain), node_count(fp32.path), ms["plain"], ms["ours"], ms["int8"],
                  int8.manifest["onnx"]["bytes"], fp32.manifest["onnx"]["bytes"],
                  Drift(**int8.photo_drift),
                  ort_optimized_ops(plain, scratch) == ort_optimized_ops(fp32.path, scratch))


def markdown(results: list[Result], timing: TimingOptions, rounds: int, method: str, command: str) -> str:
    m = machine_info()
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    lines = [
        "# Benchmarks: bbexport against a plain `torch.onnx.export`",
        "",
        f"Measured {datetime.now(UTC).isoformat(timespec='seconds')} by `{command}`.",
        "",
        f"- Machine: {m['cpu']}, {m['usable_cores']} usable of {m['cores']} cores, GPU: {m['gpu'] or 'none'}; "
        f"{m['os']}; load average {m['load_average_1min']} at the end of the run (other processes competing "
        "for the cores make every ratio here less reliable)",
        f"- Libraries: {versions}",
        f"- Timing: ONNX Runtime CPU provider, batch 1, {timing.threads or torch.get_num_threads()} intra-op "
        f"threads; each graph warmed up then timed for ≥ {timing.min_iters} iterations and ≥ "
        f"{timing.min_seconds} s, in {rounds} alternating rounds; the best median of each graph is shown.",
        "- Plain export: the torchvision/timm reference with bbexport's weights, one `torch.onnx.export` call "
        "(TorchScript exporter, opset 17, no simplifier). bbexport: the same weights through export → onnxsim → "
        "validate. INT8: bbexport's CPU flavour (uint8 activations, int8 per-channel weights, Q/DQ for ONNX "
        f"Runtime), {method} calibration on the built-in calibration photos; drift on the disjoint held-out photos.",
        "- Weights are random and BN-recalibrated: the drift columns are a smoke test, not an accuracy claim.",
        "",
        f"| Model | Nodes plain → bbexport | Plain ms | bbexport ms | bbexport / plain (target ≤ {TARGET_RATIO}) | "
        f"INT8-cpu ms | FP32 / INT8 | INT8 cosine (budget ≥ {INT8_MIN_COSINE}) | INT8 top-1 | "
        "Size FP32 → INT8 | Weights |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        top1 = top1_text(r.int8_drift)
        lines.append(
            f"| {r.model} | {r.plain_nodes} → {r.ours_nodes} | {r.plain_ms:.2f} | {r.ours_ms:.2f} | {r.ratio:.2f}× | "
            f"{r.int8_ms:.2f} | {r.int8_speedup:.2f}× | {r.int8_drift.cosine:.4f} | {top1} | "
            f"{human_size(r.fp32_bytes)} → {human_size(r.int8_bytes)} | {r.weights_note} |")
    lines += ["", "## Against the targets", ""]
    for r in results:
        verdict = "meets" if r.ratio <= TARGET_RATIO else "misses"
        same = ("the graphs ONNX Runtime runs are the same op for op, so the latencies can only differ by noise"
                if r.same_after_ort else "the graphs ONNX Runtime runs differ")
        lines.append(f"- {r.model}: bbexport / plain latency {r.ratio:.2f}× ({verdict} ≤ {TARGET_RATIO}); "
                     f"{r.plain_nodes - r.ours_nodes} fewer nodes; {same}.")
    resnet50 = next((r for r in results if r.model == "resnet50"), None)
    if resnet50:
        in_budget = resnet50.int8_drift.cosine >= INT8_MIN_COSINE
        lines.append(f"- resnet50 INT8-cpu: {resnet50.int8_speedup:.2f}× FP32 ("
                     f"{'meets' if resnet50.int8_speedup >= TARGET_INT8 else 'misses'} ≥ {TARGET_INT8}), cosine "
                     f"{resnet50.int8_drift.cosine:.4f} ({'within' if in_budget else 'outside'} the INT8 budget).")
    lines += ["", "INT8 on this CPU: uint8 × int8 kernels on x86 without VNNI (AVX2's VPMADDUBSW) reach about 2× "
              "FP32 at best; every Q/DQ variant tried on ResNet-50 (per-tensor, QOperator, S8S8, U8U8) landed at "
              "0.88–2.06×. SiLU networks (EfficientNet) quantize their Sigmoid and Mul too and gain nothing here.",
              "", "ONNX Runtime applies its own graph optimizations (constant folding, Conv+BN and Conv+activation "
              "fusion) to both graphs at session creation, so much of what onnxsim removes it would also remove: "
              "the node counts differ more than the latencies.", ""]
    return "\n".join(lines)


@click.command()
@click.option("--models", default="resnet50,mobilenetv2_100,efficientnet_b0", show_default=True)
@click.option("--threads", type=click.IntRange(1), help="Intra-op threads (default: all cores).")
@click.option("--min-time", type=float, default=3.0, show_default=True)
@click.option("--min-iters", type=int, default=10, show_default=True)
@click.option("--rounds", type=click.IntRange(1), default=2, show_default=True)
@click.option("--int8-method", type=click.Choice(["entropy", "max", "percentile"]), default="entropy",
              show_default=True, help="INT8 calibration method.")
@click.option("--artifacts", type=click.Path(path_type=Path), default=Path("artifacts"), show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=ROOT / "docs" / "benchmarks.md", show_default=True)
def main(models: str, threads: int | None, min_time: float, min_iters: int, rounds: int, int8_method: str,
         artifacts: Path, out: Path) -> None:
    set_torch_threads(threads)
    timing = TimingOptions(min_iters=min_iters, min_seconds=min_time, threads=threads)
    results = []
    with tempfile.TemporaryDirectory(prefix="bbexport-bench-") as scratch:
        for name in models.split(","):
            click.echo(f"{name}: exporting, quantizing and timing ...", err=True)
            result = measure(name.strip(), artifacts, Path(scratch), timing, rounds, int8_method)
            click.echo(f"{name}: plain {result.plain_ms:.2f} ms, bbexport {result.ours_ms:.2f} ms "
                       f"({result.ratio:.2f}×), INT8-cpu {result.int8_ms:.2f} ms ({result.int8_speedup:.2f}× FP32)",
                       err=True)
            results.append(result)
    command = "python benchmarks/export_vs_plain.py " + " ".join(sys.argv[1:])
    text = markdown(results, timing, rounds, int8_method, command.strip())
    with staging_dir(Path(out).parent) as tmp:
        (tmp / Path(out).name).write_text(text)
        publish(tmp / Path(out).name, Path(out))
    click.echo(text)


if __name__ == "__main__":
    main()
