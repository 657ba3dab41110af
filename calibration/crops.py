"""The real-weights drift set: seeded, augmented crops of the built-in photos.

Ten held-out photos say little about INT8 on trained weights: a few confident predictions, a few
near-ties. Random crops (a share of 0.5-1 of the photo's area, aspect ratio 3/4-4/3, mirrored
half the time) of the same photos give many distinct, harder views, the kind of set on which
post-training quantizers lose a trained network's top-1. Evaluation crops come from the held-out
photos (``EVALUATION_PHOTOS``), calibration crops from the other photos (``CALIBRATION_PHOTOS``):
disjoint photos, not only disjoint crops. Each crop goes through the variant's own eval transform.
Everything is offline (scikit-image's photos) and a pure function of the seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from model_defs import ModelSpec

from .images import CALIBRATION_PHOTOS, EVALUATION_PHOTOS, preprocess_batch, sample_photos

AREA_SHARE = (0.5, 1.0)  # of the photo's area, as torchvision's RandomResizedCrop(scale=...)
ASPECT_RATIO = (3 / 4, 4 / 3)
EVALUATION_CROPS_PER_PHOTO = 11  # 10 photos -> 110 evaluation crops
CALIBRATION_CROPS_PER_PHOTO = 6  # 11 photos -> 66 calibration crops
SPLIT_PHOTOS = {"evaluation": EVALUATION_PHOTOS, "calibration": CALIBRATION_PHOTOS}
_SPLIT_STREAM = {"evaluation": 0, "calibration": 1}  # the two splits never share a random stream


def crop_box(height: int, width: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """(top, left, crop height, crop width) of one random crop: area share and aspect ratio drawn as
    torchvision's RandomResizedCrop does (log-uniform ratio), shrunk to fit where the draw overflows."""
    area = rng.uniform(*AREA_SHARE) * height * width
    ratio = math.exp(rng.uniform(math.log(ASPECT_RATIO[0]), math.log(ASPECT_RATIO[1])))
    crop_w = min(width, max(1, round(math.sqrt(area * ratio))))
    crop_h = min(height, max(1, round(math.sqrt(area / ratio))))
    top = int(rng.integers(0, height - crop_h + 1))
    left = int(rng.integers(0, width - crop_w + 1))
    return top, left, crop_h, crop_w


def augmented_crops(photos: Sequence[tuple[str, np.ndarray]], per_photo: int, seed: int
                    ) -> list[tuple[str, np.ndarray]]:
    """``per_photo`` crops of each (name, image), named ``<photo>-<k>`` (``-m`` when mirrored). Each
    photo has its own random stream, so fewer crops per photo are the first crops of more."""
    crops = []
    for index, (name, image) in enumerate(photos):
        rng = np.random.default_rng([seed, index])
        for k in range(per_photo):
            top, left, h, w = crop_box(image.shape[0], image.shape[1], rng)
            crop = image[top:top + h, left:left + w]
            mirrored = bool(rng.integers(0, 2))
            crops.append((f"{name}-{k}{'-m' if mirrored else ''}",
                          np.ascontiguousarray(crop[:, ::-1] if mirrored else crop)))
    return crops


def crop_set(spec: ModelSpec, split: str, per_photo: int | None = None, seed: int = 0
             ) -> tuple[tuple[str, ...], np.ndarray]:
    """The crop names and the preprocessed N x C x H x W float32 batch of one split ("evaluation"
    or "calibration") for ``spec``; ``per_photo`` defaults to the split's count."""
    if split not in SPLIT_PHOTOS:
        raise ValueError(f"unknown crop split {split!r} (expected {', '.join(SPLIT_PHOTOS)})")
    if spec.samples != "photos":
        raise ValueError(f"{spec.name}: the crop set is made of photos; its samples are {spec.samples!r}")
    count = per_photo or (EVALUATION_CROPS_PER_PHOTO if split == "evaluation" else CALIBRATION_CROPS_PER_PHOTO)
    crops = augmented_crops(sample_photos(SPLIT_PHOTOS[split]), count, seed * 2 + _SPLIT_STREAM[split])
    return tuple(name for name, _ in crops), preprocess_batch([image for _, image in crops], spec)
