"""bbexport's own PyTorch definitions of every backbone family, behind one registry.

Adding a family: write ``model_defs/<family>.py`` (docstring, blocks, model, ``_create_*``,
config table, ``@register_model`` builders) and add its import below.
"""

from . import resnet  # noqa: F401  (imports register the families)
from . import fbnet  # noqa: F401
from . import mnasnet  # noqa: F401
from . import mobilenetv1  # noqa: F401
from . import fbnetv2  # noqa: F401
from . import efficientnet  # noqa: F401
from . import mobilenetv3  # noqa: F401
from . import botnet  # noqa: F401
from . import coatnet  # noqa: F401
from . import efficientnetv2  # noqa: F401
from . import shufflenetv1  # noqa: F401
from . import shufflenetv2  # noqa: F401
from . import nasnet  # noqa: F401
from . import pvt  # noqa: F401
from . import mobilenetv2  # noqa: F401
from . import vit  # noqa: F401
from . import swin  # noqa: F401
from . import levit  # noqa: F401
from . import ghostnet  # noqa: F401
from ._profile import ModelStats, count_macs, model_stats
from ._registry import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    INCEPTION_MEAN,
    INCEPTION_STD,
    ModelEntry,
    ModelSpec,
    create_model,
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
    "ModelStats", "count_macs", "create_model", "get_entry", "get_spec", "list_families",
    "list_models", "model_stats", "register_model", "resolve_name", "spec_with_size",
]
