"""FBNetV3 beyond the registry suite: mobile-vision's explicit dw paddings.

A, C, E and F have no reference library, and their paddings change no parameter count, so the
feature map that reaches the head is pinned here to what mobile-vision's own ``FBNetV3_*`` models
give at their input size (read from ``fbnet("FBNetV3_A")`` etc., input of the ``ir_pool`` head).
"""

from __future__ import annotations

import pytest
import torch

from model_defs import create_model, get_spec


@pytest.mark.parametrize(("name", "side"), [
    ("fbnetv3_a", 6),  # 224: symmetric padding would give 7
    ("fbnetv3_c", 7),  # 248: 8
    ("fbnetv3_e", 8),  # 264: 9
    ("fbnetv3_f", 8),  # 272: 9
    ("fbnetv3_b", 7),  # timm's B pads k // 2 everywhere
    ("fbnetv3_d", 7),
])
def test_map_before_the_head(name: str, side: int) -> None:
    with torch.device("meta"):
        model = create_model(name)
        x = torch.zeros(1, *get_spec(name).input_size)
        features = model.blocks[:-1](model.bn1(model.conv_stem(x)))
    assert tuple(features.shape[2:]) == (side, side)
