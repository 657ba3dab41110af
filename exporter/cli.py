"""The ``bbexport`` command line: a thin layer of click options over the pipeline functions."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .errors import BBExportError


class BBExportGroup(click.Group):
    """Turns a :class:`BBExportError` into one line on stderr and its exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except BBExportError as e:
            click.echo(f"bbexport: error: {e}", err=True)
            sys.exit(e.exit_code)


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


def _export_options(func):
    options = [
        click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset."),
        click.option("--img-size", type=int, help="Square input size (default: the variant's)."),
        click.option("--batch", type=click.IntRange(1, 4096), default=1, show_default=True,
                     help="Static batch size."),
        click.option("--dynamic-batch", is_flag=True, help="Export with a dynamic batch axis."),
        click.option("--weights", type=click.Path(path_type=Path), help="Checkpoint (.pth/.pt/.safetensors)."),
        click.option("--out", type=click.Path(path_type=Path), default=Path("artifacts"), show_default=True),
        click.option("--no-simplify", is_flag=True, help="Skip onnxsim."),
        click.option("--exporter", type=click.Choice(["torchscript", "dynamo"]), default="torchscript",
                     show_default=True),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed of random weights."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@cli.command("onnx")
@click.argument("model")
@_export_options
def onnx_command(model: str, opset: int, img_size: int | None, batch: int, dynamic_batch: bool,
                 weights: Path | None, out: Path, no_simplify: bool, exporter: str, seed: int) -> None:
    """Export MODEL to ONNX, simplify it and validate it against PyTorch."""
    from .console import print_stage, validation_table
    from .pipeline import ExportOptions, export_onnx

    options = ExportOptions(opset=opset, img_size=img_size, batch=batch, dynamic_batch=dynamic_batch,
                            weights=weights, out=out, simplify=not no_simplify, exporter=exporter, seed=seed)
    outcome = export_onnx(model, options, log=print_stage)
    click.echo(f"weights: {_weights_line(outcome.manifest['weights'])}")
    click.echo(validation_table(outcome.validation))


@cli.command("validate")
@click.argument("onnx_file", type=click.Path(path_type=Path))
@click.option("--model", "model_name", required=True, help="Registered variant the file was exported from.")
@click.option("--weights", type=click.Path(path_type=Path), help="Checkpoint the file was exported with.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of random weights.")
def validate_command(onnx_file: Path, model_name: str, weights: Path | None, seed: int) -> None:
    """Re-validate an existing ONNX file against the PyTorch model."""
    from .console import validation_table
    from .errors import ValidationFailed
    from .validate import validate_onnx_file

    report = validate_onnx_file(onnx_file, model_name, weights=weights, seed=seed)
    click.echo(validation_table(report))
    if not report.passed:
        raise ValidationFailed(f"{onnx_file} does not match PyTorch: " + "; ".join(report.failures))
    click.echo(f"validate ✓ {onnx_file}")


def _weights_line(weights: dict) -> str:
    from .weights import WeightsSource

    return WeightsSource(**weights).describe()


def main() -> None:
    cli(prog_name="bbexport")


if __name__ == "__main__":
    main()
