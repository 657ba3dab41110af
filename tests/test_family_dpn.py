"""DPN beyond the registry suite (timm parity at 64 px, export of DPN-68/68b/92): odd input sizes,
Cadene's layout, timm's eval settings, and the dual-path splits and concats in the graph.

Random-init DPN logits barely depend on the input, so the forward checks compare the pre-pool
features (``features``, the same Sequential in timm, Cadene's port and ours), which do.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from bbruntime.errors import InputSizeError
from bbruntime.runners import OrtRunner
from exporter.onnx_export import onnx_from_model
from model_defs import create_model, get_entry, get_spec, spec_with_size
from model_defs.dpn import _CONFIGS

from .conftest import assert_same_outputs, randomize_norm_stats, reference_model

VARIANTS = sorted(_CONFIGS)


def _input(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(1))


def _loaded(reference: torch.nn.Module, name: str) -> torch.nn.Module:
    """Our ``name`` holding ``reference``'s state_dict (norm statistics randomized first), through the
    family remap (which renames Cadene's classifier and leaves timm's keys as they are)."""
    randomize_norm_stats(reference)
    ours = create_model(name)
    ours.load_state_dict(get_entry(name).remap(reference.state_dict()), strict=True)
    return ours


def test_matches_timm_at_an_odd_size() -> None:
    """67 x 65: every stride-2 layer of both paths must round up alike (ceil(n / 2)), or the residual
    sum and the concat would not line up; the spec takes such sizes and refuses one under 32. One
    variant: the strides and paddings are every variant's."""
    torch.manual_seed(0)
    reference = reference_model("timm:dpn68", 1000)
    ours = _loaded(reference, "dpn68")
    assert_same_outputs(reference.features, ours.features, _input(1, 3, 67, 65))
    assert spec_with_size(get_spec("dpn68"), (67, 65)).input_size == (3, 67, 65)
    with pytest.raises(InputSizeError, match="at least 32; got 31x31"):
        spec_with_size(get_spec("dpn131"), 31)


@pytest.mark.parametrize("name", VARIANTS)
def test_cadene_layout_loads_through_the_remap(name: str) -> None:
    """Cadene's ``pretrainedmodels.dpn*`` (the same MXNet weights, ``last_linear`` for ``classifier``)
    loads strictly, key by key and shape by shape, on the meta device."""
    pretrainedmodels = pytest.importorskip("pretrainedmodels", reason="needs Cadene's pretrainedmodels package")
    with torch.device("meta"):
        reference, ours = getattr(pretrainedmodels, name)(num_classes=1000, pretrained=None), create_model(name)
    ours.load_state_dict(get_entry(name).remap(reference.state_dict()), strict=True, assign=True)


def test_matches_cadene() -> None:
    """Cadene's forward, features and logits (its port ends in BN-ReLU, as timm's does). Its eval head
    pools 7x7/1, applies the classifier and then a mean-max pool ("test_time_pool"), which at 224 (a 7x7
    map) is our global average pool; switched off here, so a 64 px input keeps the test cheap."""
    pretrainedmodels = pytest.importorskip("pretrainedmodels", reason="needs Cadene's pretrainedmodels package")
    torch.manual_seed(0)
    reference = pretrainedmodels.dpn68(num_classes=1000, pretrained=None).eval()
    reference.test_time_pool = False
    ours = _loaded(reference, "dpn68")
    x = _input(2, 3, 64, 64)
    assert_same_outputs(reference.features, ours.features, x)
    assert_same_outputs(reference, ours, x)


@pytest.mark.parametrize("name", VARIANTS)
def test_eval_settings_are_timms(name: str) -> None:
    """Input size, mean/std, interpolation and crop of timm's default pretrained cfg: the MXNet weights'
    own mean and scale, except DPN-68b, whose default weights are timm's .ra_in1k (ImageNet mean/std)."""
    timm = pytest.importorskip("timm", reason="needs timm")
    cfg, spec = timm.models.get_pretrained_cfg(name).to_dict(), get_spec(name)
    assert spec.input_size == cfg["input_size"] and spec.interpolation == cfg["interpolation"]
    assert spec.crop_pct == cfg["crop_pct"]
    np.testing.assert_allclose(spec.mean + spec.std, cfg["mean"] + cfg["std"], rtol=1e-12)


def test_dual_paths_export_as_constant_splits_and_one_concat(tmp_path) -> None:
    """Each block splits the shortcut and its last conv's output (DPN-b has two convs there instead)
    with one ``Split`` of constant sizes each and joins the paths with one three-input ``Concat``;
    nothing reads a shape, so the graph exported at batch 1 runs at batch 3 as PyTorch does."""
    blocks = sum(_CONFIGS["dpn68"].depths)
    model = create_model("dpn68")
    path = tmp_path / "dpn68.onnx"
    onnx_from_model(model, path, (3, 32, 32), dynamic_batch=True)
    graph = onnx.load(str(path)).graph
    constants = {init.name for init in graph.initializer}
    constants |= {out for node in graph.node if node.op_type == "Constant" for out in node.output}
    ops = [node.op_type for node in graph.node]
    assert "Shape" not in ops and "Slice" not in ops
    splits = [node for node in graph.node if node.op_type == "Split"]
    assert len(splits) == 2 * blocks and all(node.input[1] in constants for node in splits)
    concats = [node for node in graph.node if node.op_type == "Concat"]
    assert len(concats) == blocks and all(len(node.input) == 3 for node in concats)
    x = _input(3, 3, 32, 32)
    with torch.no_grad():
        expected = model(x).numpy()
    runner = OrtRunner(path)
    assert runner.static_batch is None
    np.testing.assert_allclose(runner.infer(x.numpy()), expected, atol=1e-4 * max(1.0, np.abs(expected).max()))
