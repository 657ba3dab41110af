"""Images in, model-ready tensors out: the built-in real photos and digits, image folders and tensor files,
preprocessed exactly as each variant's spec says. Validation and calibration share this code."""

from .images import (
    CALIBRATION_PHOTOS,
    EVALUATION_PHOTOS,
    preprocess,
    preprocess_batch,
    sample_photos,
)
from .samples import SampleSet, sample_set

__all__ = ["CALIBRATION_PHOTOS", "EVALUATION_PHOTOS", "SampleSet", "preprocess", "preprocess_batch", "sample_photos",
           "sample_set"]
