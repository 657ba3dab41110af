"""Networks the catalog lacks, through the same pipeline: ``timm:NAME`` and ``torchvision:NAME``.

The library builds the network (random weights, or ``--weights`` loaded strictly into its own
layout); its deployment spec comes from what the library publishes as the eval transform: timm's
``pretrained_cfg`` (input size, mean/std, interpolation, crop_pct) or torchvision's weights
transforms (resize and crop sizes, mean/std, interpolation). From there on a foreign network is
exported, validated, quantized and reported like a registered variant. The artifacts are named
``timm-NAME`` / ``torchvision-NAME``, which no registered variant can be.
"""

from __future__ import annotations

from importlib import metadata

from bbruntime.errors import MissingDependencyError, UnknownModelError
from model_defs import ModelSpec

from .weights import ModelSource

LIBRARIES = ("timm", "torchvision")


def is_foreign(name: str) -> bool:
    return name.partition(":")[0] in LIBRARIES and ":" in name


def foreign_source(name: str) -> ModelSource:
    """``timm:convnext_tiny`` or ``torchvision:regnet_y_400mf`` as a :class:`ModelSource`."""
    library, _, arch = name.partition(":")
    try:
        version = metadata.version(library)
    except metadata.PackageNotFoundError as e:
        raise MissingDependencyError(f"{name} needs {library} (pip install {library})") from e
    spec = _timm_spec(arch) if library == "timm" else _torchvision_spec(arch)
    create = _timm_factory(arch, spec.num_classes) if library == "timm" else _torchvision_factory(arch)
    return ModelSource(spec, create, remap=None, definition=f"{library} {version}")


def _common(library: str, arch: str, **fields) -> ModelSpec:
    return ModelSpec(name=f"{library}-{arch}", family=library, paper=f"{library} {arch}", reference=f"{library}:{arch}",
                     **fields)


def _timm_spec(arch: str) -> ModelSpec:
    import timm

    if not timm.is_model(arch):
        close = timm.list_models(f"*{arch}*")[:4]
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownModelError(f"timm has no model {arch!r}{hint}")
    cfg = timm.get_pretrained_cfg(arch)
    cfg = cfg.to_dict() if cfg is not None else {}
    return _common("timm", arch, input_size=tuple(cfg.get("input_size", (3, 224, 224))),
                   mean=tuple(cfg.get("mean", (0.485, 0.456, 0.406))), std=tuple(cfg.get("std", (0.229, 0.224, 0.225))),
                   interpolation=cfg.get("interpolation", "bicubic"), crop_pct=float(cfg.get("crop_pct", 0.875)),
                   num_classes=int(cfg.get("num_classes", 1000)),
                   fixed_input_size=bool(cfg.get("fixed_input_size", False)))


def _timm_factory(arch: str, num_classes: int):
    def create():
        import timm

        # exportable: timm's memory-efficient autograd activations would not trace (P-SILU)
        with timm.layers.set_layer_config(exportable=True, no_jit=True):
            return timm.create_model(arch, pretrained=False, num_classes=num_classes)

    return create


def _torchvision_spec(arch: str) -> ModelSpec:
    from torchvision import models

    if arch not in models.list_models():
        raise UnknownModelError(f"torchvision has no classification model {arch!r}; see torchvision.models.list_models()")
    weights = models.get_model_weights(arch).DEFAULT
    transform = weights.transforms()
    crop, resize = transform.crop_size[0], transform.resize_size[0]
    return _common("torchvision", arch, input_size=(3, crop, crop), mean=tuple(transform.mean),
                   std=tuple(transform.std), interpolation=transform.interpolation.value, crop_pct=crop / resize,
                   num_classes=len(weights.meta["categories"]))


def _torchvision_factory(arch: str):
    def create():
        from torchvision import models

        return models.get_model(arch, weights=None)

    return create
