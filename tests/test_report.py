"""The report runner: real files parsed back, artifact reuse, failures recorded, the drift budget."""

from __future__ import annotations

import csv
import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from bbruntime.errors import BBExportError
from bbruntime.timing import TimingOptions
from exporter import report as runner
from exporter.cli import cli
from exporter.pipeline import ExportOptions, export_inputs
from exporter.report import run as report_run
from exporter.reuse import reusable
from exporter.subject import subject_for
from model_defs import definition_sha256, get_spec, spec_with_size

MODELS = ("resnet18", "ghostnet_050")
PRECISIONS = ("fp32", "int8")
TINY_TIMING = TimingOptions(min_iters=2, min_seconds=0.0, warmup_iters=1, warmup_seconds=0.0)


def manifests(artifacts: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in sorted(artifacts.rglob("*.json"))}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    # "max" calibration: entropy's per-tensor KL search takes minutes on GhostNet's many tensors.
    options = runner.ReportOptions(precisions=PRECISIONS, backends=("torch", "ort"), img_size=64,
                                   timing=TINY_TIMING, artifacts=root / "artifacts", int8_method="max")
    report = runner.run_report(MODELS, options)
    paths = runner.write_report(report, root / "out")
    return options, report, paths, manifests(options.artifacts)


def test_rows_cover_every_model_precision_and_backend(first_run):
    _, report, _, _ = first_run
    assert not report.failures, report.failures
    measured = {(r.model, r.precision, r.backend) for r in report.rows}
    for model in MODELS:
        assert (model, "fp32", "torch") in measured
        for precision in PRECISIONS:
            assert (model, precision, "ort") in measured
    for row in report.rows:
        assert row.weights.startswith("random (seed 0, BN-recalibrated")
        assert row.median_ms > 0 and row.iterations >= 2
        assert row.speedup_vs_eager is not None and row.speedup_vs_fp32 is not None
        if row.backend == "ort":
            assert 0.0 < row.cosine <= 1.0 + 1e-9 and row.budget_pass is not None
            assert (row.budget_pass is False) == bool(row.budget_misses)
            assert row.artifact_bytes > 0 and Path(row.artifact).is_file()
        if row.precision == "int8":
            assert row.flavour == "cpu"


def test_json_is_the_documented_schema(first_run):
    _, report, paths, _ = first_run
    data = json.loads(paths["json"].read_text())
    assert data["schema"] == "bbexport.report/1"
    assert set(data) >= {"created", "note", "machine", "settings", "rows", "summaries", "failures", "skipped"}
    assert data["machine"]["cores"] >= 1 and data["machine"]["cpu"]
    assert {"torch", "onnxruntime", "onnx"} <= set(data["machine"]["versions"])
    assert data["settings"]["timing"]["min_iters"] == 2 and data["settings"]["timing"]["threads"] >= 1
    assert len(data["rows"]) == len(report.rows)
    assert all(list(row) == list(runner.ROW_FIELDS) for row in data["rows"])
    assert [s["family"] for s in data["summaries"]] == sorted({get_spec(m).family for m in MODELS})
    assert "not an accuracy claim" in data["note"]


def test_csv_has_the_row_columns(first_run):
    _, report, paths, _ = first_run
    with paths["csv"].open() as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert tuple(reader.fieldnames) == runner.ROW_FIELDS
    assert len(rows) == len(report.rows)
    assert {r["model"] for r in rows} == set(MODELS)
    assert all(float(r["median_ms"]) > 0 for r in rows)


def test_html_is_self_contained_with_plots_and_tables(first_run):
    _, report, paths, _ = first_run
    text = paths["html"].read_text()
    assert text.startswith("<!doctype html>")
    assert len(re.findall(r"<svg[\s>]", text)) == 3  # drift vs speedup, throughput, size vs latency
    assert "Drift against speedup" in text and "Throughput" in text and "size against median latency" in text
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text), "the report must not load anything"
    assert "not an accuracy claim" in text
    for model in MODELS:
        assert model in text
    assert text.count("<table>") == len({get_spec(m).family for m in MODELS})
    assert "Summary:" in paths["md"].read_text()


def test_second_run_reuses_every_artifact(first_run):
    options, _, _, before = first_run
    report = runner.run_report(MODELS, options)
    assert not report.failures
    assert manifests(options.artifacts) == before  # nothing re-exported or re-quantized
    assert all(r.reused for r in report.rows if r.backend != "torch")


def test_an_edited_model_definition_is_exported_again(first_run, tmp_path):
    options, _, _, _ = first_run
    export = ExportOptions(img_size=64, out=tmp_path)
    shutil.copytree(options.artifacts / "resnet18", tmp_path / "resnet18")
    inputs = export_inputs(subject_for("resnet18", 64), export)
    manifest_path = tmp_path / "resnet18" / "resnet18.json"
    assert reusable(manifest_path, inputs) is not None
    manifest = json.loads(manifest_path.read_text())
    assert manifest["inputs"]["definition"] == definition_sha256("resnet18")
    edited = {**manifest, "inputs": {**manifest["inputs"], "definition": "0" * 64}}  # as if resnet.py changed
    manifest_path.write_text(json.dumps(edited))
    assert reusable(manifest_path, inputs) is None


def test_changed_inputs_invalidate_the_manifest(first_run, tmp_path):
    options, _, _, _ = first_run
    spec = spec_with_size(get_spec("resnet18"), 64)
    manifest = options.artifacts / "resnet18" / "resnet18.int8-cpu.json"
    fresh = json.loads(manifest.read_text())["inputs"]
    assert fresh["model"] == json.loads(json.dumps(spec.to_dict()))
    assert reusable(manifest, fresh) is not None
    assert reusable(manifest, {**fresh, "weights": {"kind": "random", "seed": 1}}) is None
    assert reusable(manifest, {**fresh, "source": "0" * 64}) is None
    assert reusable(manifest, {**fresh, "model": replace(spec, crop_pct=1.0).to_dict()}) is None
    assert reusable(manifest, {**fresh, "calibration": "0" * 64}) is None
    # A changed file on disk no longer has the recorded hash.
    copy = tmp_path / "resnet18"
    copy.mkdir()
    (copy / manifest.name).write_text(manifest.read_text())
    (copy / "resnet18.int8-cpu.onnx").write_bytes(b"not the quantized graph")
    assert reusable(copy / manifest.name, fresh) is None


def test_failing_model_is_recorded_and_the_run_goes_on(first_run, monkeypatch):
    options, _, _, _ = first_run
    real = report_run.fp32_artifact

    def broken_for_ghostnet(subject, export, log=None):
        if subject.name == "ghostnet_050":
            raise RuntimeError("simulated exporter crash\nwith a second line")
        return real(subject, export, log)

    monkeypatch.setattr(report_run, "fp32_artifact", broken_for_ghostnet)
    report = runner.run_report(MODELS, replace(options, precisions=("fp32",)))
    assert [(f.model, f.stage, f.error) for f in report.failures] == [
        ("ghostnet_050", "export fp32", "RuntimeError: simulated exporter crash")]
    assert "Traceback" in report.failures[0].traceback
    assert {r.model for r in report.rows} == {"resnet18"}
    summary = {s["family"]: s for s in report.summaries()}["ghostnet"]
    assert summary["failures"] == 1
    assert "FAILED" in runner.report_markdown(report)


def test_cli_exit_codes_for_failures_and_strict_budgets(first_run, tmp_path):
    options, _, _, _ = first_run
    common = ["report", "--models", "resnet18", "--precisions", "fp32", "--backends", "torch,ort",
              "--img-size", "64", "--min-iters", "1", "--min-time", "0", "--artifacts", str(options.artifacts)]
    result = CliRunner().invoke(cli, [*common, "--out", str(tmp_path / "ok")])
    assert result.exit_code == 0, result.output
    assert "report.html" in result.output and (tmp_path / "ok" / "report.html").is_file()

    impossible = tmp_path / "budget.csv"
    impossible.write_text("match,precision,max_rel_abs,min_cosine,min_top1\n*,fp32,,1.5,\n")
    args = [*common, "--out", str(tmp_path / "strict"), "--budget", str(impossible)]
    assert CliRunner().invoke(cli, args).exit_code == 0  # misses are reported, not fatal by default
    strict = CliRunner().invoke(cli, [*args, "--strict"])
    assert strict.exit_code == 1 and "budget miss: resnet18 fp32 on ort" in strict.output

    assert CliRunner().invoke(cli, ["report", "--models", "resnet18", "--all"]).exit_code == 2


def test_trt_flavour_drift_on_ort_where_asked(first_run, tmp_path):
    """``--int8-flavours cpu,trt``: ONNX Runtime also runs the TensorRT graph, Q/DQ as written, next
    to the cpu flavour; the FP32 and cpu-flavour artifacts of the first run are reused."""
    options, _, _, _ = first_run
    both = replace(options, int8_flavours=("cpu", "trt"))
    report = runner.run_report(["resnet18"], both)
    assert not report.failures, report.failures
    int8 = {r.flavour: r for r in report.rows if r.precision == "int8"}
    assert set(int8) == {"cpu", "trt"} and {r.backend for r in int8.values()} == {"ort"}
    assert int8["cpu"].reused and not int8["trt"].reused
    trt_manifest = json.loads(Path(int8["trt"].artifact).with_suffix(".json").read_text())
    assert trt_manifest["details"]["measured_with"].startswith("Q/DQ run as written")
    assert int8["trt"].cosine == trt_manifest["validation"]["drift"]["photos"]["cosine"]
    assert any("int8-trt on ort" in line for line in runner.machine_lines(report))
    assert report.settings["int8_flavours"] == {"ort": ["cpu", "trt"], "trt": ["trt"]}
    with pytest.raises(BBExportError, match="unknown INT8 flavour"):
        replace(options, int8_flavours=("fp4",))
