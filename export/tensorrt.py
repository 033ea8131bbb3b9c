"""TensorRT engines for a bundle's graphs: build, header, cache.

Only :func:`build_engine` (and the helpers it calls) needs TensorRT; every import of ``tensorrt``
or ``cuda`` is inside a function, so the pure parts (profiles, cache keys, the engine header) run
and are tested on any machine.

* Optimization profiles come from window lengths: :func:`profile_dims` turns the bundle's
  :class:`~emosdk.features.LogMelParams` and :class:`~emosdk.models.bundle.StreamParams` and a set
  of window lengths into min/opt/max sizes of the named dynamic axes (``B``, ``frames``,
  ``steps``/``Ta``, ``Tv``), and :func:`profile_shapes` maps them onto a graph's inputs.
* An engine file is a header followed by TensorRT's serialized engine::

      8 bytes   magic  b"EMOSDKTE"
      4 bytes   header version (uint32, little endian), currently 1
      4 bytes   length N of the JSON metadata (uint32, little endian)
      N bytes   JSON (utf-8): onnx_sha256, gpu_name, trt_version, precision, profiles, bundle,
                role, ...
      rest      the serialized engine (``trt.Runtime.deserialize_cuda_engine`` input)

* :class:`EngineCache` keys engines by (ONNX SHA-256, GPU name, TensorRT version, precision), in
  ``$EMOSDK_ENGINE_CACHE`` or ``~/.cache/emosdk/engines``. A TensorRT engine only runs on the GPU
  model and TensorRT version it was built with, hence the key.
* int8 is *explicit* quantization only: the ONNX graph must carry QuantizeLinear/DequantizeLinear
  nodes (TensorRT 10 deprecates the implicit calibrators). fp16 and int8 builds also allow fp16
  kernels; fp32 builds use fp32 (TF32 is disabled so fp32 engines stay comparable to ONNX Runtime).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import struct
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emosdk.errors import BackendUnavailableError, EmosdkError, ModelError
from emosdk.features.audio import LogMelParams
from emosdk.models.bundle import GraphSpec, StreamParams, sha256_file

logger = logging.getLogger("emosdk")

ENGINE_MAGIC = b"EMOSDKTE"
ENGINE_HEADER_VERSION = 1
_PREFIX = struct.Struct("<8sII")  # magic, header version, JSON length
PRECISIONS = ("fp32", "fp16", "int8")
ENV_CACHE = "EMOSDK_ENGINE_CACHE"
"""Environment variable that overrides the engine cache folder."""
DEFAULT_CACHE = Path("~/.cache/emosdk/engines")
DEFAULT_WINDOWS_S = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0)
DEFAULT_WORKSPACE = 1 << 30
"""Builder workspace (bytes). Jetson Orin Nano has 8 GB shared with the CPU: keep it modest."""
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


class EngineError(EmosdkError):
    """A TensorRT engine cannot be built, read or used."""


class EngineBuildError(EngineError):
    """TensorRT's parser or builder failed; the message carries TensorRT's own errors."""


class EngineFormatError(EngineError, ModelError):
    """An engine file is not an emosdk engine (bad magic, version or header)."""


class EngineCacheError(EngineError):
    """The engine cache folder cannot be created or written (the folder is named)."""


# ------------------------------------------------------------------------------------------------
# optimization profiles (pure Python)

Range = tuple[int, int, int]


def profile_dims(
    audio: LogMelParams,
    stream: StreamParams,
    windows_s: Sequence[float] = DEFAULT_WINDOWS_S,
    batch: Range = (1, 1, 8),
    opt_window_s: float | None = None,
) -> dict[str, Range]:
    """min/opt/max of every named dynamic axis of the bundle graphs for these window lengths.

    Args:
        audio: the bundle's log-mel parameters (frames per second of audio).
        stream: the bundle's stream parameters (video fps, audio frames per step, window).
        windows_s: window lengths (seconds) the engine must accept; min and max are used.
        batch: (min, opt, max) batch size.
        opt_window_s: window TensorRT tunes for; default the bundle's ``stream.window_s``
            (clipped into the range of ``windows_s``).

    Returns:
        ``{"B", "frames", "steps", "Ta", "Tv", "B_face"}`` -> (min, opt, max). ``steps`` and
        ``Ta`` are the same axis seen from the audio encoder and the fusion. ``B_face`` is the
        face encoder's batch: one window's faces at once, so up to max(batch, Tv) crops.

    Raises:
        ValueError: empty or non-positive windows, or a batch range that is not min<=opt<=max.
    """
    ws = sorted(float(w) for w in windows_s)
    if not ws or ws[0] <= 0:
        raise ValueError(f"windows_s must be positive window lengths in seconds, got {windows_s}")
    b0, b1, b2 = (int(x) for x in batch)
    if not 1 <= b0 <= b1 <= b2:
        raise ValueError(f"batch must be (min, opt, max) with 1 <= min <= opt <= max, got {batch}")
    opt_w = stream.window_s if opt_window_s is None else float(opt_window_s)
    opt_w = min(max(opt_w, ws[0]), ws[-1])

    def frames(w: float) -> int:
        return audio.num_frames(int(round(w * audio.sample_rate)))

    def steps(w: float) -> int:
        return max(1, frames(w) // stream.audio_frames_per_step)

    def tv(w: float) -> int:
        return max(1, int(round(w * stream.video_fps)))

    # the audio encoder trims to a multiple of audio_frames_per_step: never fewer frames than
    # one step, and the max must give the max steps
    dims: dict[str, Range] = {
        "B": (b0, b1, b2),
        "frames": (
            max(frames(ws[0]), stream.audio_frames_per_step),
            frames(opt_w),
            frames(ws[-1]),
        ),
        "steps": (steps(ws[0]), steps(opt_w), steps(ws[-1])),
        "Tv": (tv(ws[0]), tv(opt_w), tv(ws[-1])),
    }
    dims["Ta"] = dims["steps"]
    face_max = max(b2, tv(ws[-1]))
    dims["B_face"] = (1, min(tv(opt_w), face_max), face_max)
    return dims


def profile_shapes(
    spec: GraphSpec, dims: Mapping[str, Range]
) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """Map named-axis ranges onto one graph's inputs.

    Args:
        spec: the graph's declared interface (string dimensions are dynamic).
        dims: from :func:`profile_dims`. The face encoder's ``B`` uses ``B_face`` when present.

    Returns:
        input name -> (min shape, opt shape, max shape), ready for
        ``IOptimizationProfile.set_shape``.

    Raises:
        ValueError: an input has a dynamic axis that ``dims`` does not name.
    """
    out = {}
    for t in spec.inputs:
        lo, mid, hi = [], [], []
        for d in t.shape:
            if isinstance(d, int):
                r: Range = (d, d, d)
            else:
                name = (
                    "B_face" if d == "B" and spec.role == "face_encoder" and "B_face" in dims else d
                )
                if name not in dims:
                    raise ValueError(
                        f"{spec.role}.{t.name}: dynamic axis {d!r} has no range (known: "
                        f"{sorted(dims)})"
                    )
                r = tuple(int(x) for x in dims[name])  # type: ignore[assignment]
            lo.append(r[0])
            mid.append(r[1])
            hi.append(r[2])
        out[t.name] = (tuple(lo), tuple(mid), tuple(hi))
    return out


def shapes_fit(
    profiles: Mapping[str, Sequence[Sequence[int]]], shapes: Mapping[str, Sequence[int]]
) -> str | None:
    """None when every input shape lies within its profile's [min, max]; else the reason."""
    for name, shape in shapes.items():
        if name not in profiles:
            return f"input {name!r} is not in the engine's profile"
        lo, _, hi = profiles[name]
        if len(shape) != len(lo) or any(
            not a <= s <= b for a, s, b in zip(lo, shape, hi, strict=False)
        ):
            return (
                f"{name} shape {list(shape)} is outside the engine's range {list(lo)}..{list(hi)}"
            )
    return None


# ------------------------------------------------------------------------------------------------
# engine file header (pure Python)


@dataclass(frozen=True)
class EngineHeader:
    """Metadata stored in front of a serialized engine.

    Attributes:
        onnx_sha256: SHA-256 of the ONNX file the engine was built from.
        gpu_name: ``cudaDeviceProp.name`` of the build GPU.
        trt_version: ``tensorrt.__version__`` of the builder.
        precision: ``fp32``, ``fp16`` or ``int8``.
        profiles: input name -> [min, opt, max] shapes.
        bundle: bundle name (and version) the graph belongs to, or "".
        role: graph role (``audio_encoder``, ...), or "".
        extra: anything else (build time, workspace, DLA core, compute capability).
    """

    onnx_sha256: str
    gpu_name: str
    trt_version: str
    precision: str
    profiles: Mapping[str, Sequence[Sequence[int]]]
    bundle: str = ""
    role: str = ""
    extra: Mapping[str, Any] | None = None

    def to_dict(self) -> dict:
        return {
            "onnx_sha256": self.onnx_sha256,
            "gpu_name": self.gpu_name,
            "trt_version": self.trt_version,
            "precision": self.precision,
            "profiles": {k: [list(s) for s in v] for k, v in self.profiles.items()},
            "bundle": self.bundle,
            "role": self.role,
            "extra": dict(self.extra or {}),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EngineHeader:
        try:
            return cls(
                onnx_sha256=str(d["onnx_sha256"]),
                gpu_name=str(d["gpu_name"]),
                trt_version=str(d["trt_version"]),
                precision=str(d["precision"]),
                profiles={k: [list(s) for s in v] for k, v in d["profiles"].items()},
                bundle=str(d.get("bundle", "")),
                role=str(d.get("role", "")),
                extra=dict(d.get("extra") or {}),
            )
        except (KeyError, TypeError, AttributeError) as e:
            raise EngineFormatError(f"engine header is missing or has a bad field: {e}") from None


def write_engine(path: str | Path, header: EngineHeader, engine: bytes) -> Path:
    """Write header + serialized engine atomically (a temp file renamed into place)."""
    path = Path(path)
    if header.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {header.precision!r}")
    meta = json.dumps(header.to_dict(), sort_keys=True).encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_PREFIX.pack(ENGINE_MAGIC, ENGINE_HEADER_VERSION, len(meta)))
            f.write(meta)
            f.write(engine)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_engine_header(path: str | Path) -> tuple[EngineHeader, int]:
    """Read an engine file's header.

    Returns:
        (header, offset of the serialized engine in the file).

    Raises:
        EngineFormatError: not an emosdk engine file, or a header version this code cannot read.
    """
    path = Path(path)
    with open(path, "rb") as f:
        prefix = f.read(_PREFIX.size)
        if len(prefix) < _PREFIX.size:
            raise EngineFormatError(f"{path}: too short to be an emosdk engine file")
        magic, version, n = _PREFIX.unpack(prefix)
        if magic != ENGINE_MAGIC:
            raise EngineFormatError(
                f"{path}: not an emosdk engine file (magic {magic!r}, expected {ENGINE_MAGIC!r}); "
                "build engines with `emosdk-export engine`"
            )
        if version != ENGINE_HEADER_VERSION:
            raise EngineFormatError(
                f"{path}: engine header version {version}, this emosdk reads "
                f"{ENGINE_HEADER_VERSION}; rebuild the engine"
            )
        raw = f.read(n)
    if len(raw) != n:
        raise EngineFormatError(f"{path}: truncated engine header")
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EngineFormatError(f"{path}: engine header is not JSON ({e})") from None
    return EngineHeader.from_dict(meta), _PREFIX.size + n


def read_engine(path: str | Path) -> tuple[EngineHeader, bytes]:
    """Header and serialized engine bytes of an engine file."""
    header, offset = read_engine_header(path)
    with open(path, "rb") as f:
        f.seek(offset)
        return header, f.read()


# ------------------------------------------------------------------------------------------------
# engine cache (pure Python)


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", s).strip("-").lower() or "unknown"


class EngineCache:
    """Engines on disk, keyed by (ONNX SHA-256, GPU name, TensorRT version, precision).

    Args:
        root: cache folder; default ``$EMOSDK_ENGINE_CACHE`` or ``~/.cache/emosdk/engines``.
    """

    def __init__(self, root: str | Path | None = None) -> None:
        if root is None:
            root = os.environ.get(ENV_CACHE) or DEFAULT_CACHE
        self.root = Path(root).expanduser()

    @staticmethod
    def key(
        onnx_sha256: str, gpu_name: str, trt_version: str, precision: str, variant: str = ""
    ) -> str:
        """File name of an engine (deterministic; readable parts plus the ONNX hash).

        ``variant`` separates engines of the same graph built with other profiles.
        """
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if not re.fullmatch(r"[0-9a-f]{64}", onnx_sha256):
            raise ValueError(f"onnx_sha256 must be 64 lowercase hex digits, got {onnx_sha256!r}")
        parts = [onnx_sha256[:24], _slug(gpu_name), "trt" + _slug(trt_version), precision]
        if variant:
            parts.append(hashlib.sha256(variant.encode()).hexdigest()[:8])
        return "_".join(parts) + ".engine"

    def path(
        self, onnx_sha256: str, gpu_name: str, trt_version: str, precision: str, variant: str = ""
    ) -> Path:
        """Where the engine for this key lives (it may not exist yet)."""
        return self.root / self.key(onnx_sha256, gpu_name, trt_version, precision, variant)

    def timing_cache_path(self, gpu_name: str, trt_version: str) -> Path:
        """Timing cache shared by every build on this GPU and TensorRT version."""
        return self.root / f"timing_{_slug(gpu_name)}_trt{_slug(trt_version)}.cache"

    def lookup(
        self, onnx_sha256: str, gpu_name: str, trt_version: str, precision: str, variant: str = ""
    ) -> Path | None:
        """The cached engine's path when it exists and its header matches the key, else None."""
        p = self.path(onnx_sha256, gpu_name, trt_version, precision, variant)
        if not p.is_file():
            return None
        try:
            h, _ = read_engine_header(p)
        except EngineFormatError as e:
            logger.warning("ignoring engine cache entry %s: %s", p, e)
            return None
        if (h.onnx_sha256, h.gpu_name, h.trt_version, h.precision) != (
            onnx_sha256,
            gpu_name,
            trt_version,
            precision,
        ):
            logger.warning("ignoring engine cache entry %s: header does not match its key", p)
            return None
        return p

    def check_writable(self) -> Path:
        """Create the folder if needed and prove a file can be written there.

        Raises:
            EngineCacheError: naming the folder and the environment variable to change it.
        """
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".write-test-", dir=self.root)
            os.close(fd)
            os.unlink(tmp)
        except OSError as e:
            raise EngineCacheError(
                f"the TensorRT engine cache folder {self.root} is not writable ({e}). Set "
                f"{ENV_CACHE}=/a/writable/folder (or pass cache_dir) to put engines elsewhere."
            ) from e
        return self.root

    def entries(self) -> list[tuple[Path, EngineHeader]]:
        """Every readable engine in the cache with its header."""
        out = []
        for p in sorted(self.root.glob("*.engine")):
            try:
                out.append((p, read_engine_header(p)[0]))
            except (EngineFormatError, OSError):
                continue
        return out


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


def import_tensorrt() -> Any:
    """``import tensorrt`` or BackendUnavailableError saying what to install."""
    try:
        import tensorrt as trt
    except Exception as e:
        from emosdk.backends import TENSORRT_HINT

        raise BackendUnavailableError(f"{TENSORRT_HINT} ({type(e).__name__}: {e})") from e
    return trt


def import_cudart() -> Any:
    """``cuda.bindings.runtime`` or BackendUnavailableError saying what to install."""
    try:
        from cuda.bindings import runtime as cudart
    except Exception as e:
        raise BackendUnavailableError(
            f"cuda-python is not importable ({type(e).__name__}: {e}). Install it with "
            "`pip install cuda-python` (or `pip install emosdk[tensorrt]`)."
        ) from e
    return cudart


def cuda_check(cudart: Any, result: Any, what: str) -> Any:
    """Unpack a cuda-python ``(err, *values)`` result; raise EngineError on a CUDA error."""
    if isinstance(result, tuple):
        err, rest = result[0], result[1:]
    else:
        err, rest = result, ()
    if int(err) != 0:
        try:
            msg = cudart.cudaGetErrorString(err)[1].decode()
        except Exception:
            msg = str(err)
        raise EngineError(f"{what} failed: {err} ({msg})")
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else rest


def gpu_name(device: int = 0) -> str:
    """Name of CUDA device ``device`` (as TensorRT engines are keyed by it).

    Raises:
        BackendUnavailableError: cuda-python is missing, there is no driver or no GPU.
    """
    cudart = import_cudart()
    try:
        props = cuda_check(
            cudart, cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties"
        )
    except Exception as e:
        raise BackendUnavailableError(
            f"no usable CUDA GPU here ({e}); TensorRT engines are built and run on an NVIDIA GPU "
            "(Jetson with JetPack, or a desktop GPU with its driver)"
        ) from e
    name = props.name
    return (name.decode() if isinstance(name, bytes) else str(name)).split("\x00")[0].strip()


def onnx_has_qdq(onnx_path: str | Path) -> bool:
    """True when the ONNX graph holds QuantizeLinear/DequantizeLinear nodes (explicit int8)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return any(n.op_type in QDQ_OPS for n in model.graph.node)


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


def build_engine(
    onnx_path: str | Path,
    out_path: str | Path,
    profiles: Mapping[str, tuple[Sequence[int], Sequence[int], Sequence[int]]],
    *,
    precision: str = "fp32",
    workspace: int = DEFAULT_WORKSPACE,
    timing_cache: str | Path | None = None,
    dla_core: int | None = None,
    bundle: str = "",
    role: str = "",
    device: int = 0,
) -> Path:
    """Build a TensorRT engine from an ONNX file and write it with an emosdk header.

    Args:
        onnx_path: the ONNX graph (opset 18 export recommended; external data is read from
            beside it).
        out_path: engine file to write.
        profiles: input name -> (min, opt, max) shapes, e.g. from :func:`profile_shapes`.
        precision: ``fp32``; ``fp16`` (fp16 kernels allowed); ``int8`` (explicit quantization:
            the ONNX graph must contain Q/DQ nodes; fp16 is allowed for the rest).
        workspace: builder workspace memory pool limit in bytes.
        timing_cache: file to load the timing cache from and save it back to (speeds up later
            builds of similar graphs on the same GPU).
        dla_core: run on this DLA core (Jetson AGX/NX Orin) with GPU fallback for layers the DLA
            cannot run; needs fp16 or int8.
        bundle, role: written into the header.
        device: CUDA device to build on.

    Returns:
        ``out_path``.

    Raises:
        BackendUnavailableError: TensorRT or cuda-python is missing, or there is no GPU.
        ValueError: bad precision, DLA with fp32, or int8 without Q/DQ nodes.
        EngineBuildError: TensorRT's parser or builder failed (its errors are in the message).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if dla_core is not None and precision == "fp32":
        raise ValueError("the DLA runs fp16 or int8 only: pass precision='fp16' or 'int8'")
    onnx_path = Path(onnx_path)
    try:
        qdq = precision != "int8" or onnx_has_qdq(onnx_path)
    except ImportError:  # a runtime-only install has no onnx package: TensorRT will decide
        qdq = True
    if not qdq:
        raise ValueError(
            f"{onnx_path}: precision='int8' needs an explicitly quantized graph with "
            "QuantizeLinear/DequantizeLinear nodes (TensorRT 10 deprecates implicit calibration). "
            "Dynamic-int8 ONNX variants (MatMulInteger) are for ONNX Runtime on CPUs only."
        )
    trt = import_tensorrt()
    name = gpu_name(device)
    cudart = import_cudart()
    cuda_check(cudart, cudart.cudaSetDevice(device), "cudaSetDevice")
    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    major = int(str(trt.__version__).split(".")[0])
    flags = 0
    if major < 10:  # explicit batch is the only mode (and the flag deprecated) from TensorRT 10
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineBuildError(f"{onnx_path}: TensorRT cannot parse this ONNX graph: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace))
    if precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    if precision in ("fp16", "int8"):
        if not getattr(builder, "platform_has_fast_fp16", True):
            logger.warning("%s: this GPU has no fast fp16; the engine may be slow", name)
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)  # Q/DQ scales come from the graph, no calibrator
    if dla_core is not None:
        if builder.num_DLA_cores <= dla_core:
            raise ValueError(
                f"DLA core {dla_core} requested; this device has {builder.num_DLA_cores}"
            )
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(dla_core)
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
        "building TensorRT %s engine for %s on %s (TensorRT %s); a first build can take minutes",
        precision,
        onnx_path.name,
        name,
        trt.__version__,
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
        extra={"build_s": round(build_s, 1), "workspace": int(workspace), "dla_core": dla_core},
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
    **build_options: Any,
) -> Path:
    """The cached engine of one bundle graph, built (and cached) when missing.

    Raises:
        BackendUnavailableError: no TensorRT/GPU, or no cached engine and ``build`` is False.
        EngineCacheError: the cache folder is not writable.
    """
    cache = cache or EngineCache()
    trt = import_tensorrt()
    name = gpu_name(int(build_options.get("device", 0)))
    sha = sha256_file(Path(onnx_path))
    profiles = profile_shapes(spec, profile_dims(audio, stream, windows_s, batch))
    variant = json.dumps(profiles, sort_keys=True)
    found = cache.lookup(sha, name, trt.__version__, precision, variant)
    if found is not None:
        return found
    if not build:
        raise BackendUnavailableError(
            f"no cached {precision} TensorRT engine for {onnx_path} on {name} in {cache.root}; "
            "build one with `emosdk-export engine BUNDLE`"
        )
    cache.check_writable()
    return build_engine(
        onnx_path,
        cache.path(sha, name, trt.__version__, precision, variant),
        profiles,
        precision=precision,
        timing_cache=cache.timing_cache_path(name, trt.__version__),
        bundle=bundle,
        role=spec.role,
        **build_options,
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
