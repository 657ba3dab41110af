"""PeleeNet beyond the registry suite (which counts it exactly and exports it at 224 with a dynamic
batch): the authors' checkpoint layout, the global head at sizes other than the traced one, batch 1
and 3 on one graph, and the stem's size rule."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from bbruntime.errors import InputSizeError
from bbruntime.runners import OrtRunner
from exporter.onnx_export import onnx_from_model
from exporter.weights import load_weights, model_source
from model_defs import create_model, get_spec, spec_with_size

from .conftest import PARITY_TOLERANCE


def _conv_bn(name: str, out_chs: int, in_chs: int, k: int) -> dict[str, tuple[int, ...]]:
    """The tensors of the authors' ``BasicConv2d``: a bias-free conv and a BatchNorm named ``norm``."""
    norm = {f"{name}.norm.{t}": (out_chs,) for t in ("weight", "bias", "running_mean", "running_var")}
    return {f"{name}.conv.weight": (out_chs, in_chs, k, k), **norm, f"{name}.norm.num_batches_tracked": ()}


def _authors_layout() -> dict[str, tuple[int, ...]]:
    """Key -> shape of Robert-JunWang/PeleeNet ``peleenet.py``'s ``PeleeNet().state_dict()``, written
    from that code's facts (stem 32, growth 32 split in two, blocks 3/4/8/6, bottleneck widths 1/2/4/4)."""
    layout = {}
    for name, out_chs, in_chs, k in (("stem1", 32, 3, 3), ("stem2a", 16, 32, 1), ("stem2b", 32, 16, 3),
                                     ("stem3", 32, 64, 1)):
        layout |= _conv_bn(f"features.stemblock.{name}", out_chs, in_chs, k)
    chs = 32
    for block, (num_layers, width) in enumerate(zip((3, 4, 8, 6), (1, 2, 4, 4), strict=True), start=1):
        inter = int(16 * width / 4) * 4
        for i in range(1, num_layers + 1):
            prefix = f"features.denseblock{block}.denselayer{i}"
            for branch, out_chs, in_chs, k in (("1a", inter, chs, 1), ("1b", 16, inter, 3), ("2a", inter, chs, 1),
                                               ("2b", 16, inter, 3), ("2c", 16, 16, 3)):
                layout |= _conv_bn(f"{prefix}.branch{branch}", out_chs, in_chs, k)
            chs += 32
        layout |= _conv_bn(f"features.transition{block}", chs, chs, 1)
    return layout | {"classifier.weight": (1000, chs), "classifier.bias": (1000,)}


def test_authors_checkpoint_loads_through_the_remap(tmp_path) -> None:
    """A checkpoint in the authors' form ({"state_dict": ...} saved from DataParallel, ``norm`` names)
    loads strictly through ``--weights``, and every tensor lands where its name says."""
    layout = _authors_layout()
    params = sum(int(np.prod(shape)) for key, shape in layout.items() if not key.endswith(("running_mean",
                                                                                           "running_var", "tracked")))
    assert params == get_spec("peleenet").reference_params
    gen = torch.Generator().manual_seed(0)
    theirs = {key: torch.randn(shape, generator=gen) if shape else torch.tensor(7) for key, shape in layout.items()}
    path = tmp_path / "peleenet_acc7208.pth"
    torch.save({"epoch": 120, "state_dict": {f"module.{key}": value for key, value in theirs.items()}}, path)
    model = create_model("peleenet")
    load_weights(model, model_source("peleenet"), path)
    ours = model.state_dict()
    assert len(ours) == len(theirs)
    for key, value in theirs.items():
        assert torch.equal(ours[key.replace(".norm.", ".bn.")], value), key


def _assert_close(got: np.ndarray, expected: torch.Tensor) -> None:
    scale = max(1.0, expected.abs().max().item())
    assert np.abs(got - expected.numpy()).max() <= PARITY_TOLERANCE * scale


def test_head_is_global_at_sizes_other_than_the_traced_one(tmp_path) -> None:
    """Traced at 64 (a 2x2 final map) with dynamic height and width, the graph is right at 96 (3x3)
    too: the head is a GlobalAveragePool, where the authors' avg_pool2d would keep a 2x2 kernel."""
    model = create_model("peleenet")
    path = tmp_path / "peleenet.onnx"
    axes = {"input": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch"}}
    with torch.no_grad():
        torch.onnx.export(model, (torch.randn(1, 3, 64, 64),), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"], dynamic_axes=axes)
    pools = [node for node in onnx.load(str(path)).graph.node if node.op_type.endswith("AveragePool")]
    assert [node.op_type for node in pools].count("GlobalAveragePool") == 1
    assert all(list(attr.ints) == [2, 2] for node in pools for attr in node.attribute if attr.name == "kernel_shape")
    runner = OrtRunner(path)
    for side in (64, 96):
        x = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(side))
        with torch.no_grad():
            _assert_close(runner.infer(x.numpy()), model(x))


def test_dynamic_batch_export_runs_batch_1_and_3(tmp_path) -> None:
    """The exporter's graph (dynamic batch, opset 17) takes batch 1 and 3 and matches PyTorch."""
    model = create_model("peleenet")
    exported = onnx_from_model(model, tmp_path / "peleenet.onnx", (3, 64, 64), dynamic_batch=True)
    runner = OrtRunner(exported.path)
    assert runner.static_batch is None
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    for batch in (x[:1], x):
        with torch.no_grad():
            _assert_close(runner.infer(batch.numpy()), model(batch))


def test_stem_needs_sides_that_are_multiples_of_4() -> None:
    """The stem's conv (ceil) and pool (floor) halves disagree on an odd map: 34 px (a 17x17 stem map)
    fails in PyTorch itself, so the spec rejects it in one line; 36 px runs (1x1 after the last pool),
    and under 32 px nothing is left to pool."""
    spec = get_spec("peleenet")
    model = create_model("peleenet")
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 36, 36)).shape == (1, 1000)
        with pytest.raises(RuntimeError):
            model(torch.zeros(1, 3, 34, 34))
    assert spec_with_size(spec, 36).input_size == (3, 36, 36)
    for side in (34, 28):
        with pytest.raises(InputSizeError):
            spec_with_size(spec, side)
