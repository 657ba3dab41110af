"""ViT and Swin beyond the registry suite: dynamic batch and opset 20, position-embedding resampling
against timm, Swin's padded sizes, the size rules, and the torchvision checkpoint layouts."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from bbruntime.errors import InputSizeError
from bbruntime.runners import OrtRunner
from exporter.onnx_export import onnx_from_model
from exporter.pipeline import ExportOptions, export_onnx
from exporter.runners import TorchRunner
from exporter.weights import build_model
from model_defs import create_model, get_entry, get_spec, spec_with_size

timm = pytest.importorskip("timm", reason="parity reference: pip install -e '.[test]'")
tv_models = pytest.importorskip("torchvision.models", reason="parity reference: pip install -e '.[test]'")

# As in the registry suite: float32 outputs agree within 1e-4 of the logit scale.
TOLERANCE = 1e-4


def _assert_close(got: np.ndarray | torch.Tensor, expected: np.ndarray | torch.Tensor) -> None:
    got, expected = torch.as_tensor(got), torch.as_tensor(expected)
    scale = max(1.0, expected.abs().max().item())
    assert (got - expected).abs().max().item() <= TOLERANCE * scale


def _perturb(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Noise on every parameter: torchvision zero-initialises ViT's head, which would hide any
    error upstream of it."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model


def _op_types(path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node}


@pytest.mark.parametrize(("name", "opset"), [("vit_tiny_patch16_224", 20)])
def test_dynamic_batch(name: str, opset: int, tmp_path) -> None:
    """At opset 20 too (the registry suite exports at 17), one graph runs batch 1 and 3 and matches
    PyTorch; LayerNorm stays one node, and no resize op is in the graph."""
    outcome = export_onnx(name, ExportOptions(dynamic_batch=True, opset=opset, out=tmp_path))
    assert outcome.validation.passed
    assert outcome.manifest["onnx"]["batch"] == "dynamic"
    ops = _op_types(outcome.onnx_path)
    assert "LayerNormalization" in ops and "Resize" not in ops
    session = OrtRunner(outcome.onnx_path)
    assert session.static_batch is None
    model, _ = build_model(name, seed=ExportOptions().seed)  # the exported weights
    x = np.random.default_rng(0).standard_normal((3, *get_spec(name).input_size), dtype=np.float32)
    for batch in (x[:1], x):
        _assert_close(session.infer(batch), TorchRunner(model).infer(batch))


def test_vit_pos_embed_resampling_matches_timm() -> None:
    """224 weights re-targeted to 256: our eager resampling equals timm's checkpoint filter."""
    from timm.models.vision_transformer import checkpoint_filter_fn

    torch.manual_seed(0)
    state = timm.create_model("vit_tiny_patch16_224", pretrained=False).state_dict()
    reference = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=256).eval()
    reference.load_state_dict(checkpoint_filter_fn(state, reference), strict=True)
    ours = create_model("vit_tiny_patch16_224")
    ours.load_state_dict(state, strict=True)
    ours.set_input_size(256)
    assert ours.pos_embed.shape == reference.pos_embed.shape == (1, 1 + 16 * 16, 192)
    x = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        _assert_close(ours(x), reference(x))


def test_resampled_vit_exports_as_a_constant(tmp_path) -> None:
    """The resampled embedding is a weight in the graph: no Resize, and ORT agrees at the new size."""
    model = create_model("vit_tiny_patch16_224")
    model.set_input_size(64)
    exported = onnx_from_model(model, tmp_path / "vit.onnx", (3, 64, 64))
    assert "Resize" not in _op_types(exported.path)
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64), dtype=np.float32)
    _assert_close(OrtRunner(exported.path).infer(x), TorchRunner(model).infer(x))


def test_swin_padded_size_matches_timm_and_exports(tmp_path) -> None:
    """At 256 the stages (64, 32, 16, 8) are not window multiples: padded windows match timm, and the
    padding exports as constant Pad nodes."""
    torch.manual_seed(0)
    reference = _perturb(timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, img_size=256).eval())
    ours = create_model("swin_tiny_patch4_window7_224")
    ours.load_state_dict(reference.state_dict(), strict=True)
    ours.set_input_size(256)
    x = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        _assert_close(ours(x), reference(x))
    exported = onnx_from_model(ours, tmp_path / "swin.onnx", (3, 256, 256))
    assert "Pad" in _op_types(exported.path)
    _assert_close(OrtRunner(exported.path).infer(x.numpy()), reference(x).detach())


def test_input_size_rules() -> None:
    swin = get_spec("swin_t")
    assert spec_with_size(swin, 288).input_size == (3, 288, 288)
    for size in (240, 192):
        with pytest.raises(InputSizeError, match="multiple of 32 and at least 224"):
            spec_with_size(swin, size)
    with pytest.raises(InputSizeError, match="multiples of 32 and at least 224"):
        create_model("swin_t", img_size=128)
    assert spec_with_size(get_spec("vit_h_14"), 70).input_size == (3, 70, 70)
    with pytest.raises(InputSizeError, match="multiples of 16"):
        create_model("vit_tiny_patch16_224", img_size=100)


@pytest.mark.parametrize(("name", "img_size"), [("vit_b_16", 64), ("swin_t", 224)])
def test_torchvision_weights_load_and_agree(name: str, img_size: int) -> None:
    torch.manual_seed(0)
    extra = {"image_size": img_size} if name.startswith("vit") else {}
    reference = _perturb(tv_models.get_model(name, weights=None, **extra).eval())
    ours = create_model(name, img_size=img_size)
    ours.load_state_dict(get_entry(name).remap(reference.state_dict()), strict=True)
    x = torch.randn(2, 3, img_size, img_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        _assert_close(ours(x), reference(x))


@pytest.mark.parametrize("name", ["vit_l_16", "vit_h_14", "swin_s", "swin_b"])
def test_torchvision_layout_maps_onto_ours(name: str) -> None:
    """Key-for-key and shape-for-shape, on the meta device (no memory, no time)."""
    with torch.device("meta"):
        remapped = get_entry(name).remap(tv_models.get_model(name, weights=None).state_dict())
        ours = create_model(name).state_dict()
    assert sorted(remapped) == sorted(ours)
    assert all(remapped[k].shape == v.shape for k, v in ours.items())
