"""ESPNetv2 beyond the registry suite (which counts every scale exactly and exports each at 224 with a
dynamic batch): the authors' checkpoint layout at every scale, their r_lim -> dilation rule, input
reinforcement against their pool-until-it-fits loop, one graph at any batch and size, the size rule."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from bbruntime.errors import InputSizeError
from model_defs import create_model, get_spec, spec_with_size

from .conftest import randomize_norm_stats
from .test_family_espnet import (
    Layout,
    assert_dynamic_graph_matches,
    assert_loads_every_tensor,
    authors_bn,
    authors_br,
    authors_cbr,
    authors_conv,
    layout_params,
    random_state,
)

# The authors' sc_ch_dict (EdgeNets model/classification/espnetv2_config.py), by variant.
WIDTHS = {
    "espnetv2_s050": (16, 32, 64, 128, 256, 1024),
    "espnetv2_s100": (32, 64, 128, 256, 512, 1024),
    "espnetv2_s125": (32, 80, 160, 320, 640, 1024),
    "espnetv2_s150": (32, 96, 192, 384, 768, 1024),
    "espnetv2_s200": (32, 128, 256, 512, 1024, 1280),
}
K = 4


def _eesp(prefix: str, in_chs: int, out_chs: int) -> Layout:
    n = out_chs // K
    layout = authors_cbr(f"{prefix}.proj_1x1", n, in_chs, 1, groups=K)
    for i in range(K):
        layout |= authors_conv(f"{prefix}.spp_dw.{i}", n, n, 3, groups=n)
    layout |= authors_conv(f"{prefix}.conv_1x1_exp", out_chs, out_chs, 1, groups=K)
    layout |= authors_bn(f"{prefix}.conv_1x1_exp.bn", out_chs) | authors_br(f"{prefix}.br_after_cat", out_chs)
    return layout | {f"{prefix}.module_act.weight": (out_chs,)}


def _downsampler(prefix: str, in_chs: int, out_chs: int) -> Layout:
    """Every DownSampler has ``inp_reinf`` (the authors build it with the default reinf=True, level 5 too)."""
    reinf = authors_cbr(f"{prefix}.inp_reinf.0", 3, 3, 3) | authors_conv(f"{prefix}.inp_reinf.1", out_chs, 3, 1)
    reinf |= authors_bn(f"{prefix}.inp_reinf.1.bn", out_chs)
    return _eesp(f"{prefix}.eesp", in_chs, out_chs - in_chs) | reinf | {f"{prefix}.act.weight": (out_chs,)}


def _authors_layout(widths: tuple[int, ...]) -> Layout:
    """Key -> shape of the authors' ``EESPNet(s).state_dict()``, from their code's facts: reps (0, 3, 7, 3),
    the head's depthwise and group-K CBRs appended to ``level5``, then ``classifier``."""
    w = widths
    layout = authors_cbr("level1", w[0], 3, 3)
    for level, depth in ((2, 0), (3, 3), (4, 7), (5, 3)):
        chs = w[level - 1]
        layout |= _downsampler(f"level{level}_0", w[level - 2], chs)
        for i in range(depth):
            layout |= _eesp(f"level{level}.{i}", chs, chs)
    layout |= authors_cbr("level5.3", w[4], w[4], 3, groups=w[4]) | authors_cbr("level5.4", w[5], w[4], 1, groups=K)
    return layout | {"classifier.weight": (1000, w[5]), "classifier.bias": (1000,)}


@pytest.mark.parametrize("name", sorted(WIDTHS))
def test_authors_layout_at_every_scale(name: str) -> None:
    """Their keys and shapes are ours, on the meta device, and their count is the spec's exact one."""
    layout = _authors_layout(WIDTHS[name])
    assert layout_params(layout) == get_spec(name).reference_params
    with torch.device("meta"):
        ours = {key: tuple(value.shape) for key, value in create_model(name).state_dict().items()}
    assert ours == layout


def test_authors_checkpoint_loads_without_a_remap(tmp_path) -> None:
    """Their ``model_best.pth`` (the state_dict of a DataParallel model: ``module.`` keys) loads strictly
    through ``--weights``, and every tensor lands under its own name."""
    theirs = random_state(_authors_layout(WIDTHS["espnetv2_s050"]))
    saved = {f"module.{key}": value for key, value in theirs.items()}
    assert_loads_every_tensor("espnetv2_s050", theirs, saved, tmp_path / "model_best.pth")


def test_dilations_follow_the_authors_r_lim() -> None:
    """r_lim (13, 11, 9, 7, 5), assigned as the authors' code does: r_lim[i] to level i+2's downsampler,
    r_lim[i+1] to its units; a field past the limit falls back to 3 (dilation 1), sorted first."""
    with torch.device("meta"):
        model = create_model("espnetv2_s100")
    expected = {"level2_0.eesp": (1, 2, 3, 4), "level3_0.eesp": (1, 2, 3, 4), "level3.2": (1, 2, 3, 4),
                "level4_0.eesp": (1, 2, 3, 4), "level4.6": (1, 1, 2, 3), "level5_0.eesp": (1, 1, 2, 3),
                "level5.2": (1, 1, 1, 2)}
    for unit, dilations in expected.items():
        branches = model.get_submodule(unit).spp_dw
        assert tuple(branch.conv.dilation[0] for branch in branches) == dilations, unit


def _authors_reinforcement(image: torch.Tensor, height: int) -> torch.Tensor:
    """The authors' DownSampler: pool the full image (3x3/2, padding 1) until its ``size(2)`` (the height)
    is the features'."""
    while True:
        image = F.avg_pool2d(image, kernel_size=3, padding=1, stride=2)
        if image.shape[2] == height:
            return image


@pytest.mark.parametrize("size", [(9, 9), (9, 40), (70, 13)])
def test_reinforcement_chain_is_the_authors_loop(size: tuple[int, int]) -> None:
    """At the smallest sides the spec takes and at non-square ones, each reinforced level gets the image
    the authors' loop would give it for that level's output; level 5 gets none, as in their forward."""
    model = create_model("espnetv2_s050")
    images, heights = {}, {}

    def record(level: int):
        def hook(_module, args, output) -> None:
            images[level] = args[1] if len(args) > 1 else None
            heights[level] = output.shape[2]
        return hook

    for level in (2, 3, 4, 5):
        model.get_submodule(f"level{level}_0").register_forward_hook(record(level))
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model(x)
    assert images.pop(5) is None
    for level, image in images.items():
        torch.testing.assert_close(image, _authors_reinforcement(x, heights[level]), rtol=0, atol=0)


def test_one_graph_runs_batch_1_and_3_at_any_size(tmp_path) -> None:
    """Four pools of the image and four downsampler shortcuts, no resize: batch 1 at 64 and batch 3 at
    67x45 on one graph."""
    model = create_model("espnetv2_s050")
    randomize_norm_stats(model)
    torch.nn.init.normal_(model.classifier.weight, std=0.05)  # the authors' std 0.001 leaves logits near 0
    assert_dynamic_graph_matches(model, tmp_path / "espnetv2_s050.onnx", [(1, 64, 64), (3, 67, 45)],
                                 average_pools=8)


def test_any_side_from_9() -> None:
    """From 9 px the chain pools as often as the authors' loop; at 8 the image is 1x1 before level 4 and
    their loop stops early, so the spec refuses it in one line."""
    spec = get_spec("espnetv2_s200")
    assert spec_with_size(spec, (67, 45)).input_size == (3, 67, 45)
    with pytest.raises(InputSizeError, match="at least 9; got 8x8"):
        spec_with_size(spec, 8)
