"""Stage 2: ONNX -> simplified ONNX, verified against the unsimplified graph on ONNX Runtime.

Like onnx-simplifier itself, the stage returns the model *and* its verdict. When onnxsim fails or
changes the numbers, the unsimplified graph is kept and the reason travels to the console and the
manifest: never a silent downgrade.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from bbruntime.errors import ExportError, first_line
from bbruntime.metrics import drift
from bbruntime.runners import OrtRunner

from .artifacts import sidecar_of
from .onnx_export import check_onnx, save_onnx

# Simplification only folds and fuses: anything above float32 round-off means a broken rewrite.
SIMPLIFY_TOLERANCE = 1e-4


@dataclass(frozen=True)
class SimplifyResult:
    path: Path
    simplified: bool
    reason: str  # why the unsimplified graph was kept; "" when simplified
    nodes_before: int
    nodes_after: int
    max_abs_change: float | None


def simplified_from_onnx(src: Path, dst: Path, check_input: np.ndarray) -> SimplifyResult:
    """Simplify ``src`` into ``dst``; fall back to a copy of ``src`` when that is not safe."""
    import onnxsim

    external = sidecar_of(src).exists()
    nodes_before = _node_count(src)
    try:
        simplified, checked = onnxsim.simplify(str(src), check_n=0, output_path=str(dst) if external else None)
    except Exception as e:  # onnxsim raises bare RuntimeErrors from C++: only its call means "keep the original"
        return _keep_original(src, dst, nodes_before, f"onnxsim failed: {first_line(e)}")
    if external:
        _rename_sidecar(dst)
    else:
        onnx.save(simplified, str(dst))
    try:
        check_onnx(dst)
    except ExportError as e:  # the checker rejected what onnxsim wrote; a bug of ours would not be an ExportError
        return _keep_original(src, dst, nodes_before, f"onnxsim wrote an invalid graph: {first_line(e)}")
    if checked is False:
        return _keep_original(src, dst, nodes_before, "onnxsim's own check failed")
    try:
        change = drift(OrtRunner(src).infer(check_input), OrtRunner(dst).infer(check_input))
    except Exception as e:  # ORT errors are untyped pybind exceptions; unverifiable means "keep the original"
        return _keep_original(src, dst, nodes_before, f"could not verify the simplified graph: {first_line(e)}")
    if change.rel_max_abs > SIMPLIFY_TOLERANCE:
        return _keep_original(src, dst, nodes_before,
                              f"simplified graph changed the outputs (max abs {change.max_abs:.2e})")
    return SimplifyResult(dst, True, "", nodes_before, _node_count(dst), change.max_abs)


def _rename_sidecar(path: Path) -> None:
    """onnxsim names the external-data file it writes at random (a UUID); publishing and every reader
    expect ``<file>.onnx.data``. Rename the file and point the graph at it, without loading weights."""
    proto = onnx.load(str(path), load_external_data=False)
    wanted = sidecar_of(path).name
    locations = set()
    for tensor in proto.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                locations.add(entry.value)
                entry.value = wanted
    if locations <= {wanted}:
        return
    if len(locations) > 1:
        raise RuntimeError(f"onnxsim wrote {len(locations)} external-data files; expected one")
    (path.parent / locations.pop()).replace(path.parent / wanted)
    onnx.save(proto, str(path))


def _keep_original(src: Path, dst: Path, nodes: int, reason: str) -> SimplifyResult:
    for path in (dst, sidecar_of(dst)):
        path.unlink(missing_ok=True)
    if sidecar_of(src).exists():
        # The sidecar's file name is written inside the graph: re-save under the new name.
        save_onnx(onnx.load(str(src)), dst, external_data=True)
    else:
        shutil.copyfile(src, dst)
    return SimplifyResult(dst, False, reason, nodes, nodes, None)


def _node_count(path: Path) -> int:
    return len(onnx.load(str(path), load_external_data=False).graph.node)

