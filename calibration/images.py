"""Real photos and the eval transform of each variant's spec.

The photos are the ones scikit-image ships (no download). They are split once, here, into a
held-out evaluation set and a disjoint calibration set, so that no drift figure is ever measured
on the images an INT8 model was calibrated on.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from bbruntime.preprocess import Preprocess, to_rgb_uint8
from bbruntime.preprocess import preprocess as runtime_preprocess
from bbruntime.preprocess import preprocess_batch as runtime_preprocess_batch
from model_defs import ModelSpec

# Natural photos with a plausible ImageNet label (chelsea: tabby cat, coffee: espresso/cup,
# rocket: missile/space shuttle, ...), used for validation and drift.
EVALUATION_PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "camera", "stereo_motorcycle",
                     "clock", "coins", "hubble_deep_field", "immunohistochemistry")
# Everything else scikit-image ships offline: only ever used to calibrate INT8 models. (Not
# skimage's "cat": it is the chelsea photo again.)
CALIBRATION_PHOTOS = ("retina", "colorwheel", "logo", "moon", "page", "text", "brick",
                      "grass", "gravel", "horse", "checkerboard")

def sample_photos(names: Sequence[str] = EVALUATION_PHOTOS) -> list[tuple[str, np.ndarray]]:
    """The named scikit-image photos as (name, HxWx3 uint8 RGB) pairs (read-only arrays)."""
    return [(name, _photo(name)) for name in names]


@functools.cache
def _photo(name: str) -> np.ndarray:
    """One photo, decoded once per process: every subject preprocesses the same few photos."""
    import skimage.data

    image = getattr(skimage.data, name)()
    if isinstance(image, tuple):  # stereo pairs: take the left view
        image = image[0]
    image = to_rgb_uint8(image)
    image.setflags(write=False)  # shared between callers: nobody may change it in place
    return image


def preprocess(image: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """``image`` through the variant's eval transform (:mod:`bbruntime.preprocess`, the code a device runs)."""
    return runtime_preprocess(image, Preprocess.of(spec))


def preprocess_batch(images: Sequence[np.ndarray], spec: ModelSpec) -> np.ndarray:
    return runtime_preprocess_batch(images, Preprocess.of(spec))
