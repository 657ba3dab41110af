"""Shared fixtures and helpers: the reference libraries and per-variant test sizes."""

from __future__ import annotations

import fcntl
import functools
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from model_defs import ModelSpec, create_model, get_entry, get_spec, list_models, model_stats

# Both cores to the test process by default; xdist workers get one each.
torch.set_num_threads(int(os.environ.get("BBEXPORT_TEST_THREADS", "2")))

# Each family's smallest variant is exported and compared at its default size, when that is within
# these; every other variant at a reduced resolution (the CLI and the catalog report export them at
# their default size): the graph, its dynamic batch and its parity are what the tests check, and the
# family's code is the same at every width. Keeps `make test` within its minutes on two cores.
LARGE_PARAMS = 40_000_000
LARGE_GMACS = 1.5
# Above this, writing, simplifying and validating the weights costs tens of seconds whatever the
# resolution: such variants are checked here by exact parameter count and reference parity; their
# export runs at the default size from the CLI and the catalog report (docs/catalog-drift.md).
CI_EXPORT_MAX_PARAMS = 40_000_000
# Above this (ViT-L/16, ViT-H/14), even building two random copies for parity takes a minute: the
# reference state_dict is loaded on the meta device instead.
HUGE_PARAMS = 150_000_000
# Set, the registry suite exports every variant whatever its size or layers (`make test-all-variants`).
ALL_VARIANTS = bool(os.environ.get("BBEXPORT_TEST_ALL_VARIANTS"))


def _layer_kind(module: torch.nn.Module) -> tuple[str, ...]:
    """What decides the ONNX a layer exports to, its widths aside: its class and, for convolutions and
    pools, kernel, stride, dilation, padding, grouping and rounding."""
    kind: list = [type(module).__qualname__]
    if isinstance(module, torch.nn.modules.conv._ConvNd):
        grouping = "depthwise" if module.groups == module.in_channels > 1 else "grouped" if module.groups > 1 else "dense"
        kind += [module.kernel_size, module.stride, module.dilation, module.padding, grouping]
    else:
        kind += [getattr(module, a, None) for a in ("kernel_size", "stride", "padding", "ceil_mode",
                                                     "count_include_pad", "output_size")]
    return tuple(map(str, kind))


@functools.cache
def _layout(name: str) -> tuple[int, frozenset[tuple[str, ...]]]:
    """Parameter count and layer kinds of a variant, built on the meta device (no MAC-counting forward:
    the rules below read this for every registered variant, in every xdist worker)."""
    with torch.device("meta"):
        model = create_model(name)
    return sum(p.numel() for p in model.parameters()), frozenset(map(_layer_kind, model.modules()))


def param_count(name: str) -> int:
    return _layout(name)[0]


def is_huge(spec: ModelSpec) -> bool:
    return param_count(spec.name) > HUGE_PARAMS


def _families() -> dict[str, list[str]]:
    """Every family's variants, fewest parameters first."""
    families: dict[str, list[str]] = {}
    for name in sorted(list_models(), key=param_count):
        families.setdefault(get_spec(name).family, []).append(name)
    return families


@functools.cache
def smallest_of_family() -> frozenset[str]:
    """The variant with the fewest parameters of every registered family."""
    return frozenset(names[0] for names in _families().values())


@functools.cache
def exported_here() -> frozenset[str]:
    """The variants the registry suite exports: each family's smallest, then, up to CI_EXPORT_MAX_PARAMS,
    every variant with a layer kind no variant exported before it in its family has. The others are the
    same code at other widths and depths: counted and parity-checked here, exported by the catalog."""
    if ALL_VARIANTS:
        return frozenset(list_models())
    chosen = set()
    for names in _families().values():
        covered: set[tuple[str, ...]] = set()
        for name in names:
            params, kinds = _layout(name)
            if name == names[0] or (params <= CI_EXPORT_MAX_PARAMS and not kinds <= covered):
                chosen.add(name)
                covered |= kinds
    return frozenset(chosen)


def input_size_for_tests(spec: ModelSpec) -> tuple[int, int, int]:
    """The variant's default input for fixed-size variants and each family's smallest (within
    LARGE_PARAMS and LARGE_GMACS), else the smallest sensible one."""
    if spec.fixed_input_size:
        return spec.input_size
    if (spec.name in smallest_of_family() and param_count(spec.name) <= LARGE_PARAMS
            and model_stats(spec.name).gmacs <= LARGE_GMACS):
        return spec.input_size
    side = max(spec.min_size, 2 * spec.size_divisor, 64)
    side = -(-side // spec.size_divisor) * spec.size_divisor
    return (spec.input_size[0], side, side)


# Output agreement with the reference library: 1e-4 of the logit scale, in float32.
PARITY_TOLERANCE = 1e-4


def assert_same_outputs(reference: torch.nn.Module, ours: torch.nn.Module, x: torch.Tensor) -> None:
    """Both models on ``x`` agree within PARITY_TOLERANCE of the reference's logit scale."""
    with torch.no_grad():
        expected, got = reference(x), ours(x)
    scale = max(1.0, expected.abs().max().item())
    assert (got - expected).abs().max().item() <= PARITY_TOLERANCE * scale


def reference_model(reference: str, num_classes: int, **options) -> torch.nn.Module:
    """Instantiate ``timm:<name>`` or ``torchvision:<name>`` with random weights, in eval mode;
    ``options`` go to the library's constructor."""
    library, _, name = reference.partition(":")
    if library == "timm":
        timm = pytest.importorskip("timm", reason="parity tests need timm (pip install -e '.[test]')")
        return timm.create_model(name, pretrained=False, num_classes=num_classes, **options).eval()
    if library == "torchvision":
        models = pytest.importorskip("torchvision.models", reason="parity tests need torchvision")
        return models.get_model(name, weights=None, num_classes=num_classes, **options).eval()
    raise ValueError(f"unknown reference library in {reference!r}")


def assert_checkpoint_parity(reference: str, name: str, side: int = 224, remap: bool = False, **options) -> None:
    """A random ``reference`` model's state_dict (norm statistics randomized) loads strictly into our
    ``name``, through the family's remap where ``remap``, and both agree on a (2, 3, side, side) input."""
    torch.manual_seed(0)
    model = reference_model(reference, 1000, **options)
    randomize_norm_stats(model)
    ours = create_model(name)
    state = model.state_dict()
    ours.load_state_dict(get_entry(name).remap(state) if remap else state, strict=True)
    x = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(1))
    assert_same_outputs(model, ours, x)


def simplified_dynamic_graph(module: torch.nn.Module, folder: Path, input_shape: tuple[int, ...], stem: str) -> Path:
    """``module`` exported at opset 17 with a dynamic batch and simplified (onnxsim checking it at batch 2):
    the path of the simplified graph, for the family tests that look inside it."""
    from exporter.onnx_export import onnx_from_model
    from exporter.simplify import simplified_from_onnx

    exported = onnx_from_model(module, folder / f"{stem}.onnx", input_shape, dynamic_batch=True)
    check = np.random.default_rng(0).standard_normal((2, *input_shape), dtype=np.float32)
    simplified = simplified_from_onnx(exported.path, folder / f"{stem}.sim.onnx", check)
    assert simplified.simplified, simplified.reason
    return simplified.path


def randomize_norm_stats(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every norm layer non-trivial affine parameters and running statistics, so a remap that
    swaps or drops them cannot pass a parity test by accident."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._NormBase | torch.nn.LayerNorm | torch.nn.GroupNorm):
                if getattr(m, "weight", None) is not None:
                    m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=gen))
                    m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
                if getattr(m, "running_mean", None) is not None:
                    m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=gen))
                    m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))


def cadene_pair(name: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Cadene's ``pretrainedmodels.<name>`` with random weights and randomized norm statistics, and our
    variant ``name`` with that state_dict loaded strictly (the parity reference where no timm or
    torchvision layout exists: nasnetamobile, bninception)."""
    pretrainedmodels = pytest.importorskip("pretrainedmodels", reason="needs Cadene's pretrainedmodels package")
    torch.manual_seed(0)
    reference = getattr(pretrainedmodels, name)(num_classes=1000, pretrained=None).eval()
    randomize_norm_stats(reference)
    ours = create_model(name)
    ours.load_state_dict(reference.state_dict(), strict=True)
    return reference, ours


# ----------------------------------------------------------------------------- the device side

ROOT = Path(__file__).resolve().parents[1]
# What a device does not have: importing any of these in run_without_build_side raises ImportError.
BLOCKED = ("torch", "torchvision", "onnx", "onnxsim", "timm", "model_defs", "calibration", "exporter")


def run_without_build_side(code: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter where importing any of BLOCKED raises ImportError."""
    prelude = "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in BLOCKED)
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], Path]) -> Path:
    """``build(folder)``'s result, built once per test run even across xdist workers (they share the run's
    base temporary folder and take turns through a lock: pytest-xdist's recipe for session fixtures)."""
    base = tmp_path_factory.getbasetemp()
    shared = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "built-once"
    shared.mkdir(exist_ok=True)
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = shared / f"{name}.done"
        if done.exists():
            return Path(done.read_text())
        result = build(shared / name)
        done.write_text(str(result))
        return result


def _bundle(name: str, precision: str = "fp32", **quantization) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        from exporter.bundle import BundleOptions, bundle_model
        from exporter.pipeline import ExportOptions
        from exporter.quantize import QuantizeOptions

        options = BundleOptions(precision=precision, out=folder / "bundles", target=quantization.pop("target", None),
                                quantization=QuantizeOptions(precision, **quantization) if quantization else None)
        return bundle_model(name, options, ExportOptions(out=folder / "artifacts")).folder

    return build


@pytest.fixture(scope="session")
def resnet18_bundle(tmp_path_factory) -> Path:
    """``bbexport bundle resnet18``: FP32."""
    return built_once(tmp_path_factory, "resnet18-fp32", _bundle("resnet18"))


@pytest.fixture(scope="session")
def mobilenet_int8_bundle(tmp_path_factory) -> Path:
    """``bbexport bundle mobilenetv2_100 --precision int8 --target x86-avx2``: the cpu flavour with the
    7-bit weights of an AVX2 target, whatever this machine has (max calibration and no bias correction:
    the fastest; the bundle is what is tested, test_quantize tests the quantizer)."""
    return built_once(tmp_path_factory, "mobilenetv2_100-int8",
                      _bundle("mobilenetv2_100", "int8", target="x86-avx2", flavour="cpu", method="max",
                              bias_correction=False))
