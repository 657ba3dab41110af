"""The ``bbexport`` command line: a thin layer of click options over the pipeline functions."""

from __future__ import annotations

import errno
import signal
import sys
from pathlib import Path

import click

from bbruntime.errors import EXIT_INTERRUPTED, BBExportError, Interrupted

from .budget import PRECISIONS
from .targets import TARGETS


def _raise_interrupted(signum, _frame) -> None:
    raise Interrupted(signum)


class BBExportGroup(click.Group):
    """Turns a :class:`BBExportError` into one line on stderr and its exit code; an interruption into
    ``bbexport: interrupted`` and 130/143; a full disk into one line and exit 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except BBExportError as e:
            click.echo(f"bbexport: error: {e}", err=True)
            sys.exit(e.exit_code)
        except (KeyboardInterrupt, Interrupted) as e:
            click.echo("bbexport: interrupted", err=True)
            sys.exit(getattr(e, "exit_code", EXIT_INTERRUPTED[signal.SIGINT]))
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise  # not the user's to fix: a bug keeps its traceback
            where = f" writing {e.filename}" if e.filename else ""
            click.echo(f"bbexport: error: no space left on the device{where}; nothing was published", err=True)
            sys.exit(2)


@click.group(cls=BBExportGroup)
@click.version_option(package_name="bbexport")
def cli() -> None:
    """Vision backbones to validated ONNX, FP16/INT8 and TensorRT engines."""


@cli.command("list")
@click.argument("pattern", default="*")
@click.option("--family", help="Only this family (see the Family column).")
def list_command(pattern: str, family: str | None) -> None:
    """Registered variants matching PATTERN (shell-style, e.g. 'resnet*')."""
    from model_defs import get_spec, list_families, list_models, model_stats

    from .console import table

    if family and family.lower() not in list_families():
        raise BBExportError(f"unknown family {family!r}; families: {', '.join(list_families())}")
    names = list_models(pattern, family=family)
    if not names:
        raise BBExportError(f"no model matches {pattern!r}" + (f" in family {family}" if family else ""))
    rows = []
    for name in names:
        spec, stats = get_spec(name), model_stats(name)
        rows.append((name, spec.family, f"{stats.params / 1e6:.2f}M", f"{stats.gmacs:.3f}",
                     "x".join(map(str, spec.input_size[1:])), ",".join(spec.aliases)))
    click.echo(table(("Model", "Family", "Params", "GMACs", "Input", "Aliases"), rows))


BUDGET_OPTION = click.option("--budget", type=click.Path(path_type=Path, dir_okay=False),
                             help="Drift budget CSV (default: exporter/drift_budget.csv).")
EXPORT_FIELDS = ("opset", "img_size", "batch", "dynamic_batch", "weights", "out", "exporter", "seed", "budget",
                 "live_branches")
BRANCHES_OPTION = click.option(
    "--live-branches/--zero-branches", default=None,
    help="Random weights: revive the residual branches' zero-initialised norms before BN re-estimation, so "
         "drift exercises every block, or keep them as initialised (default: exporter.weights.LIVE_BRANCHES).")


def _export_option_list(with_out: bool = True) -> list:
    """The ``bbexport onnx`` options every command that exports takes (``bundle`` has its own ``--out``)."""
    return [
        click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset."),
        click.option("--img-size", type=int, help="Square input size (default: the variant's)."),
        click.option("--batch", type=click.IntRange(1, 4096), default=1, show_default=True,
                     help="Static batch size."),
        click.option("--dynamic-batch", is_flag=True, help="Export with a dynamic batch axis."),
        click.option("--weights", type=click.Path(path_type=Path), help="Checkpoint (.pth/.pt/.safetensors)."),
        *([click.option("--out", type=click.Path(path_type=Path), default=Path("artifacts"), show_default=True)]
          if with_out else []),
        click.option("--no-simplify", is_flag=True, help="Skip onnxsim."),
        click.option("--exporter", type=click.Choice(["torchscript", "dynamo"]), default="torchscript",
                     show_default=True),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed of random weights."),
        BRANCHES_OPTION,
        BUDGET_OPTION,
    ]


def _applied(options: list, func):
    for option in reversed(options):
        func = option(func)
    return func


def _export_options(func):
    return _applied(_export_option_list(), func)


def _export_options_but_out(func):
    return _applied(_export_option_list(with_out=False), func)


def _quantization_options(func):
    """How FP16/INT8 ONNX files are made: ``bbexport quantize``, ``trt`` and ``bundle`` take the same."""
    return _applied([
        click.option("--calib", type=click.Path(path_type=Path),
                     help="Calibration images (folder, recursive) or tensors (.npy/.npz); default: built-in photos."),
        click.option("--calib-limit", type=click.IntRange(1), help="Calibrate on a seeded subset of N samples."),
        click.option("--no-calib-augment", is_flag=True,
                     help="Calibrate on a folder's images as they are (default: a folder of fewer than 64 photos "
                          "also gives seeded random crops and mirrors of each, up to about 64 samples)."),
        click.option("--method", type=click.Choice(["percentile", "entropy", "max", "mse"]),
                     help="INT8 calibration method (default: percentile for a checkpoint, entropy for random weights)."),
        click.option("--exclude", multiple=True, metavar="PAT",
                     help="Keep nodes in float: a node name, a glob over names or an op type (repeatable)."),
        click.option("--auto-exclude", callback=_search_target, metavar="[cosine=|top1=]X",
                     help="Keep the most sensitive layers in float until the INT8 model reaches X on the calibration "
                          "samples: a cosine to FP32 (0.995, cosine=0.995) or a top-1 agreement (top1=0.95)."),
        click.option("--fallback", type=click.Choice(["fp16", "fp32"]), default="fp16", show_default=True,
                     help="INT8 trt flavour: the precision of the layers kept out of INT8 (Casts around them)."),
        click.option("--no-bias-correction", is_flag=True,
                     help="INT8: keep the biases as trained (default: correct the mean shift quantization leaves in "
                          "each layer's output, measured on the calibration data)."),
        click.option("--adaround", is_flag=True,
                     help="INT8: learn each weight's rounding (up or down) so every layer reproduces its FP32 output "
                          "on calibration samples (AdaRound; minutes: real EfficientNet-Lite2 about 15 on one core)."),
        click.option("--quantize-all", is_flag=True, help="INT8: quantize the layers the variant keeps in float "
                                                          "by default (its spec's int8_keep_float, and int8_keep_float_cpu "
                                                          "for the cpu flavour)."),
    ], func)


def _search_target(ctx, param, value):
    """``--auto-exclude``'s value as (metric, target); a bad one is a one-line error (exit 2)."""
    if value is None:
        return None
    from .quantize import parse_search_target

    return parse_search_target(value)


def _export_from(options: dict):
    from .pipeline import ExportOptions

    chosen = {k: options[k] for k in EXPORT_FIELDS if options[k] is not None or k != "live_branches"}
    return ExportOptions(**chosen, simplify=not options["no_simplify"])


def _quantize_from(precision: str, flavour: str, options: dict, reduce_range: bool | None = None):
    from .quantize import QuantizeOptions

    metric, target = options["auto_exclude"] or ("cosine", None)
    return QuantizeOptions(precision=precision, flavour=flavour, method=options["method"], calib=options["calib"],
                           calib_limit=options["calib_limit"], calib_augment=not options["no_calib_augment"],
                           exclude=options["exclude"], auto_exclude=target,
                           auto_exclude_metric=metric, spec_exclusions=not options["quantize_all"],
                           bias_correction=not options["no_bias_correction"], fallback=options["fallback"],
                           learned_rounding=options["adaround"], reduce_range=reduce_range)


@cli.command("onnx")
@click.argument("model")
@_export_options
def onnx_command(model: str, **options) -> None:
    """Export MODEL to ONNX, simplify it and validate it against PyTorch.

    MODEL is a registered variant (`bbexport list`), or timm:NAME / torchvision:NAME for any network those
    libraries build."""
    from .console import print_stage, validation_table
    from .pipeline import export_onnx

    outcome = export_onnx(model, _export_from(options), log=print_stage)
    click.echo(f"weights: {_weights_line(outcome.manifest['weights'])}")
    click.echo(validation_table(outcome.validation))


@cli.command("validate")
@click.argument("onnx_file", type=click.Path(path_type=Path))
@click.option("--model", "model_name", required=True, help="Registered variant the file was exported from.")
@click.option("--weights", type=click.Path(path_type=Path), help="Checkpoint the file was exported with.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of random weights.")
@BUDGET_OPTION
def validate_command(onnx_file: Path, model_name: str, weights: Path | None, seed: int, budget: Path | None) -> None:
    """Re-validate an existing ONNX file against the PyTorch model."""
    from bbruntime.errors import ValidationFailed

    from .console import validation_table
    from .validate import validate_onnx_file

    report = validate_onnx_file(onnx_file, model_name, weights=weights, seed=seed, budget_file=budget)
    click.echo(validation_table(report))
    if not report.passed:
        raise ValidationFailed(f"{onnx_file} does not match PyTorch: " + "; ".join(report.failures))
    click.echo(f"validate ✓ {onnx_file}")


def _csv_list(kind: type = str):
    """A click callback turning ``a,b,c`` into a tuple of ``kind``."""

    def parse(ctx, param, value):
        if value is None:
            return None
        try:
            return tuple(kind(item.strip()) for item in value.split(",") if item.strip())
        except ValueError as e:
            raise click.BadParameter(f"expected a comma-separated list of {kind.__name__}: {value!r}") from e

    return parse


@cli.command("report")
@click.option("--family", help="Every variant of this family.")
@click.option("--models", callback=_csv_list(), help="Comma-separated variants, e.g. resnet18,ghostnet_100.")
@click.option("--all", "all_models", is_flag=True, help="Every registered variant.")
@click.option("--precisions", default="fp32,fp16,int8", show_default=True, callback=_csv_list())
@click.option("--backends", default="torch,ort,trt", show_default=True, callback=_csv_list(),
              help="Backends missing here (TensorRT without a GPU) are listed as not measured.")
@click.option("--batch", "batches", default="1", show_default=True, callback=_csv_list(int),
              help="Comma-separated batch sizes.")
@click.option("--img-size", type=int, help="Square input size for every model (default: each variant's).")
@click.option("--threads", type=click.IntRange(1), help="Intra-op threads of torch and ONNX Runtime.")
@click.option("--min-time", type=click.FloatRange(0), default=3.0, show_default=True,
              help="Seconds each row is measured for, at least.")
@click.option("--min-iters", type=click.IntRange(1), default=10, show_default=True,
              help="Iterations each row is measured for, at least.")
@click.option("--weights", "weights", multiple=True, metavar="MODEL=PATH",
              help="A checkpoint for one model (repeatable); other models get random weights.")
@BUDGET_OPTION
@click.option("--artifacts", type=click.Path(path_type=Path), default=Path("artifacts"), show_default=True,
              help="Where ONNX files are made, and reused while their inputs are unchanged.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("reports"), show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of random weights.")
@BRANCHES_OPTION
@click.option("--int8-method", type=click.Choice(["percentile", "entropy", "max", "mse"]),
              help="INT8 calibration method (default: percentile for a checkpoint, entropy for random weights).")
@click.option("--int8-flavours", callback=_csv_list(), metavar="cpu,trt",
              help="INT8 flavours ONNX Runtime runs (default: cpu; add trt for the TensorRT graph's drift on "
                   "this CPU, Q/DQ run as written).")
@click.option("--cuda-graph", is_flag=True, help="TensorRT rows replay a captured CUDA graph.")
@click.option("--strict", is_flag=True, help="Exit non-zero when any row misses its drift budget.")
def report_command(family, models, all_models, precisions, backends, batches, img_size, threads, min_time,
                   min_iters, weights, budget, artifacts, out, seed, live_branches, int8_method, int8_flavours,
                   cuda_graph, strict) -> None:
    """Drift and throughput per family, precision and backend: report.{md,json,csv,html} in OUT."""
    from bbruntime.timing import TimingOptions
    from model_defs import list_families, list_models, resolve_name

    from . import report as runner
    from .foreign import is_foreign

    if sum((family is not None, models is not None, all_models)) != 1:
        raise BBExportError("choose exactly one of --family F, --models a,b,c or --all")
    if family is not None and family.lower() not in list_families():
        raise BBExportError(f"unknown family {family!r}; families: {', '.join(list_families())}")
    def canonical(name: str) -> str:
        return name if is_foreign(name) else resolve_name(name)

    names = (list_models() if all_models else list_models(family=family) if family
             else [canonical(m) for m in models])
    checkpoints = {}
    for item in weights:
        model, sep, path = item.partition("=")
        if not sep or not path:
            raise BBExportError(f"--weights takes MODEL=PATH; got {item!r}")
        checkpoints[canonical(model)] = Path(path)
    timing = TimingOptions(min_iters=min_iters, min_seconds=min_time, threads=threads)
    options = runner.ReportOptions(precisions=precisions, backends=backends, batches=batches, img_size=img_size,
                                   timing=timing, artifacts=artifacts, weights=checkpoints, seed=seed,
                                   **({} if live_branches is None else {"live_branches": live_branches}),
                                   budget_file=budget, cuda_graph=cuda_graph,
                                   int8_method=int8_method, int8_flavours=int8_flavours)
    with runner.live_progress(names) as progress:
        report = runner.run_report(names, options, progress=progress)
    paths = runner.write_report(report, out)
    for line in runner.console_summary(report):
        click.echo(line)
    click.echo(f"report: {paths['html'].resolve()}")
    if report.interrupted:
        click.echo(f"bbexport: interrupted; the {len(report.rows)} rows finished are in {paths['json'].parent}",
                   err=True)
        sys.exit(report.interrupted)
    if report.failures:
        raise click.exceptions.Exit(1)
    if strict and report.budget_misses:
        raise click.exceptions.Exit(1)


@cli.command("trt")
@click.argument("model")
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True)
@click.option("--workspace", "workspace_gb", type=click.FloatRange(0, min_open=True), default=4.0,
              show_default=True, help="Builder workspace memory pool, GB.")
@click.option("--min-batch", type=int, help="Smallest batch of the engine's profile (needs --dynamic-batch).")
@click.option("--opt-batch", type=int, help="Batch TensorRT tunes for (needs --dynamic-batch).")
@click.option("--max-batch", type=int, help="Largest batch of the engine's profile (needs --dynamic-batch).")
@click.option("--timing-cache", type=click.Path(path_type=Path), help="Timing cache to reuse and update.")
@click.option("--int8-mode", type=click.Choice(["explicit", "implicit"]), default="explicit", show_default=True,
              help="explicit: build the Q/DQ ONNX; implicit (TensorRT 10.x only): calibrate in the builder.")
@_quantization_options
@_export_options
def trt_command(model: str, precision: str, workspace_gb: float, min_batch: int | None, opt_batch: int | None,
                max_batch: int | None, timing_cache: Path | None, int8_mode: str, **options) -> None:
    """Make MODEL's ONNX-side products for PRECISION, then build and validate a TensorRT engine.

    Exits 3 with one line naming what is missing where TensorRT or a CUDA device is not available.
    """
    from .console import print_stage, validation_table
    from .trt import TrtOptions, trt_from_model

    trt_options = TrtOptions(precision=precision, workspace_gb=workspace_gb, min_batch=min_batch,
                             opt_batch=opt_batch, max_batch=max_batch, timing_cache=timing_cache,
                             int8_mode=int8_mode, quantization=_quantize_from(precision, "trt", options))
    outcome = trt_from_model(model, trt_options, _export_from(options), log=print_stage)
    click.echo(f"weights: {_weights_line(outcome.sidecar['weights'])}")
    click.echo(validation_table(outcome.validation))


@cli.command("quantize")
@click.argument("model")
@click.option("--precision", type=click.Choice(PRECISIONS[1:]), required=True)
@click.option("--flavour", type=click.Choice(["trt", "cpu"]), default="trt", show_default=True,
              help="INT8: trt = symmetric Q/DQ for TensorRT; cpu = uint8/int8 Q/DQ for ONNX Runtime's CPU kernels.")
@click.option("--reduce-range/--full-range", default=None,
              help="INT8 cpu flavour: 7-bit weights, for x86 CPUs without VNNI whose uint8 x int8 kernels "
                   "saturate (default: decided for this machine).")
@_quantization_options
@_export_options
def quantize_command(model: str, precision: str, flavour: str, reduce_range: bool | None, **options) -> None:
    """Make MODEL's FP16 or INT8 ONNX and hold its drift from FP32 PyTorch to the budget."""
    from .console import print_stage, table
    from .quantize import DRIFT_HEADERS, drift_rows, quantize_model

    outcome = quantize_model(model, _quantize_from(precision, flavour, options, reduce_range), _export_from(options),
                             log=print_stage)
    click.echo(f"weights: {_weights_line(outcome.manifest['weights'])}")
    if precision == "int8":
        click.echo(f"int8 {flavour}: {outcome.manifest['details']['weight_bits']}-bit weights, measured with "
                   f"{outcome.manifest['details']['measured_with']}")
    click.echo(table(DRIFT_HEADERS, drift_rows(outcome.validation)))


@cli.command("bundle")
@click.argument("model")
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True)
@click.option("--flavour", type=click.Choice(["cpu", "trt"]),
              help="INT8: cpu (ONNX Runtime's integer kernels) or trt (TensorRT's Q/DQ graph); default: trt for "
                   "--target jetson, else cpu.")
@click.option("--target", type=click.Choice(TARGETS),
              help="The device: decides INT8 cpu's weight range (7-bit on x86-avx2, 8-bit on x86-vnni, arm and "
                   "jetson); default: this machine.")
@click.option("--engine", type=click.Path(path_type=Path),
              help="A TensorRT engine built by bbexport trt (with its .json sidecar) to ship beside the ONNX.")
@click.option("--artifacts", type=click.Path(path_type=Path), default=Path("artifacts"), show_default=True,
              help="Where the ONNX stages write their files, and reuse them while their inputs are unchanged.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("bundles"), show_default=True,
              help="Writes OUT/<model>-<precision>/.")
@_quantization_options
@_export_options_but_out
def bundle_command(model: str, precision: str, flavour: str | None, target: str | None, engine: Path | None,
                   artifacts: Path, out: Path, **options) -> None:
    """A folder that deploys MODEL to an edge device: the validated ONNX (and an engine), the deployment
    contract bbexport.json, golden inputs with their FP32 logits, labels, and infer.py with the runtime
    code that measured the drift here."""
    from .bundle import BundleOptions, bundle_model
    from .console import print_stage

    bundle = BundleOptions(precision=precision, flavour=flavour, target=target, engine=engine, out=out,
                           quantization=_quantize_from(precision, flavour or "cpu", options, reduce_range=False))
    outcome = bundle_model(model, bundle, _export_from({**options, "out": artifacts}), log=print_stage)
    contract = outcome.contract
    click.echo(f"weights: {contract['weights_source']}")
    click.echo(f"target {contract['target']}: {contract['precision']}"
               + (f" {contract['flavour']}, {contract['int8_weight_bits']}-bit weights" if contract["flavour"] else ""))
    click.echo(f"on the device: python {outcome.folder / 'infer.py'} --verify")


def _weights_line(weights: dict) -> str:
    from .weights import WeightsSource

    return WeightsSource(**weights).describe()


def main() -> None:
    signal.signal(signal.SIGTERM, _raise_interrupted)
    cli(prog_name="bbexport")


if __name__ == "__main__":
    main()
