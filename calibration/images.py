"""Real photos and the eval transform of each variant's spec.

The photos are the ones scikit-image ships (no download). They are split once, here, into a
held-out evaluation set and a disjoint calibration set, so that no drift figure is ever measured
on the images an INT8 model was calibrated on.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from model_defs import ModelSpec

# Natural photos with a plausible ImageNet label (chelsea: tabby cat, coffee: espresso/cup,
# rocket: missile/space shuttle, ...), used for validation and drift.
EVALUATION_PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "camera", "stereo_motorcycle",
                     "clock", "coins", "hubble_deep_field", "immunohistochemistry")
# Everything else scikit-image ships offline: only ever used to calibrate INT8 models. (Not
# skimage's "cat": it is the chelsea photo again.)
CALIBRATION_PHOTOS = ("retina", "colorwheel", "logo", "moon", "page", "text", "brick",
                      "grass", "gravel", "horse", "checkerboard")

_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
             "nearest": Image.Resampling.NEAREST}


def sample_photos(names: Sequence[str] = EVALUATION_PHOTOS) -> list[tuple[str, np.ndarray]]:
    """The named scikit-image photos as (name, HxWx3 uint8 RGB) pairs."""
    import skimage.data

    photos = []
    for name in names:
        image = getattr(skimage.data, name)()
        if isinstance(image, tuple):  # stereo pairs: take the left view
            image = image[0]
        photos.append((name, to_rgb_uint8(image)))
    return photos


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Any skimage/PIL array (gray, bool, RGBA, float) as HxWx3 uint8."""
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    elif image.dtype != np.uint8:
        image = np.clip(image * (255.0 if image.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(image[..., :3])


def preprocess(image: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """Resize the short side to size / crop_pct, center-crop to the spec's size, normalise.

    Returns a CxHxW float32 array; grayscale models (C=1) get the luminance.
    """
    channels, height, width = spec.input_size
    pil = Image.fromarray(to_rgb_uint8(image))
    scale_h, scale_w = height / spec.crop_pct, width / spec.crop_pct
    ratio = max(scale_h / pil.height, scale_w / pil.width)
    resized = (max(width, round(pil.width * ratio)), max(height, round(pil.height * ratio)))
    pil = pil.resize(resized, _RESAMPLE[spec.interpolation])
    left, top = (pil.width - width) // 2, (pil.height - height) // 2
    pil = pil.crop((left, top, left + width, top + height))
    if channels == 1:
        pil = pil.convert("L")
    array = np.asarray(pil, dtype=np.float32)
    array = array[..., None] if array.ndim == 2 else array
    if spec.channel_order == "BGR":
        array = array[..., ::-1]
    array = array / 255.0 * spec.pixel_scale
    array = (array - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    return np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.float32)


def preprocess_batch(images: Sequence[np.ndarray], spec: ModelSpec) -> np.ndarray:
    return np.stack([preprocess(image, spec) for image in images])
