"""DenseNet beyond the registry suite (torchvision parity, export at the reduced test size): timm's
layout and outputs, the legacy ``norm.1``/``conv.1`` checkpoints through the CLI's weight loader, one
two-input Concat per dense layer in the graph, and the smallest input size."""

from __future__ import annotations

import re

import onnx
import pytest
import torch

from bbruntime.errors import InputSizeError
from exporter.onnx_export import onnx_from_model
from exporter.weights import load_weights, model_source
from model_defs import create_model, get_spec, spec_with_size
from model_defs.densenet import _CONFIGS

from .conftest import assert_same_outputs, randomize_norm_stats, reference_model

VARIANTS = sorted(_CONFIGS)
SIDE = 64  # the registry suite's reduced size for these variants (all are over 1.5 GMACs at 224)


@pytest.mark.parametrize("name", VARIANTS)
def test_timm_state_dict_loads_as_it_is(name: str) -> None:
    """timm's DenseNet has torchvision's keys and shapes: it loads strictly, without the remap (on the
    meta device: the layout is what is at stake, the forward is checked below)."""
    with torch.device("meta"):
        reference, ours = reference_model(f"timm:{name}", 1000), create_model(name)
    ours.load_state_dict(reference.state_dict(), strict=True, assign=True)


def test_legacy_timm_checkpoint_loads_through_the_remap(tmp_path) -> None:
    """timm's densenet121, saved as timm's and torchvision's ImageNet files are (the old dense-layer
    names ``norm.1``, ``conv.2``; no BatchNorm ``num_batches_tracked``, which came later), loads
    strictly through ``--weights`` and gives timm's outputs: timm folds every ReLU into a
    BatchNormAct2d (norm5's too), as this definition does. One variant is enough: the forward code is
    every variant's, and the registry suite compares each with torchvision."""
    torch.manual_seed(0)
    reference = reference_model("timm:densenet121", 1000)
    randomize_norm_stats(reference)
    legacy = {re.sub(r"(denselayer\d+\.(?:norm|conv))([12])\.", r"\1.\2.", k): v
              for k, v in reference.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert sum(".conv.2." in k for k in legacy) == sum(_CONFIGS["densenet121"].block_config)
    path = tmp_path / "densenet121_legacy.pth"
    torch.save(legacy, path)
    ours = create_model("densenet121")
    load_weights(ours, model_source("densenet121"), path)
    assert_same_outputs(reference, ours, torch.randn(2, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(1)))


def test_graph_has_one_two_input_concat_per_dense_layer(tmp_path) -> None:
    """Dense concatenation exports as one Concat per layer (121 has 6+12+24+16 layers), each of the
    layer's input and its new features: no re-concatenation of the whole list, no extra block Concat."""
    path = tmp_path / "densenet121.onnx"
    onnx_from_model(create_model("densenet121"), path, (3, 32, 32), dynamic_batch=True)
    graph = onnx.load(str(path)).graph
    concats = [n for n in graph.node if n.op_type == "Concat"]
    assert len(concats) == sum(_CONFIGS["densenet121"].block_config)
    assert all(len(n.input) == 2 for n in concats)
    # The exporter shares equal folded constants through Identity nodes (onnxsim removes them); no
    # activation is copied, sliced or split.
    constants = {init.name for init in graph.initializer}
    copies = [n.name for n in graph.node if n.op_type in ("Identity", "Expand", "Tile", "Split", "Slice")
              and n.input[0] not in constants]
    assert not copies


def test_min_size_is_torchvisions_and_runs() -> None:
    """torchvision's documented smallest input (its weights' ``min_size``) is the spec's, and it leaves
    a 1x1 map after the last transition; one pixel less is rejected in one line."""
    models = pytest.importorskip("torchvision.models", reason="needs torchvision")
    spec = get_spec("densenet121")
    assert models.get_model_weights("densenet121").DEFAULT.meta["min_size"] == (spec.min_size, spec.min_size)
    with torch.no_grad():
        features = create_model("densenet121").forward_features(torch.zeros(1, 3, spec.min_size, spec.min_size))
    assert features.shape[-2:] == (1, 1)
    with pytest.raises(InputSizeError, match=f"at least {spec.min_size}"):
        spec_with_size(spec, spec.min_size - 1)
