"""Darknet beyond the registry suite: Darknet-19 has no library to load, so its layers are checked
against pjreddie/darknet ``cfg/darknet19.cfg`` itself, and its MACs against the paper's count."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from model_defs import create_model, model_stats

# cfg/darknet19.cfg top to bottom: (filters, size) of every [convolutional], "M" for each 2x2 [maxpool].
# Every conv but the last has batch_normalize=1 and activation=leaky; the last is linear with a bias.
DARKNET19_CFG = (
    (32, 3), "M", (64, 3), "M",
    (128, 3), (64, 1), (128, 3), "M",
    (256, 3), (128, 1), (256, 3), "M",
    (512, 3), (256, 1), (512, 3), (256, 1), (512, 3), "M",
    (1024, 3), (512, 1), (1024, 3), (512, 1), (1024, 3),
    (1000, 1),
)


def test_darknet19_layers_follow_the_cfg() -> None:
    with torch.device("meta"):
        model = create_model("darknet19")
    layers = [(m.out_channels, m.kernel_size[0]) if isinstance(m, nn.Conv2d) else "M"
              for m in model.modules() if isinstance(m, nn.Conv2d | nn.MaxPool2d)]
    assert tuple(layers) == DARKNET19_CFG
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.padding[0] == c.kernel_size[0] // 2 and c.stride == (1, 1) for c in convs)  # darknet pad=1
    assert [c.bias is not None for c in convs] == [False] * 18 + [True]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 18


@pytest.mark.parametrize(("name", "slope"), [("darknet19", 0.1), ("darknet53", 0.01)])
def test_leaky_slope_is_the_references(name: str, slope: float) -> None:
    """Darknet's ``leaky`` is 0.1; timm builds darknet53, and trained its weights, with PyTorch's 0.01."""
    with torch.device("meta"):
        model = create_model(name)
    slopes = {m.negative_slope for m in model.modules() if isinstance(m, nn.LeakyReLU)}
    assert slopes == {slope}


@pytest.mark.parametrize(("side", "gmacs"), [(224, 2.791), (256, 3.645)])
def test_darknet19_macs_match_the_paper(side: int, gmacs: float) -> None:
    """families.md: 2.791 GMACs at 224 (the paper's 5.58 B ops), 3.645 at the cfg's 256. The classifier
    conv runs before the global pool, as in the cfg, or the count would be 50 M lower."""
    assert model_stats("darknet19", (3, side, side)).gmacs == pytest.approx(gmacs, abs=5e-4)
