"""A variant's eval transform as plain data, and the code that applies it to an image.

Validation, calibration, the report and the edge bundle's ``infer.py`` all preprocess through this
module, so the tensors a drift figure was measured on are the tensors a device computes. The
transform is the reference one: resize the short side to size / crop_pct, centre-crop to size, then
channel order, pixel scale and mean/std.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
            "nearest": Image.Resampling.NEAREST}


@dataclass(frozen=True)
class Preprocess:
    """What a variant's input must look like; ``bbexport.json`` carries it as a dict."""

    input_size: tuple[int, int, int]  # C, H, W
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"
    crop_pct: float = 0.875  # resize the short side to size / crop_pct, then centre-crop
    channel_order: str = "RGB"  # "BGR" for Caffe-ported weights
    pixel_scale: float = 1.0  # 255.0 for weights that take 0-255 pixels

    @classmethod
    def of(cls, spec) -> Preprocess:
        """From any object with these fields (a ``ModelSpec``), without importing its module."""
        return cls(**{name: getattr(spec, name) for name in cls.__dataclass_fields__})

    @classmethod
    def from_dict(cls, fields: Mapping) -> Preprocess:
        """From a JSON dict (lists where the dataclass has tuples); unknown keys are an error."""
        unknown = set(fields) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown preprocessing fields: {', '.join(sorted(unknown))}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})

    def to_dict(self) -> dict:
        return asdict(self)


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Any image array (gray, bool, RGBA, float in 0-1 or 0-255) as HxWx3 uint8."""
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    elif image.dtype != np.uint8:
        image = np.clip(image * (255.0 if image.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(image[..., :3])


def preprocess(image: np.ndarray, transform: Preprocess) -> np.ndarray:
    """One HxWx3 (or HxW) image as the CxHxW float32 tensor the variant takes; C=1 gets the luminance."""
    channels, height, width = transform.input_size
    pil = Image.fromarray(to_rgb_uint8(image))
    scale_h, scale_w = height / transform.crop_pct, width / transform.crop_pct
    ratio = max(scale_h / pil.height, scale_w / pil.width)
    resized = (max(width, round(pil.width * ratio)), max(height, round(pil.height * ratio)))
    pil = pil.resize(resized, RESAMPLE[transform.interpolation])
    left, top = (pil.width - width) // 2, (pil.height - height) // 2
    pil = pil.crop((left, top, left + width, top + height))
    if channels == 1:
        pil = pil.convert("L")
    array = np.asarray(pil, dtype=np.float32)
    array = array[..., None] if array.ndim == 2 else array
    if transform.channel_order == "BGR":
        array = array[..., ::-1]
    array = array / 255.0 * transform.pixel_scale
    array = (array - np.asarray(transform.mean, np.float32)) / np.asarray(transform.std, np.float32)
    return np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.float32)


def preprocess_batch(images: Sequence[np.ndarray], transform: Preprocess) -> np.ndarray:
    return np.stack([preprocess(image, transform) for image in images])
