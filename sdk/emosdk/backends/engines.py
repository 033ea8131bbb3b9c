"""TensorRT engines at run time: the engine file, the engine cache, profiles and the CUDA helpers.

This module *finds and reads* engines; building them is ``emosdk.export.tensorrt`` (the export
package imports this one, never the other way round). Every import of ``tensorrt`` or ``cuda``
is inside a function, so the pure parts (profiles, cache keys, the engine header) run and are
tested on any machine.

* Optimization profiles come from window lengths: :func:`profile_dims` turns the bundle's
  :class:`~emosdk.features.LogMelParams` and :class:`~emosdk.models.bundle.StreamParams` and a set
  of window lengths into min/opt/max sizes of the named dynamic axes (``B``, ``frames``,
  ``steps``/``Ta``, ``Tv``), and :func:`profile_shapes` maps them onto a graph's inputs.
* An engine file is a header followed by TensorRT's serialized engine::

      8 bytes   magic  b"EMOSDKTE"
      4 bytes   header version (uint32, little endian), currently 1
      4 bytes   length N of the JSON metadata (uint32, little endian)
      N bytes   JSON (utf-8): onnx_sha256, gpu_name, trt_version, precision, profiles, bundle,
                role, extra (build_s, workspace, dla_core, plugins, typing)
      rest      the serialized engine (``trt.Runtime.deserialize_cuda_engine`` input)

* :class:`EngineCache` keys engines by (ONNX SHA-256, GPU name, TensorRT version, precision) plus a
  variant hash of the profiles, the DLA core and the workspace, in ``$EMOSDK_ENGINE_CACHE`` or
  ``~/.cache/emosdk/engines``. A TensorRT engine only runs on the GPU model and TensorRT version it
  was built with, hence the key; a DLA engine is not a GPU engine, hence the variant.
* DLA engines need static shapes (min = opt = max): :func:`engine_profiles` collapses the
  profile to the bundle's own window and batch when a DLA core is asked for.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import struct
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BackendUnavailableError, EmosdkError, ModelError
from ..features.audio import LogMelParams
from ..models.bundle import GraphSpec, ModelBundle, StreamParams, sha256_file

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
PLUGIN_NAME = "EmosdkMaskedAttention"
PLUGIN_VERSION = "1"
PLUGIN_NAMESPACE = ""
STRONG_TYPING_FROM = (10, 12)
"""TensorRT version from which ``BuilderFlag.FP16``/``INT8`` are deprecated (removed in 11):
engines are built from strongly typed networks there, so an fp16 engine needs an fp16 graph."""

TENSORRT_HINT = (
    "TensorRT is not importable here. On a Jetson install JetPack (it provides the `tensorrt` "
    "Python package); on a desktop GPU install NVIDIA's TensorRT wheel for your CUDA version "
    "(pip install tensorrt-cu12, which downloads from NVIDIA's index) and cuda-python."
)
CUDA_PYTHON_HINT = (
    "Install cuda-python matching the CUDA major version of your driver and TensorRT: "
    "`pip install 'cuda-python>=12.6.1,<13'` for CUDA 12 (JetPack 6, tensorrt-cu12; this is "
    "`pip install emosdk[tensorrt]`), `pip install 'cuda-python>=13,<14'` for CUDA 13."
)


class EngineError(EmosdkError):
    """A TensorRT engine cannot be built, read or used."""


class EngineFormatError(EngineError, ModelError):
    """An engine file is not an emosdk engine (bad magic, version or header)."""


class EngineCacheError(EngineError):
    """The engine cache folder cannot be created or written (the folder is named)."""


# ------------------------------------------------------------------------------------------------
# optimization profiles (pure Python)

Range = tuple[int, int, int]
Profiles = Mapping[str, Sequence[Sequence[int]]]


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
        face encoder's batch: one window's faces at once, so up to max(batch, Tv) crops (the
        TensorRT backend splits a larger batch into several runs).

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
            max(frames(opt_w), stream.audio_frames_per_step),
            max(frames(ws[-1]), stream.audio_frames_per_step),
        ),
        "steps": (steps(ws[0]), steps(opt_w), steps(ws[-1])),
        "Tv": (tv(ws[0]), tv(opt_w), tv(ws[-1])),
    }
    dims["Ta"] = dims["steps"]
    face_max = max(b2, tv(ws[-1]))
    dims["B_face"] = (1, min(tv(opt_w), face_max), face_max)
    return dims


def static_dims(dims: Mapping[str, Range]) -> dict[str, Range]:
    """Every axis fixed at its opt size (min = opt = max), as the DLA needs."""
    return {k: (int(v[1]),) * 3 for k, v in dims.items()}  # type: ignore[misc]


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


def is_static(profiles: Profiles) -> bool:
    """True when every input's profile has min = opt = max (what the DLA accepts)."""
    return all(
        list(lo) == list(mid) == list(hi) for lo, mid, hi in (tuple(p) for p in profiles.values())
    )


def engine_profiles(
    spec: GraphSpec,
    audio: LogMelParams,
    stream: StreamParams,
    windows_s: Sequence[float] = DEFAULT_WINDOWS_S,
    batch: Range = (1, 1, 8),
    dla_core: int | None = None,
) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """The profile an engine of ``spec`` is built with: dynamic on the GPU, static on a DLA.

    On a DLA every axis is fixed at its opt size (the bundle's window, clipped into
    ``windows_s``, and the opt batch): the DLA rejects dynamic shapes and TensorRT would otherwise
    move every layer to the GPU without saying so.
    """
    dims = profile_dims(audio, stream, windows_s, batch)
    if dla_core is not None:
        dims = static_dims(dims)
    return profile_shapes(spec, dims)


def shapes_fit(profiles: Profiles, shapes: Mapping[str, Sequence[int]]) -> str | None:
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


def batch_plan(
    profiles: Profiles, shapes: Mapping[str, Sequence[int]]
) -> list[tuple[int, int, int]] | None:
    """Run a batch that is outside the profile's batch range as several runs that fit.

    Every graph of a bundle computes each batch row on its own (``emosdk-export validate`` checks
    each row against the row run alone), so a batch above the profile's max is split and one
    below its min (a static DLA profile) is padded with zero rows whose outputs are dropped.

    Returns:
        ``[(start, stop, pad), ...]`` covering rows ``0..N`` in order, where each run feeds rows
        ``start:stop`` plus ``pad`` zero rows; or None when the shapes need no plan or cannot be
        fixed this way (a non-batch axis is outside the profile, or inputs disagree on the batch).
    """
    if shapes_fit(profiles, shapes) is None or not shapes:
        return None
    sizes = {int(s[0]) for s in shapes.values() if len(s)}
    if len(sizes) != 1 or any(n not in profiles for n in shapes):
        return None
    n = sizes.pop()
    lo = max(int(profiles[k][0][0]) for k in shapes)
    hi = min(int(profiles[k][2][0]) for k in shapes)
    if lo > hi:
        return None
    for name, shape in shapes.items():  # every other axis must fit as it is
        p_lo, _, p_hi = profiles[name]
        if len(shape) != len(p_lo) or any(
            not a <= s <= b for a, s, b in zip(p_lo[1:], shape[1:], p_hi[1:], strict=False)
        ):
            return None
    plan = []
    for start in range(0, n, hi):
        stop = min(n, start + hi)
        plan.append((start, stop, max(0, lo - (stop - start))))
    return plan


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
        extra: anything else (build time, workspace, DLA core, plugins the engine needs, typing).
    """

    onnx_sha256: str
    gpu_name: str
    trt_version: str
    precision: str
    profiles: Profiles
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
        extra = d.get("extra") if isinstance(d, Mapping) else None
        if extra is not None and not (
            isinstance(extra, Mapping)
            and isinstance(extra.get("dla_core"), (int, type(None)))
            and not isinstance(extra.get("dla_core"), bool)
        ):
            raise EngineFormatError(
                f"engine header field 'extra' must be an object whose dla_core is an int or "
                f"null, got {extra!r:.80}"
            )
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

    @property
    def dla_core(self) -> int | None:
        """The DLA core the engine runs on, or None for a GPU engine."""
        core = (self.extra or {}).get("dla_core")
        return None if core is None else int(core)

    @property
    def plugins(self) -> tuple[str, ...]:
        """Names of the emosdk TensorRT plugins the engine holds (their library must be loaded)."""
        return tuple((self.extra or {}).get("plugins") or ())


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


def engine_variant(
    profiles: Profiles, dla_core: int | None = None, workspace: int = DEFAULT_WORKSPACE
) -> str:
    """The cache-key variant of an engine: its profiles, DLA core and builder workspace.

    A DLA engine and a GPU engine of the same graph are different engines, and so are engines
    built with another workspace (TensorRT picks tactics that fit it).
    """
    return json.dumps(
        {
            "profiles": {k: [list(s) for s in v] for k, v in profiles.items()},
            "dla_core": dla_core,
            "workspace": int(workspace),
        },
        sort_keys=True,
    )


class EngineCache:
    """Engines on disk, keyed by (ONNX SHA-256, GPU name, TensorRT version, precision, variant).

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

        ``variant`` (see :func:`engine_variant`) separates engines of the same graph built with
        other profiles, for a DLA core, or with another workspace.
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
        self,
        onnx_sha256: str,
        gpu_name: str,
        trt_version: str,
        precision: str,
        variant: str = "",
        dla_core: int | None = None,
    ) -> Path | None:
        """The cached engine's path when it exists and its header matches the key, else None."""
        p = self.path(onnx_sha256, gpu_name, trt_version, precision, variant)
        if not p.is_file():
            return None
        try:
            h, _ = read_engine_header(p)
        except (EngineFormatError, OSError) as e:
            logger.warning("ignoring engine cache entry %s: %s", p, e)
            return None
        if (h.onnx_sha256, h.gpu_name, h.trt_version, h.precision, h.dla_core) != (
            onnx_sha256,
            gpu_name,
            trt_version,
            precision,
            dla_core,
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
# TensorRT and CUDA (imported on use)


def import_tensorrt() -> Any:
    """``import tensorrt`` or BackendUnavailableError saying what to install."""
    try:
        import tensorrt as trt
    except Exception as e:
        raise BackendUnavailableError(f"{TENSORRT_HINT} ({type(e).__name__}: {e})") from e
    return trt


def import_cudart() -> Any:
    """The CUDA runtime bindings of cuda-python, in either spelling.

    ``cuda.bindings.runtime`` (cuda-python >= 12.6.1, the only one in 13.x) or ``cuda.cudart``
    (cuda-python 12.x before the split, as TensorRT 10.3's own samples use). Both have the same
    functions and return conventions.

    Raises:
        BackendUnavailableError: neither imports; says what to install.
    """
    errors = []
    try:
        from cuda.bindings import runtime as cudart

        return cudart
    except Exception as e:
        errors.append(f"cuda.bindings.runtime: {type(e).__name__}: {e}")
    try:
        from cuda import cudart  # type: ignore[no-redef]

        return cudart
    except Exception as e:
        errors.append(f"cuda.cudart: {type(e).__name__}: {e}")
    raise BackendUnavailableError(
        f"cuda-python is not importable ({'; '.join(errors)}). {CUDA_PYTHON_HINT}"
    )


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


def _cuda_version(v: int) -> str:
    return f"{v // 1000}.{(v % 1000) // 10}"


def cuda_unavailable_reason(cudart: Any, device: int = 0) -> str | None:
    """None when CUDA device ``device`` can be used; else why not, in words a user can act on.

    Tells apart a machine without an NVIDIA driver, a driver older than the CUDA runtime that
    cuda-python carries (cuda-python 13 on a CUDA 12 driver, e.g. JetPack 6), and a missing GPU.
    """
    try:
        err, count = cudart.cudaGetDeviceCount()
    except Exception as e:
        return f"cuda-python cannot query CUDA devices ({type(e).__name__}: {e})"
    if int(err) == 0 and count and device < int(count):
        return None
    if int(err) == 0:
        return f"CUDA device {device} does not exist here ({int(count or 0)} CUDA devices)"
    driver = runtime = 0
    try:
        e1, driver = cudart.cudaDriverGetVersion()
        e2, runtime = cudart.cudaRuntimeGetVersion()
        driver = int(driver) if int(e1) == 0 else 0
        runtime = int(runtime) if int(e2) == 0 else 0
    except Exception:
        pass
    try:
        msg = cudart.cudaGetErrorString(err)[1].decode()
    except Exception:
        msg = str(err)
    if driver == 0:
        return (
            f"no NVIDIA driver found ({msg}); TensorRT engines are built and run on an NVIDIA GPU "
            "(Jetson with JetPack, or a desktop GPU with its driver)"
        )
    if runtime and driver < runtime:
        return (
            f"the NVIDIA driver supports CUDA {_cuda_version(driver)}, but cuda-python carries "
            f"the CUDA {_cuda_version(runtime)} runtime ({msg}). {CUDA_PYTHON_HINT}"
        )
    return f"no usable CUDA GPU here ({msg}; driver CUDA {_cuda_version(driver)})"


def gpu_name(device: int = 0) -> str:
    """Name of CUDA device ``device`` (as TensorRT engines are keyed by it).

    Raises:
        BackendUnavailableError: cuda-python is missing, there is no driver, the driver is older
            than cuda-python's CUDA runtime, or there is no GPU; the message says which.
    """
    cudart = import_cudart()
    why = cuda_unavailable_reason(cudart, device)
    if why is not None:
        raise BackendUnavailableError(why)
    try:
        props = cuda_check(
            cudart, cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties"
        )
    except EngineError as e:
        raise BackendUnavailableError(f"no usable CUDA GPU here ({e})") from e
    name = props.name
    return (name.decode() if isinstance(name, bytes) else str(name)).split("\x00")[0].strip()


def trt_version(trt: Any) -> tuple[int, int]:
    """(major, minor) of a ``tensorrt`` module."""
    parts = re.findall(r"\d+", str(getattr(trt, "__version__", "0.0")))
    return (int(parts[0]) if parts else 0, int(parts[1]) if len(parts) > 1 else 0)


def strongly_typed(trt: Any) -> bool:
    """Whether engines of this TensorRT are built from strongly typed networks.

    From TensorRT 10.12 ``BuilderFlag.FP16``/``INT8`` are deprecated (gone in 11): the network's
    types then come from the ONNX graph, so an fp16 engine is built from an fp16 graph. Older
    TensorRT (10.3 on JetPack 6) uses the flags.
    """
    flags = getattr(trt, "BuilderFlag", None)
    return trt_version(trt) >= STRONG_TYPING_FROM or not hasattr(flags, "FP16")


# ------------------------------------------------------------------------------------------------
# the emosdk TensorRT plugin


def onnx_uses_plugin(onnx_path: str | Path) -> bool:
    """True when the ONNX graph holds an ``EmosdkMaskedAttention`` node.

    Reads the bytes (protobuf stores op types as plain strings), so no ``onnx`` package is needed
    on a runtime-only install. The shipped bundle graphs use standard ONNX ops only.
    """
    return PLUGIN_NAME.encode() in Path(onnx_path).read_bytes()


def _plugin_registered(registry: Any) -> bool:
    try:
        return registry.get_creator(PLUGIN_NAME, PLUGIN_VERSION, PLUGIN_NAMESPACE) is not None
    except Exception:
        return False


def load_trt_plugin(trt: Any) -> Path | None:
    """Register the ``EmosdkMaskedAttention`` plugin with TensorRT, once per process.

    Idempotent: when the creator is already registered nothing is loaded; TensorRT's
    ``load_library`` also returns None for a library whose plugins are registered, which is not
    an error when the creator is found afterwards.

    Returns:
        The library loaded now, or None when it was registered already.

    Raises:
        BackendUnavailableError: the plugin library was not built (says how to build it), or
            TensorRT could not register it.
    """
    from .. import native

    registry = trt.get_plugin_registry()
    if _plugin_registered(registry):
        return None
    path = native.require_trt_plugin()
    handle = registry.load_library(str(path))
    if handle is None and not _plugin_registered(registry):
        raise BackendUnavailableError(
            f"TensorRT could not load the plugin library {path} (no {PLUGIN_NAME} creator after "
            "load_library); rebuild it against this TensorRT's headers. "
            f"{native.TRT_PLUGIN_HINT}"
        )
    logger.info("loaded the TensorRT plugin library %s", path)
    return path


# ------------------------------------------------------------------------------------------------
# which ONNX file an engine is built from, and finding (or building) it


def engine_source(bundle: ModelBundle, role: str, precision: str, strong: bool) -> Path:
    """The ONNX file of ``role`` that a ``precision`` engine is built from.

    * fp32, and fp16 with the builder flags (TensorRT < 10.12): the opset-18 copy (variant
      ``opset18``) when the bundle has one, else the main graph; TensorRT makes fp16 itself.
    * fp16 with strongly typed networks (TensorRT >= 10.12): the fp16 graph (variant
      ``opset18_fp16``, else ``fp16``).
    * int8: the ``int8`` variant (TensorRT needs its Q/DQ nodes), else the fp32 choice (the
      builder then refuses a graph without Q/DQ nodes).

    Raises:
        BackendUnavailableError: strongly typed fp16 without an fp16 graph in the bundle.
    """
    variants = bundle.meta.get("variants", {})

    def pick(*keys: str) -> Path | None:
        for k in keys:
            if role in variants.get(k, {}):
                return bundle.path / variants[k][role]
        return None

    if precision == "int8":
        found = pick("int8")
        if found is not None:
            return found
    if precision == "fp16" and strong:
        found = pick("opset18_fp16", "fp16")
        if found is None:
            raise BackendUnavailableError(
                f"model {bundle.name!r} has no fp16 graph of {role}: TensorRT >= 10.12 builds fp16 "
                "engines from fp16 graphs (strongly typed networks). Add them with "
                "`emosdk-export fp16 BUNDLE`."
            )
        return found
    return pick("opset18") or bundle.graph_path(role)


EngineBuilder = Callable[..., Path]
"""Builds one engine: ``builder(onnx_path, out_path, profiles, *, precision, workspace,
timing_cache, dla_core, bundle, role, device) -> out_path``; ``emosdk.export.tensorrt.build_engine``
is one."""


def find_engine(
    onnx_path: str | Path,
    spec: GraphSpec,
    audio: LogMelParams,
    stream: StreamParams,
    *,
    precision: str = "fp32",
    windows_s: Sequence[float] = DEFAULT_WINDOWS_S,
    batch: Range = (1, 1, 8),
    cache: EngineCache | None = None,
    builder: EngineBuilder | None = None,
    bundle: str = "",
    device: int = 0,
    dla_core: int | None = None,
    workspace: int = DEFAULT_WORKSPACE,
) -> Path:
    """The cached engine of one bundle graph; with ``builder``, built (and cached) when missing.

    Raises:
        BackendUnavailableError: no TensorRT/GPU, or no cached engine and no ``builder``.
        EngineCacheError: the cache folder is not writable (only when building).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    cache = cache or EngineCache()
    trt = import_tensorrt()
    name = gpu_name(device)
    sha = sha256_file(Path(onnx_path))
    profiles = engine_profiles(spec, audio, stream, windows_s, batch, dla_core)
    variant = engine_variant(profiles, dla_core, workspace)
    found = cache.lookup(sha, name, trt.__version__, precision, variant, dla_core)
    if found is not None:
        return found
    where = f"DLA core {dla_core} of {name}" if dla_core is not None else name
    if builder is None:
        raise BackendUnavailableError(
            f"no cached {precision} TensorRT engine for {onnx_path} ({spec.role}) on {where} in "
            f"{cache.root}. Build the bundle's engines once with `emosdk-export engine BUNDLE "
            f"--precision {precision}` (minutes on a Jetson; the same --windows, --batch, "
            "--workspace-mb, --dla-core and --cache-dir as here), or pass "
            "builder=emosdk.export.tensorrt.build_engine to the TensorRT backend."
        )
    cache.check_writable()
    return builder(
        Path(onnx_path),
        cache.path(sha, name, trt.__version__, precision, variant),
        profiles,
        precision=precision,
        workspace=int(workspace),
        timing_cache=cache.timing_cache_path(name, trt.__version__),
        dla_core=dla_core,
        bundle=bundle,
        role=spec.role,
        device=device,
    )
