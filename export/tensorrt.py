"""TensorRT engines for a bundle's graphs: the builder.

Only :func:`build_engine` (and the helpers it calls) needs TensorRT; every import of ``tensorrt``
or ``cuda`` is inside a function. Finding, reading and caching engines is the runtime's
(:mod:`emosdk.backends.engines`, re-exported here so ``emosdk.export.tensorrt`` keeps its names);
this module builds them, and the runtime never imports it.

* int8 is *explicit* quantization only: the ONNX graph must carry QuantizeLinear/DequantizeLinear
  nodes (TensorRT 10 deprecates the implicit calibrators).
* Up to TensorRT 10.11 (10.3 on JetPack 6) precision is chosen with builder flags: fp16 and int8
  builds also allow fp16 kernels; fp32 builds use fp32 (TF32 is disabled so fp32 engines stay
  comparable to ONNX Runtime). From 10.12 those flags are deprecated (gone in 11), so the network
  is strongly typed: an fp16 engine is built from the bundle's fp16 graph
  (``emosdk-export fp16``), an int8 engine from its Q/DQ graph.
* A DLA engine (Jetson AGX/NX Orin) needs static shapes: :func:`build_engine` refuses a dynamic
  profile for a DLA core instead of letting TensorRT move every layer to the GPU without a word.
* A graph holding ``EmosdkMaskedAttention`` nodes (``export_attention_onnx(target="tensorrt")``)
  gets the plugin library loaded before parsing, and its engine header says so, so the runtime
  loads it again before deserialising. The shipped bundle graphs use standard ONNX ops only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from emosdk.backends.engines import (  # noqa: F401 - re-exported: the public names of this module
    DEFAULT_CACHE,
    DEFAULT_WINDOWS_S,
    DEFAULT_WORKSPACE,
    ENGINE_HEADER_VERSION,
    ENGINE_MAGIC,
    ENV_CACHE,
    PLUGIN_NAME,
    PRECISIONS,
    STRONG_TYPING_FROM,
    EngineCache,
    EngineCacheError,
    EngineError,
    EngineFormatError,
    EngineHeader,
    Range,
    batch_plan,
    cuda_check,
    cuda_unavailable_reason,
    engine_profiles,
    engine_source,
    engine_variant,
    find_engine,
    gpu_name,
    import_cudart,
    import_tensorrt,
    is_static,
    load_trt_plugin,
    onnx_uses_plugin,
    profile_dims,
    profile_shapes,
    read_engine,
    read_engine_header,
    shapes_fit,
    static_dims,
    strongly_typed,
    write_engine,
)
from emosdk.features.audio import LogMelParams
from emosdk.models.bundle import GraphSpec, StreamParams, sha256_file

logger = logging.getLogger("emosdk")

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


class EngineBuildError(EngineError):
    """TensorRT's parser or builder failed; the message carries TensorRT's own errors."""


# ------------------------------------------------------------------------------------------------
# progress logging (pure Python; wrapped into a trt.IProgressMonitor by build_engine)


class BuildProgress:
    """Logs TensorRT builder phases to logger ``emosdk`` (first builds take minutes on a Jetson).

    Implements the three methods of ``trt.IProgressMonitor``; :func:`build_engine` forwards to it.
    Step messages are rate limited to one per ``every_s`` seconds per phase.
    """

    def __init__(self, label: str, every_s: float = 5.0) -> None:
        self.label = label
        self.every_s = every_s
        self._start: dict[str, float] = {}
        self._steps: dict[str, int] = {}
        self._last: dict[str, float] = {}
        self.finished: list[str] = []

    def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
        self._start[phase_name] = self._last[phase_name] = time.monotonic()
        self._steps[phase_name] = int(num_steps)
        indent = "  " if parent_phase else ""
        logger.info("%s: %s%s (%d steps)", self.label, indent, phase_name, num_steps)

    def step_complete(self, phase_name: str, step: int) -> bool:
        now = time.monotonic()
        if now - self._last.get(phase_name, 0.0) >= self.every_s:
            self._last[phase_name] = now
            logger.info(
                "%s: %s step %d/%d",
                self.label,
                phase_name,
                step + 1,
                self._steps.get(phase_name, 0),
            )
        return True  # False would cancel the build

    def phase_finish(self, phase_name: str) -> None:
        t = time.monotonic() - self._start.pop(phase_name, time.monotonic())
        self.finished.append(phase_name)
        logger.info("%s: %s done in %.1f s", self.label, phase_name, t)


# ------------------------------------------------------------------------------------------------
# the TensorRT parts


def onnx_has_qdq(onnx_path: str | Path) -> bool:
    """True when the ONNX graph holds QuantizeLinear/DequantizeLinear nodes (explicit int8)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return any(n.op_type in QDQ_OPS for n in model.graph.node)


def onnx_is_fp16(onnx_path: str | Path) -> bool:
    """True when the ONNX graph's weights are float16 (an ``emosdk-export fp16`` variant)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    types = [t.data_type for t in model.graph.initializer]
    return onnx.TensorProto.FLOAT16 in types and onnx.TensorProto.FLOAT not in types


def _make_monitor(trt: Any, progress: BuildProgress) -> Any:
    class _Monitor(trt.IProgressMonitor):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            progress.phase_start(phase_name, parent_phase, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            return progress.step_complete(phase_name, step)

        def phase_finish(self, phase_name: str) -> None:
            progress.phase_finish(phase_name)

    return _Monitor()


def _check_graph(onnx_path: Path, precision: str, strong: bool) -> None:
    """Refuse a graph that cannot give an engine of ``precision`` (before TensorRT is imported).

    A runtime-only install (no ``onnx`` package) skips the checks: TensorRT decides.
    """
    try:
        if precision == "int8" and not onnx_has_qdq(onnx_path):
            raise ValueError(
                f"{onnx_path}: precision='int8' needs an explicitly quantized graph with "
                "QuantizeLinear/DequantizeLinear nodes (TensorRT 10 deprecates implicit "
                "calibration). Dynamic-int8 ONNX variants (MatMulInteger) are for ONNX Runtime "
                "on CPUs only."
            )
        if precision == "fp16" and strong and not onnx_is_fp16(onnx_path):
            raise ValueError(
                f"{onnx_path}: this TensorRT builds strongly typed networks (BuilderFlag.FP16 is "
                "deprecated from 10.12), so an fp16 engine needs an fp16 graph: add the fp16 "
                "variant with `emosdk-export fp16 BUNDLE` and build from it."
            )
    except ImportError:
        logger.info("onnx is not installed: %s is not checked for %s", onnx_path, precision)


def build_engine(
    onnx_path: str | Path,
    out_path: str | Path,
    profiles: Mapping[str, tuple[Sequence[int], Sequence[int], Sequence[int]]],
    *,
    precision: str = "fp32",
    workspace: int = DEFAULT_WORKSPACE,
    timing_cache: str | Path | None = None,
    dla_core: int | None = None,
    gpu_fallback: bool = True,
    bundle: str = "",
    role: str = "",
    device: int = 0,
) -> Path:
    """Build a TensorRT engine from an ONNX file and write it with an emosdk header.

    Args:
        onnx_path: the ONNX graph (opset 18 export recommended; external data is read from
            beside it). With TensorRT >= 10.12, an fp16 engine needs the fp16 graph.
        out_path: engine file to write.
        profiles: input name -> (min, opt, max) shapes, e.g. from
            :func:`~emosdk.backends.engines.engine_profiles`. For a DLA core every profile must
            be static (min = opt = max).
        precision: ``fp32``; ``fp16`` (fp16 kernels allowed, or the fp16 graph's types);
            ``int8`` (explicit quantization: the ONNX graph must contain Q/DQ nodes; fp16 is
            allowed for the rest).
        workspace: builder workspace memory pool limit in bytes.
        timing_cache: file to load the timing cache from and save it back to (speeds up later
            builds of similar graphs on the same GPU).
        dla_core: run on this DLA core (Jetson AGX/NX Orin); needs fp16 or int8 and static shapes.
        gpu_fallback: with ``dla_core``, let layers the DLA cannot run fall back to the GPU
            (False: the build fails instead).
        bundle, role: written into the header.
        device: CUDA device to build on.

    Returns:
        ``out_path``.

    Raises:
        BackendUnavailableError: TensorRT or cuda-python is missing, there is no GPU, or the graph
            needs the emosdk plugin library and it was not built.
        ValueError: bad precision, DLA with fp32 or dynamic shapes, int8 without Q/DQ nodes, or
            (TensorRT >= 10.12) fp16 from an fp32 graph.
        EngineBuildError: TensorRT's parser or builder failed (its errors are in the message).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if dla_core is not None and precision == "fp32":
        raise ValueError("the DLA runs fp16 or int8 only: pass precision='fp16' or 'int8'")
    if dla_core is not None and not is_static(profiles):
        raise ValueError(
            "the DLA needs static shapes (min = opt = max for every input); this profile is "
            "dynamic, so TensorRT would run every layer on the GPU. Use "
            "engine_profiles(..., dla_core=N) (`emosdk-export engine --dla-core N` does)."
        )
    onnx_path = Path(onnx_path)
    if precision == "int8":
        _check_graph(onnx_path, precision, strong=False)  # Q/DQ needed whatever the TensorRT
    trt = import_tensorrt()
    strong = strongly_typed(trt)
    if precision == "fp16":
        _check_graph(onnx_path, precision, strong)
    name = gpu_name(device)
    cudart = import_cudart()
    cuda_check(cudart, cudart.cudaSetDevice(device), "cudaSetDevice")
    plugins = []
    if onnx_uses_plugin(onnx_path):
        load_trt_plugin(trt)  # the parser maps EmosdkMaskedAttention nodes to its creator
        plugins.append(PLUGIN_NAME)
    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    major = int(str(trt.__version__).split(".")[0])
    flags = 0
    if major < 10:  # explicit batch is the only mode (and the flag deprecated) from TensorRT 10
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if strong:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineBuildError(f"{onnx_path}: TensorRT cannot parse this ONNX graph: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace))
    if precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    if precision in ("fp16", "int8") and not getattr(builder, "platform_has_fast_fp16", True):
        logger.warning("%s: this GPU has no fast fp16; the engine may be slow", name)
    if not strong:  # TensorRT < 10.12: precision by flags (strong typing takes the graph's types)
        if precision in ("fp16", "int8"):
            config.set_flag(trt.BuilderFlag.FP16)
        if precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)  # Q/DQ scales come from the graph
    if dla_core is not None:
        if builder.num_DLA_cores <= dla_core:
            raise ValueError(
                f"DLA core {dla_core} requested; this device has {builder.num_DLA_cores}"
            )
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(dla_core)
        if gpu_fallback:
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    inputs = [network.get_input(i).name for i in range(network.num_inputs)]
    missing = [n for n in inputs if n not in profiles]
    if missing:
        raise ValueError(f"{onnx_path}: no profile for inputs {missing}")
    profile = builder.create_optimization_profile()
    for n in inputs:
        lo, mid, hi = profiles[n]
        profile.set_shape(n, tuple(lo), tuple(mid), tuple(hi))
    config.add_optimization_profile(profile)
    cache_blob = b""
    if timing_cache is not None and Path(timing_cache).is_file():
        cache_blob = Path(timing_cache).read_bytes()
    tcache = config.create_timing_cache(cache_blob)
    config.set_timing_cache(tcache, ignore_mismatch=True)
    progress = BuildProgress(f"{role or onnx_path.stem} {precision}")
    if hasattr(config, "progress_monitor"):  # TensorRT >= 10.0
        config.progress_monitor = _make_monitor(trt, progress)
    logger.info(
        "building TensorRT %s engine for %s on %s (TensorRT %s%s); a first build can take minutes",
        precision,
        onnx_path.name,
        name if dla_core is None else f"DLA core {dla_core} of {name}",
        trt.__version__,
        ", strongly typed" if strong else "",
    )
    t0 = time.monotonic()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(
            f"{onnx_path}: TensorRT failed to build a {precision} engine (see the TensorRT "
            "messages above; a larger workspace or another precision may help)"
        )
    build_s = time.monotonic() - t0
    if timing_cache is not None:
        blob = config.get_timing_cache().serialize()
        Path(timing_cache).parent.mkdir(parents=True, exist_ok=True)
        Path(timing_cache).write_bytes(bytes(blob))
    header = EngineHeader(
        onnx_sha256=sha256_file(onnx_path),
        gpu_name=name,
        trt_version=str(trt.__version__),
        precision=precision,
        profiles={n: [list(s) for s in profiles[n]] for n in inputs},
        bundle=bundle,
        role=role,
        extra={
            "build_s": round(build_s, 1),
            "workspace": int(workspace),
            "dla_core": dla_core,
            "gpu_fallback": bool(gpu_fallback) if dla_core is not None else None,
            "plugins": plugins,
            "typing": "strong" if strong else "flags",
        },
    )
    out = write_engine(out_path, header, bytes(serialized))
    logger.info("wrote %s (%.1f MB) in %.1f s", out, out.stat().st_size / 1e6, build_s)
    return out


def engine_for(
    onnx_path: str | Path,
    spec: GraphSpec,
    audio: LogMelParams,
    stream: StreamParams,
    *,
    precision: str = "fp32",
    windows_s: Sequence[float] = DEFAULT_WINDOWS_S,
    batch: Range = (1, 1, 8),
    cache: EngineCache | None = None,
    build: bool = True,
    bundle: str = "",
    device: int = 0,
    dla_core: int | None = None,
    workspace: int = DEFAULT_WORKSPACE,
) -> Path:
    """The cached engine of one bundle graph, built (and cached) when missing.

    The lookup is the runtime's :func:`~emosdk.backends.engines.find_engine` with
    :func:`build_engine` as its builder, so the CLI and the TensorRT backend agree on the key.
    With ``dla_core`` the profile is static (the bundle's window and the opt batch).

    Raises:
        BackendUnavailableError: no TensorRT/GPU, or no cached engine and ``build`` is False.
        EngineCacheError: the cache folder is not writable.
    """
    return find_engine(
        onnx_path,
        spec,
        audio,
        stream,
        precision=precision,
        windows_s=windows_s,
        batch=batch,
        cache=cache,
        builder=build_engine if build else None,
        bundle=bundle,
        device=device,
        dla_core=dla_core,
        workspace=workspace,
    )


def iter_roles(roles: Iterable[str] | None, available: Iterable[str]) -> list[str]:
    """The requested roles in bundle order, or all of them; ValueError on an unknown role."""
    available = list(available)
    if not roles:
        return available
    roles = list(roles)
    unknown = [r for r in roles if r not in available]
    if unknown:
        raise ValueError(f"unknown graph roles {unknown}; the bundle has {available}")
    return [r for r in available if r in roles]
