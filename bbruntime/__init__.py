"""bbexport's bottom layer: what runs on a deployment device as well as on the build machine.

It imports numpy and, lazily, the one runtime a caller asks for; never torch, onnx or the model
definitions, so the edge bundle can ship it as it is. ``model_defs``, ``calibration`` and
``exporter`` all build on it; it builds on none of them.
"""
