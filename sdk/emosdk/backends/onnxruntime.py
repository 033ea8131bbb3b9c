"""ONNX Runtime backend: provider chain TensorRT -> CUDA -> CPU among those installed.

fp16 graphs (the bundle's ``fp16`` variant) run on ONNX Runtime's CUDA provider on any NVIDIA GPU
(``onnxruntime-gpu``), or on its TensorRT provider; on a CPU only when
``providers=("CPUExecutionProvider",)`` asks for it by name (slower than fp32: for checking the
graphs, as ``emosdk-export fp16`` does).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..errors import BackendUnavailableError, ModelError
from .base import Backend

logger = logging.getLogger("emosdk")

PREFERRED = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
PRECISION_KEY = "emosdk.precision"
"""ONNX metadata key that ``emosdk-export fp16`` sets to ``fp16`` on the graphs it converts."""
FP16_HINT = (
    "Install onnxruntime-gpu in place of onnxruntime (x86-64 or SBSA with an NVIDIA driver: "
    "`pip uninstall onnxruntime && pip install 'onnxruntime-gpu[cuda,cudnn]'`, which brings "
    "the CUDA and cuDNN libraries from the package index; on a Jetson, the onnxruntime-gpu wheel "
    "built for your JetPack), or use precision='fp32' or 'int8' on this CPU. To check fp16 graphs "
    "on a CPU, ask for it: providers=('CPUExecutionProvider',)."
)

CPU_DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)
"""ONNX Runtime graph fusions left off when a session runs on the CPU alone. Its CPU
``SkipLayerNormalization`` (a residual Add fused with the LayerNormalization after it) is slower
than the two ops it replaces here: one core, the Whisper audio encoder (int8) 10.27 -> 9.98 ms
and the fusion graph 2.55 -> 2.45 ms per call, outputs bit-identical (benchmarks/README.md). GPU
providers keep it."""


def provider_chain(
    available: list[str], requested: tuple[str, ...] | None, precision: str, cache_dir: Path | None
) -> list[str | tuple[str, dict]]:
    """Pick execution providers and their options.

    Args:
        available: ``onnxruntime.get_available_providers()``.
        requested: providers the user asked for, in order, or None for the default chain.
        precision: ``fp32``, ``fp16`` or ``int8``; fp16 turns on TensorRT's fp16 mode.
        cache_dir: where the TensorRT EP caches its engines (None: no cache).

    Raises:
        BackendUnavailableError: a requested provider is not installed, or nothing usable is.
    """
    if requested:
        missing = [p for p in requested if p not in available]
        if missing:
            raise BackendUnavailableError(
                f"ONNX Runtime providers {missing} are not available here (available: {available})."
                " Install onnxruntime-gpu (CUDA/TensorRT) or JetPack's onnxruntime on a Jetson."
            )
        chosen = list(requested)
    else:
        chosen = [p for p in PREFERRED if p in available]
    if not chosen:
        raise BackendUnavailableError(f"no usable ONNX Runtime provider among {available}")
    out: list[str | tuple[str, dict]] = []
    for p in chosen:
        if p == "TensorrtExecutionProvider":
            opts: dict = {"trt_fp16_enable": precision == "fp16"}
            if cache_dir is not None:
                opts.update(
                    trt_engine_cache_enable=True,
                    trt_engine_cache_path=str(cache_dir),
                    trt_timing_cache_enable=True,
                )
            out.append((p, opts))
        else:
            out.append(p)
    return out


_preloaded = False


def _preload_cuda(ort: object) -> None:
    """Load the CUDA and cuDNN libraries of the nvidia-* wheels once (onnxruntime-gpu >= 1.21)."""
    global _preloaded
    if _preloaded:
        return
    _preloaded = True
    try:
        ort.preload_dlls()  # type: ignore[attr-defined]
    except Exception as e:  # the provider then finds the system's libraries, or says it cannot
        logger.debug("onnxruntime.preload_dlls() failed: %s", e)


class OnnxRuntimeBackend(Backend):
    """One ONNX graph in an ``onnxruntime.InferenceSession``.

    Options: ``providers`` (tuple or None), ``precision`` (str), ``num_threads`` (int),
    ``cache_dir`` (Path or None).
    """

    name = "onnxruntime"

    def _load(self) -> None:
        try:
            import onnxruntime as ort
        except ImportError as e:  # pragma: no cover - onnxruntime is a hard dependency
            raise BackendUnavailableError(
                "onnxruntime is not installed: pip install onnxruntime"
            ) from e
        precision = str(self.options.get("precision", "fp32"))
        chain = provider_chain(
            ort.get_available_providers(),
            self.options.get("providers"),  # type: ignore[arg-type]
            precision,
            self.options.get("cache_dir"),  # type: ignore[arg-type]
        )
        so = ort.SessionOptions()
        threads = int(self.options.get("num_threads", 0) or 0)
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        # The recognizer alternates between three sessions; threads that spin after a run keep
        # the cores busy while the next session wants them (measured: a 3 s window took 18 ms
        # with spinning, 9 ms without, on 2 cores; benchmarks/README.md).
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        names = [c if isinstance(c, str) else c[0] for c in chain]
        if "CUDAExecutionProvider" in names and hasattr(ort, "preload_dlls"):
            _preload_cuda(ort)
        cpu_only = not set(GPU_PROVIDERS) & set(names)
        try:
            self._session = ort.InferenceSession(
                str(self.path),
                sess_options=so,
                providers=chain,
                disabled_optimizers=list(CPU_DISABLED_OPTIMIZERS) if cpu_only else [],
            )
        except Exception as e:
            raise ModelError(f"{self.path}: ONNX Runtime cannot load this graph: {e}") from e
        running = self._session.get_providers()
        if precision == "fp16" and set(GPU_PROVIDERS) & set(names):
            if not set(GPU_PROVIDERS) & set(running):
                # ONNX Runtime falls back to the CPU with only a log line when the CUDA provider
                # cannot start (a missing libcudnn or libcublas, a driver too old)
                raise BackendUnavailableError(
                    f"{self.path}: precision='fp16' asked for {names[0]}, but ONNX Runtime could "
                    f"not start it and would run on {running}: the CUDA libraries it needs are "
                    f"missing or do not match the driver. {FP16_HINT}"
                )
        if precision == "fp16" and running[0] != "TensorrtExecutionProvider":
            # only TensorRT's provider makes fp16 out of an fp32 graph (trt_fp16_enable); on the
            # CUDA (or CPU) provider an fp32 graph would run in fp32 while called fp16
            meta = self._session.get_modelmeta().custom_metadata_map
            if meta.get(PRECISION_KEY) != "fp16":
                raise BackendUnavailableError(
                    f"{self.path}: precision='fp16' on {running[0]} runs the bundle's fp16 graphs, "
                    "and this is not one (the model has no fp16 variant of this graph). Add them "
                    "with `emosdk-export fp16 BUNDLE`, or use precision='fp32'."
                )
        self.device = running[0]
        logger.info(
            "%s: %s on %s (chain %s)",
            self.spec.role,
            self.path.name,
            self.device,
            [c if isinstance(c, str) else c[0] for c in chain],
        )
        declared = [t.name for t in self.spec.inputs]
        actual = [i.name for i in self._session.get_inputs()]
        if sorted(declared) != sorted(actual):
            raise ModelError(
                f"{self.path}: model.json declares inputs {declared} but the graph has {actual}"
            )
        graph_outputs = [o.name for o in self._session.get_outputs()]
        missing = [t.name for t in self.spec.outputs if t.name not in graph_outputs]
        if missing:
            raise ModelError(
                f"{self.path}: model.json declares outputs {missing} that the graph lacks "
                f"(it has {graph_outputs})"
            )
        # the declared outputs first, in their declared order (Backend.infer's promise), then
        # any the bundle does not declare
        wanted = [t.name for t in self.spec.outputs]
        self._outputs = wanted + [n for n in graph_outputs if n not in wanted]

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self._session.run(self._outputs, dict(feeds))
        return dict(zip(self._outputs, values, strict=False))

    def _close(self) -> None:
        self._session = None
