"""The command line: happy paths, and every bad input giving one line, exit code 2, no files."""

from __future__ import annotations

import errno
import json
import os
import signal
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


# ----------------------------------------------------------------------------- interrupted runs, full disks


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_run_leaves_nothing_and_says_so(tmp_path: Path, signum: int, code: int) -> None:
    """Interrupted after its first stage line, an export removes its staging folder, prints one line and
    exits 130 (SIGINT) or 143 (SIGTERM): a script can tell it from a missed budget (1) or bad input (2)."""
    command = [sys.executable, "-m", "exporter.cli", "onnx", "resnet18", "--out", str(tmp_path)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # As from a terminal: a job started in the background by a shell inherits SIGINT ignored, and Python keeps it so.
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)) as process:
        first = process.stdout.readline()
        assert first.startswith("export ✓"), first + process.stderr.read()
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=120)
    assert process.returncode == code, stderr
    assert stderr.strip().splitlines()[-1] == "bbexport: interrupted"
    assert not list(tmp_path.rglob(".staging-*")) and not list(tmp_path.rglob("*.onnx"))


def test_stale_staging_of_a_dead_run_is_removed(tmp_path: Path) -> None:
    """A run killed outright (SIGKILL, the OOM killer) leaves its staging folder; the next run in that
    folder removes it, and leaves a live run's alone."""
    from exporter.artifacts import staging_dir

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid now names no process
    stale = tmp_path / f".staging-{dead.pid}-abcd"
    live = tmp_path / f".staging-{os.getpid()}-efgh"
    for folder in (stale, live):
        folder.mkdir()
        (folder / "half.onnx").write_bytes(b"half")
    with staging_dir(tmp_path) as mine:
        assert mine.name.startswith(f".staging-{os.getpid()}-")
    assert not stale.exists() and live.exists() and not mine.exists()


def test_full_disk_is_one_line_and_publishes_nothing(tmp_path: Path, monkeypatch) -> None:
    from exporter import pipeline

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "resnet18" / "resnet18.json"))

    monkeypatch.setattr(pipeline, "write_json", no_space)
    result = run("onnx", "resnet18", "--img-size", "64", "--out", str(tmp_path))
    assert_one_line_error(result, "no space left on the device", "nothing was published")
    assert not list(tmp_path.rglob("*.onnx")) and not list(tmp_path.rglob(".staging-*"))


def test_calibration_errors_come_before_any_export(tmp_path: Path) -> None:
    """An empty calibration folder is refused before the FP32 model is exported."""
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    result = run("quantize", "resnet18", "--precision", "int8", "--calib", str(empty), "--out", str(out))
    assert_one_line_error(result, "no images")
    assert not list(out.rglob("*.onnx"))
