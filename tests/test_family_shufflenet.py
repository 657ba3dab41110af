"""ShuffleNet V1/V2 beyond the registry suite (whose dynamic-batch export and batched validation
catch a channel shuffle that bakes the batch in, P-SHUF): V1 keeps the megvii (C/g, g)
permutation its weights need."""

from __future__ import annotations

import torch

from model_defs._layers import channel_shuffle


def test_megvii_shuffle_is_the_inverse_convention() -> None:
    """megvii ShuffleNetV1 views the channels as (C/g, g) and permutes; that equals our (g', C/g')
    shuffle with g' = C/g, and undoes the (g, C/g) shuffle."""
    x = torch.arange(2 * 12 * 2 * 2, dtype=torch.float32).reshape(2, 12, 2, 2)
    groups = 3
    megvii = x.reshape(2, 12 // groups, groups, 2, 2).permute(0, 2, 1, 3, 4).reshape(2, 12, 2, 2)
    assert torch.equal(channel_shuffle(x, 12 // groups), megvii)
    assert torch.equal(channel_shuffle(megvii, groups), x)
