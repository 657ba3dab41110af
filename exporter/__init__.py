"""bbexport: vision backbones to validated ONNX, FP16/INT8 and TensorRT engines."""

__version__ = "0.1.0"
