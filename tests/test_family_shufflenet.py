"""ShuffleNet V1/V2 beyond the registry suite: the channel shuffle keeps the batch dynamic
(../shared/families.md P-SHUF), and V1 keeps the megvii (C/g, g) permutation its weights need."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from exporter.pipeline import ExportOptions, export_onnx
from model_defs import get_spec
from model_defs._layers import channel_shuffle


@pytest.mark.parametrize("name", ["shufflenet_v1_g3_x0_5", "shufflenet_v2_x0_5"])
def test_dynamic_batch_export_runs_at_batch_1_and_3(name: str, tmp_path) -> None:
    outcome = export_onnx(name, ExportOptions(dynamic_batch=True, out=tmp_path))
    session = ort.InferenceSession(str(outcome.onnx_path), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    batch = np.random.default_rng(0).standard_normal((3, *get_spec(name).input_size), dtype=np.float32)
    (logits_3,) = session.run(None, {input_name: batch})
    assert logits_3.shape == (3, 1000)
    for i in range(3):
        (logits_1,) = session.run(None, {input_name: batch[i : i + 1]})
        np.testing.assert_allclose(logits_1[0], logits_3[i], rtol=1e-4, atol=1e-4)


def test_megvii_shuffle_is_the_inverse_convention() -> None:
    """megvii ShuffleNetV1 views the channels as (C/g, g) and permutes; that equals our (g', C/g')
    shuffle with g' = C/g, and undoes the (g, C/g) shuffle."""
    x = torch.arange(2 * 12 * 2 * 2, dtype=torch.float32).reshape(2, 12, 2, 2)
    groups = 3
    megvii = x.reshape(2, 12 // groups, groups, 2, 2).permute(0, 2, 1, 3, 4).reshape(2, 12, 2, 2)
    assert torch.equal(channel_shuffle(x, 12 // groups), megvii)
    assert torch.equal(channel_shuffle(megvii, groups), x)
