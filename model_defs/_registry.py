"""The model registry: a dict of variant name -> (builder, deployment spec, checkpoint remap).

Family files register their variant builders with ``@register_model(...)``; the builder's
function name is the registry key and the CLI name. A duplicate name or alias is an error at
import time, an unknown name is an error that suggests close names.
"""

from __future__ import annotations

import difflib
import fnmatch
import hashlib
import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from bbruntime.errors import InputSizeError, UnknownModelError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)

StateDict = Mapping[str, torch.Tensor]
Remap = Callable[[StateDict], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class ModelSpec:
    """Everything the pipeline needs to know about one variant, read by export, validation,
    calibration preprocessing and reports alike."""

    name: str
    family: str
    paper: str
    input_size: tuple[int, int, int] = (3, 224, 224)  # C, H, W at the reference accuracy
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bilinear"  # resize filter of the reference eval transform
    crop_pct: float = 0.875  # resize to size / crop_pct, then center-crop to size
    num_classes: int = 1000
    channel_order: str = "RGB"  # "BGR" for Caffe-ported weights
    pixel_scale: float = 1.0  # 255.0 for Caffe-ported weights that take 0-255 pixels
    reference: str | None = None  # "timm:<name>" or "torchvision:<name>"
    reference_params: int | None = None  # exact count of the reference (../shared/families.md)
    params_tolerance: float = 0.0  # 0.02 where only a paper or README figure exists
    size_divisor: int = 32  # H and W must be multiples of this (the network's total stride)
    min_size: int = 32
    fixed_input_size: bool = False  # True where the graph bakes the resolution in
    dynamic_batch: bool = True
    dynamic_batch_note: str = ""  # why not, where dynamic_batch is False
    aliases: tuple[str, ...] = ()
    # Node-name globs of the exported graph that INT8 keeps in float unless told otherwise: layers
    # measured too sensitive to quantize (say which measurement beside the variant).
    int8_keep_float: tuple[str, ...] = ()
    # More of them for the cpu flavour only: its quantized ops quantize their own output, so a layer
    # kept in float still reads its producer's uint8 output unless that producer is kept in float too.
    int8_keep_float_cpu: tuple[str, ...] = ()
    # The real images it is validated, calibrated and measured on (calibration.sample_set): "photos"
    # (ImageNet-like, scikit-image's) or "digits" (handwritten 0-9, scikit-learn's).
    samples: str = "photos"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ModelEntry:
    builder: Callable[..., nn.Module]
    spec: ModelSpec
    remap: Remap | None = field(default=None)


_MODELS: dict[str, ModelEntry] = {}
_ALIASES: dict[str, str] = {}


def register_model(*, remap: Remap | None = None, **spec_fields) -> Callable:
    """Decorator for a variant builder ``def <name>(**overrides) -> nn.Module``.

    ``spec_fields`` fill the variant's :class:`ModelSpec`; ``remap`` converts foreign
    checkpoint layouts (torchvision, original repositories) to this family's keys.
    """

    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        spec = ModelSpec(name=builder.__name__, **spec_fields)
        for key in (spec.name, *spec.aliases):
            if key in _MODELS or key in _ALIASES:
                raise ValueError(f"model name {key!r} is registered twice")
        _MODELS[spec.name] = ModelEntry(builder=builder, spec=spec, remap=remap)
        for alias in spec.aliases:
            _ALIASES[alias] = spec.name
        return builder

    return decorate


def resolve_name(name: str) -> str:
    """Canonical variant name for ``name`` or an alias; an unknown name suggests close ones."""
    if name in _MODELS:
        return name
    if name in _ALIASES:
        return _ALIASES[name]
    close = difflib.get_close_matches(name, [*_MODELS, *_ALIASES], n=4, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see `bbexport list`"
    raise UnknownModelError(f"unknown model {name!r}{hint}")


def get_entry(name: str) -> ModelEntry:
    return _MODELS[resolve_name(name)]


def definition_sha256(name: str) -> str:
    """sha256 over the source of ``name``'s family file and the shared ``model_defs/_*.py`` modules:
    what decides the network a builder makes. Manifests record it, so an edited definition re-exports."""
    module_file = Path(inspect.getsourcefile(get_entry(name).builder))
    files = [module_file, *sorted(p for p in module_file.parent.glob("_*.py") if p != module_file)]
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def get_spec(name: str) -> ModelSpec:
    return get_entry(name).spec


def create_model(name: str, **overrides) -> nn.Module:
    """Build a variant with fresh (seeded by the caller) weights, in eval mode."""
    entry = get_entry(name)
    model = entry.builder(**overrides)
    return model.eval()


def list_models(pattern: str = "*", family: str | None = None) -> list[str]:
    names = sorted((n for n in _MODELS if fnmatch.fnmatch(n, pattern.lower())), key=_natural_key)
    if family is not None:
        names = [n for n in names if _MODELS[n].spec.family == family.lower()]
    return names


def _natural_key(name: str) -> list:
    """resnet18 < resnet34 < resnet101: digits compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def list_families() -> list[str]:
    return sorted({e.spec.family for e in _MODELS.values()})


def spec_with_size(spec: ModelSpec, img_size: int | tuple[int, int] | None) -> ModelSpec:
    """The spec at another input resolution, checked against what the network can take."""
    if img_size is None:
        return spec
    h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    default_hw = spec.input_size[1:]
    if (h, w) == default_hw:
        return spec
    if spec.fixed_input_size:
        raise InputSizeError(
            f"{spec.name} takes only {default_hw[0]}x{default_hw[1]} inputs (its graph bakes the "
            f"resolution in); got {h}x{w}"
        )
    for side in (h, w):
        if side < spec.min_size or side % spec.size_divisor:
            raise InputSizeError(
                f"{spec.name} needs an image size that is a multiple of {spec.size_divisor} and at "
                f"least {spec.min_size}; got {h}x{w}"
            )
    return replace(spec, input_size=(spec.input_size[0], h, w))
