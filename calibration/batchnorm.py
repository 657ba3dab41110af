"""Re-estimate BatchNorm statistics of randomly initialised models on real images.

A random network keeps its BN running stats at mean 0 / var 1, so activations grow or vanish
layer by layer and the logits say nothing about precision loss. Recomputing the statistics on real
images (the variant's calibration images only, never the held-out ones) gives activations of a
realistic scale.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from model_defs import ModelSpec

from .images import preprocess_batch
from .samples import sample_set

# The weight revived branch norms get: trained residual branches are small next to their skip path
# (real EfficientNet-Lite1/Lite2 on the calibration photos: branch RMS / skip RMS, median 0.36 and 0.37
# over their 14 residual blocks); 1 makes random branches 2-3x that (median 0.72), and the network
# so deep in noise amplification that INT8 drift measures the random weights, not the quantization.
REVIVED_NORM_WEIGHT = 0.4


def revive_residual_norms(model: nn.Module, weight: float = REVIVED_NORM_WEIGHT) -> int:
    """Set to ``weight`` the weight of every norm layer initialised to all zeros; returns how many.

    ResNet and MBConv definitions (like timm's and torchvision's) zero-initialise the last norm of each
    residual branch, so a trained-from-scratch block starts as the identity. On random weights that
    makes every such branch add nothing: drift then tests only the stem, the stride blocks and the head.
    Runs before :func:`recalibrate_batchnorm`: the branches then add what trained ones do."""
    revived = 0
    for m in model.modules():
        norm_weight = getattr(m, "weight", None)
        is_norm = isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm))
        if is_norm and norm_weight is not None and norm_weight.numel() and not norm_weight.detach().any():
            with torch.no_grad():
                norm_weight.fill_(weight)
            revived += 1
    return revived


def calibration_views(spec: ModelSpec) -> np.ndarray:
    """``spec``'s calibration images (the photos and their mirror images, or the digits), preprocessed."""
    return preprocess_batch(sample_set(spec, "calibration").images(), spec)


def recalibrate_batchnorm(model: nn.Module, spec: ModelSpec, batch_size: int = 8) -> bool:
    """Replace every BN layer's running stats by their exact average over the calibration views.

    Returns False (and changes nothing) for models without BatchNorm.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return False
    views = torch.from_numpy(calibration_views(spec))
    saved = [(m.momentum, m.training) for m in norms]
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: exact mean over all batches
        m.train()
    with torch.no_grad():
        for start in range(0, len(views), batch_size):
            model(views[start:start + batch_size])
    for m, (momentum, training) in zip(norms, saved, strict=True):
        m.momentum = momentum
        m.train(training)
    return True
