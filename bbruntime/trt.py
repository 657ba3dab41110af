"""Running a serialized TensorRT engine with ``infer(batch)``, like the ONNX Runtime runner.

Only the runtime calls TensorRT 10.x (JetPack 6 ships 10.3) and 11.x share are used:
``deserialize_cuda_engine``, ``create_execution_context``, ``num_io_tensors``,
``get_tensor_name/mode/dtype/shape/profile_shape``, ``set_input_shape``, ``set_tensor_address`` and
``execute_async_v3``. Device memory, pinned host memory, the stream and its timing events come from
cuda-python (:mod:`bbruntime.cuda`), allocated once for the engine's largest batch and reused, so
memory stays flat over a video loop. ``tensorrt`` is imported inside the functions that need it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import cuda
from .errors import ExportError, MissingDependencyError, first_line


def trt_available() -> str | None:
    """None when TensorRT, cuda-python and a CUDA device are all usable, else what is missing, in words."""
    missing = []
    try:
        import tensorrt  # noqa: F401
    except (ImportError, OSError) as e:  # OSError: the wheel is there but a shared library is not
        missing.append("tensorrt is not installed" if isinstance(e, ModuleNotFoundError) and e.name == "tensorrt"
                       else f"tensorrt does not load ({first_line(e, 160)})")
    try:
        devices = cuda.device_count()
    except MissingDependencyError as e:
        missing.append(first_line(e).split(" (")[0])
    except (ImportError, OSError, RuntimeError) as e:  # a driver that does not load
        missing.append(f"no CUDA driver ({first_line(e, 160)})")
    else:
        if devices == 0:
            missing.append("no CUDA device")
    return ", ".join(missing) or None


def trt_version() -> str | None:
    try:
        import tensorrt as trt
    except (ImportError, OSError):
        return None
    return trt.__version__


def load_engine(engine_path: Path, built_with: str | None = None, dla_core: int | None = None):
    """Deserialize ``engine_path`` (onto DLA core ``dla_core`` where given: Jetson's deep-learning
    accelerators); a failure names the TensorRT that built the engine (where known) and the one
    running, since a plan loads only on the version and GPU model that made it."""
    import tensorrt as trt

    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    if dla_core is not None:
        runtime.DLA_core = dla_core  # before deserializing: the engine's DLA layers bind to this core
    engine = runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
    if engine is None:
        made = f"built with TensorRT {built_with}" if built_with else "built with an unrecorded TensorRT"
        raise ExportError(f"TensorRT {trt.__version__} could not load {engine_path} ({made}, running "
                          f"{trt.__version__}): engines only load on the TensorRT version and GPU model that built "
                          "them; rebuild it here from the ONNX file")
    return runtime, engine


class TrtRunner:
    """One engine with one input and one output. Each execution's device time, from CUDA events around
    it, is appended to ``timings_ms``. With ``cuda_graph=True`` each batch size is captured once (after a
    plain run, as TensorRT requires after a shape change) and replayed."""

    name = "trt"

    def __init__(self, engine_path: Path, cuda_graph: bool = False, built_with: str | None = None,
                 dla_core: int | None = None):
        import tensorrt as trt

        self._runtime, self.engine = load_engine(engine_path, built_with, dla_core)
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if len(inputs) != 1 or len(outputs) != 1:
            raise ExportError(f"{engine_path} has inputs {inputs} and outputs {outputs}; expected one of each")
        (self.input_name,), (self.output_name,) = inputs, outputs
        self.input_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.input_name)))
        self.output_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.output_name)))
        shape = tuple(self.engine.get_tensor_shape(self.input_name))
        self.static_batch = shape[0] if shape[0] >= 0 else None
        self.max_batch = self.static_batch or self.engine.get_tensor_profile_shape(self.input_name, 0)[2][0]
        self.sample_shape = shape[1:]
        self.stream = cuda.Stream()
        self.input = cuda.Buffer(self.max_batch * int(np.prod(self.sample_shape)) * self.input_dtype.itemsize)
        self.output = None  # sized on the first run, when the output shape is known
        self.cuda_graph = cuda_graph
        self._graphs: dict[int, object] = {}  # batch -> executable CUDA graph
        self.timings_ms: list[float] = []

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Run ``batch`` in chunks the engine accepts (padding the last one for a static batch)."""
        outputs = []
        for start in range(0, len(batch), self.max_batch):
            chunk = batch[start:start + self.max_batch]
            pad = (self.static_batch - len(chunk)) if self.static_batch else 0
            if pad:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
            outputs.append(self._execute(chunk)[: len(chunk) - pad])
        return np.concatenate(outputs)

    def synchronize(self) -> None:
        self.stream.synchronize()

    def close(self) -> None:
        """Free the device and pinned host buffers (also when the runner is collected): a report builds
        one engine per precision, and their memory must not pile up on the GPU."""
        for buffer in (getattr(self, "input", None), getattr(self, "output", None)):
            if buffer is not None:
                buffer.free()
        self.input = self.output = None

    __del__ = close

    def _execute(self, chunk: np.ndarray) -> np.ndarray:
        host_in = self.input.host_view(self.input_dtype, chunk.shape)
        host_in[...] = chunk  # the cast to the engine's input type (FP16 I/O) happens here
        self.input.to_device(host_in.nbytes, self.stream.handle)
        out_shape = self._bind(chunk.shape)
        self.stream.record(self.stream.start)
        if self.cuda_graph and len(chunk) in self._graphs:
            self.stream.launch(self._graphs[len(chunk)])
        elif not self.context.execute_async_v3(self.stream.address):
            raise ExportError(f"TensorRT execution failed for a batch of {len(chunk)}")
        self.stream.record(self.stream.end)
        host_out = self.output.host_view(self.output_dtype, out_shape)
        self.output.to_host(host_out.nbytes, self.stream.handle)
        self.stream.synchronize()
        self.timings_ms.append(self.stream.elapsed_ms())
        if self.cuda_graph and len(chunk) not in self._graphs:
            self._capture(len(chunk))
        return host_out.astype(np.float32)

    def _bind(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Set the input shape and both tensor addresses; returns the output shape."""
        if not self.context.set_input_shape(self.input_name, tuple(shape)):
            raise ExportError(f"batch {tuple(shape)} is outside the engine's profile (max batch {self.max_batch})")
        out_shape = tuple(self.context.get_tensor_shape(self.output_name))
        if self.output is None:
            per_sample = int(np.prod(out_shape[1:])) * self.output_dtype.itemsize
            self.output = cuda.Buffer(self.max_batch * per_sample)
        self.context.set_tensor_address(self.input_name, int(self.input.device))
        self.context.set_tensor_address(self.output_name, int(self.output.device))
        return out_shape

    def _capture(self, batch: int) -> None:
        """Record this batch size's execution into a CUDA graph over the runner's fixed buffers."""
        self.stream.begin_capture()
        ok = self.context.execute_async_v3(self.stream.address)
        graph = self.stream.end_capture()
        if not ok:
            raise ExportError("TensorRT execution failed during CUDA graph capture")
        self._graphs[batch] = graph
