"""FBNet-C: timm's layout loads as it is and matches timm built as its checkpoint was trained (BN eps
1e-3, which timm applies only when it loads pretrained weights, so the registry suite cannot check it)."""

from __future__ import annotations

from .conftest import assert_checkpoint_parity


def test_fbnetc_100_matches_timm_with_checkpoint_bn_eps() -> None:
    assert_checkpoint_parity("timm:fbnetc_100", "fbnetc_100", bn_eps=1e-3)
