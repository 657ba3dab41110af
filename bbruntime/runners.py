"""Runners: one small interface, ``infer(batch) -> logits``, over the runtimes a device has.

Each runner takes a float32 NCHW batch and returns the logits as a float32 NumPy array, so drift and
throughput code never cares which backend it measures. ONNX Runtime lives here; TensorRT in
:mod:`bbruntime.trt`; PyTorch, which no device needs, in ``exporter.runners``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np


class Runner(Protocol):
    name: str

    def infer(self, batch: np.ndarray) -> np.ndarray: ...


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class OrtRunner:
    name = "ort"

    def __init__(self, onnx_path: Path, providers: tuple[str, ...] = ("CPUExecutionProvider",),
                 threads: int | None = None, fake_quant: bool = False, spin: bool = True):
        """``fake_quant``: run Q/DQ pairs as written (quantize, dequantize, float op) instead of
        fusing them into ORT's integer kernels. That is TensorRT's arithmetic (int8 products summed
        exactly), free of the host's kernels: x86 CPUs without VNNI saturate int16 pair sums of
        uint8 x int8 products (VPMADDUBSW), which alone cost real EfficientNet-Lite1 0.1 of cosine.
        ``spin=False``: idle intra-op threads sleep instead of spinning, leaving the cores to other work
        of the same process (infer.py's decode workers)."""
        import onnxruntime as ort  # lazily: a TensorRT-only device has none

        options = ort.SessionOptions()
        options.log_severity_level = 3
        if fake_quant:
            options.add_session_config_entry("session.disable_quant_qdq", "1")
        if not spin:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = threads
        # What the timing records: ONNX Runtime's own default is one thread per usable core.
        self.threads = threads or usable_cores()
        self.session = ort.InferenceSession(str(onnx_path), options, providers=list(providers))
        self.input_name = self.session.get_inputs()[0].name
        self.input_type = self.session.get_inputs()[0].type
        static_batch = self.session.get_inputs()[0].shape[0]
        self.static_batch = static_batch if isinstance(static_batch, int) else None

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Run ``batch`` through the session, in chunks of the static batch where there is one."""
        if self.static_batch is None or len(batch) == self.static_batch:
            return self._run(batch)
        outputs = []
        for start in range(0, len(batch), self.static_batch):
            chunk = batch[start:start + self.static_batch]
            pad = self.static_batch - len(chunk)
            if pad:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
            outputs.append(self._run(chunk)[: self.static_batch - pad])
        return np.concatenate(outputs)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        feed = batch.astype(np.float16 if "float16" in self.input_type else np.float32)
        return self.session.run(None, {self.input_name: feed})[0].astype(np.float32)


def int8_runner(onnx_path: Path, flavour: str, threads: int | None = None,
                providers: tuple[str, ...] = ("CPUExecutionProvider",), spin: bool = True) -> OrtRunner:
    """How an INT8 ONNX is measured on the CPU: the cpu flavour through ONNX Runtime's integer
    kernels (what it will run as); the trt flavour with its Q/DQ pairs run as written, which is
    TensorRT's arithmetic rather than this host's int8 kernels."""
    return OrtRunner(onnx_path, providers, threads=threads, fake_quant=flavour == "trt", spin=spin)
