"""Images in, model-ready tensors out: the built-in real photos, image folders and tensor files,
preprocessed exactly as each variant's spec says. Validation and calibration share this code."""

from .images import (
    CALIBRATION_PHOTOS,
    EVALUATION_PHOTOS,
    preprocess,
    preprocess_batch,
    sample_photos,
)

__all__ = ["CALIBRATION_PHOTOS", "EVALUATION_PHOTOS", "preprocess", "preprocess_batch", "sample_photos"]
