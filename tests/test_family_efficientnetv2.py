"""EfficientNetV2: timm's efficientnetv2_s layout loads as it is (the registry suite checks torchvision's)."""

from __future__ import annotations

import pytest
import torch

from model_defs import create_model

from .conftest import assert_same_outputs, randomize_norm_stats


def test_timm_efficientnetv2_s_loads_without_remap() -> None:
    """Same keys as timm; equal outputs once timm uses the BN eps of the ported weights (1e-3)."""
    timm = pytest.importorskip("timm", reason="parity reference: pip install -e '.[test]'")
    torch.manual_seed(0)
    reference = timm.create_model("efficientnetv2_s", bn_eps=1e-3).eval()
    randomize_norm_stats(reference)
    ours = create_model("efficientnetv2_s")
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    assert_same_outputs(reference, ours, x)
