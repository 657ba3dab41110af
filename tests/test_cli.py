"""The command line: happy paths, and every bad input giving one line, exit code 2, no files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from exporter.cli import cli
from model_defs import create_model


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def assert_one_line_error(result, *fragments: str, exit_code: int = 2) -> None:
    assert result.exit_code == exit_code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bbexport: error:"), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def leftovers(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*")) if out.exists() else []


def test_list_shows_families() -> None:
    result = run("list", "resnet*")
    assert result.exit_code == 0
    assert "resnet50" in result.output and "25.56M" in result.output and "4.089" in result.output


def test_list_by_family() -> None:
    result = run("list", "--family", "resnet")
    assert result.exit_code == 0
    assert "resnext50_32x4d" not in result.output and "resnet18" in result.output


def test_onnx_writes_model_and_manifest(tmp_path: Path) -> None:
    result = run("onnx", "resnet18", "--opset", "17", "--img-size", "64", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "onnx ✓" in result.output and "photos" in result.output
    manifest = json.loads((tmp_path / "resnet18" / "resnet18.json").read_text())
    assert manifest["onnx"]["opset"] == 17 and manifest["validation"]["passed"]
    assert manifest["weights"]["kind"] == "random" and manifest["weights"]["bn_recalibrated"]
    assert sorted(p.name for p in leftovers(tmp_path)) == ["resnet18", "resnet18.json", "resnet18.onnx"]


def test_validate_existing_file(tmp_path: Path) -> None:
    assert run("onnx", "resnet18", "--img-size", "64", "--out", str(tmp_path)).exit_code == 0
    result = run("validate", str(tmp_path / "resnet18" / "resnet18.onnx"), "--model", "resnet18")
    assert result.exit_code == 0, result.output
    # The same file against another seed's weights is not the same model: it must fail.
    result = run("validate", str(tmp_path / "resnet18" / "resnet18.onnx"), "--model", "resnet18", "--seed", "1")
    assert_one_line_error(result, "does not match PyTorch", exit_code=1)


def test_unknown_model_suggests(tmp_path: Path) -> None:
    assert_one_line_error(run("onnx", "resnet5", "--out", str(tmp_path)), "unknown model", "resnet50")
    assert leftovers(tmp_path) == []


def test_opset_out_of_range(tmp_path: Path) -> None:
    assert_one_line_error(run("onnx", "resnet18", "--opset", "7", "--out", str(tmp_path)), "opset")
    assert leftovers(tmp_path) == []


def test_bad_image_size(tmp_path: Path) -> None:
    assert_one_line_error(run("onnx", "resnet18", "--img-size", "100", "--out", str(tmp_path)),
                          "multiple of 32")
    assert leftovers(tmp_path) == []


def test_unreadable_weights(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"definitely not a checkpoint")
    out = tmp_path / "out"
    assert_one_line_error(run("onnx", "resnet18", "--weights", str(bad), "--out", str(out)), "cannot read weights")
    assert leftovers(out) == []


def test_mismatched_weights(tmp_path: Path) -> None:
    ckpt = tmp_path / "resnet34.pth"
    torch.save(create_model("resnet34").state_dict(), ckpt)
    out = tmp_path / "out"
    result = run("onnx", "resnet18", "--weights", str(ckpt), "--out", str(out))
    assert_one_line_error(result, "do not fit resnet18", "unexpected", "layer1.2")
    assert leftovers(out) == []


def test_missing_weights_file(tmp_path: Path) -> None:
    assert_one_line_error(run("onnx", "resnet18", "--weights", str(tmp_path / "nope.pth")), "not found")


def test_unwritable_output(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert_one_line_error(run("onnx", "resnet18", "--out", str(blocker / "sub")), "cannot write to output folder")


def test_validate_rejects_non_onnx(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\x01garbage")
    assert_one_line_error(run("validate", str(junk), "--model", "resnet18"), "not an ONNX model")


@pytest.mark.slow
def test_console_script_prints_no_traceback(tmp_path: Path) -> None:
    """The installed entry point, as a user runs it: one line on stderr, exit 2."""
    proc = subprocess.run([sys.executable, "-m", "exporter.cli", "onnx", "no_such_net", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "Traceback" not in proc.stderr and "unknown model 'no_such_net'" in proc.stderr
