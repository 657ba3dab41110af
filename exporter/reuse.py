"""One rule for whether an artifact can be reused: its manifest's ``inputs`` are the ones asked for now.

Every stage (``onnx``, ``quantize``, ``trt``, ``bundle``, the report through them) writes into its
manifest an ``inputs`` dict of everything that decides the artifact: the variant spec, the network's
definition, the weights' identity, the stage's options, the source graph's hash, the library
versions. A later request computes the same dict; the artifact is reused when the two are equal and
the file (with its external-data sidecar) still has the sha256 the manifest records. Drift budgets
are not inputs: a verdict is recomputed from the recorded drift under the budget in force.
"""

from __future__ import annotations

import json
from pathlib import Path

from .artifacts import sha256_file


def as_json(value) -> object:
    """``value`` as it reads back from a JSON manifest (tuples as lists, paths as strings)."""
    return json.loads(json.dumps(value, default=str))


def reusable(manifest_path: Path, inputs: dict, artifact_key: str = "onnx") -> dict | None:
    """The manifest at ``manifest_path`` if it was made from ``inputs`` and its artifact is intact, else None."""
    try:
        manifest = json.loads(Path(manifest_path).read_text())
        recorded, artifact = manifest["inputs"], manifest[artifact_key]
        path = Path(manifest_path).with_name(artifact["file"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if recorded != as_json(inputs) or not path.is_file() or sha256_file(path) != artifact["sha256"]:
        return None
    return manifest
