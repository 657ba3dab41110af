"""Real handwritten digits: the held-out and calibration images of the 10-class, one-channel
variants (``ModelSpec.samples == "digits"``: LeNet-5), and the images their weights are trained on.

scikit-learn ships 1,797 digits offline (``sklearn.datasets.load_digits``: the UCI optdigits test
set, 8x8 pixels of 0-16 ink). They are split once, here, by a fixed permutation into three disjoint
sets, so that no drift or accuracy figure is measured on an image the weights were trained on or an
INT8 model was calibrated on:

    train         1,297 digits   only ever used by model_defs/weights/train_lenet5.py
    calibration     100 digits   INT8 calibration
    held_out        400 digits   validation, drift and the checkpoint's accuracy

Each digit is named ``digit-<index>`` by its index in ``load_digits()``, and comes as a 32x32 uint8
grayscale image (ink bright on black, bilinearly upsampled from 8x8): LeNet-5's input size, so
a 32x32 variant's preprocessing resizes nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
from PIL import Image

SPLITS = {"train": 1297, "calibration": 100, "held_out": 400}  # sizes, in this order of the permutation
IMAGE_SIZE = 32
# The legacy RandomState, not default_rng: its stream is frozen across numpy releases, so the split
# (and the shipped checkpoint's held-out accuracy) cannot change under a numpy upgrade.
_SPLIT_SEED = 0


@functools.cache
def _all_digits() -> tuple[np.ndarray, np.ndarray]:
    """Every digit at 32x32 (N x 32 x 32 uint8) and its label (N int64), in load_digits' order."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    small = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    size = (IMAGE_SIZE, IMAGE_SIZE)
    images = np.stack([np.asarray(Image.fromarray(d).resize(size, Image.Resampling.BILINEAR)) for d in small])
    images.flags.writeable = False
    return images, digits.target.astype(np.int64)


@functools.cache
def _split_indices() -> dict[str, np.ndarray]:
    images, _ = _all_digits()
    order = np.random.RandomState(_SPLIT_SEED).permutation(len(images))
    ends = np.cumsum(list(SPLITS.values()))
    return {split: np.sort(order[end - size:end]) for (split, size), end in zip(SPLITS.items(), ends, strict=True)}


def digit_names(split: str) -> tuple[str, ...]:
    """The names (``digit-<index>``) of one split: "train", "calibration" or "held_out"."""
    if split not in SPLITS:
        raise ValueError(f"unknown digits split {split!r} (expected {', '.join(SPLITS)})")
    return tuple(f"digit-{i:04d}" for i in _split_indices()[split])


def digit_images(names: Sequence[str]) -> list[np.ndarray]:
    """The named digits as 32x32 uint8 grayscale images."""
    images, _ = _all_digits()
    return [images[_index(name)] for name in names]


def digit_labels(names: Sequence[str]) -> np.ndarray:
    """The true class (0-9) of each named digit."""
    _, labels = _all_digits()
    return labels[[_index(name) for name in names]]


def _index(name: str) -> int:
    prefix, _, index = name.partition("-")
    if prefix != "digit" or not index.isdigit():
        raise ValueError(f"not a digit name: {name!r} (expected digit-<index>)")
    return int(index)
