"""TensorRT backend: a cached engine, cuda-python device buffers, one CUDA stream, CUDA graphs.

``tensorrt`` and ``cuda`` are imported inside :meth:`TensorRTBackend._load`; without them the
backend raises :class:`~emosdk.errors.BackendUnavailableError` naming what to install.

Options: ``precision`` (``fp32``/``fp16``/``int8``), ``engine`` (an engine file to use as is),
``cache_dir`` (engine cache folder, default ``$EMOSDK_ENGINE_CACHE`` or
``~/.cache/emosdk/engines``), ``build`` (build a missing engine, default True: minutes on a
Jetson), ``windows_s`` and ``batch`` (the shapes the engine accepts), ``cuda_graphs`` (capture
and replay a CUDA graph when the input shapes repeat, default True), ``device`` (CUDA device).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import BackendError, BackendUnavailableError, InputError, ModelError
from .base import Backend

logger = logging.getLogger("emosdk")


class TensorRTBackend(Backend):
    """One bundle graph as a TensorRT engine (see the module docstring for the options)."""

    name = "tensorrt"

    def _load(self) -> None:
        from emosdk.export import tensorrt as ET

        trt = ET.import_tensorrt()
        cudart = ET.import_cudart()
        self._trt, self._cudart = trt, cudart
        self._stream = None
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)
        self._graph: tuple[Any, Any] | None = None  # (graph, graph exec) of _last_key
        self._last_key: tuple | None = None
        try:
            self._open()
        except BaseException:
            self._close()
            raise

    def _open(self) -> None:
        from emosdk.export import tensorrt as ET

        trt, cudart = self._trt, self._cudart
        precision = str(self.options.get("precision", "fp32"))
        device = int(self.options.get("device", 0) or 0)
        engine_path = self.options.get("engine")
        if engine_path is None:
            engine_path = self._cached_engine(ET, precision, device)
        header, blob = ET.read_engine(engine_path)
        gpu = ET.gpu_name(device)
        if header.gpu_name != gpu or header.trt_version != trt.__version__:
            raise ModelError(
                f"{engine_path}: built for {header.gpu_name} with TensorRT {header.trt_version}, "
                f"this is {gpu} with TensorRT {trt.__version__}; rebuild it "
                "(`emosdk-export engine`)"
            )
        self._profiles = header.profiles
        self.check(cudart.cudaSetDevice(device), "cudaSetDevice")
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(blob)
        if self._engine is None:
            raise ModelError(f"{engine_path}: TensorRT cannot deserialize this engine")
        self._context = self._engine.create_execution_context()
        self._stream = self.check(cudart.cudaStreamCreate(), "cudaStreamCreate")
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        self._inputs = [
            n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT
        ]
        self._outputs = [n for n in names if n not in self._inputs]
        declared = [t.name for t in self.spec.inputs]
        if sorted(declared) != sorted(self._inputs):
            raise ModelError(
                f"{engine_path}: model.json declares inputs {declared}, the engine {self._inputs}"
            )
        self._dtypes = {n: np.dtype(trt.nptype(self._engine.get_tensor_dtype(n))) for n in names}
        # one device buffer per tensor, sized for the largest shapes of the profile
        for n in self._inputs:
            hi = tuple(self._engine.get_tensor_profile_shape(n, 0)[2])
            self._context.set_input_shape(n, hi)
            self._alloc(n, hi)
        for n in self._outputs:
            self._alloc(n, tuple(self._context.get_tensor_shape(n)))
        for n, (ptr, _) in self._buffers.items():
            self._context.set_tensor_address(n, ptr)
        self._use_graphs = bool(self.options.get("cuda_graphs", True))
        self.device = f"{gpu} (TensorRT {trt.__version__}, {header.precision})"
        logger.info("%s: %s on %s", self.spec.role, engine_path, self.device)

    def _cached_engine(self, ET: Any, precision: str, device: int) -> Any:
        from ..models.bundle import load_bundle

        bundle = load_bundle(self.path.parent)
        cache = ET.EngineCache(self.options.get("cache_dir"))
        opts = {}
        for k in ("windows_s", "batch"):
            if self.options.get(k) is not None:
                opts[k] = self.options[k]
        # engines are built from the opset-18 copy when the bundle has one (emosdk-export onnx
        # writes it): the same file `emosdk-export engine` builds from, so the cache keys agree
        variant = bundle.meta.get("variants", {}).get("opset18", {})
        onnx_path = (
            bundle.path / variant[self.spec.role] if self.spec.role in variant else self.path
        )
        return ET.engine_for(
            onnx_path,
            self.spec,
            bundle.audio,
            bundle.stream,
            precision=precision,
            cache=cache,
            build=bool(self.options.get("build", True)),
            bundle=f"{bundle.name} {bundle.version}",
            device=device,
            **opts,
        )

    def check(self, result: Any, what: str) -> Any:
        from emosdk.export.tensorrt import cuda_check

        try:
            return cuda_check(self._cudart, result, what)
        except Exception as e:
            raise BackendError(f"{self.spec.role}: {e}") from e

    def _alloc(self, name: str, shape: tuple[int, ...]) -> None:
        nbytes = int(np.prod(shape)) * self._dtypes[name].itemsize
        ptr = self.check(self._cudart.cudaMalloc(max(nbytes, 1)), f"cudaMalloc({nbytes})")
        self._buffers[name] = (int(ptr), nbytes)

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        from emosdk.export.tensorrt import shapes_fit

        cudart = self._cudart
        kind_h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        kind_d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        stream = self._stream
        shapes = {n: tuple(x.shape) for n, x in feeds.items()}
        why = shapes_fit(self._profiles, shapes)
        if why is not None:
            raise InputError(
                f"{self.spec.role}: {why}; rebuild the engine for these window lengths "
                "(`emosdk-export engine --windows ...`) or use backend='onnxruntime'"
            )
        keep: list[np.ndarray] = []
        key = tuple(sorted(shapes.items()))
        if key != self._last_key and self._graph is not None:
            # a captured graph bakes in the kernels of one set of shapes: drop it on a change
            self._destroy_graph(*self._graph)
            self._graph = None
        for n in self._inputs:
            x = np.ascontiguousarray(feeds[n], dtype=self._dtypes[n])
            self._context.set_input_shape(n, x.shape)
            ptr, _ = self._buffers[n]
            self.check(
                cudart.cudaMemcpyAsync(ptr, x.ctypes.data, x.nbytes, kind_h2d, stream),
                "cudaMemcpyAsync H2D",
            )
            keep.append(x)  # the host array must live until the stream syncs
        if self._use_graphs and key == self._last_key:
            if self._graph is None:
                # TensorRT wants one plain enqueue after a shape change before a capture; the
                # previous call with these shapes was that enqueue
                self._graph = self._capture()
            self.check(cudart.cudaGraphLaunch(self._graph[1], stream), "cudaGraphLaunch")
        elif not self._context.execute_async_v3(int(stream)):
            raise BackendError(f"{self.spec.role}: TensorRT execute_async_v3 failed")
        self._last_key = key
        out = {}
        for n in self._outputs:
            shape = tuple(self._context.get_tensor_shape(n))
            y = np.empty(shape, self._dtypes[n])
            self.check(
                cudart.cudaMemcpyAsync(
                    y.ctypes.data, self._buffers[n][0], y.nbytes, kind_d2h, stream
                ),
                "cudaMemcpyAsync D2H",
            )
            out[n] = y
        self.check(cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
        declared = [t.name for t in self.spec.outputs]
        return {n: out[n] for n in declared if n in out} | {
            n: v for n, v in out.items() if n not in declared
        }

    def _capture(self) -> tuple[Any, Any]:
        cudart = self._cudart
        mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        self.check(cudart.cudaStreamBeginCapture(self._stream, mode), "cudaStreamBeginCapture")
        ok = self._context.execute_async_v3(int(self._stream))
        graph = self.check(cudart.cudaStreamEndCapture(self._stream), "cudaStreamEndCapture")
        if not ok:
            cudart.cudaGraphDestroy(graph)
            raise BackendError(f"{self.spec.role}: TensorRT execute_async_v3 failed in capture")
        exe = self.check(cudart.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        logger.debug("%s: captured a CUDA graph", self.spec.role)
        return graph, exe

    def _destroy_graph(self, graph: Any, exe: Any) -> None:
        self._cudart.cudaGraphExecDestroy(exe)
        self._cudart.cudaGraphDestroy(graph)

    def _close(self) -> None:
        cudart = getattr(self, "_cudart", None)
        if cudart is None:
            return
        if getattr(self, "_graph", None) is not None:
            self._destroy_graph(*self._graph)
            self._graph = None
        for ptr, _ in getattr(self, "_buffers", {}).values():
            cudart.cudaFree(ptr)
        self._buffers = {}
        if getattr(self, "_stream", None) is not None:
            cudart.cudaStreamDestroy(self._stream)
            self._stream = None
        self._context = self._engine = self._runtime = None


def tensorrt_unavailable_reason() -> str | None:
    """None when ``tensorrt`` and cuda-python import; else why not and what to install."""
    try:
        from emosdk.export.tensorrt import import_cudart, import_tensorrt

        import_tensorrt()
        import_cudart()
    except BackendUnavailableError as e:
        return str(e)
    return None
