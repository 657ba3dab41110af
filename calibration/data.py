"""Calibration data: an image folder, a tensor file, or the variant's built-in calibration images,
as one preprocessed NCHW float32 batch with a content hash.

Images go through :func:`calibration.images.preprocess`, the code the validator uses, so an INT8
model is calibrated on exactly the tensors it will see. A folder of few photos is augmented: each
image also gives seeded random crops and mirrors (:func:`calibration.crops.augmented_crops`), up to
``AUGMENT_TO`` samples; measured on real EfficientNet-Lites (docs/int8-real-weights.md), 11 photos
with their crops keep more of the FP32 top-1 than the 11 photos alone. The built-in set is the
calibration split of the spec's samples (:func:`calibration.samples.sample_set`): ``CALIBRATION_PHOTOS`` and their mirror
images, or the calibration digits; never the held-out ones.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bbruntime.errors import CalibrationDataError, ImageError
from bbruntime.preprocess import IMAGE_SUFFIXES, read_image
from model_defs import ModelSpec

from .batchnorm import calibration_views
from .crops import CALIBRATION_CROPS_PER_PHOTO, augmented_crops
from .images import preprocess
from .samples import sample_set

TENSOR_SUFFIXES = (".npy", ".npz")
AUGMENT_TO = 64  # a folder of fewer photos than this gets crops of each, up to about this many samples


@dataclass(frozen=True)
class CalibrationSet:
    """The tensors a model is calibrated on, and where they came from (for manifests)."""

    batch: np.ndarray  # N x C x H x W float32, preprocessed for the spec
    source: str  # "built-in photos (...)", "built-in digits (...)", a folder or a file path
    sha256: str  # hash of the preprocessed tensors: any change to images or preprocessing shows
    skipped: tuple[str, ...] = ()  # unreadable images, relative paths
    built_in: tuple[str, ...] = ()  # the names of the built-in images, where ``source`` is the built-in set
    augmented: int = 0  # samples that are crops of a folder's images, after the images themselves

    def describe(self) -> dict:
        return {"source": self.source, "samples": len(self.batch), "sha256": self.sha256,
                "augmented_crops": self.augmented, "skipped": len(self.skipped), "skipped_files": list(self.skipped[:20])}


def load_calibration(source: Path | None, spec: ModelSpec, limit: int | None = None, seed: int = 0,
                     augment: bool = True) -> CalibrationSet:
    """Calibration tensors for ``spec`` from ``source`` (folder, .npy/.npz, or None = built-in images).

    ``limit`` keeps a seeded random subset of that many samples (a folder's: images), in their original
    order. ``augment``: a folder of fewer than ``AUGMENT_TO`` photos (a spec whose samples are photos)
    also gives crops of each image (:func:`crops_per_image`).
    """
    if limit is not None and limit < 1:
        raise CalibrationDataError(f"--calib-limit must be at least 1, got {limit}")
    if source is None:
        built_in = sample_set(spec, "calibration")
        return _finish(_subset(calibration_views(spec), limit, seed), built_in.describe(), (), built_in.names)
    source = Path(source)
    if source.is_dir():
        return _from_folder(source, spec, limit, seed, augment and spec.samples == "photos")
    if source.is_file() and source.suffix.lower() in TENSOR_SUFFIXES:
        return _finish(_subset(_read_tensor_file(source, spec), limit, seed), str(source), ())
    if source.is_file():
        raise CalibrationDataError(f"calibration data {source} is neither an image folder nor a "
                                   f"{'/'.join(TENSOR_SUFFIXES)} tensor file")
    raise CalibrationDataError(f"calibration data not found: {source}")


def crops_per_image(images: int) -> int:
    """Crops each of a folder's ``images`` adds: enough for about ``AUGMENT_TO`` samples, at most the
    crop set's count per photo (the measured setting), none from a folder that is large already."""
    return 0 if images >= AUGMENT_TO else min(CALIBRATION_CROPS_PER_PHOTO, -(-AUGMENT_TO // images) - 1)


def _from_folder(folder: Path, spec: ModelSpec, limit: int | None, seed: int, augment: bool) -> CalibrationSet:
    files = sorted((p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                   key=lambda p: p.relative_to(folder).as_posix())
    if not files:
        raise CalibrationDataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
    if limit is not None and limit < len(files):
        keep = np.sort(np.random.default_rng(seed).choice(len(files), size=limit, replace=False))
        files = [files[i] for i in keep]
    keep_images = augment and crops_per_image(len(files)) > 0  # few images: held in memory for their crops
    tensors, images, skipped = [], [], []
    for path in files:
        try:
            rgb = read_image(path)
        except ImageError:  # truncated, corrupt, a decompression bomb, or not really an image
            skipped.append(path.relative_to(folder).as_posix())
            continue
        tensors.append(preprocess(rgb, spec))
        if keep_images:
            images.append((path.name, rgb))
    if not tensors:
        raise CalibrationDataError(f"none of the {len(files)} images under {folder} could be read "
                                   f"(first: {skipped[0]})")
    crops = augmented_crops(images, crops_per_image(len(images)), seed) if images else []
    tensors += [preprocess(rgb, spec) for _, rgb in crops]
    return _finish(np.stack(tensors), str(folder), tuple(skipped), augmented=len(crops))


def _read_tensor_file(path: Path, spec: ModelSpec) -> np.ndarray:
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise CalibrationDataError(f"cannot read calibration tensors {path}: {e}") from e
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            if not loaded.files:
                raise CalibrationDataError(f"{path} holds no arrays")
            array = loaded[loaded.files[0]]
    else:
        array = loaded
    if array.ndim == 3:
        array = array[None]
    expected = tuple(spec.input_size)
    if array.ndim != 4 or array.shape[1] != expected[0]:
        raise CalibrationDataError(f"{path} holds an array of shape {array.shape}; expected N x {expected[0]} x "
                                   f"{expected[1]} x {expected[2]} ({expected[0]} channels, preprocessed, NCHW)")
    if tuple(array.shape[2:]) != expected[1:]:
        raise CalibrationDataError(f"{path} holds {array.shape[2]}x{array.shape[3]} images; {spec.name} is "
                                   f"exported at {expected[1]}x{expected[2]}")
    if len(array) == 0:
        raise CalibrationDataError(f"{path} holds no samples")
    if not np.issubdtype(array.dtype, np.floating) or not np.isfinite(array).all():
        raise CalibrationDataError(f"{path} must hold finite floating-point tensors (got {array.dtype})")
    return np.ascontiguousarray(array, dtype=np.float32)


def _subset(batch: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    if limit is None or limit >= len(batch):
        return batch
    return batch[np.sort(np.random.default_rng(seed).choice(len(batch), size=limit, replace=False))]


def _finish(batch: np.ndarray, source: str, skipped: tuple[str, ...], built_in: tuple[str, ...] = (),
            augmented: int = 0) -> CalibrationSet:
    digest = hashlib.sha256(str(batch.shape).encode())
    digest.update(np.ascontiguousarray(batch, dtype=np.float32).tobytes())
    return CalibrationSet(batch=batch, source=source, sha256=digest.hexdigest(), skipped=skipped, built_in=built_in,
                          augmented=augmented)
