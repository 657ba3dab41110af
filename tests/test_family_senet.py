"""SENet beyond the registry suite: Cadene's ports (pretrainedmodels) as a second reference for the Caffe
variants, and the cost of the Caffe stride placement (P-CAFFE)."""

from __future__ import annotations

import pytest
import torch

from model_defs import create_model, get_entry, model_stats

from .conftest import PARITY_TOLERANCE, randomize_norm_stats

CADENE = {"se_resnet50": "legacy_seresnet50", "se_resnext50_32x4d": "legacy_seresnext50_32x4d",
          "senet154": "senet154"}


def _cadene(name: str) -> torch.nn.Module:
    pretrainedmodels = pytest.importorskip("pretrainedmodels", reason="Cadene's ports are a reference")
    return getattr(pretrainedmodels, name)(num_classes=1000, pretrained=None).eval()


@pytest.mark.parametrize("cadene", CADENE)
def test_cadene_layout_loads_through_the_caffe_remap(cadene: str) -> None:
    """Every key and shape of Cadene's three models, on the meta device (nothing computed): the layout
    timm's ``legacy_*`` models share, so the registry's parity with those covers Cadene's weights too."""
    with torch.device("meta"):
        reference, ours = _cadene(cadene), create_model(CADENE[cadene])
    ours.load_state_dict(get_entry(CADENE[cadene]).remap(reference.state_dict()), strict=True, assign=True)


def test_legacy_seresnet50_matches_cadene() -> None:
    """Cadene's SE-ResNet-50 computes the features ours does, stride on the first 1x1 and ceil-mode pool
    included. Its head is a fixed AvgPool2d(7) that takes 224 px only, so at 64 px the classifiers are
    compared on the same pooled features."""
    torch.manual_seed(0)
    reference = _cadene("se_resnet50")
    randomize_norm_stats(reference)
    ours = create_model("legacy_seresnet50")
    ours.load_state_dict(get_entry("legacy_seresnet50").remap(reference.state_dict()), strict=True)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = reference.features(x), ours.forward_features(x)
        pooled = expected.mean((2, 3))
        logits, our_logits = reference.last_linear(pooled), ours.fc(pooled)
    scale = expected.abs().max().item()
    assert scale > 0.1, "degenerate features: the comparison would prove nothing"
    assert (got - expected).abs().max().item() <= PARITY_TOLERANCE * scale
    assert torch.equal(logits, our_logits)


def test_caffe_stride_placement_costs_fewer_macs() -> None:
    """P-CAFFE: the same parameters, but the Caffe form's strided 3x3s run at the lower resolution:
    3.861 vs 4.092 GMACs (conv + linear at 224, ../shared/families.md; timm's own models count
    3.8605 and 4.0917 here)."""
    caffe, timm_form = model_stats("legacy_seresnet50"), model_stats("seresnet50")
    assert caffe.params == timm_form.params
    assert caffe.gmacs == pytest.approx(3.8605, abs=1e-4) and timm_form.gmacs == pytest.approx(4.0917, abs=1e-4)
    # SE-ResNeXt strides its 3x3 in both forms: only the stem pool differs, at no cost in MACs.
    assert model_stats("legacy_seresnext50_32x4d").gmacs == pytest.approx(model_stats("seresnext50_32x4d").gmacs)
