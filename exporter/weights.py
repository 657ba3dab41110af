"""Checkpoint loading: .pth/.pt through ``torch.load(weights_only=True)``, or .safetensors.

Never plain pickle: a checkpoint is data, not code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from bbruntime.errors import WeightsError, first_line
from calibration.batchnorm import REVIVED_NORM_WEIGHT, recalibrate_batchnorm, revive_residual_norms
from model_defs import ModelSpec, create_model, definition_sha256, get_entry
from model_defs._registry import Remap

from .artifacts import sha256_file

# Random weights: revive the residual branches' zero-initialised norms (calibration.batchnorm)? Not yet the
# default: with them, random EfficientNetV2-S INT8 misses its budget (README, Weights and what drift means).
LIVE_BRANCHES = False

_WRAPPER_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model", "module", "net")
_PREFIXES = ("module.", "model.", "_orig_mod.")


@dataclass(frozen=True)
class WeightsSource:
    """Where a model's weights came from; every manifest and report row carries one."""

    kind: str  # "random" or "checkpoint"
    seed: int | None = None
    path: str | None = None
    sha256: str | None = None
    bn_recalibrated: bool = False
    live_branches: bool = False  # random weights: residual branches' zero-initialised norms revived
    revived_norms: int = 0
    revived_norm_weight: float | None = None  # the weight they got (calibration.batchnorm)

    def describe(self) -> str:
        if self.kind == "checkpoint":
            return f"checkpoint {Path(self.path).name} (sha256 {self.sha256[:12]})"
        revived = f", {self.revived_norms} branch norms revived at {self.revived_norm_weight:g}" if self.revived_norms else ""
        return f"random (seed {self.seed}{', BN-recalibrated' if self.bn_recalibrated else ''}{revived})"


TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")  # read by torch.load(weights_only=True)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, unwrapped from common training wrappers."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            raw = load_file(str(path), device="cpu")
        elif path.suffix in TORCH_SUFFIXES or path.name.endswith(".pth.tar"):  # .pth.tar: PeleeNet, CondenseNet
            raw = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise WeightsError(f"unsupported weights format {path.suffix!r} for {path} (expected .pth, .pth.tar, .pt, .bin, .ckpt or .safetensors)")
    except WeightsError:
        raise
    except Exception as e:  # corrupt files raise many types (pickle, zip, safetensors header)
        raise WeightsError(f"cannot read weights {path}: {first_line(e)}") from e
    return _unwrap(raw, path)


def _unwrap(raw, path: Path) -> dict[str, torch.Tensor]:
    while isinstance(raw, Mapping) and not _is_state_dict(raw):
        inner = next((raw[k] for k in _WRAPPER_KEYS if k in raw and isinstance(raw[k], Mapping)), None)
        if inner is None:
            raise WeightsError(f"{path} holds no state_dict (top-level keys: {', '.join(list(raw)[:6])})")
        raw = inner
    if not isinstance(raw, Mapping):
        raise WeightsError(f"{path} holds a {type(raw).__name__}, not a state_dict")
    state = dict(raw)
    for prefix in _PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _is_state_dict(d: Mapping) -> bool:
    return bool(d) and all(isinstance(v, torch.Tensor) for v in d.values())


def load_weights(model: nn.Module, source: ModelSource, path: Path) -> WeightsSource:
    """Load a checkpoint strictly into ``model``, through the family's remap if its keys are foreign."""
    state = read_state_dict(path)
    own_keys = set(model.state_dict())
    if source.remap is not None and set(state) != own_keys:
        try:
            state = source.remap(state)
        except KeyError as e:
            raise WeightsError(f"{Path(path).name} does not fit {source.spec.name}: no key {e} in its layout") from e
    check_state_dict(model, state, source.spec.name, Path(path).name)
    model.load_state_dict(state, strict=True)
    return WeightsSource(kind="checkpoint", path=str(Path(path).resolve()), sha256=sha256_file(Path(path)))


def check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], model_name: str, source: str) -> None:
    """Raise a one-line error naming the first missing/unexpected keys and shape mismatches."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
              for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (first: {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (first: {', '.join(unexpected[:3])})")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches (first: {'; '.join(shapes[:2])})")
    if problems:
        raise WeightsError(f"weights {source} do not fit {model_name}: " + "; ".join(problems))



@dataclass(frozen=True)
class ModelSource:
    """Where a network comes from: a registered variant, or timm/torchvision for ``timm:NAME``."""

    spec: ModelSpec  # at its default size
    create: Callable[[], nn.Module]  # a fresh model, weights initialised from torch's seed
    remap: Remap | None  # foreign checkpoint layout -> ours
    definition: str  # what decides the network: our definition's sha256, or the library and its version


def model_source(name: str) -> ModelSource:
    """The registry's variant ``name``, or ``timm:NAME`` / ``torchvision:NAME`` (:mod:`exporter.foreign`)."""
    from .foreign import foreign_source, is_foreign

    if is_foreign(name):
        return foreign_source(name)
    entry = get_entry(name)
    return ModelSource(entry.spec, lambda: create_model(entry.spec.name), entry.remap, definition_sha256(entry.spec.name))


def build_model(source: str | ModelSource, weights: Path | None = None, seed: int = 0, spec: ModelSpec | None = None,
                recalibrate_bn: bool = True, live_branches: bool = LIVE_BRANCHES) -> tuple[nn.Module, WeightsSource]:
    """The network in eval mode, at ``spec``'s input size: a checkpoint loaded strictly, or seeded
    random weights whose BatchNorm statistics are re-estimated on the calibration photos (after the
    residual branches' zero-initialised norms are revived, with ``live_branches``).

    Models whose weights depend on the resolution (position embeddings, attention masks) define
    ``set_input_size(hw)``; it runs after the weights are loaded, so a checkpoint trained at the
    default size is resampled once, on the weights, rather than by a resize inside the graph.
    """
    source = model_source(source) if isinstance(source, str) else source
    spec = spec or source.spec
    torch.manual_seed(seed)
    model = source.create().eval()
    loaded = load_weights(model, source, Path(weights)) if weights is not None else None
    if spec.input_size[1:] != source.spec.input_size[1:] and hasattr(model, "set_input_size"):
        model.set_input_size(spec.input_size[1:])
    if loaded is None:
        revived = revive_residual_norms(model) if live_branches else 0
        recalibrated = recalibrate_bn and recalibrate_batchnorm(model, spec)
        loaded = WeightsSource(kind="random", seed=seed, bn_recalibrated=recalibrated, live_branches=live_branches,
                               revived_norms=revived, revived_norm_weight=REVIVED_NORM_WEIGHT if live_branches else None)
    return model.eval(), loaded
