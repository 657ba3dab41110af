"""The few CUDA runtime calls a TensorRT runner needs, through cuda-python, never torch.

``cuda.bindings.runtime`` (cuda-python 12.6 and later) is tried first, then cuda-python 12's
``cuda.cudart``. Every call returns ``(error, *values)``; :func:`check` turns a non-zero error into
one line naming the call.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np

from .errors import BBExportError, MissingDependencyError


def cudart():
    """The CUDA runtime bindings module; exit code 3 with what to install where there is none."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime
        except ImportError as e:
            raise MissingDependencyError("cuda-python is not installed (pip install cuda-python): TensorRT "
                                         "device memory comes from it") from e
    return runtime


def check(result, call: str):
    """The values of a cuda-python call's ``(error, *values)`` result; raises on an error."""
    error, *values = result if isinstance(result, tuple) else (result,)
    if int(error) != 0:
        raise BBExportError(f"CUDA {call} failed: {getattr(error, 'name', error)}")
    return values[0] if len(values) == 1 else tuple(values) if values else None


def device_count() -> int:
    """CUDA devices visible here (0 where the driver or a device is missing)."""
    error, count = cudart().cudaGetDeviceCount()
    return count if int(error) == 0 else 0


@dataclass(frozen=True)
class Device:
    name: str
    compute_capability: str


def current_device() -> Device:
    rt = cudart()
    props = check(rt.cudaGetDeviceProperties(check(rt.cudaGetDevice(), "cudaGetDevice")), "cudaGetDeviceProperties")
    name = props.name.decode(errors="replace").rstrip("\0") if isinstance(props.name, bytes) else str(props.name)
    return Device(name, f"{props.major}.{props.minor}")


class Buffer:
    """One device allocation and its pinned host twin, made once and reused for every batch."""

    def __init__(self, nbytes: int):
        rt = cudart()
        self.nbytes = nbytes
        self.device = check(rt.cudaMalloc(nbytes), "cudaMalloc")
        self.host_ptr = check(rt.cudaMallocHost(nbytes), "cudaMallocHost")
        self.host = np.ctypeslib.as_array((ctypes.c_uint8 * nbytes).from_address(int(self.host_ptr)))

    def host_view(self, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        count = int(np.prod(shape))
        return self.host[: count * np.dtype(dtype).itemsize].view(dtype).reshape(shape)

    def to_device(self, nbytes: int, stream) -> None:
        rt = cudart()
        check(rt.cudaMemcpyAsync(self.device, self.host_ptr, nbytes, rt.cudaMemcpyKind.cudaMemcpyHostToDevice,
                                 stream), "cudaMemcpyAsync")

    def to_host(self, nbytes: int, stream) -> None:
        rt = cudart()
        check(rt.cudaMemcpyAsync(self.host_ptr, self.device, nbytes, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost,
                                 stream), "cudaMemcpyAsync")

    def free(self) -> None:
        rt = cudart()
        if self.device is not None:
            check(rt.cudaFree(self.device), "cudaFree")
            check(rt.cudaFreeHost(self.host_ptr), "cudaFreeHost")
            self.device = self.host = None


class Stream:
    """A CUDA stream with two timing events around each execution."""

    def __init__(self):
        rt = cudart()
        self.handle = check(rt.cudaStreamCreate(), "cudaStreamCreate")
        self.address = int(self.handle)  # what TensorRT's execute_async_v3 takes
        self.start = check(rt.cudaEventCreate(), "cudaEventCreate")
        self.end = check(rt.cudaEventCreate(), "cudaEventCreate")

    def record(self, event) -> None:
        check(cudart().cudaEventRecord(event, self.handle), "cudaEventRecord")

    def synchronize(self) -> None:
        check(cudart().cudaStreamSynchronize(self.handle), "cudaStreamSynchronize")

    def elapsed_ms(self) -> float:
        return float(check(cudart().cudaEventElapsedTime(self.start, self.end), "cudaEventElapsedTime"))

    def begin_capture(self) -> None:
        rt = cudart()
        check(rt.cudaStreamBeginCapture(self.handle, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal),
              "cudaStreamBeginCapture")

    def end_capture(self):
        """The captured work as an executable CUDA graph."""
        rt = cudart()
        graph = check(rt.cudaStreamEndCapture(self.handle), "cudaStreamEndCapture")
        return check(rt.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")

    def launch(self, graph_exec) -> None:
        check(cudart().cudaGraphLaunch(graph_exec, self.handle), "cudaGraphLaunch")
