"""BN-Inception beyond the registry suite: Cadene's port as the reference (weights and eval transform),
the ceil-mode pools in the graph (P-CEIL), and the input sizes the network takes."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from bbruntime.errors import InputSizeError
from calibration.images import preprocess, sample_photos
from exporter.onnx_export import onnx_from_model
from model_defs import create_model, get_spec
from model_defs._registry import spec_with_size

from .conftest import PARITY_TOLERANCE, assert_same_outputs, cadene_pair


def test_bninception_matches_cadene() -> None:
    """Cadene's state_dict loads as it is. Random-init logits hardly depend on the input (the two
    samples' differ by ~1e-6), so the pre-pool features, which do, are compared as well."""
    reference, ours = cadene_pair("bninception")
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))  # Cadene's 7x7 head needs 224
    with torch.no_grad():
        expected, got = reference.features(x), ours.forward_features(x)
    scale = expected.abs().max().item()
    assert scale > 0.1, "degenerate features: the comparison would prove nothing"
    assert (got - expected).abs().max().item() <= PARITY_TOLERANCE * scale
    assert_same_outputs(reference, ours, x)


@pytest.mark.parametrize("photo", ["astronaut", "coffee"])  # square, and 3:2 (no rounding in the resize)
def test_preprocessing_matches_cadene_transform(photo: str) -> None:
    """P-CAFFE: the spec's transform (BGR, 0-255, Caffe means) is the one Cadene's weights were made for."""
    pytest.importorskip("pretrainedmodels", reason="needs Cadene's pretrainedmodels package")
    from PIL import Image
    from pretrainedmodels.models.bninception import pretrained_settings
    from pretrainedmodels.utils import TransformImage

    image = sample_photos((photo,))[0][1]
    transform = TransformImage(pretrained_settings["bninception"]["imagenet"])
    expected = transform(Image.fromarray(image)).numpy()
    assert expected.shape == (3, 224, 224)
    np.testing.assert_allclose(preprocess(image, get_spec("bninception")), expected, rtol=0, atol=1e-4)


def test_onnx_pools_are_ceil_mode_and_count_the_padding(tmp_path) -> None:
    """P-CEIL: all 12 pools export ceil-mode, the 7 average pools with count_include_pad=1, and
    the simplifier keeps them so."""
    import onnxsim

    path = tmp_path / "bninception.onnx"
    onnx_from_model(create_model("bninception"), path, (3, 64, 64), dynamic_batch=True)
    simplified, ok = onnxsim.simplify(onnx.load(str(path)))
    assert ok
    for graph in (onnx.load(str(path)).graph, simplified.graph):
        pools = [node for node in graph.node if node.op_type in ("MaxPool", "AveragePool")]
        attrs = [{a.name: onnx.helper.get_attribute_value(a) for a in node.attribute} for node in pools]
        assert len(pools) == 12 and all(a["ceil_mode"] == 1 for a in attrs)
        averages = [a for node, a in zip(pools, attrs, strict=True) if node.op_type == "AveragePool"]
        assert len(averages) == 7 and all(a["count_include_pad"] == 1 for a in averages)


def test_input_sizes() -> None:
    """Multiples of 32 run, the smallest included; 240 (a multiple of 16) really breaks a stride-2
    module's concat, and the spec rejects it in one line before anything is built."""
    model = create_model("bninception")
    with torch.no_grad():
        for side in (32, 96):
            assert model(torch.randn(1, 3, side, side)).shape == (1, 1000)
        with pytest.raises(RuntimeError, match="Sizes of tensors must match"):
            model(torch.randn(1, 3, 240, 240))
    with pytest.raises(InputSizeError, match="multiple of 32") as error:
        spec_with_size(get_spec("bninception"), 240)
    assert "\n" not in str(error.value)
