"""FBNetV2 beyond the registry suite: mobile-vision's channel rounding and checkpoint layout.

mobile-vision itself is not on PyPI, so its layout is pinned here by key names read from its
``FBNetV2_F4`` model (``mobile_cv.model_zoo.models.fbnet_v2.fbnet``).
"""

from __future__ import annotations

import pytest
import torch

from model_defs import create_model
from model_defs._efficientnet_blocks import make_divisible
from model_defs.fbnetv2 import decode_stage, divisible_by, remap_mobile_cv


def test_divisible_by_is_mobile_visions_rounding() -> None:
    # 24 * 1.7912 = 42.99: timm's rule keeps 40 (>= 90%), mobile-vision's bumps to 48 (< 95%).
    assert divisible_by(24 * 1.7912) == 48 and make_divisible(24 * 1.7912) == 40
    assert divisible_by(26) == 32  # an SE of 104 channels squeezes to int(104 / 4) = 26 -> 32
    assert divisible_by(16 * 5.4566) == 88
    assert divisible_by(1344) == 1344
    assert divisible_by(3) == 8


def test_decode_stage_reads_skip_and_strides_only_the_first_block() -> None:
    blocks = decode_stage(("ir_r2_k5_s2_e1.7912_c24_nhs", "skip_c32"))
    assert [(b.kind, b.stride, b.out_chs) for b in blocks] == [("ir", 2, 24), ("ir", 1, 24), ("skip", 1, 32)]
    with pytest.raises(ValueError, match="skip_c<channels>"):
        decode_stage(("skip32",))


# One key per kind of mobile-vision layer in FBNetV2_F4 -> our key.
_MOBILE_CV_KEYS = {
    "backbone.stages.xif0_0.conv.bias": "conv_stem.bias",
    "backbone.stages.xif0_0.bn.running_var": "bn1.running_var",
    "backbone.stages.xif1_0.dw.conv.weight": "blocks.0.0.conv_dw.weight",  # e1: no pw
    "backbone.stages.xif1_0.pwl.bn.weight": "blocks.0.0.bn2.weight",
    "backbone.stages.xif3_0.pw.bn.bias": "blocks.2.0.bn1.bias",
    "backbone.stages.xif3_0.dw.conv.weight": "blocks.2.0.conv_dw.weight",
    "backbone.stages.xif3_0.se.se.0.conv.weight": "blocks.2.0.se.conv_reduce.weight",
    "backbone.stages.xif3_0.se.se.1.bias": "blocks.2.0.se.conv_expand.bias",
    "backbone.stages.xif3_0.pwl.bn.running_mean": "blocks.2.0.bn3.running_mean",
    "backbone.stages.xif5_3.conv.conv.weight": "blocks.4.3.conv.weight",  # skip projection
    "backbone.stages.xif5_3.conv.bn.num_batches_tracked": "blocks.4.3.bn1.num_batches_tracked",
    "backbone.stages.xif6_0.pw.conv.weight": "blocks.5.0.conv.weight",  # ir_pool head
    "backbone.stages.xif6_0.pwl.conv.weight": "conv_head.weight",
    "head.conv.bias": "classifier.bias",
}


def test_remap_mobile_cv_names_every_kind_of_layer() -> None:
    ours = create_model("fbnetv2_f4").state_dict()
    state = {key: ours[target] for key, target in _MOBILE_CV_KEYS.items()}
    # The mobile-vision block kinds are told apart by their sublayers: give each block all of them.
    state["backbone.stages.xif1_0.dw.bn.weight"] = ours["blocks.0.0.bn1.weight"]
    state["backbone.stages.xif3_0.pwl.conv.weight"] = ours["blocks.2.0.conv_pwl.weight"]
    state["head.conv.weight"] = ours["classifier.weight"][:, :, None, None]  # a 1x1 conv there
    remapped = remap_mobile_cv(state)
    for key, target in _MOBILE_CV_KEYS.items():
        assert remapped[target] is state[key], key
    assert torch.equal(remapped["classifier.weight"], ours["classifier.weight"])


def test_remap_mobile_cv_rejects_foreign_keys() -> None:
    with pytest.raises(KeyError):
        remap_mobile_cv({"backbone.stages.xif0_0.conv.weight": torch.zeros(1), "features.0.weight": torch.zeros(1)})
