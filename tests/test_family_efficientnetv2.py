"""EfficientNetV2: timm's efficientnetv2_s layout loads as it is (the registry suite checks torchvision's)."""

from __future__ import annotations

from .conftest import assert_checkpoint_parity


def test_timm_efficientnetv2_s_loads_without_remap() -> None:
    """Same keys as timm; equal outputs once timm uses the BN eps of the ported weights (1e-3)."""
    assert_checkpoint_parity("timm:efficientnetv2_s", "efficientnetv2_s", side=128, bn_eps=1e-3)
