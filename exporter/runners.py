"""The PyTorch runner: the reference every artifact is validated against, on the build machine.

The other runners (ONNX Runtime, TensorRT) are in :mod:`bbruntime`, which a device can run without torch.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class TorchRunner:
    name = "torch"

    def __init__(self, model: nn.Module):
        self.model = model.eval()

    @property
    def threads(self) -> int:
        return torch.get_num_threads()

    def infer(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.model(torch.from_numpy(np.ascontiguousarray(batch))).float().numpy()


def set_torch_threads(threads: int | None) -> int:
    """Apply ``--threads`` to torch and return its intra-op thread count. ONNX Runtime sessions take
    the same number per session (``OrtRunner(threads=...)``); both default to the physical cores."""
    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()
