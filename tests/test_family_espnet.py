"""ESPNet-C beyond the registry suite (which counts it and exports it at 224 with a dynamic batch): the
authors' checkpoint layout, the pooled head against the authors' class-score map, input reinforcement
at odd sizes on one graph with a dynamic batch and resolution, and the size rule.

The layout helpers and the dynamic-graph check serve ESPNetv2's tests too (same authors, same names)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from bbruntime.errors import InputSizeError
from bbruntime.runners import OrtRunner
from exporter.weights import load_weights, model_source
from model_defs import create_model, get_spec, spec_with_size

from .conftest import PARITY_TOLERANCE, randomize_norm_stats

Layout = dict[str, tuple[int, ...]]
_BN_STATS = ("running_mean", "running_var", "num_batches_tracked")


def authors_bn(prefix: str, chs: int) -> Layout:
    return {**{f"{prefix}.{t}": (chs,) for t in ("weight", "bias", "running_mean", "running_var")},
            f"{prefix}.num_batches_tracked": ()}


def authors_conv(prefix: str, out_chs: int, in_chs: int, k: int, groups: int = 1) -> Layout:
    """The authors' ``C``/``CDilated``: a bias-free conv named ``conv``."""
    return {f"{prefix}.conv.weight": (out_chs, in_chs // groups, k, k)}


def authors_br(prefix: str, chs: int) -> Layout:
    """The authors' ``BR``: BatchNorm ``bn`` and a per-channel PReLU ``act``."""
    return authors_bn(f"{prefix}.bn", chs) | {f"{prefix}.act.weight": (chs,)}


def authors_cbr(prefix: str, out_chs: int, in_chs: int, k: int, groups: int = 1) -> Layout:
    return authors_conv(prefix, out_chs, in_chs, k, groups) | authors_br(prefix, out_chs)


def layout_params(layout: Layout) -> int:
    return sum(int(np.prod(shape)) for key, shape in layout.items() if not key.endswith(_BN_STATS))


def random_state(layout: Layout) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {key: torch.randn(shape, generator=gen) if shape else torch.tensor(7) for key, shape in layout.items()}


def assert_loads_every_tensor(name: str, theirs: dict[str, torch.Tensor], saved: object, path) -> None:
    """``saved`` (their state as their code writes it) goes through ``--weights`` into a fresh ``name``
    strictly, and every tensor lands under its own name."""
    torch.save(saved, path)
    model = create_model(name)
    load_weights(model, model_source(name), path)
    ours = model.state_dict()
    assert len(ours) == len(theirs)
    for key, value in theirs.items():
        assert torch.equal(ours[key], value), key


def _esp_module(prefix: str, in_chs: int, out_chs: int, strided: bool) -> Layout:
    n = out_chs // 5
    layout = authors_conv(f"{prefix}.c1", n, in_chs, 3 if strided else 1)
    for d in (1, 2, 4, 8, 16):
        layout |= authors_conv(f"{prefix}.d{d}", out_chs - 4 * n if d == 1 else n, n, 3)
    # DownSamplerB keeps bn/act on itself; the block has a BR named bn.
    return layout | (authors_bn(f"{prefix}.bn", out_chs) | {f"{prefix}.act.weight": (out_chs,)} if strided
                     else authors_br(f"{prefix}.bn", out_chs))


def _authors_layout(p: int = 5, q: int = 3, classes: int = 1000) -> Layout:
    """Key -> shape of sacmehta/ESPNet ``train/Model.py``'s ``ESPNet_Encoder(classes, p, q).state_dict()``,
    written from that code's facts (16 / 64 / 128 channels, the image's 3 concatenated at 1/2 and 1/4)."""
    layout = authors_cbr("level1", 16, 3, 3) | authors_br("b1", 19) | _esp_module("level2_0", 19, 64, True)
    for i in range(p):
        layout |= _esp_module(f"level2.{i}", 64, 64, False)
    layout |= authors_br("b2", 131) | _esp_module("level3_0", 131, 128, True)
    for i in range(q):
        layout |= _esp_module(f"level3.{i}", 128, 128, False)
    return layout | authors_br("b3", 256) | authors_conv("classifier", classes, 256, 1)


def test_authors_checkpoint_loads_without_a_remap(tmp_path) -> None:
    """The authors' encoder at p=5, q=3 and 1000 classes is our state_dict key for key, and its count is
    the spec's (462,025); their ``torch.save(model.state_dict())`` file loads through ``--weights``."""
    layout = _authors_layout()
    assert layout_params(layout) == get_spec("espnet_c").reference_params
    theirs = random_state(layout)
    assert_loads_every_tensor("espnet_c", theirs, theirs, tmp_path / "model_300.pth")


def assert_close(got: np.ndarray | torch.Tensor, expected: torch.Tensor) -> None:
    """Within PARITY_TOLERANCE of the expected values' own scale (random-init logits can be small)."""
    scale = expected.abs().max().item()
    assert scale > 1e-3, "degenerate outputs: the comparison would prove nothing"
    assert tuple(got.shape) == tuple(expected.shape)
    assert np.abs(np.asarray(got) - expected.numpy()).max() <= PARITY_TOLERANCE * scale


def test_pooled_head_is_the_mean_of_the_authors_class_map() -> None:
    """At an odd size (57x45: 29x23, 15x12 and 8x6 maps, each from ceil(n / 2)) the image pools meet the
    features, and our logits are the authors' 1/8 class-score map averaged over its positions."""
    model = create_model("espnet_c")
    randomize_norm_stats(model)
    x = torch.randn(2, 3, 57, 45, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape == (2, 256, 8, 6)
        assert_close(model(x), model.classifier(features).mean((2, 3)))


def assert_dynamic_graph_matches(model: torch.nn.Module, path, cases: list[tuple[int, int, int]],
                                 average_pools: int) -> None:
    """Traced at the first case with a dynamic batch, height and width, the graph holds no Resize and
    ``average_pools`` strided AveragePools besides one GlobalAveragePool, and matches PyTorch on ONNX
    Runtime at every (batch, height, width) case: nothing depends on the traced size or batch."""
    batch, height, width = cases[0]
    axes = {"input": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch"}}
    with torch.no_grad():
        torch.onnx.export(model, (torch.randn(batch, 3, height, width),), str(path), dynamo=False,
                          opset_version=17, input_names=["input"], output_names=["logits"], dynamic_axes=axes)
    ops = [node.op_type for node in onnx.load(str(path)).graph.node]
    assert "Resize" not in ops
    assert (ops.count("AveragePool"), ops.count("GlobalAveragePool")) == (average_pools, 1)
    runner = OrtRunner(path)
    for batch, height, width in cases:
        x = torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(height))
        with torch.no_grad():
            assert_close(runner.infer(x.numpy()), model(x))


def test_one_graph_runs_batch_1_and_3_at_any_size(tmp_path) -> None:
    """Input reinforcement is two strided pools of the image, not resizes: batch 1 at 64 and batch 3
    at 57x45 on one graph."""
    model = create_model("espnet_c")
    randomize_norm_stats(model)
    assert_dynamic_graph_matches(model, tmp_path / "espnet_c.onnx", [(1, 64, 64), (3, 57, 45)], average_pools=2)


def test_any_side_from_8() -> None:
    """Odd sides included (every stride-2 layer rounds up alike); the spec stops at one cell of the 1/8
    map (smaller sides would run, on a network that then sees less than one cell's worth)."""
    spec = get_spec("espnet_c")
    assert spec_with_size(spec, (57, 45)).input_size == (3, 57, 45)
    with pytest.raises(InputSizeError, match="at least 8; got 7x7"):
        spec_with_size(spec, 7)
