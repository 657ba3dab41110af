"""MicroNet beyond the registry suite (which counts M0-M3 exactly and exports each at 224 with a dynamic
batch): the authors' checkpoint layout and outputs, the two channel permutations, and one graph at batch
1 and 3 with its permutations as constants.

The authors' code (liyunsheng13/micronet at ed89b26) is not a package, so what it gives is pinned here:
the sha256 of its ``state_dict`` layout (``key:shape`` lines in order) per variant, and its logits for
the weights ``_seeded`` gives on a seeded 64x64 input, both computed by instantiating their
``MicroNet(cfg)`` with the options of ``scripts/eval_micronet_m*.sh``. (For all four variants their
logits and ours agree within 7.4e-5 at a logit scale of 11-16; a shift or a shuffle of the other
convention moves M0's by 12-65.)
"""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from bbruntime.runners import OrtRunner
from exporter.weights import load_weights, model_source
from model_defs import create_model
from model_defs._layers import channel_shuffle
from model_defs.micronet import ChannelShuffle, _decode_blocks, _shift_index

from .conftest import PARITY_TOLERANCE, simplified_dynamic_graph

# Variant -> (number of state_dict entries, sha256 prefix of its "key:shape" lines) of the authors' model.
_AUTHORS_LAYOUT = {
    "micronet_m0": (218, "bd88145e60f70661"),
    "micronet_m1": (218, "9b3e2118e7e7f13f"),
    "micronet_m2": (290, "4b84551571188e0b"),
    "micronet_m3": (322, "20e9501f43cf0080"),
}

# The authors' model, seeded by _seeded, on _input(): the first eight logits of both samples.
_AUTHORS_LOGITS = {
    "micronet_m0": [
        [1.954019, -0.000000, 0.519861, 0.046724, -0.206743, -0.200123, 0.266647, -0.373351],
        [2.103064, -0.062127, -0.170795, 1.795454, 3.084132, 0.601835, 1.686951, 3.029155]],
    "micronet_m3": [
        [-0.345158, 0.042891, -0.374880, -0.204699, -0.341420, 0.781835, -0.299281, -0.037569],
        [-0.000000, -0.299507, -0.364335, 1.037879, -0.000000, -0.000000, -0.077700, 5.472799]],
}


def _layout_digest(state: dict[str, torch.Tensor]) -> str:
    lines = "\n".join(f"{key}:{tuple(value.shape)}" for key, value in state.items())
    return hashlib.sha256(lines.encode()).hexdigest()[:16]


def _seeded(model: nn.Module) -> nn.Module:
    """``model`` (ours or the authors') with seeded weights, in eval mode: every tensor of its state_dict
    drawn in key order from one seed, so both get the same ones (weights ~ N(0, 1/(4 fan_in)), BN
    scales near 1, biases ~ N(0, 0.2^2)), then every BN's running statistics set to those of one seeded
    noise batch. With these statistics activations keep their scale through the network, the
    logits depend on the input, and DYShiftMax's coefficients move off their initial values."""
    gen = torch.Generator().manual_seed(0)
    state = {}
    for key, value in model.state_dict().items():
        if value.dim() > 1:
            state[key] = 0.5 * torch.randn(value.shape, generator=gen) / value[0].numel() ** 0.5
        elif key.endswith(".weight"):
            state[key] = 1 + 0.2 * torch.randn(value.shape, generator=gen)
        else:  # biases; the BN statistics are measured below
            state[key] = 0.2 * torch.randn(value.shape, generator=gen) if value.is_floating_point() else value
    model.load_state_dict(state, strict=True)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.momentum = 1.0  # the running statistics become this batch's
        norm.train()
    with torch.no_grad():
        model(_input(8, seed=2))
    return model.eval()


def _input(batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", sorted(_AUTHORS_LAYOUT))
def test_state_dict_is_the_authors_layout(name: str) -> None:
    """Same keys, in the same order, with the same shapes: their checkpoints load without a remap."""
    state = create_model(name).state_dict()
    assert (len(state), _layout_digest(state)) == _AUTHORS_LAYOUT[name]


def test_layout_names_each_kind_of_layer() -> None:
    """A readable sample of the pinned M0 layout: stem, the three block layouts, DYShiftMax with one and
    two branches (2 or 4 coefficients a channel), the head."""
    state = create_model("micronet_m0").state_dict()
    expected = {
        "features.0.stem.0.conv.2.weight": (4, 1, 1, 3),  # the stem's (1, 3) conv, 2 groups
        "features.1.layers.0.conv.0.weight": (8, 1, 3, 1),  # depthwise-first block
        "features.1.layers.5.fc.2.weight": (16, 4),  # one-branch DYShiftMax on 8 channels
        "features.2.layers.1.fc.2.weight": (128, 4),  # two-branch DYShiftMax on 32 channels
        "features.4.layers.3.conv.2.weight": (64, 1, 1, 5),  # 1x1-depthwise-1x1 block
        "features.7.layers.0.conv.0.weight": (384, 8, 1, 1),  # the widening last block, 12 groups
        "classifier.2.linear.1.running_var": (1000,),
    }
    assert {key: tuple(state[key].shape) for key in expected} == expected
    assert not any(key.endswith((".index", ".offset")) for key in state)  # graph constants stay out


@pytest.mark.parametrize("name", sorted(_AUTHORS_LOGITS))
def test_authors_checkpoint_loads_and_matches_their_outputs(name: str, tmp_path) -> None:
    """A checkpoint as their training saves it (the ``state_dict`` of a DataParallel model: ``module.``
    keys) loads strictly through the exporter's loader, and gives the authors' logits. M0 and M3 cover
    the three block layouts and every activation choice (y1 = 0 and 2, y3 = 0 and 1, both INIT_A/B)."""
    state = _seeded(create_model(name)).state_dict()
    path = tmp_path / f"{name}.pth"
    torch.save({"epoch": 1, "state_dict": {f"module.{key}": value for key, value in state.items()}}, path)
    model = create_model(name)
    load_weights(model, model_source(name), path)
    with torch.no_grad():
        logits = model.eval()(_input())
    expected = torch.tensor(_AUTHORS_LOGITS[name])
    assert (logits[:, :8] - expected).abs().max().item() <= PARITY_TOLERANCE * max(1.0, expected.abs().max().item())


def test_shuffle_and_shift_permutations() -> None:
    """The shuffle is the (g, C/g) view-and-transpose of the authors' ChannelShuffle; their
    ChannelShuffle2(C/2) interleaves the halves; the shift reads channel (i+1, j+1) of the (g, C/g) grid.
    Both indices are buffers (they move with the model), not state_dict entries."""
    x = torch.randn(2, 12, 3, 3)
    assert torch.equal(ChannelShuffle(3, 12)(x), channel_shuffle(x, 3))
    assert ChannelShuffle(4, 8).index.tolist() == [0, 2, 4, 6, 1, 3, 5, 7]
    assert _shift_index(6, 2).tolist() == [4, 5, 3, 1, 2, 0]
    assert _shift_index(4, 1).tolist() == [1, 2, 3, 0]
    model = create_model("micronet_m0").to("meta")
    indices = [buffer for name, buffer in model.named_buffers() if name.endswith(".index")]
    assert len(indices) == 39 and all(index.device.type == "meta" for index in indices)  # 15 shifts, 24 shuffles


def test_block_rows_are_checked() -> None:
    with pytest.raises(ValueError, match=r"expected \(s, n, c"):
        _decode_blocks(((2, 1, 8, 3),))
    with pytest.raises(ValueError, match="y1 and y2 must be 0 or 2"):
        _decode_blocks(((2, 1, 8, 3, 2, 2, 0, 4, 8, 2, 2, 1, 0, 1, 1),))


def test_dynamic_batch_graph_runs_batch_1_and_3(tmp_path) -> None:
    """The exported and simplified graph (opset 17, dynamic batch) takes batch 1 and 3 and matches
    PyTorch; every channel permutation is a Gather over a constant, and no shape arithmetic is left."""
    model = _seeded(create_model("micronet_m3"))
    path = simplified_dynamic_graph(model, tmp_path, (3, 64, 64), "micronet_m3")
    graph = onnx.load(str(path)).graph
    constants = {tensor.name for tensor in graph.initializer}
    gathers = [node for node in graph.node if node.op_type == "Gather"]
    assert len(gathers) == 45 and all(node.input[1] in constants for node in gathers)  # 11 shifts, 34 shuffles
    assert not {"Shape", "Reshape", "Transpose"} & {node.op_type for node in graph.node}
    runner = OrtRunner(path)
    assert runner.static_batch is None
    x = _input(3)
    for batch in (x[:1], x):
        with torch.no_grad():
            expected = model(batch).numpy()
        got = runner.infer(batch.numpy())
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= PARITY_TOLERANCE * max(1.0, np.abs(expected).max())
