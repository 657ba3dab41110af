"""GoogLeNet (Inception-v1) and Inception-v3 beyond the registry suite.

The suite loads each spec's reference (torchvision ``googlenet`` with its aux heads, through the remap;
timm ``inception_v3``, as it is) and exports both. Here: torchvision's checkpoints with and without
their auxiliary heads through bbexport's own ``--weights`` path, torchvision's in-graph
``transform_input`` folded into the spec's preprocessing (P-TFIN), GoogLeNet's ceil-mode pools in
ONNX at a size where all four round up (P-CEIL), and the smallest input each takes.

Random-init features barely depend on the input, so the P-TFIN and P-CEIL checks re-estimate the
BatchNorm statistics on the calibration photos first (as bbexport does for random weights) and compare
the pooled features (``fc`` replaced by an identity), which then do.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from bbruntime.errors import InputSizeError
from bbruntime.runners import OrtRunner
from calibration.batchnorm import recalibrate_batchnorm
from calibration.images import EVALUATION_PHOTOS, preprocess_batch, sample_photos
from exporter.onnx_export import onnx_from_model
from exporter.weights import load_weights, model_source
from model_defs import IMAGENET_MEAN, IMAGENET_STD, create_model, get_entry, get_spec, spec_with_size

from .conftest import assert_same_outputs, randomize_norm_stats

# Small inputs, not multiples of 32: at 47x80 all four of GoogLeNet's stride-2 pools round up.
SIZES = {"googlenet": (47, 80), "inception_v3": (75, 90)}


def _torchvision(name: str, **options) -> nn.Module:
    models = pytest.importorskip("torchvision.models", reason="parity reference: pip install -e '.[test]'")
    torch.manual_seed(0)
    model = models.get_model(name, weights=None, init_weights=False, **options).eval()
    randomize_norm_stats(model)
    return model


def _assert_close(expected: torch.Tensor | np.ndarray, got: torch.Tensor | np.ndarray) -> None:
    expected, got = torch.as_tensor(expected), torch.as_tensor(got)
    scale = expected.abs().max().item()
    assert (expected[0] - expected[1]).abs().max().item() > 1e-2 * scale, (
        "features independent of the input: the comparison would prove nothing")
    assert (got - expected).abs().max().item() <= 1e-4 * scale


# Inception-v3 without AuxLogits has timm's keys exactly: the registry suite loads that form.
@pytest.mark.parametrize("name, aux_logits", [("googlenet", True), ("googlenet", False), ("inception_v3", True)],
                         ids=["googlenet-with-aux", "googlenet-without-aux", "inception_v3-with-aux"])
def test_torchvision_checkpoint_loads_with_or_without_aux_heads(name: str, aux_logits: bool, tmp_path) -> None:
    """torchvision's pretrained files carry the aux heads (aux1/aux2, AuxLogits); a model saved after
    ``aux_logits=False`` does not. Both load strictly through ``--weights`` (the remap drops the heads,
    which run in training only) and give torchvision's outputs."""
    reference = _torchvision(name, aux_logits=aux_logits)
    path = tmp_path / f"{name}.pth"
    torch.save(reference.state_dict(), path)
    ours = create_model(name)
    load_weights(ours, model_source(name), path)
    assert_same_outputs(reference, ours, torch.randn(2, 3, *SIZES[name], generator=torch.Generator().manual_seed(1)))


@pytest.mark.parametrize("name", ["googlenet", "inception_v3"])
def test_transform_input_is_the_spec_normalisation(name: str) -> None:
    """P-TFIN: torchvision's pretrained builders set ``transform_input=True``. Fed photos normalised with
    ImageNet mean/std (its transforms), that model equals ours fed the same photos as our spec
    normalises them (mean = std = 0.5); fed ImageNet-normalised photos, ours does not."""
    spec = spec_with_size(get_spec(name), SIZES[name])
    imagenet_spec = replace(spec, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    reference = _torchvision(name, transform_input=True)
    recalibrate_batchnorm(reference, imagenet_spec)
    ours = create_model(name)
    ours.load_state_dict(get_entry(name).remap(reference.state_dict()), strict=True)
    reference.fc = ours.fc = nn.Identity()
    photos = [image for _, image in sample_photos(EVALUATION_PHOTOS[:2])]
    ours_input = torch.from_numpy(preprocess_batch(photos, spec))
    imagenet_input = torch.from_numpy(preprocess_batch(photos, imagenet_spec))
    with torch.no_grad():
        expected, got, unfolded = reference(imagenet_input), ours(ours_input), ours(imagenet_input)
    _assert_close(expected, got)
    assert (unfolded - expected).abs().max().item() > 1e-2 * expected.abs().max().item()


def test_googlenet_ceil_pools_round_up_in_onnx(tmp_path) -> None:
    """P-CEIL: at 47x80 every stride-2 pool rounds up (features 2x3, floor mode would give 1x2). The
    graph keeps ``ceil_mode=1`` on exactly those four MaxPools, and ONNX Runtime, at a batch other
    than the traced one, gives PyTorch's pooled features."""
    torch.manual_seed(0)
    model = create_model("googlenet")
    recalibrate_batchnorm(model, spec_with_size(get_spec("googlenet"), SIZES["googlenet"]))
    x = torch.randn(3, 3, *SIZES["googlenet"], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert model.forward_features(x).shape[-2:] == (2, 3)
    model.fc = nn.Identity()
    path = tmp_path / "googlenet.onnx"
    onnx_from_model(model, path, (3, *SIZES["googlenet"]), dynamic_batch=True)
    pools = [node for node in onnx.load(str(path)).graph.node if node.op_type == "MaxPool"]
    ceil = [node for node in pools if any(a.name == "ceil_mode" and a.i == 1 for a in node.attribute)]
    assert (len(ceil), len(pools)) == (4, 4 + 9)  # + one stride-1 pool per Inception module
    with torch.no_grad():
        expected = model(x).numpy()
    _assert_close(expected, OrtRunner(path).infer(x.numpy()))


@pytest.mark.parametrize("name, smallest", [("googlenet", 15), ("inception_v3", 75)])
def test_min_size_is_the_smallest_input_that_runs(name: str, smallest: int) -> None:
    """Any side from the spec's ``min_size`` on is accepted (no multiple of 32 needed); one less is the
    registry's one-line InputSizeError, and PyTorch itself cannot run it."""
    spec = get_spec(name)
    assert spec_with_size(spec, (smallest, smallest + 1)).input_size == (3, smallest, smallest + 1)
    with pytest.raises(InputSizeError, match=f"at least {smallest}; got"):
        spec_with_size(spec, smallest - 1)
    model = create_model(name)
    with torch.no_grad():
        assert model(torch.randn(1, 3, smallest, smallest)).shape == (1, spec.num_classes)
        with pytest.raises(RuntimeError):
            model(torch.randn(1, 3, smallest - 1, smallest - 1))
