"""Which real images a variant is validated and calibrated on, by its spec's ``samples`` field.

Every caller (validation, drift reports, INT8 calibration, BatchNorm re-estimation, manifests) gets
them from :func:`sample_set`, so one variant never mixes two sets. Whatever the set, validation calls
its held-out input set "photos": the ImageNet variants' held-out photos, LeNet-5's held-out digits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model_defs import ModelSpec

from .digits import digit_images, digit_names
from .images import CALIBRATION_PHOTOS, EVALUATION_PHOTOS, sample_photos

SPLITS = ("held_out", "calibration")


@dataclass(frozen=True)
class SampleSet:
    """One split of one kind of real images: the names manifests list, the images on demand."""

    kind: str  # ModelSpec.samples
    split: str  # "held_out" or "calibration"
    names: tuple[str, ...]

    @property
    def mirrored(self) -> bool:
        """Calibration photos come with their mirror images (11 photos are few); a mirrored digit is
        not a digit, so the 100 calibration digits come as they are."""
        return self.kind == "photos" and self.split == "calibration"

    def images(self) -> list[np.ndarray]:
        """The images (uint8, HxWx3 RGB or HxW gray), mirror images last where :attr:`mirrored`."""
        images = ([image for _, image in sample_photos(self.names)] if self.kind == "photos"
                  else digit_images(self.names))
        if self.mirrored:
            images += [np.ascontiguousarray(image[:, ::-1]) for image in images]
        return images

    def describe(self) -> str:
        """``built-in photos (retina, ..., and their mirror images)`` or ``built-in digits (...)``."""
        if self.kind == "photos":
            return f"built-in photos ({', '.join(self.names)}{', and their mirror images' if self.mirrored else ''})"
        return (f"built-in digits ({len(self.names)} of scikit-learn's load_digits, the {self.split} split of "
                "calibration/digits.py)")


def sample_set(spec: ModelSpec, split: str) -> SampleSet:
    """The held-out (validation, drift) or calibration images of ``spec``'s kind (``spec.samples``)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} (expected {', '.join(SPLITS)})")
    if spec.samples == "photos":
        return SampleSet("photos", split, EVALUATION_PHOTOS if split == "held_out" else CALIBRATION_PHOTOS)
    if spec.samples == "digits":
        return SampleSet("digits", split, digit_names(split))
    raise ValueError(f"{spec.name}: unknown samples {spec.samples!r} (expected photos or digits)")
