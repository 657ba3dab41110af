"""AlexNet beyond the registry suite, which checks torchvision parity at 64 px and exports there: a
1x1 feature map pooled up to 6x6 through the shared export-safe pool (P-ADAPT; the pool itself is
tested at every kind of map size in test_family_vgg.py). Here: the smallest size the spec admits."""

from __future__ import annotations

import pytest
import torch

from model_defs import create_model

from .test_cli import assert_one_line_error, leftovers, run


def test_63_px_is_the_smallest_size(tmp_path) -> None:
    """63 px leaves a 1x1 map after the third max pool, which torchvision's pool repeats into 6x6;
    62 leaves none, and the CLI refuses it in one line before building the model."""
    model = create_model("alexnet")
    with torch.no_grad():
        assert model.forward_features(torch.zeros(1, 3, 63, 63)).shape[-2:] == (1, 1)
        assert model(torch.zeros(2, 3, 63, 63)).shape == (2, 1000)
        with pytest.raises(RuntimeError):
            model.forward_features(torch.zeros(1, 3, 62, 62))
    assert_one_line_error(run("onnx", "alexnet", "--img-size", "62", "--out", str(tmp_path)), "at least 63")
    assert leftovers(tmp_path) == []
