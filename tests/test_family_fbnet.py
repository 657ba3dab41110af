"""FBNet-C: timm's layout loads as it is and matches timm built as its checkpoint was trained (BN eps
1e-3, which timm applies only when it loads pretrained weights, so the registry suite cannot check it)."""

from __future__ import annotations

import pytest
import torch

from model_defs import create_model

from .conftest import assert_same_outputs, randomize_norm_stats


def test_fbnetc_100_matches_timm_with_checkpoint_bn_eps() -> None:
    timm = pytest.importorskip("timm", reason="parity reference: pip install -e '.[test]'")
    torch.manual_seed(0)
    reference = timm.create_model("fbnetc_100", bn_eps=1e-3).eval()
    randomize_norm_stats(reference)
    ours = create_model("fbnetc_100")
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    assert_same_outputs(reference, ours, x)
