"""bbexport's own PyTorch definitions of every backbone family, behind one registry.

Adding a family: write ``model_defs/<family>.py`` (docstring, blocks, model, ``_create_*``,
config table, ``@register_model`` builders) and add its import below.
"""

from . import (
    botnet,  # noqa: F401
    coatnet,  # noqa: F401
    efficientnet,  # noqa: F401
    efficientnetv2,  # noqa: F401
    fbnet,  # noqa: F401
    fbnetv2,  # noqa: F401
    fbnetv3,  # noqa: F401
    ghostnet,  # noqa: F401
    levit,  # noqa: F401
    mnasnet,  # noqa: F401
    mobilenetv1,  # noqa: F401
    mobilenetv2,  # noqa: F401
    mobilenetv3,  # noqa: F401
    nasnet,  # noqa: F401
    pvt,  # noqa: F401
    resnet,  # noqa: F401  (imports register the families)
    shufflenetv1,  # noqa: F401
    shufflenetv2,  # noqa: F401
    swin,  # noqa: F401
    vit,  # noqa: F401
)
from ._profile import ModelStats, count_macs, model_stats
from ._registry import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    INCEPTION_MEAN,
    INCEPTION_STD,
    ModelEntry,
    ModelSpec,
    create_model,
    definition_sha256,
    get_entry,
    get_spec,
    list_families,
    list_models,
    register_model,
    resolve_name,
    spec_with_size,
)

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "INCEPTION_MEAN", "INCEPTION_STD", "ModelEntry", "ModelSpec",
    "ModelStats", "count_macs", "create_model", "definition_sha256", "get_entry", "get_spec", "list_families",
    "list_models", "model_stats", "register_model", "resolve_name", "spec_with_size",
]
