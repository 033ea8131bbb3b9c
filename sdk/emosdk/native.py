"""The one module that knows which native pieces of emosdk exist here.

Native code is optional: the default wheel is pure Python and everything works without it. The
pieces, all built from ``kernels/`` (see ``docs/kernels.md``):

``attention``
    ``libemosdk_attention.so``: the fused masked attention CUDA kernel behind a C ABI
    (``kernels/emosdk_attention.h``), loaded here with :mod:`ctypes`.
``trt_plugin``
    ``libemosdk_trt_plugin.so``: the TensorRT IPluginV3 plugin ``EmosdkMaskedAttention``;
    TensorRT loads it (``trtexec --dynamicPlugins=...`` or
    ``trt.get_plugin_registry().load_library(...)``), this module only finds it.
``triton``
    the Triton kernel (:mod:`emosdk.kernels.triton_attention`): needs the ``triton`` package and
    a CUDA GPU at run time, nothing compiled ahead of time.

Build knobs and where they are read: ``EMOSDK_BUILD_NATIVE=1 pip install .`` (pyproject.toml,
scikit-build-core) installs the libraries into ``emosdk/_native/``; ``tools/build_kernels.sh``
builds them into ``build/kernels/`` (CMake defines: ``kernels/CMakeLists.txt``).

Environment variables read here:

``EMOSDK_NATIVE_DIR``
    a directory searched before ``emosdk/_native/`` (e.g. ``build/kernels``), ``os.pathsep``
    separated for several.
``EMOSDK_DISABLE_NATIVE=1``
    report every native piece as missing (forces the pure paths; for tests and bisecting).

Importing this module imports neither torch nor triton and loads no library; the lookups run on
first use and are cached (:func:`reset` clears the cache).
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import BackendUnavailableError

ABI_VERSION = 1
"""EMOSDK_ATTENTION_ABI_VERSION of kernels/emosdk_attention.h this module speaks."""

PACKAGE_NATIVE_DIR = Path(__file__).parent / "_native"

F32 = 0
F16 = 1

_LIB_NAMES = {
    "attention": {"linux": "libemosdk_attention.so", "win32": "emosdk_attention.dll"},
    "trt_plugin": {"linux": "libemosdk_trt_plugin.so", "win32": "emosdk_trt_plugin.dll"},
}

BUILD_HINT = (
    "Build the native kernels with the CUDA toolkit (nvcc) and CMake >= 3.22: "
    "`EMOSDK_BUILD_NATIVE=1 pip install .` from a source checkout installs them into the "
    "emosdk package, or `tools/build_kernels.sh` builds them into build/kernels/ "
    "(then set EMOSDK_NATIVE_DIR=build/kernels). See docs/kernels.md."
)
TRT_PLUGIN_HINT = (
    "The TensorRT plugin is built only when the TensorRT headers (NvInfer.h) are found: install "
    "them (JetPack: `apt install libnvinfer-dev`), then rebuild with TENSORRT_ROOT=<prefix> "
    "`EMOSDK_BUILD_NATIVE=1 pip install .` or `TENSORRT_ROOT=<prefix> tools/build_kernels.sh`. "
    "See docs/kernels.md."
)
TRITON_HINT = (
    "The Triton kernel needs a CUDA GPU and the triton package matching your torch "
    "(torch's CUDA wheels bring it; never install an unpinned torch to get it)."
)


class EmosdkAttentionParams(ctypes.Structure):
    """Mirror of ``EmosdkAttentionParams`` in kernels/emosdk_attention.h (keep in sync)."""

    _fields_ = [
        ("q", ctypes.c_void_p),
        ("k", ctypes.c_void_p),
        ("v", ctypes.c_void_p),
        ("mask", ctypes.c_void_p),
        ("out", ctypes.c_void_p),
        ("q_stride", ctypes.c_int64 * 3),
        ("k_stride", ctypes.c_int64 * 3),
        ("v_stride", ctypes.c_int64 * 3),
        ("o_stride", ctypes.c_int64 * 3),
        ("mask_stride", ctypes.c_int64),
        ("batch", ctypes.c_int32),
        ("heads", ctypes.c_int32),
        ("q_len", ctypes.c_int32),
        ("kv_len", ctypes.c_int32),
        ("head_dim", ctypes.c_int32),
        ("dtype", ctypes.c_int32),
        ("scale", ctypes.c_float),
    ]


@dataclass(frozen=True)
class AttentionLibrary:
    """The loaded ``libemosdk_attention`` with typed entry points."""

    path: Path
    lib: ctypes.CDLL

    def forward(self, params: EmosdkAttentionParams, stream: int = 0) -> None:
        """Enqueue the kernel on the CUDA stream handle ``stream`` (0 = default stream).

        Raises:
            RuntimeError: the launch was rejected (the library's message is included).
        """
        status = self.lib.emosdk_attention_forward(ctypes.byref(params), ctypes.c_void_p(stream))
        if status != 0:
            raise RuntimeError(f"emosdk_attention_forward failed: {self.error_string(status)}")

    def contiguous(
        self, batch: int, heads: int, q_len: int, kv_len: int, head_dim: int
    ) -> EmosdkAttentionParams:
        """Parameters with contiguous ``[B, H, T, D]`` strides, no pointers, default scale."""
        params = EmosdkAttentionParams()
        self.lib.emosdk_attention_contiguous(
            ctypes.byref(params), batch, heads, q_len, kv_len, head_dim
        )
        return params

    def error_string(self, status: int) -> str:
        return self.lib.emosdk_attention_error_string(status).decode()

    def device_count(self) -> tuple[int, int]:
        """(usable CUDA devices, cudaError_t of cudaGetDeviceCount)."""
        status = ctypes.c_int(0)
        n = self.lib.emosdk_cuda_device_count(ctypes.byref(status))
        return int(n), int(status.value)


def _platform_key() -> str:
    return "win32" if sys.platform == "win32" else "linux"


def search_dirs() -> list[Path]:
    """Directories searched for native libraries, in order."""
    extra = os.environ.get("EMOSDK_NATIVE_DIR", "")
    dirs = [Path(p) for p in extra.split(os.pathsep) if p]
    return [*dirs, PACKAGE_NATIVE_DIR]


def _disabled() -> bool:
    return os.environ.get("EMOSDK_DISABLE_NATIVE", "") not in ("", "0")


def find_library(piece: str) -> Path | None:
    """Path of the library of native ``piece`` ("attention" or "trt_plugin"), or None."""
    if piece not in _LIB_NAMES:
        raise ValueError(f"piece: expected one of {sorted(_LIB_NAMES)}, got {piece!r}")
    if _disabled():
        return None
    name = _LIB_NAMES[piece][_platform_key()]
    for d in search_dirs():
        if (d / name).is_file():
            return d / name
    return None


@functools.cache
def _load_attention() -> tuple[AttentionLibrary | None, str]:
    path = find_library("attention")
    if path is None:
        where = ", ".join(str(d) for d in search_dirs())
        reason = "EMOSDK_DISABLE_NATIVE is set" if _disabled() else f"not found in {where}"
        return None, f"libemosdk_attention: {reason}"
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as e:
        return None, f"libemosdk_attention at {path} failed to load: {e}"
    lib.emosdk_attention_abi_version.restype = ctypes.c_int
    lib.emosdk_attention_abi_version.argtypes = []
    version = lib.emosdk_attention_abi_version()
    if version != ABI_VERSION:
        return None, (
            f"libemosdk_attention at {path} has ABI version {version}, this emosdk expects "
            f"{ABI_VERSION}: rebuild it"
        )
    lib.emosdk_attention_params_size.restype = ctypes.c_int
    lib.emosdk_attention_params_size.argtypes = []
    size = lib.emosdk_attention_params_size()
    if size != ctypes.sizeof(EmosdkAttentionParams):
        return None, (
            f"libemosdk_attention at {path}: EmosdkAttentionParams is {size} bytes there and "
            f"{ctypes.sizeof(EmosdkAttentionParams)} in emosdk.native: rebuild it"
        )
    lib.emosdk_attention_forward.restype = ctypes.c_int
    lib.emosdk_attention_forward.argtypes = [
        ctypes.POINTER(EmosdkAttentionParams),
        ctypes.c_void_p,
    ]
    lib.emosdk_attention_error_string.restype = ctypes.c_char_p
    lib.emosdk_attention_error_string.argtypes = [ctypes.c_int]
    lib.emosdk_cuda_device_count.restype = ctypes.c_int
    lib.emosdk_attention_contiguous.restype = None
    lib.emosdk_attention_contiguous.argtypes = [
        ctypes.POINTER(EmosdkAttentionParams),
        *[ctypes.c_int32] * 5,
    ]
    lib.emosdk_cuda_device_count.argtypes = [ctypes.POINTER(ctypes.c_int)]
    return AttentionLibrary(path, lib), f"libemosdk_attention: {path}"


def attention_library() -> AttentionLibrary | None:
    """The loaded fused-attention library, or None when it was not built (see :func:`status`)."""
    return _load_attention()[0]


def require_attention_library() -> AttentionLibrary:
    """The loaded fused-attention library.

    Raises:
        BackendUnavailableError: it is missing or unusable; the message says how to build it.
    """
    lib, why = _load_attention()
    if lib is None:
        raise BackendUnavailableError(
            f"the fused attention CUDA kernel is unavailable ({why}). {BUILD_HINT}"
        )
    return lib


def trt_plugin_path() -> Path | None:
    """Path of ``libemosdk_trt_plugin``, or None when it was not built."""
    return find_library("trt_plugin")


def require_trt_plugin() -> Path:
    """Path of ``libemosdk_trt_plugin`` for TensorRT to load.

    Raises:
        BackendUnavailableError: it was not built; the message says how to build it.
    """
    path = trt_plugin_path()
    if path is None:
        where = ", ".join(str(d) for d in search_dirs())
        raise BackendUnavailableError(
            f"the TensorRT plugin EmosdkMaskedAttention is unavailable (libemosdk_trt_plugin not "
            f"found in {where}). {TRT_PLUGIN_HINT}"
        )
    return path


def triton_installed() -> bool:
    """Whether the triton package is importable (checked without importing it or torch)."""
    if _disabled():
        return False
    return importlib.util.find_spec("triton") is not None


def status() -> dict[str, object]:
    """What native pieces exist here and why not, for diagnostics (``emosdk`` CLI, bug reports).

    Loads the attention library if present (no torch import, no GPU work beyond asking the CUDA
    driver how many devices it sees).
    """
    lib, why = _load_attention()
    out: dict[str, object] = {
        "search_dirs": [str(d) for d in search_dirs()],
        "attention": lib is not None,
        "attention_detail": why,
        "trt_plugin": str(trt_plugin_path()) if trt_plugin_path() else None,
        "triton_installed": triton_installed(),
    }
    if lib is not None:
        n, err = lib.device_count()
        out["cuda_devices"] = n
        out["cuda_device_detail"] = "ok" if err == 0 else lib.error_string(err)
    return out


def reset() -> None:
    """Forget cached lookups (after building, or after changing EMOSDK_NATIVE_DIR)."""
    _load_attention.cache_clear()
