"""Artifact files: all-or-nothing writes, content hashes, and human-readable sizes."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bbruntime.errors import OutputPathError


def ensure_writable_dir(path: Path) -> Path:
    """Create ``path`` if needed and prove it is writable, or raise a one-line error."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".bbexport-probe-"):
            pass
    except OSError as e:
        raise OutputPathError(f"cannot write to output folder {path}: {e.strerror or e}") from e
    return path


def check_writable(path: Path) -> None:
    """Fail in one line unless ``path`` is a folder that exists and is writable or could be made in a
    writable one; creates nothing (the check runs before any work, and bad input leaves no trace)."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputPathError(f"cannot write to output folder {path}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputPathError(f"cannot write to output folder {path}: {existing} is not writable")


@contextlib.contextmanager
def staging_dir(parent: Path) -> Iterator[Path]:
    """A temporary folder inside ``parent`` (same file system, so renames are atomic); removed
    whatever happens.

    Stages write their files here and :func:`publish` renames them into place only once every
    check has passed, so a failed run leaves nothing behind.
    """
    ensure_writable_dir(parent)
    remove_stale_staging(parent)
    tmp = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=parent))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


STAGING_PREFIX = ".staging-"  # then the owner's pid: a folder whose owner is gone can be told apart


def remove_stale_staging(parent: Path) -> list[Path]:
    """Remove the staging folders in ``parent`` whose owner process no longer exists (a run killed
    with SIGKILL or by the OOM killer never reaches its cleanup). Live runs' folders stay."""
    removed = []
    for folder in parent.glob(f"{STAGING_PREFIX}*"):
        owner = folder.name[len(STAGING_PREFIX):].split("-", 1)[0]
        if folder.is_dir() and owner.isdigit() and not _process_exists(int(owner)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def publish(staged: Path, final: Path) -> Path:
    """Atomically move a staged file (and its ONNX external-data sidecar, if any) into place."""
    final.parent.mkdir(parents=True, exist_ok=True)
    sidecar = sidecar_of(staged)
    if sidecar.exists():
        os.chmod(sidecar, 0o644)  # onnx writes external data owner-only
        os.replace(sidecar, sidecar_of(final))
    os.replace(staged, final)
    return final


def publish_folder(staged: Path, final: Path) -> Path:
    """Move a staged folder into place. One already at ``final`` is first moved aside into the staged
    folder's parent (a staging folder, removed with it): readers see the old folder or the new one, never a
    half-written one (between the two renames, for an instant, neither)."""
    if final.exists():
        os.replace(final, staged.parent / f".replaced-{final.name}")
    os.replace(staged, final)
    return final


def write_bytes(path: Path, data) -> Path:
    """Write a bytes-like object (bytes, TensorRT's IHostMemory) via a temporary file and a rename,
    so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(memoryview(data))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: Path, data: dict) -> Path:
    text = json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n"
    return write_bytes(path, text.encode())


def _json_default(obj):
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    if isinstance(obj, tuple | set):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def sidecar_of(path: Path) -> Path:
    """Where an ONNX graph's external data lives: one file, named after the graph (as ORT and
    TensorRT's parser expect when given the graph's path)."""
    return path.with_name(path.name + ".data")


def sha256_file(path: Path) -> str:
    """SHA-256 of a file and, for an ONNX graph with external data, of its sidecar after it: the
    graph alone names its weights without holding them, so two weight sets would hash alike."""
    digest = hashlib.sha256()
    for part in (path, sidecar_of(path)):
        if part is path or part.exists():
            with open(part, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()


def artifact_bytes(path: Path) -> int:
    """Size of an ONNX file together with its external-data sidecar."""
    sidecar = sidecar_of(path)
    return path.stat().st_size + (sidecar.stat().st_size if sidecar.exists() else 0)


def human_size(num_bytes: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if num_bytes < 1000 or unit == "GB":
            return f"{num_bytes:.0f} {unit}" if unit == "B" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1000
    raise AssertionError("unreachable")
