"""CondenseNet beyond the registry suite (exact counts, export at 224 validated at batches 4 and 10):
the authors' converted checkpoints through ``--weights`` against their forward, the index buffers as
deterministic state, the gathers in the exported graph (P-IDXSEL) at batches 1 and 3, the size rule."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch.nn import functional as F

from bbruntime.errors import InputSizeError
from bbruntime.runners import OrtRunner
from exporter.onnx_export import onnx_from_model
from exporter.simplify import simplified_from_onnx
from exporter.weights import load_weights, model_source
from model_defs import create_model, get_spec, spec_with_size
from model_defs.condensenet import _CONFIGS, CondenseNetConfig

VARIANTS = sorted(_CONFIGS)


def _authors_converted_state(cfg: CondenseNetConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random checkpoint in the layout ``main.py --convert-from`` saves: ``models/condensenet_converted.py``'s
    keys under DataParallel's ``module.``, no BatchNorm ``num_batches_tracked`` (2017 files), and gather
    indices as conversion leaves them (with C = G, ``in`` of them per 1x1; channels repeat or drop out)."""
    gen = torch.Generator().manual_seed(seed)

    def conv(out_chs: int, in_chs: int, k: int) -> torch.Tensor:
        return torch.randn(out_chs, in_chs, k, k, generator=gen) * (2 / (in_chs * k * k)) ** 0.5

    def norm(prefix: str, chs: int) -> dict[str, torch.Tensor]:
        return {prefix + "weight": 1 + 0.2 * torch.randn(chs, generator=gen),
                prefix + "bias": 0.1 * torch.randn(chs, generator=gen),
                prefix + "running_mean": 0.1 * torch.randn(chs, generator=gen),
                prefix + "running_var": 0.5 + torch.rand(chs, generator=gen)}

    g, chs = cfg.groups, 2 * cfg.growth[0]
    state = {"features.init_conv.weight": conv(chs, 3, 3)}
    for b, (num_layers, k) in enumerate(zip(cfg.stages, cfg.growth, strict=True), 1):
        for layer in range(1, num_layers + 1):
            p = f"features.denseblock_{b}.denselayer_{layer}."
            state[p + "conv_1.index"] = torch.randint(chs, (chs,), generator=gen)
            state |= norm(p + "conv_1.norm.", chs)
            state[p + "conv_1.conv.weight"] = conv(4 * k, chs // g, 1)
            state |= norm(p + "conv_2.norm.", 4 * k)
            state[p + "conv_2.conv.weight"] = conv(k, 4 * k // g, 3)
            chs += k
    state |= norm("features.norm_last.", chs)
    state["classifier.index"] = torch.randperm(chs, generator=gen)[: chs // 2]
    state["classifier.linear.weight"] = 0.05 * torch.randn(1000, chs // 2, generator=gen)
    state["classifier.linear.bias"] = 0.1 * torch.randn(1000, generator=gen)
    return {"module." + key: value for key, value in state.items()}


def _authors_forward(state: dict[str, torch.Tensor], cfg: CondenseNetConfig, x: torch.Tensor) -> torch.Tensor:
    """The authors' converted forward, op by op, on their state_dict: ``ShuffleLayer``'s (G, C/G) view
    and transpose after each grouped 1x1, and their ``AvgPool2d(7)`` head (so 224x224 input only)."""
    s = {key.removeprefix("module."): value for key, value in state.items()}
    g = cfg.groups

    def bn_relu(t: torch.Tensor, p: str) -> torch.Tensor:
        return F.relu(F.batch_norm(t, s[p + "running_mean"], s[p + "running_var"], s[p + "weight"], s[p + "bias"]))

    x = F.conv2d(x, s["features.init_conv.weight"], stride=2, padding=1)
    for b, num_layers in enumerate(cfg.stages, 1):
        x = x if b == 1 else F.avg_pool2d(x, 2)
        for layer in range(1, num_layers + 1):
            p = f"features.denseblock_{b}.denselayer_{layer}."
            y = F.conv2d(bn_relu(x.index_select(1, s[p + "conv_1.index"]), p + "conv_1.norm."),
                         s[p + "conv_1.conv.weight"], groups=g)
            n, c, h, w = y.shape
            y = y.view(n, g, c // g, h, w).transpose(1, 2).reshape(n, c, h, w)
            y = F.conv2d(bn_relu(y, p + "conv_2.norm."), s[p + "conv_2.conv.weight"], padding=1, groups=g)
            x = torch.cat([x, y], 1)
    x = F.avg_pool2d(bn_relu(x, "features.norm_last."), 7).flatten(1)
    return F.linear(x.index_select(1, s["classifier.index"]), s["classifier.linear.weight"],
                    s["classifier.linear.bias"])


@pytest.mark.parametrize("name", VARIANTS)
def test_authors_converted_checkpoint_loads_and_matches_their_forward(name: str, tmp_path) -> None:
    """Issue 16 item 1: a checkpoint with the authors' converted keys and shapes loads strictly through
    ``--weights`` (prefix stripped, BN counters filled by the remap); its gather indices replace ours,
    and the outputs are their forward's (G = 4 and 8 check the shuffle convention, P-SHUF)."""
    cfg = _CONFIGS[name]
    state = _authors_converted_state(cfg)
    path = tmp_path / f"converted_{name}.pth.tar"  # the name of the authors' files
    torch.save({"state_dict": state}, path)
    ours = create_model(name)
    load_weights(ours, model_source(name), path)
    assert torch.equal(ours.classifier.index, state["module.classifier.index"])
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = _authors_forward(state, cfg, x), ours(x)
    scale = expected.abs().max().item()
    assert scale > 0.1, "degenerate logits: the comparison would prove nothing"
    assert (got - expected).abs().max().item() <= 1e-4 * scale


@pytest.mark.parametrize("name", VARIANTS)
def test_index_buffers_are_deterministic_state(name: str) -> None:
    """P-IDXSEL: built with random weights, every gather has valid indices that do not depend on the
    seed (the authors' buffers are uninitialised memory); each 1x1's is a permutation of its input
    channels (C = G) that is not the identity, the classifier's keeps half. All are state_dict entries."""
    torch.manual_seed(0)
    first = create_model(name).state_dict()
    torch.manual_seed(1)
    second = create_model(name).state_dict()
    assert not torch.equal(first["features.init_conv.weight"], second["features.init_conv.weight"])
    indices = [key for key in first if key.endswith(".index")]
    assert len(indices) == sum(_CONFIGS[name].stages) + 1
    for key in indices:
        assert first[key].dtype == torch.int64 and torch.equal(first[key], second[key]), key
    for key in indices[:-1]:
        chs = len(first[key])
        assert torch.equal(first[key].sort().values, torch.arange(chs)), key
        assert not torch.equal(first[key], torch.arange(chs)), key
    features = first["classifier.linear.weight"].shape[1] * 2
    assert first["classifier.index"].unique().numel() == features // 2 and first["classifier.index"].max() < features


def test_export_keeps_constant_index_gathers_with_a_dynamic_batch(tmp_path) -> None:
    """P-IDXSEL: every gather exports as one Gather on axis 1 whose indices are an initializer holding
    the model's buffer, and the simplified graph (at an odd size, 63x63) matches PyTorch at batches 1 and 3."""
    model = create_model("condensenet74_c8_g8")
    raw, path = tmp_path / "raw.onnx", tmp_path / "condensenet.onnx"
    onnx_from_model(model, raw, (3, 63, 63), dynamic_batch=True)
    x = torch.randn(3, 3, 63, 63, generator=torch.Generator().manual_seed(1))
    assert simplified_from_onnx(raw, path, x[:1].numpy()).simplified
    graph = onnx.load(str(path)).graph
    constants = {init.name: onnx.numpy_helper.to_array(init) for init in graph.initializer}
    gathers = [n for n in graph.node if n.op_type == "Gather" and n.input[1] in constants]
    buffers = dict(model.named_buffers())
    assert len(gathers) == sum(_CONFIGS["condensenet74_c8_g8"].stages) + 1
    for node in gathers:
        assert [a.i for a in node.attribute if a.name == "axis"] == [1], node.name
        assert np.array_equal(constants[node.input[1]], buffers[node.input[1]].numpy()), node.name
    runner = OrtRunner(path)
    assert runner.static_batch is None
    with torch.no_grad():
        expected = model(x).numpy()
    for batch in (1, 3):
        got = runner.infer(x[:batch].numpy())
        assert np.abs(got - expected[:batch]).max() <= 1e-4 * max(1.0, np.abs(expected).max())


def test_size_rule_matches_the_floor_mode_pools() -> None:
    """31 px is the smallest side that leaves a 1x1 map after the stem (rounding up) and four 2x2
    pools; 30 is refused in one line. The global pool head takes any size the pools leave."""
    spec = get_spec("condensenet74_c4_g4")
    with torch.no_grad():
        features = create_model("condensenet74_c4_g4").features(torch.zeros(1, 3, 31, 31))
    assert features.shape[-2:] == (1, 1)
    assert spec_with_size(spec, (31, 45)).input_size == (3, 31, 45)
    with pytest.raises(InputSizeError, match="at least 31; got 30x30"):
        spec_with_size(spec, 30)
