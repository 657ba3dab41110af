"""bbexport's own PyTorch definitions of every backbone family, behind one registry.

Adding a family: write ``model_defs/<family>.py`` (docstring, blocks, model, ``_create_*``,
config table, ``@register_model`` builders); it is imported, and so registered, by the loop below.
"""

import importlib
import pkgutil

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

# Every public module is a family file: importing it registers its variants, so adding a family
# touches that one file. Sorted, so registration order (and any duplicate-name error) is stable.
for _family in sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")):
    importlib.import_module(f"{__name__}.{_family}")

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "INCEPTION_MEAN", "INCEPTION_STD", "ModelEntry", "ModelSpec",
    "ModelStats", "count_macs", "create_model", "definition_sha256", "get_entry", "get_spec", "list_families",
    "list_models", "model_stats", "register_model", "resolve_name", "spec_with_size",
]
