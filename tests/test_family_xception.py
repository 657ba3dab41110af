"""Xception beyond the registry suite: Cadene's port, odd input sizes, the size rule.

Random-init Xception logits barely depend on the input, so these compare the pre-pool features,
which do. The registry suite checks every variant against timm at 64x64; these run an odd size,
where each stride-2 layer must round up (ceil(n / 2)) in the residual branch and the shortcut alike.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from bbruntime.errors import InputSizeError
from model_defs import create_model, get_entry, get_spec, resolve_name, spec_with_size

from .conftest import randomize_norm_stats, reference_model

ODD_INPUT = torch.randn(1, 3, 67, 65, generator=torch.Generator().manual_seed(1))


def _assert_close(expected: torch.Tensor, got: torch.Tensor) -> None:
    scale = expected.abs().max().item()
    assert scale > 0.1, "degenerate features: the comparison would prove nothing"
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() <= 1e-4 * scale


def _loaded_pair(make_reference: Callable[[], torch.nn.Module], name: str, remap: bool = False):
    """A random reference (norm statistics randomized) and our ``name`` holding its state_dict."""
    torch.manual_seed(0)
    reference = make_reference().eval()
    randomize_norm_stats(reference)
    ours = create_model(name)
    state = reference.state_dict()
    ours.load_state_dict(get_entry(name).remap(state) if remap else state, strict=True)
    return reference, ours


def test_legacy_xception_matches_cadene_at_an_odd_size() -> None:
    """Cadene's ``pretrainedmodels.xception`` loads through ``remap_cadene`` (``last_linear`` -> ``fc``);
    its ``features`` stop before the last ReLU, which its ``logits`` apply."""
    pretrainedmodels = pytest.importorskip("pretrainedmodels", reason="needs Cadene's pretrainedmodels package")
    reference, ours = _loaded_pair(lambda: pretrainedmodels.xception(num_classes=1000, pretrained=None),
                                   "legacy_xception", remap=True)
    with torch.no_grad():
        expected = reference.features(ODD_INPUT)
        _assert_close(torch.relu(expected), ours.forward_features(ODD_INPUT))
        _assert_close(reference.logits(expected), ours(ODD_INPUT))


def test_xception41_matches_timm_at_an_odd_size() -> None:
    reference, ours = _loaded_pair(lambda: reference_model("timm:xception41", 1000), "xception41")
    with torch.no_grad():
        _assert_close(reference.forward_features(ODD_INPUT), ours.forward_features(ODD_INPUT))


def test_input_size_rule_and_alias() -> None:
    """Any side from 32 up, odd ones included; a smaller one is refused in one line. timm's
    deprecated name ``xception`` (Cadene's) is the legacy model."""
    assert spec_with_size(get_spec("legacy_xception"), (67, 65)).input_size == (3, 67, 65)
    with pytest.raises(InputSizeError, match="at least 32; got 31x31"):
        spec_with_size(get_spec("xception65"), 31)
    assert resolve_name("xception") == "legacy_xception"
