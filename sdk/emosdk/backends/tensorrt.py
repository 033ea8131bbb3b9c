"""TensorRT backend: a cached engine, cuda-python device buffers, one CUDA stream, CUDA graphs.

``tensorrt`` and ``cuda`` are imported inside :meth:`TensorRTBackend._load`; without them the
backend raises :class:`~emosdk.errors.BackendUnavailableError` naming what to install. The
backend runs engines; it does not build them (that is ``emosdk.export.tensorrt``, which the
runtime never imports): ``emosdk-export engine BUNDLE`` fills the engine cache, or a builder is
passed in.

Options: ``precision`` (``fp32``/``fp16``/``int8``), ``engine`` (an engine file to use as is),
``cache_dir`` (engine cache folder, default ``$EMOSDK_ENGINE_CACHE`` or
``~/.cache/emosdk/engines``), ``build`` (build a missing engine with ``builder``, default True),
``builder`` (e.g. ``emosdk.export.tensorrt.build_engine``; without one a missing engine is a
:class:`~emosdk.errors.BackendUnavailableError` that gives the ``emosdk-export engine`` command),
``windows_s`` and ``batch`` (the shapes the engine accepts), ``workspace`` (builder workspace,
bytes), ``dla_core`` (a DLA engine, Jetson AGX/NX Orin), ``cuda_graphs`` (capture and replay a
CUDA graph when the input shapes repeat, default True), ``device`` (CUDA device).

A batch outside the engine's batch range is run as several batches that fit (every graph of a
bundle computes each row on its own), so a window's faces never exceed the profile.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BackendError, BackendUnavailableError, InputError, ModelError
from . import engines as E
from .base import Backend

logger = logging.getLogger("emosdk")


class TensorRTBackend(Backend):
    """One bundle graph as a TensorRT engine (see the module docstring for the options).

    Safe to call from several threads: calls are serialised (one execution context, CUDA stream
    and set of device buffers), and :meth:`close` waits for a running call.
    """

    name = "tensorrt"

    def _load(self) -> None:
        trt = E.import_tensorrt()
        cudart = E.import_cudart()
        self._trt, self._cudart = trt, cudart
        # one execution context, CUDA stream and set of device buffers: one call at a time (the
        # Recognizer runs its graphs from several threads), and close() waits for a running call
        self._lock = threading.Lock()
        self._stream = None
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)
        self._graph: tuple[Any, Any] | None = None  # (graph, graph exec) of _last_key
        self._last_key: tuple | None = None
        self._no_graph: set[tuple] = set()  # shapes whose capture failed: plain enqueue
        try:
            self._open()
        except BaseException:
            self._close()
            raise

    def _open(self) -> None:
        trt, cudart = self._trt, self._cudart
        precision = str(self.options.get("precision", "fp32"))
        device = int(self.options.get("device", 0) or 0)
        engine_path = self.options.get("engine")
        if engine_path is None:
            engine_path = self._cached_engine(precision, device)
        try:
            header, blob = E.read_engine(engine_path)
        except OSError as e:  # a missing file, a folder, no permission: say which file
            raise ModelError(f"{engine_path}: cannot read the TensorRT engine file ({e})") from e
        gpu = E.gpu_name(device)
        if header.gpu_name != gpu or header.trt_version != trt.__version__:
            raise ModelError(
                f"{engine_path}: built for {header.gpu_name} with TensorRT {header.trt_version}, "
                f"this is {gpu} with TensorRT {trt.__version__}; rebuild it "
                "(`emosdk-export engine`)"
            )
        self._profiles = header.profiles
        self._device = device
        self.check(cudart.cudaSetDevice(device), "cudaSetDevice")
        if header.plugins:  # the engine holds EmosdkMaskedAttention layers
            E.load_trt_plugin(trt)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        if header.dla_core is not None:  # a DLA engine runs on the core it was built for
            self._runtime.DLA_core = header.dla_core
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
        missing = [t.name for t in self.spec.outputs if t.name not in self._outputs]
        if missing:
            raise ModelError(
                f"{engine_path}: model.json declares outputs {missing} that the engine lacks "
                f"(it has {self._outputs})"
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
        where = gpu if header.dla_core is None else f"{gpu} DLA core {header.dla_core}"
        self.device = f"{where} (TensorRT {trt.__version__}, {header.precision})"
        logger.info("%s: %s on %s", self.spec.role, engine_path, self.device)

    def _cached_engine(self, precision: str, device: int) -> Path:
        from ..models.bundle import load_bundle

        bundle = load_bundle(self.path.parent)
        cache = E.EngineCache(self.options.get("cache_dir"))
        opts: dict[str, Any] = {}
        for k in ("windows_s", "batch", "workspace", "dla_core"):
            if self.options.get(k) is not None:
                opts[k] = self.options[k]
        # the same source file `emosdk-export engine` builds from, so the cache keys agree
        onnx_path = E.engine_source(bundle, self.spec.role, precision, E.strongly_typed(self._trt))
        builder = self.options.get("builder") if self.options.get("build", True) else None
        return E.find_engine(
            onnx_path,
            self.spec,
            bundle.audio,
            bundle.stream,
            precision=precision,
            cache=cache,
            builder=builder,  # type: ignore[arg-type]
            bundle=f"{bundle.name} {bundle.version}",
            device=device,
            **opts,
        )

    def check(self, result: Any, what: str) -> Any:
        try:
            return E.cuda_check(self._cudart, result, what)
        except Exception as e:
            raise BackendError(f"{self.spec.role}: {e}") from e

    def _alloc(self, name: str, shape: tuple[int, ...]) -> None:
        nbytes = int(np.prod(shape)) * self._dtypes[name].itemsize
        ptr = self.check(self._cudart.cudaMalloc(max(nbytes, 1)), f"cudaMalloc({nbytes})")
        self._buffers[name] = (int(ptr), nbytes)

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._lock:
            if self._context is None:  # closed while this call waited for the lock
                raise BackendError(f"{self.spec.role}: backend is closed")
            # the current CUDA device is per host thread (0 in a new one): make the engine's
            # current, or its stream and context are refused from any other thread
            self.check(self._cudart.cudaSetDevice(self._device), "cudaSetDevice")
            return self._infer_locked(feeds)

    def _infer_locked(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        shapes = {n: tuple(x.shape) for n, x in feeds.items()}
        why = E.shapes_fit(self._profiles, shapes)
        if why is None:
            return self._run(feeds)
        plan = E.batch_plan(self._profiles, shapes)
        if plan is None or not self._batch_major_outputs():
            raise InputError(
                f"{self.spec.role}: {why}; rebuild the engine for these window lengths "
                "(`emosdk-export engine --windows ...`) or use backend='onnxruntime'"
            )
        parts: list[dict[str, np.ndarray]] = []
        for start, stop, pad in plan:
            chunk = {}
            for n, x in feeds.items():
                part = x[start:stop]
                if pad:
                    part = np.concatenate([part, np.zeros((pad, *x.shape[1:]), x.dtype)])
                chunk[n] = part
            out = self._run(chunk)
            parts.append({n: y[: stop - start] for n, y in out.items()})
        return {n: np.concatenate([p[n] for p in parts]) for n in parts[0]}

    def _batch_major_outputs(self) -> bool:
        """Whether every output's first axis is the inputs' batch axis (so runs can be joined)."""
        first = {t.shape[0] for t in self.spec.inputs if t.shape}
        return len(first) == 1 and all(t.shape and t.shape[0] in first for t in self.spec.outputs)

    def _run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        cudart = self._cudart
        kind_h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        kind_d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        stream = self._stream
        key = tuple(sorted((n, tuple(x.shape)) for n, x in feeds.items()))
        keep: list[np.ndarray] = []
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
        if not self._launch_graph(key) and not self._context.execute_async_v3(int(stream)):
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
        declared = [t.name for t in self.spec.outputs]  # all there: checked in _open
        return {n: out[n] for n in declared} | {n: v for n, v in out.items() if n not in declared}

    def _launch_graph(self, key: tuple) -> bool:
        """Replay (capturing first if needed) the CUDA graph of ``key``; False: enqueue instead.

        TensorRT wants one plain enqueue after a shape change before a capture: the previous call
        with these shapes was that enqueue. A failed capture or launch is not an error: as
        trtexec does, the shapes fall back to plain enqueues for good, the stream leaves capture
        mode and the sticky CUDA error is cleared.
        """
        if not self._use_graphs or key != self._last_key or key in self._no_graph:
            return False
        cudart = self._cudart
        if self._graph is None:
            self._graph = self._capture(key)
            if self._graph is None:
                return False
        try:
            E.cuda_check(cudart, cudart.cudaGraphLaunch(self._graph[1], self._stream), "launch")
        except Exception as e:
            self._graph_failed(key, f"cudaGraphLaunch: {e}")
            self._destroy_graph(*self._graph)
            self._graph = None
            return False
        return True

    def _capture(self, key: tuple) -> tuple[Any, Any] | None:
        cudart, stream = self._cudart, self._stream
        mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        capturing, graph = False, None
        try:
            E.cuda_check(
                cudart, cudart.cudaStreamBeginCapture(stream, mode), "cudaStreamBeginCapture"
            )
            capturing = True
            ok = self._context.execute_async_v3(int(stream))
            capturing = False
            graph = E.cuda_check(cudart, cudart.cudaStreamEndCapture(stream), "EndCapture")
            if not ok:
                raise BackendError("TensorRT execute_async_v3 failed during the capture")
            exe = E.cuda_check(cudart, cudart.cudaGraphInstantiate(graph, 0), "GraphInstantiate")
        except Exception as e:
            if capturing:  # leave capture mode, or every later call on the stream fails
                try:
                    res = cudart.cudaStreamEndCapture(stream)
                    graph = res[1] if isinstance(res, tuple) and len(res) > 1 else None
                except Exception:
                    graph = None
            if graph is not None:  # captured but not instantiated: it would leak
                cudart.cudaGraphDestroy(graph)
            self._graph_failed(key, str(e))
            return None
        logger.debug("%s: captured a CUDA graph", self.spec.role)
        return graph, exe

    def _graph_failed(self, key: tuple, why: str) -> None:
        self._cudart.cudaGetLastError()  # clear the error the failure left behind
        self._no_graph.add(key)
        logger.warning(
            "%s: CUDA graph capture failed (%s); these input shapes run without a graph",
            self.spec.role,
            why,
        )

    def _destroy_graph(self, graph: Any, exe: Any) -> None:
        self._cudart.cudaGraphExecDestroy(exe)
        self._cudart.cudaGraphDestroy(graph)

    def _close(self) -> None:
        lock = getattr(self, "_lock", None)
        if lock is None:
            return
        with lock:
            self._release()

    def _release(self) -> None:
        cudart = self._cudart
        if getattr(self, "_device", None) is not None:  # close() may come from another thread
            cudart.cudaSetDevice(self._device)
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
        E.import_tensorrt()
        E.import_cudart()
    except BackendUnavailableError as e:
        return str(e)
    return None
