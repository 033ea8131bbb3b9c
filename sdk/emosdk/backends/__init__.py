"""Inference backends and what this machine can run.

``available_backends()`` is the one place that probes optional runtimes (TensorRT, CUDA); each
probe is an import inside a function, so a missing library costs nothing until it is asked for.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ..errors import BackendUnavailableError, ConfigError
from ..models.bundle import GraphSpec
from .base import Backend, check_feeds
from .engines import TENSORRT_HINT
from .onnxruntime import FP16_HINT, GPU_PROVIDERS, OnnxRuntimeBackend

logger = logging.getLogger("emosdk")


@dataclass(frozen=True)
class BackendStatus:
    """Whether a backend can run here.

    Attributes:
        name: ``"onnxruntime"`` or ``"tensorrt"``.
        available: True when the backend can run on this machine.
        devices: What it would run on (ORT providers, or GPU names), best first.
        detail: Version, or the reason it is unavailable and what to install.
    """

    name: str
    available: bool
    devices: tuple[str, ...]
    detail: str


def _probe_onnxruntime() -> BackendStatus:
    try:
        import onnxruntime as ort
    except ImportError as e:
        return BackendStatus("onnxruntime", False, (), f"pip install onnxruntime ({e})")
    providers = tuple(ort.get_available_providers())
    return BackendStatus("onnxruntime", True, providers, f"onnxruntime {ort.__version__}")


def _probe_tensorrt() -> BackendStatus:
    from .engines import cuda_unavailable_reason, import_cudart

    try:
        import tensorrt as trt
    except Exception as e:
        return BackendStatus("tensorrt", False, (), f"{TENSORRT_HINT} ({type(e).__name__}: {e})")
    try:
        cudart = import_cudart()
    except BackendUnavailableError as e:
        return BackendStatus("tensorrt", False, (), str(e))
    why = cuda_unavailable_reason(cudart)
    if why is not None:
        return BackendStatus("tensorrt", False, (), why)
    count = int(cudart.cudaGetDeviceCount()[1])
    devices = tuple(f"cuda:{i}" for i in range(count))
    return BackendStatus("tensorrt", True, devices, f"tensorrt {trt.__version__}")


def available_backends() -> list[BackendStatus]:
    """Probe every backend; never raises.

    Returns:
        One :class:`BackendStatus` per backend, available or not, with the reason.
    """
    return [_probe_onnxruntime(), _probe_tensorrt()]


def create_backend(
    backend: str,
    path: str | Path,
    spec: GraphSpec,
    *,
    precision: str = "fp32",
    providers: tuple[str, ...] | None = None,
    num_threads: int = 0,
    cache_dir: Path | None = None,
) -> Backend:
    """Open one graph on the requested backend (``auto`` picks the best that can run it).

    Raises:
        BackendUnavailableError: the backend or precision cannot run here; says what to install.
    """
    if backend == "tensorrt":
        from .tensorrt import TensorRTBackend  # tensorrt/cuda are imported only in _load

        if providers:
            raise ConfigError("providers: only for backend='onnxruntime' or 'auto', not 'tensorrt'")
        return TensorRTBackend(path, spec, precision=precision, cache_dir=cache_dir)
    if backend not in ("auto", "onnxruntime"):
        raise ConfigError(f"backend: expected 'auto', 'onnxruntime' or 'tensorrt', got {backend!r}")
    if precision == "fp16":
        # fp16 graphs are for NVIDIA GPUs: ONNX Runtime's CUDA provider (onnxruntime-gpu), or its
        # TensorRT provider. On a CPU they run, slower than fp32, only when asked for by name
        # (providers=("CPUExecutionProvider",)): that is how their accuracy is checked.
        import onnxruntime as ort

        available = ort.get_available_providers()
        if providers is None and not set(GPU_PROVIDERS) & set(available):
            raise BackendUnavailableError(
                f"precision='fp16' needs an NVIDIA GPU through ONNX Runtime's CUDA or TensorRT "
                f"provider; this onnxruntime has {available}. {FP16_HINT}"
            )
    return OnnxRuntimeBackend(
        path,
        spec,
        precision=precision,
        providers=providers,
        num_threads=num_threads,
        cache_dir=cache_dir,
    )


__all__ = [
    "Backend",
    "BackendStatus",
    "OnnxRuntimeBackend",
    "available_backends",
    "check_feeds",
    "create_backend",
]
