"""A variant's eval transform as plain data, and the code that applies it to an image.

Validation, calibration, the report and the edge bundle's ``infer.py`` all preprocess through this
module, so the tensors a drift figure was measured on are the tensors a device computes. The
transform is the reference one, to the pixel: timm's and torchvision's eval transform (resize the
short side to floor(size / crop_pct), the long side truncated in proportion; centre-crop with rounded
offsets), then channel order, pixel scale and mean/std.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError, first_line

# What counts as an image file in a folder: calibration folders and infer.py's sources alike.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

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


def read_image(path) -> np.ndarray:
    """An image file as HxWx3 uint8 RGB, upright: EXIF orientation applied, CMYK and palette images
    converted, alpha dropped (as torchvision's ImageFolder loader does), 16-bit and float images scaled
    to 8 bits rather than clipped. Raises :class:`ImageError` for a file that is not a readable
    picture: corrupt or truncated data, or more pixels than Pillow's decompression-bomb limit."""
    try:
        with Image.open(path) as image:
            image.load()  # a truncated file fails here, not later
            upright = ImageOps.exif_transpose(image)
            return to_rgb_uint8(_as_array(upright))
    except Image.DecompressionBombError as e:
        raise ImageError(f"{path}: refused, too many pixels to decode safely ({first_line(e)})") from e
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:  # Pillow's decoders raise all four
        raise ImageError(f"{path}: not a readable image ({first_line(e)})") from e


def _as_array(image: Image.Image) -> np.ndarray:
    """The pixels of any Pillow mode as an 8-bit (gray or RGB) or float array."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return (np.asarray(image, dtype=np.uint16) >> 8).astype(np.uint8)
    if image.mode == "I":  # 32-bit ints: 16-bit PNGs open in this mode
        return (np.clip(np.asarray(image, dtype=np.int64), 0, 65535) >> 8).astype(np.uint8)
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float32)
        return values / max(float(values.max()), 1.0) if values.max() > 255 else values / 255.0
    if image.mode in ("L", "RGB"):
        return np.asarray(image)
    if image.mode == "P" and "transparency" in image.info:  # Pillow's own advice: through RGBA
        image = image.convert("RGBA")
    return np.asarray(image.convert("RGB"))  # P, PA, LA, RGBA, CMYK, YCbCr, 1: Pillow's own conversions


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
    pil = pil.resize(resized_size(pil.width, pil.height, transform), RESAMPLE[transform.interpolation])
    # torchvision's CenterCrop: offsets rounded, not floored
    left, top = int(round((pil.width - width) / 2.0)), int(round((pil.height - height) / 2.0))
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


def resized_size(image_width: int, image_height: int, transform: Preprocess) -> tuple[int, int]:
    """(width, height) before the centre crop, as timm's and torchvision's eval transforms compute it:
    the short side to floor(size / crop_pct), the long side truncated in proportion."""
    _, height, width = transform.input_size
    scale_h, scale_w = math.floor(height / transform.crop_pct), math.floor(width / transform.crop_pct)
    if scale_h == scale_w:
        short, long = sorted((image_width, image_height))
        long_side = int(scale_h * long / short)
        size = (scale_h, long_side) if image_width <= image_height else (long_side, scale_h)
    else:
        ratio = max(scale_h / image_height, scale_w / image_width)
        size = (int(image_width * ratio), int(image_height * ratio))
    return max(width, size[0]), max(height, size[1])


def preprocess_batch(images: Sequence[np.ndarray], transform: Preprocess) -> np.ndarray:
    return np.stack([preprocess(image, transform) for image in images])
