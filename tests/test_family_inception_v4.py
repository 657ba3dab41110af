"""Inception-v4 and the branch notation it shares with Inception-ResNet-v2 (``_inception_blocks``),
beyond the registry suite: the input-size rule of both VALID-padded networks, and the notation's errors.

The registry suite exports, validates and checks parity for both at 75 px, their reduced test size and
the smallest they take (not a multiple of 32); a smaller size must be refused by the spec.
"""

from __future__ import annotations

import pytest

from bbruntime.errors import InputSizeError
from model_defs import get_spec, spec_with_size
from model_defs._inception_blocks import branch_from_string

VALID_PADDED = ("inception_v4", "inception_resnet_v2")


@pytest.mark.parametrize("name", VALID_PADDED)
def test_size_rule_takes_any_side_from_75(name: str) -> None:
    """75 px is the smallest input that leaves a pixel after the last reduction (74 fails inside the
    last Reduction block's VALID 3x3s); any side from there on works, multiple of 32 or not. A smaller
    one is refused in one line before a model is built."""
    spec = get_spec(name)
    assert spec_with_size(spec, 107).input_size == (3, 107, 107)
    assert spec_with_size(spec, (75, 76)).input_size == (3, 75, 76)
    with pytest.raises(InputSizeError, match="at least 75; got 74x74"):
        spec_with_size(spec, 74)


def test_notation_decodes_and_names_bad_tokens() -> None:
    branch, out_chs = branch_from_string("avg c64 c96_k1x7 c128_k3_s2_v", 32)
    pool, conv_1x1, conv_1x7, conv_valid = branch
    assert out_chs == 128 and not pool.count_include_pad
    assert conv_1x1.conv.kernel_size == (1, 1) and conv_1x7.conv.padding == (0, 3)
    assert conv_valid.conv.stride == (2, 2) and conv_valid.conv.padding == (0, 0)
    assert conv_valid.bn.eps == 1e-3
    with pytest.raises(ValueError, match="'c96_k3_p1'"):
        branch_from_string("c64 c96_k3_p1", 32)
