"""TensorRT path: the parts that need no GPU run everywhere (profiles, cache keys and paths, the
engine header, the writable-path check, the errors without TensorRT); the build and inference
tests run wherever ``import tensorrt`` works and a CUDA GPU is present, and skip with the reason
elsewhere."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import struct
import threading

import numpy as np
import pytest

from emosdk.backends import TENSORRT_HINT, available_backends
from emosdk.errors import BackendUnavailableError, InputError
from emosdk.export import tensorrt as ET
from emosdk.features.audio import LogMelParams
from emosdk.models.bundle import StreamParams, load_bundle

SHA = "ab" * 32


def _tensorrt_importable() -> bool:
    try:
        import tensorrt  # noqa: F401
    except Exception:
        return False
    return True


# ----- profiles ---------------------------------------------------------------------------------


def test_profile_dims_follow_the_window_lengths():
    audio, stream = LogMelParams(), StreamParams()  # 16 kHz, hop 160, win 400; 5 fps; 4/step
    dims = ET.profile_dims(audio, stream, windows_s=(1, 2, 3, 4, 5, 6), batch=(1, 2, 8))
    assert dims["B"] == (1, 2, 8)
    # frames = 1 + (samples - 400) // 160
    assert dims["frames"] == (98, 298, 598)
    assert dims["steps"] == dims["Ta"] == (24, 74, 149)
    assert dims["Tv"] == (5, 15, 30)
    assert dims["B_face"] == (1, 15, 30)  # one window's faces at once


def test_profile_opt_is_clipped_into_the_windows():
    dims = ET.profile_dims(LogMelParams(), StreamParams(window_s=3.0), windows_s=(4.0, 5.0))
    assert dims["Tv"] == (20, 20, 25)


@pytest.mark.parametrize(
    "kw", [{"windows_s": ()}, {"windows_s": (0.0, 1.0)}, {"batch": (2, 1, 8)}, {"batch": (0, 1, 1)}]
)
def test_profile_dims_refuses_bad_ranges(kw):
    with pytest.raises(ValueError):
        ET.profile_dims(LogMelParams(), StreamParams(), **kw)


def test_profile_shapes_map_named_axes_onto_the_bundle_inputs(fixture_bundle):
    b = load_bundle(fixture_bundle)
    dims = ET.profile_dims(b.audio, b.stream, windows_s=(1.0, 6.0), batch=(1, 1, 4))
    audio = ET.profile_shapes(b.graphs["audio_encoder"], dims)
    assert audio == {"logmel": ((1, 98, 64), (1, 298, 64), (4, 598, 64))}
    face = ET.profile_shapes(b.graphs["face_encoder"], dims)
    assert face == {"face": ((1, 1, 48, 48), (15, 1, 48, 48), (30, 1, 48, 48))}
    fusion = ET.profile_shapes(b.graphs["fusion"], dims)
    assert fusion["audio"] == ((1, 24, 16), (1, 74, 16), (4, 149, 16))
    assert fusion["audio_mask"] == ((1, 24), (1, 74), (4, 149))
    assert fusion["video_mask"] == ((1, 5), (1, 15), (4, 30))
    assert ET.shapes_fit(fusion, {"audio": (2, 74, 16), "video_mask": (1, 30)}) is None
    why = ET.shapes_fit(fusion, {"audio": (2, 200, 16)})
    assert "outside the engine's range" in why


def test_profile_shapes_names_an_unknown_axis(fixture_bundle):
    b = load_bundle(fixture_bundle)
    with pytest.raises(ValueError, match="'frames' has no range"):
        ET.profile_shapes(b.graphs["audio_encoder"], {"B": (1, 1, 1)})


# ----- header -----------------------------------------------------------------------------------


def _header(**kw):
    base = dict(
        onnx_sha256=SHA,
        gpu_name="Orin (nvgpu)",
        trt_version="10.3.0",
        precision="fp16",
        profiles={"logmel": [[1, 98, 64], [1, 298, 64], [8, 598, 64]]},
        bundle="fixture-random 0.0.0",
        role="audio_encoder",
        extra={"build_s": 12.5},
    )
    return ET.EngineHeader(**{**base, **kw})


def test_engine_header_round_trip(tmp_path):
    blob = bytes(range(256)) * 3
    p = ET.write_engine(tmp_path / "x.engine", _header(), blob)
    h, offset = ET.read_engine_header(p)
    assert h == _header()
    assert offset == 16 + struct.unpack("<I", p.read_bytes()[12:16])[0]
    assert p.read_bytes()[:8] == ET.ENGINE_MAGIC
    assert ET.read_engine(p) == (h, blob)
    assert not list(tmp_path.glob("*.tmp"))


def test_engine_header_errors(tmp_path):
    bad = tmp_path / "raw.engine"
    bad.write_bytes(b"\x00" * 64)  # e.g. a bare trtexec engine
    with pytest.raises(ET.EngineFormatError, match="not an emosdk engine"):
        ET.read_engine_header(bad)
    bad.write_bytes(b"EMO")
    with pytest.raises(ET.EngineFormatError, match="too short"):
        ET.read_engine_header(bad)
    bad.write_bytes(struct.pack("<8sII", ET.ENGINE_MAGIC, 99, 2) + b"{}")
    with pytest.raises(ET.EngineFormatError, match="header version 99"):
        ET.read_engine_header(bad)
    bad.write_bytes(struct.pack("<8sII", ET.ENGINE_MAGIC, 1, 100) + b"{}")
    with pytest.raises(ET.EngineFormatError, match="truncated"):
        ET.read_engine_header(bad)
    bad.write_bytes(struct.pack("<8sII", ET.ENGINE_MAGIC, 1, 2) + b"{}")
    with pytest.raises(ET.EngineFormatError, match="missing or has a bad field"):
        ET.read_engine_header(bad)
    with pytest.raises(ValueError, match="precision"):
        ET.write_engine(tmp_path / "y.engine", _header(precision="int4"), b"")


@pytest.mark.parametrize("extra", ['"abc"', '{"dla_core": "gpu"}', "[1, 2]"])
def test_a_header_with_a_bad_extra_field_is_a_format_error_the_cache_ignores(tmp_path, extra):
    # it raised an untyped ValueError from dict() or int() out of EngineCache.lookup, where a
    # broken cache entry is to be ignored (and rebuilt), not to stop the backend
    import json

    cache = ET.EngineCache(tmp_path)
    key = (SHA, "Orin (nvgpu)", "10.3.0", "fp16")
    meta = json.dumps(_header().to_dict())
    meta = meta.replace('"extra": {"build_s": 12.5}', f'"extra": {extra}').encode()
    assert f'"extra": {extra}'.encode() in meta
    p = cache.path(*key)
    p.write_bytes(struct.pack("<8sII", ET.ENGINE_MAGIC, 1, len(meta)) + meta + b"engine")
    with pytest.raises(ET.EngineFormatError, match="extra"):
        ET.read_engine_header(p)
    assert cache.lookup(*key) is None
    assert cache.entries() == []


# ----- cache ------------------------------------------------------------------------------------


def test_cache_keys_separate_every_field():
    k = ET.EngineCache.key(SHA, "NVIDIA H100 80GB HBM3", "10.13.0.35", "fp16")
    assert k == f"{SHA[:24]}_nvidia-h100-80gb-hbm3_trt10.13.0.35_fp16.engine"
    others = {
        ET.EngineCache.key("cd" * 32, "NVIDIA H100 80GB HBM3", "10.13.0.35", "fp16"),
        ET.EngineCache.key(SHA, "Orin", "10.13.0.35", "fp16"),
        ET.EngineCache.key(SHA, "NVIDIA H100 80GB HBM3", "10.3.0", "fp16"),
        ET.EngineCache.key(SHA, "NVIDIA H100 80GB HBM3", "10.13.0.35", "int8"),
        ET.EngineCache.key(SHA, "NVIDIA H100 80GB HBM3", "10.13.0.35", "fp16", "windows 1-3"),
    }
    assert k not in others and len(others) == 5
    assert k == ET.EngineCache.key(SHA, "NVIDIA H100 80GB HBM3", "10.13.0.35", "fp16")
    with pytest.raises(ValueError, match="precision"):
        ET.EngineCache.key(SHA, "x", "10", "bf16")
    with pytest.raises(ValueError, match="64 lowercase hex"):
        ET.EngineCache.key("abc", "x", "10", "fp16")


def test_cache_folder_default_env_and_argument(tmp_path, monkeypatch):
    monkeypatch.delenv(ET.ENV_CACHE, raising=False)
    assert ET.EngineCache().root == ET.DEFAULT_CACHE.expanduser()
    assert str(ET.EngineCache().root).endswith(".cache/emosdk/engines")
    monkeypatch.setenv(ET.ENV_CACHE, str(tmp_path / "env"))
    assert ET.EngineCache().root == tmp_path / "env"
    assert ET.EngineCache(tmp_path / "arg").root == tmp_path / "arg"


def test_cache_lookup_checks_the_header(tmp_path):
    cache = ET.EngineCache(tmp_path)
    assert cache.check_writable() == tmp_path
    key = (SHA, "Orin (nvgpu)", "10.3.0", "fp16")
    assert cache.lookup(*key) is None
    p = ET.write_engine(cache.path(*key), _header(), b"engine")
    assert cache.lookup(*key) == p
    assert [e[0] for e in cache.entries()] == [p]
    # a file whose header disagrees with its name is not used
    ET.write_engine(cache.path(*key), _header(trt_version="10.4.0"), b"engine")
    assert cache.lookup(*key) is None
    p.write_bytes(b"garbage")
    assert cache.lookup(*key) is None
    assert cache.timing_cache_path("Orin (nvgpu)", "10.3.0").parent == tmp_path


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only folders")
def test_unwritable_cache_names_the_folder_and_the_variable(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(ET.EngineCacheError) as e:
            ET.EngineCache(ro / "engines").check_writable()
    finally:
        ro.chmod(0o700)
    assert str(ro / "engines") in str(e.value)
    assert ET.ENV_CACHE in str(e.value)


def test_cache_under_a_file_is_not_writable(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ET.EngineCacheError, match=ET.ENV_CACHE):
        ET.EngineCache(f / "engines").check_writable()


# ----- progress ---------------------------------------------------------------------------------


def test_build_progress_logs_phases(caplog):
    prog = ET.BuildProgress("fusion fp16", every_s=0.0)
    with caplog.at_level(logging.INFO, logger="emosdk"):
        prog.phase_start("Building engine", None, 3)
        assert prog.step_complete("Building engine", 0) is True
        prog.phase_finish("Building engine")
    text = caplog.text
    assert "fusion fp16: Building engine (3 steps)" in text
    assert "step 1/3" in text and "done in" in text
    assert prog.finished == ["Building engine"]


# ----- without TensorRT -------------------------------------------------------------------------


needs_no_tensorrt = pytest.mark.skipif(
    _tensorrt_importable(), reason="tensorrt imports here: the missing-TensorRT path cannot run"
)


@needs_no_tensorrt
def test_without_tensorrt_the_errors_say_what_to_install(fixture_bundle, tmp_path):
    with pytest.raises(BackendUnavailableError) as e:
        ET.import_tensorrt()
    assert "JetPack" in str(e.value) and "tensorrt-cu12" in str(e.value)
    status = {s.name: s for s in available_backends()}["tensorrt"]
    assert not status.available and TENSORRT_HINT in status.detail
    b = load_bundle(fixture_bundle)
    with pytest.raises(BackendUnavailableError, match="JetPack"):
        ET.build_engine(
            b.graph_path("fusion"),
            tmp_path / "x.engine",
            ET.profile_shapes(b.graphs["fusion"], ET.profile_dims(b.audio, b.stream)),
        )


@needs_no_tensorrt
def test_tensorrt_backend_without_tensorrt(fixture_bundle):
    from emosdk.backends.tensorrt import TensorRTBackend, tensorrt_unavailable_reason

    b = load_bundle(fixture_bundle)
    with pytest.raises(BackendUnavailableError, match="JetPack"):
        TensorRTBackend(b.graph_path("fusion"), b.graphs["fusion"])
    assert "JetPack" in tensorrt_unavailable_reason()


def test_build_engine_argument_errors_come_before_tensorrt(fixture_bundle, tmp_path):
    b = load_bundle(fixture_bundle)
    path = b.graph_path("fusion")
    with pytest.raises(ValueError, match="precision"):
        ET.build_engine(path, tmp_path / "x", {}, precision="bf16")
    with pytest.raises(ValueError, match="DLA runs fp16 or int8"):
        ET.build_engine(path, tmp_path / "x", {}, precision="fp32", dla_core=0)
    with pytest.raises(ValueError, match="QuantizeLinear/DequantizeLinear"):
        ET.build_engine(path, tmp_path / "x", {}, precision="int8")
    assert not ET.onnx_has_qdq(path)


def test_cuda_check_unpacks_and_raises():
    class Err(int):
        pass

    class FakeRt:
        @staticmethod
        def cudaGetErrorString(err):  # noqa: N802 - the cuda-python name
            return (0, b"insufficient driver")

    assert ET.cuda_check(FakeRt, (Err(0), 1234), "cudaMalloc") == 1234
    assert ET.cuda_check(FakeRt, (Err(0),), "cudaFree") is None
    with pytest.raises(ET.EngineError, match="cudaMalloc failed.*insufficient driver"):
        ET.cuda_check(FakeRt, (Err(35), None), "cudaMalloc")


@pytest.mark.skipif(importlib.util.find_spec("cuda") is None, reason="cuda-python not installed")
def test_gpu_name_without_a_driver_is_unavailable():
    from cuda.bindings import runtime as cudart

    err, _ = cudart.cudaGetDeviceCount()
    if int(err) == 0:
        pytest.skip("a CUDA driver is present")
    with pytest.raises(BackendUnavailableError, match="no NVIDIA driver|driver supports CUDA"):
        ET.gpu_name()


# ----- with TensorRT and a GPU ------------------------------------------------------------------


@pytest.fixture
def trt_gpu():
    trt = pytest.importorskip(
        "tensorrt",
        reason="TensorRT is not installed (needs JetPack on a Jetson or NVIDIA's tensorrt wheel "
        "and a GPU); build and inference tests run on such a machine",
    )
    try:
        name = ET.gpu_name()
    except BackendUnavailableError as e:
        pytest.skip(f"tensorrt imports but there is no usable CUDA GPU: {e}")
    return trt, name


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_build_and_run_engines_match_onnxruntime(trt_gpu, fixture_bundle, tmp_path, precision):
    from emosdk.backends.onnxruntime import OnnxRuntimeBackend
    from emosdk.backends.tensorrt import TensorRTBackend
    from emosdk.export.quantize import fp16_bundle
    from emosdk.export.validate import random_inputs

    bundle_dir = tmp_path / "bundle"
    shutil.copytree(fixture_bundle, bundle_dir)
    fp16_bundle(bundle_dir)  # TensorRT >= 10.12 builds fp16 engines from the fp16 graphs
    b = load_bundle(bundle_dir)
    cache = tmp_path / "cache"
    tol = 1e-3 if precision == "fp32" else 5e-2
    for role, spec in b.graphs.items():
        trt_b = TensorRTBackend(
            b.graph_path(role),
            spec,
            precision=precision,
            cache_dir=cache,
            windows_s=(1.0, 6.0),
            batch=(1, 1, 4),
            builder=ET.build_engine,
        )
        ort_b = OnnxRuntimeBackend(b.graph_path(role), spec)
        # what the recognizer sends: one window at a time (the face encoder gets that window's
        # crops, up to Tv = 30 at 6 s, the top of the face profile), repeated shapes for the
        # CUDA graphs; then a batch of 4 six-second windows, 120 crops for the face encoder, which
        # the backend runs as four batches of 30
        for batch, w in [(1, 3.0), (1, 3.0), (1, 3.0), (1, 6.0), (1, 1.0), (2, 1.0), (4, 6.0)]:
            feeds = random_inputs(role, batch, w, b, 16, 16)
            feeds = dict(zip([t.name for t in spec.inputs], feeds))
            got, ref = trt_b.infer(feeds), ort_b.infer(feeds)
            for n in ref:
                assert got[n].shape == ref[n].shape
                assert np.abs(got[n] - ref[n]).max() < tol, (role, n, batch, w)
        if role != "face_encoder":  # a longer window has more steps/frames than any profile
            with pytest.raises(InputError, match="outside the engine's range"):
                feeds = random_inputs(role, 1, 7.0, b, 16, 16)
                trt_b.infer(dict(zip([t.name for t in spec.inputs], feeds)))
        trt_b.close()
        ort_b.close()
    entries = ET.EngineCache(cache).entries()
    assert len(entries) == 3 and {h.precision for _, h in entries} == {precision}
    # the second open uses the cache (no builder, no build)
    again = TensorRTBackend(
        b.graph_path("fusion"),
        b.graphs["fusion"],
        precision=precision,
        cache_dir=cache,
        windows_s=(1.0, 6.0),
        batch=(1, 1, 4),
    )
    again.close()
    with pytest.raises(BackendUnavailableError, match="emosdk-export engine BUNDLE"):
        TensorRTBackend(
            b.graph_path("fusion"), b.graphs["fusion"], precision=precision, cache_dir=cache
        )  # other windows: another engine, not built without a builder


# ----- the backend's control flow, on a fake TensorRT and CUDA (no GPU here) -------------------
# The real check is test_build_and_run_engines_match_onnxruntime on a GPU machine. This one runs
# the backend's own logic everywhere: buffers sized from the profile, host<->device copies by
# pointer, per-call input shapes, the CUDA-graph policy (capture on the first repeat, replay,
# drop on a shape change), the out-of-profile error and the clean-up.


class _FakeCuda:
    """cuda.bindings.runtime stand-in: device memory is a dict of bytearrays."""

    def __init__(self):
        import types

        self.mem: dict[int, bytearray] = {}
        self.next_ptr = 0x1000
        self.capturing = None
        self.graphs: dict[int, list] = {}
        self.events: list[str] = []
        self.fail: set[str] = set()  # names of calls that return cudaErrorUnknown (999)
        self.sticky = 0  # the error cudaGetLastError reports (and clears)
        self.count, self.driver, self.runtime = 1, 12060, 12060
        self.current = threading.local()  # the calling thread's current device
        self.stream_device: dict[int, int] = {}
        self.cudaMemcpyKind = types.SimpleNamespace(
            cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2
        )
        self.cudaStreamCaptureMode = types.SimpleNamespace(cudaStreamCaptureModeThreadLocal=1)

    def cudaGetDeviceProperties(self, dev):  # noqa: N802 - the cuda-python names
        import types

        return 0, types.SimpleNamespace(name=b"Fake GPU\x00\x00")

    def cudaGetErrorString(self, err):  # noqa: N802
        return 0, b"fake error"

    def _err(self, name):
        if name in self.fail:
            self.sticky = 999
            return 999
        return 0

    def cudaGetLastError(self):  # noqa: N802
        err, self.sticky = self.sticky, 0
        return (err,)

    def cudaGetDeviceCount(self):  # noqa: N802
        if self.driver < self.runtime:
            return 35, 0  # cudaErrorInsufficientDriver
        return (0, self.count) if self.count else (100, 0)  # cudaErrorNoDevice

    def cudaDriverGetVersion(self):  # noqa: N802
        return 0, self.driver

    def cudaRuntimeGetVersion(self):  # noqa: N802
        return 0, self.runtime

    def cudaSetDevice(self, dev):  # noqa: N802
        self.current.device = dev  # as CUDA: the current device is per host thread
        return (0,)

    def cudaStreamCreate(self):  # noqa: N802
        self.stream_device[7] = getattr(self.current, "device", 0)
        return 0, 7

    def _wrong_device(self, stream):
        # a stream belongs to the device current when it was made; CUDA refuses it elsewhere
        return getattr(self.current, "device", 0) != self.stream_device.get(stream, 0)

    def cudaStreamSynchronize(self, s):  # noqa: N802
        return (900,) if self.capturing is not None else (0,)  # a stream left capturing fails

    def cudaStreamDestroy(self, s):  # noqa: N802
        self.events.append("stream_destroy")
        return (0,)

    def cudaMalloc(self, n):  # noqa: N802
        ptr, self.next_ptr = self.next_ptr, self.next_ptr + n + 256
        self.mem[ptr] = bytearray(n)
        return 0, ptr

    def cudaFree(self, ptr):  # noqa: N802
        del self.mem[ptr]
        return (0,)

    def _find(self, ptr):
        for base, buf in self.mem.items():
            if base <= ptr < base + len(buf):
                return base, buf
        raise AssertionError(f"bad device pointer {ptr:#x}")

    def cudaMemcpyAsync(self, dst, src, count, kind, stream):  # noqa: N802
        import ctypes

        if self._wrong_device(stream):
            return (400,)  # cudaErrorInvalidResourceHandle
        if self.capturing is not None:
            return (900,)  # cudaErrorStreamCaptureUnsupported: the stream was left capturing
        if kind == 1:
            base, buf = self._find(dst)
            buf[dst - base : dst - base + count] = ctypes.string_at(src, count)
        else:
            base, buf = self._find(src)
            ctypes.memmove(dst, bytes(buf[src - base : src - base + count]), count)
        return (0,)

    def cudaStreamBeginCapture(self, s, mode):  # noqa: N802
        if self._err("cudaStreamBeginCapture"):
            return (999,)
        self.capturing = []
        return (0,)

    def cudaStreamEndCapture(self, s):  # noqa: N802
        g, self.capturing = self.capturing, None
        self.graphs[id(g)] = g
        return 0, id(g)

    def cudaGraphInstantiate(self, g, flags):  # noqa: N802
        if self._err("cudaGraphInstantiate"):
            return 999, None
        self.events.append("capture")
        return 0, g

    def cudaGraphLaunch(self, exe, s):  # noqa: N802
        if self._err("cudaGraphLaunch"):
            return (999,)
        self.events.append("replay")
        for op in self.graphs[exe]:
            op()
        return (0,)

    def cudaGraphExecDestroy(self, exe):  # noqa: N802
        return (0,)

    def cudaGraphDestroy(self, g):  # noqa: N802
        self.events.append("graph_destroy")
        self.graphs.pop(g, None)
        return (0,)


def _fake_tensorrt(cuda):
    """tensorrt stand-in: an engine computing y = 2 * x + 1 over x [B, T]."""
    import types

    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.99.0"
    trt.TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")

    class Logger:
        WARNING = 2

        def __init__(self, level):
            pass

    class Context:
        def __init__(self, engine):
            self.engine, self.shapes, self.addr = engine, {}, {}

        def set_input_shape(self, n, shape):
            self.shapes[n] = tuple(shape)
            return True

        def get_tensor_shape(self, n):
            return self.shapes["x"] if n == "y" else self.shapes[n]

        def set_tensor_address(self, n, ptr):
            self.addr[n] = ptr

        def execute_async_v3(self, stream):
            shape = self.shapes["x"]

            def run():
                n = int(np.prod(shape)) * 4
                bx, buf_x = cuda._find(self.addr["x"])
                x = np.frombuffer(bytes(buf_x[self.addr["x"] - bx :][:n]), np.float32)
                by, buf_y = cuda._find(self.addr["y"])
                buf_y[self.addr["y"] - by : self.addr["y"] - by + n] = (2 * x + 1).tobytes()

            if cuda.capturing is not None:
                if "execute_in_capture" in cuda.fail:
                    return False
                if "execute_in_capture_raises" in cuda.fail:
                    raise RuntimeError("enqueue failed")
                cuda.capturing.append(run)
            else:
                cuda.events.append("execute")
                run()
            return True

    class Engine:
        num_io_tensors = 2

        def __init__(self, profile):
            self.profile = profile

        def get_tensor_name(self, i):
            return ("x", "y")[i]

        def get_tensor_mode(self, n):
            return "in" if n == "x" else "out"

        def get_tensor_dtype(self, n):
            return "float32"

        def get_tensor_profile_shape(self, n, i):
            return self.profile

        def create_execution_context(self):
            return Context(self)

    class Runtime:
        DLA_core = -1

        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, blob):
            if trt.needs_plugin and not registry.has():
                return None  # TensorRT cannot find the plugin creator of a layer
            cuda.events.append(f"deserialize dla={self.DLA_core}")
            return Engine(trt.profile)

    class Registry:
        def __init__(self):
            self.creators: set[tuple[str, str, str]] = set()
            self.loaded: list[str] = []

        def has(self):
            return ("EmosdkMaskedAttention", "1", "") in self.creators

        def get_creator(self, name, version, namespace=""):
            return object() if (name, version, namespace) in self.creators else None

        def load_library(self, path):
            self.loaded.append(path)
            if self.has():
                return None  # TensorRT: the library's plugins are registered already
            if open(path, "rb").read() == b"plugin library":
                self.creators.add(("EmosdkMaskedAttention", "1", ""))
                return object()
            return None

    registry = Registry()
    trt.Logger, trt.Runtime = Logger, Runtime
    trt.nptype = lambda t: np.float32
    trt.profile = ([1, 2], [1, 4], [2, 8])
    trt.needs_plugin = False
    trt.get_plugin_registry = lambda: registry
    trt.registry = registry
    return trt


@pytest.fixture
def fake_gpu(monkeypatch):
    import sys
    import types

    cuda = _FakeCuda()
    runtime = types.ModuleType("cuda.bindings.runtime")
    for name in dir(cuda):
        if name.startswith("cuda"):
            setattr(runtime, name, getattr(cuda, name))
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = runtime
    pkg = types.ModuleType("cuda")
    pkg.bindings = bindings
    monkeypatch.setitem(sys.modules, "cuda", pkg)
    monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", runtime)
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt(cuda))
    return cuda


def test_backend_logic_on_a_fake_gpu(fake_gpu, tmp_path):
    from emosdk.backends.tensorrt import TensorRTBackend
    from emosdk.models.bundle import GraphSpec, TensorSpec

    spec = GraphSpec(
        "fusion",
        "g.onnx",
        (TensorSpec("x", ("B", "T"), "float32"),),
        (TensorSpec("y", ("B", "T"), "float32"),),
    )
    header = _header(
        gpu_name="Fake GPU",
        trt_version="10.99.0",
        precision="fp32",
        profiles={"x": [[1, 2], [1, 4], [2, 8]]},
    )
    engine = ET.write_engine(tmp_path / "g.engine", header, b"fake engine")
    be = TensorRTBackend(tmp_path / "g.onnx", spec, engine=engine)
    assert be.device == "Fake GPU (TensorRT 10.99.0, fp32)"
    assert sorted(len(b) for b in fake_gpu.mem.values()) == [64, 64]  # 2 x 8 float32 each
    rng = np.random.default_rng(0)
    a, b = (rng.normal(size=s).astype(np.float32) for s in ((1, 4), (2, 8)))
    for x in (a, a, a, b, a):
        y = be.infer({"x": x})["y"]
        np.testing.assert_array_equal(y, 2 * x + 1)
    assert fake_gpu.events == [
        "deserialize dla=-1",  # a GPU engine: the runtime's DLA core is left alone
        "execute",  # first call with these shapes
        "capture",  # first repeat: captured ...
        "replay",  # ... and replayed
        "replay",
        "graph_destroy",  # shape change drops the graph
        "execute",
        "execute",  # back to the first shapes: a plain enqueue again
    ]
    with pytest.raises(InputError, match="outside the engine's range"):
        be.infer({"x": np.zeros((1, 9), np.float32)})  # T above the profile: no way to fit
    be.close()
    assert fake_gpu.mem == {} and "stream_destroy" in fake_gpu.events


def test_backend_refuses_an_engine_from_another_gpu(fake_gpu, tmp_path):
    from emosdk.backends.tensorrt import TensorRTBackend
    from emosdk.errors import ModelError
    from emosdk.models.bundle import GraphSpec, TensorSpec

    spec = GraphSpec("fusion", "g.onnx", (TensorSpec("x", ("B", "T"), "float32"),), ())
    engine = ET.write_engine(
        tmp_path / "g.engine", _header(gpu_name="Orin", trt_version="10.99.0"), b"fake engine"
    )
    with pytest.raises(ModelError, match="built for Orin.*this is Fake GPU"):
        TensorRTBackend(tmp_path / "g.onnx", spec, engine=engine)
    assert fake_gpu.mem == {}


def test_backend_refuses_an_engine_without_a_declared_output(fake_gpu, tmp_path):
    # as the ONNX Runtime backend: a declared output the engine lacks is a ModelError at load,
    # not a KeyError in the middle of a prediction
    from emosdk.backends.tensorrt import TensorRTBackend
    from emosdk.errors import ModelError
    from emosdk.models.bundle import TensorSpec

    xy = _xy_spec()
    spec = type(xy)(xy.role, xy.file, xy.inputs, (*xy.outputs, TensorSpec("z", ("B",), "float32")))
    with pytest.raises(ModelError, match=r"declares outputs \['z'\]"):
        TensorRTBackend(tmp_path / "g.onnx", spec, engine=_xy_engine(tmp_path))
    assert fake_gpu.mem == {}


def test_backend_names_an_engine_file_it_cannot_read(fake_gpu, tmp_path):
    from emosdk.backends.tensorrt import TensorRTBackend
    from emosdk.errors import ModelError

    missing = tmp_path / "typo.engine"
    with pytest.raises(ModelError, match="typo.engine"):  # was an untyped FileNotFoundError
        TensorRTBackend(tmp_path / "g.onnx", _xy_spec(), engine=missing)
    with pytest.raises(ModelError, match="cannot read"):
        TensorRTBackend(tmp_path / "g.onnx", _xy_spec(), engine=tmp_path)  # a folder
    assert fake_gpu.mem == {}


def _xy_spec():
    from emosdk.models.bundle import GraphSpec, TensorSpec

    return GraphSpec(
        "fusion",
        "g.onnx",
        (TensorSpec("x", ("B", "T"), "float32"),),
        (TensorSpec("y", ("B", "T"), "float32"),),
    )


def _xy_engine(tmp_path, profile=([1, 2], [1, 4], [2, 8]), **extra):
    header = _header(
        gpu_name="Fake GPU",
        trt_version="10.99.0",
        precision="fp16",
        profiles={"x": [list(p) for p in profile]},
        extra=extra,
    )
    return ET.write_engine(tmp_path / "g.engine", header, b"fake engine")


def test_one_backend_from_several_threads_gives_each_its_own_result(fake_gpu, tmp_path):
    # the Recognizer runs its graphs from several threads at once (predict, one stream per
    # thread); one engine's context, CUDA stream and device buffers serve one call at a time
    import sys

    from emosdk.backends.tensorrt import TensorRTBackend

    be = TensorRTBackend(tmp_path / "g.onnx", _xy_spec(), engine=_xy_engine(tmp_path))
    wrong: list[object] = []

    def work(k: int) -> None:
        x = np.full((1 + k % 2, 4 + k), float(k), np.float32)
        for _ in range(60):
            try:
                if not np.array_equal(be.infer({"x": x})["y"], 2 * x + 1):
                    wrong.append(k)
            except Exception as e:  # e.g. a graph destroyed twice
                wrong.append(e)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, as real concurrency would
    try:
        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert wrong == []
    be.close()
    assert fake_gpu.mem == {}


def test_a_backend_on_device_1_runs_from_another_thread(fake_gpu, tmp_path):
    # CUDA's current device is per host thread (device 0 in a new one): a call from a thread
    # other than the loading one must make the engine's device current, or its stream and
    # context are refused
    from emosdk.backends.tensorrt import TensorRTBackend

    fake_gpu.count = 2
    be = TensorRTBackend(tmp_path / "g.onnx", _xy_spec(), engine=_xy_engine(tmp_path), device=1)
    x = np.ones((1, 4), np.float32)
    results: list[object] = []

    def work() -> None:
        try:
            results.append(be.infer({"x": x})["y"])
        except Exception as e:
            results.append(e)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert len(results) == 1 and isinstance(results[0], np.ndarray), results
    np.testing.assert_array_equal(results[0], 2 * x + 1)
    closer = threading.Thread(target=be.close)
    closer.start()
    closer.join()
    assert fake_gpu.mem == {}


# ----- point 4: a failed CUDA-graph capture falls back to plain enqueues -------------------------


@pytest.mark.parametrize(
    "failure",
    ["cudaGraphInstantiate", "cudaStreamBeginCapture", "execute_in_capture", "cudaGraphLaunch"],
)
def test_failed_cuda_graph_falls_back_to_enqueue_for_those_shapes(fake_gpu, tmp_path, failure):
    from emosdk.backends.tensorrt import TensorRTBackend

    be = TensorRTBackend(tmp_path / "g.onnx", _xy_spec(), engine=_xy_engine(tmp_path))
    fake_gpu.fail.add(failure)
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    for _ in range(4):  # every call answers, the first repeat tries a graph once
        np.testing.assert_array_equal(be.infer({"x": x})["y"], 2 * x + 1)
    assert fake_gpu.sticky == 0  # the error the failure left was cleared
    assert fake_gpu.graphs == {}  # nothing captured is left behind (no leak)
    assert "replay" not in fake_gpu.events
    assert fake_gpu.events.count("execute") == 4
    fake_gpu.fail.clear()
    y = np.ones((1, 4), np.float32)  # other shapes still get their graph
    for _ in range(3):
        np.testing.assert_array_equal(be.infer({"x": y})["y"], 2 * y + 1)
    assert fake_gpu.events[-4:] == ["execute", "capture", "replay", "replay"]
    be.close()
    assert fake_gpu.mem == {}


def test_an_exception_inside_the_capture_leaves_the_stream_usable(fake_gpu, tmp_path):
    from emosdk.backends.tensorrt import TensorRTBackend

    be = TensorRTBackend(tmp_path / "g.onnx", _xy_spec(), engine=_xy_engine(tmp_path))
    fake_gpu.fail.add("execute_in_capture_raises")
    x = np.ones((1, 4), np.float32)
    for _ in range(3):
        np.testing.assert_array_equal(be.infer({"x": x})["y"], 2 * x + 1)
    assert fake_gpu.capturing is None  # the capture was ended; copies on the stream work
    be.close()


# ----- point 2: batches outside the profile's batch range --------------------------------------


def test_batch_plan_splits_and_pads_only_the_batch_axis():
    profiles = {"x": [[1, 2], [1, 4], [4, 8]], "m": [[1, 2], [1, 4], [4, 8]]}
    assert ET.batch_plan(profiles, {"x": (3, 4), "m": (3, 4)}) is None  # fits as it is
    assert ET.batch_plan(profiles, {"x": (9, 4), "m": (9, 4)}) == [(0, 4, 0), (4, 8, 0), (8, 9, 0)]
    assert ET.batch_plan(profiles, {"x": (9, 9), "m": (9, 9)}) is None  # T is out of range too
    assert ET.batch_plan(profiles, {"x": (9, 4), "m": (8, 4)}) is None  # inputs disagree on B
    static = {"x": [[2, 4], [2, 4], [2, 4]]}
    assert ET.batch_plan(static, {"x": (5, 4)}) == [(0, 2, 0), (2, 4, 0), (4, 5, 1)]
    assert ET.batch_plan(static, {"x": (1, 4)}) == [(0, 1, 1)]
    # the bundle's face profile tops out at Tv of the longest window: 4 windows of 6 s = 120 crops
    dims = ET.profile_dims(LogMelParams(), StreamParams(), windows_s=(1.0, 6.0), batch=(1, 1, 4))
    face = {"face": [[dims["B_face"][i], 1, 48, 48] for i in range(3)]}
    assert [stop - start for start, stop, _ in ET.batch_plan(face, {"face": (120, 1, 48, 48)})] == [
        30
    ] * 4


def test_backend_runs_a_batch_above_the_profile_as_several(fake_gpu, tmp_path):
    from emosdk.backends.tensorrt import TensorRTBackend

    be = TensorRTBackend(tmp_path / "g.onnx", _xy_spec(), engine=_xy_engine(tmp_path))
    x = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    np.testing.assert_array_equal(be.infer({"x": x})["y"], 2 * x + 1)
    assert fake_gpu.events.count("execute") == 2  # rows 0-1, 2-3 as one shape; 4 alone
    be.close()


def test_backend_pads_a_batch_below_a_static_profile(fake_gpu, tmp_path):
    from emosdk.backends.tensorrt import TensorRTBackend

    sys_trt = __import__("sys").modules["tensorrt"]
    sys_trt.profile = ([2, 4], [2, 4], [2, 4])
    engine = _xy_engine(tmp_path, profile=([2, 4], [2, 4], [2, 4]), dla_core=1)
    be = TensorRTBackend(tmp_path / "g.onnx", _xy_spec(), engine=engine)
    assert "DLA core 1" in be.device
    assert fake_gpu.events[0] == "deserialize dla=1"  # IRuntime.DLA_core set before deserialising
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(be.infer({"x": x})["y"], 2 * x + 1)  # runs of 2 and 1+1 pad
    be.close()


# ----- point 6: DLA engines are static and keyed apart ----------------------------------------


def test_dla_profiles_are_static_and_the_cache_keys_them_apart(fixture_bundle, tmp_path):
    b = load_bundle(fixture_bundle)
    spec = b.graphs["fusion"]
    gpu = ET.engine_profiles(spec, b.audio, b.stream, windows_s=(1.0, 6.0))
    dla = ET.engine_profiles(spec, b.audio, b.stream, windows_s=(1.0, 6.0), dla_core=0)
    assert not ET.is_static(gpu) and ET.is_static(dla)
    assert dla["video_mask"] == ((1, 15), (1, 15), (1, 15))  # the bundle's 3 s window, batch 1
    face = ET.engine_profiles(b.graphs["face_encoder"], b.audio, b.stream, dla_core=0)
    assert face["face"][0] == face["face"][2] == (15, 1, 48, 48)  # one window's faces
    variants = {
        ET.engine_variant(gpu),
        ET.engine_variant(dla, dla_core=0),
        ET.engine_variant(dla, dla_core=1),
        ET.engine_variant(gpu, workspace=2 << 30),
    }
    keys = {ET.EngineCache.key(SHA, "Orin", "10.3.0", "fp16", v) for v in variants}
    assert len(keys) == 4
    # a GPU engine in a DLA engine's place is not used
    cache = ET.EngineCache(tmp_path)
    v = ET.engine_variant(dla, dla_core=0)
    key = (SHA, "Orin (nvgpu)", "10.3.0", "fp16", v)
    ET.write_engine(cache.path(*key), _header(extra={"dla_core": None}), b"x")
    assert cache.lookup(*key, dla_core=0) is None
    ET.write_engine(cache.path(*key), _header(extra={"dla_core": 0}), b"x")
    assert cache.lookup(*key, dla_core=0) == cache.path(*key)


def test_dla_build_refuses_a_dynamic_profile_before_tensorrt(fixture_bundle, tmp_path):
    b = load_bundle(fixture_bundle)
    dynamic = ET.engine_profiles(b.graphs["fusion"], b.audio, b.stream)
    with pytest.raises(ValueError, match="static shapes"):
        ET.build_engine(
            b.graph_path("fusion"), tmp_path / "x", dynamic, precision="fp16", dla_core=0
        )


# ----- point 1: cuda-python in either spelling, and a driver older than its runtime -------------


def _install_cudart(monkeypatch, cuda, spelling):
    import sys
    import types

    mod = types.ModuleType("cudart")
    for name in dir(cuda):
        if name.startswith("cuda"):
            setattr(mod, name, getattr(cuda, name))
    pkg = types.ModuleType("cuda")
    for m in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart"):
        monkeypatch.delitem(sys.modules, m, raising=False)
    monkeypatch.setitem(sys.modules, "cuda", pkg)
    if spelling == "bindings":
        bindings = types.ModuleType("cuda.bindings")
        bindings.runtime = mod
        pkg.bindings = bindings
        monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
        monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", mod)
    elif spelling == "cudart":  # cuda-python 12.x before cuda.bindings (TensorRT 10.3 samples)
        pkg.cudart = mod
        monkeypatch.setitem(sys.modules, "cuda.cudart", mod)
    return mod


@pytest.mark.parametrize("spelling", ["bindings", "cudart"])
def test_cuda_python_imports_in_either_spelling(monkeypatch, spelling):
    cuda = _FakeCuda()
    mod = _install_cudart(monkeypatch, cuda, spelling)
    assert ET.import_cudart() is mod
    assert ET.gpu_name() == "Fake GPU"


def test_without_cuda_python_the_error_gives_the_pins(monkeypatch):
    _install_cudart(monkeypatch, _FakeCuda(), "neither")
    with pytest.raises(BackendUnavailableError) as e:
        ET.import_cudart()
    assert "cuda-python>=12.6.1,<13" in str(e.value) and "cuda.cudart" in str(e.value)


def test_cuda_13_runtime_on_a_cuda_12_driver_says_so(monkeypatch):
    cuda = _FakeCuda()
    cuda.driver, cuda.runtime = 12060, 13040  # JetPack 6 driver, cuda-python 13
    _install_cudart(monkeypatch, cuda, "bindings")
    with pytest.raises(BackendUnavailableError) as e:
        ET.gpu_name()
    msg = str(e.value)
    assert "supports CUDA 12.6" in msg and "CUDA 13.4 runtime" in msg
    assert "cuda-python>=12.6.1,<13" in msg
    cuda.driver = 0
    with pytest.raises(BackendUnavailableError, match="no NVIDIA driver"):
        ET.gpu_name()
    cuda.driver, cuda.runtime, cuda.count = 12060, 12060, 0
    with pytest.raises(BackendUnavailableError, match="no usable CUDA GPU"):
        ET.gpu_name()
    cuda.count = 1
    with pytest.raises(BackendUnavailableError, match="device 3 does not exist"):
        ET.gpu_name(3)


# ----- point 7: the plugin library is loaded where plugin graphs are built or deserialised -----


def _plugin_onnx(path):
    import onnx
    from onnx import TensorProto, helper

    x = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 1, 4, 16]) for n in "qkv"]
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 1, 4, 16])
    node = helper.make_node(
        "EmosdkMaskedAttention", ["q", "k", "v"], ["out"], domain="trt.plugins", scale=0.25
    )
    graph = helper.make_graph([node], "g", x, [out])
    onnx.save(helper.make_model(graph), str(path))
    return path


@pytest.fixture
def plugin_library(tmp_path, monkeypatch):
    from emosdk import native

    d = tmp_path / "native"
    d.mkdir()
    (d / "libemosdk_trt_plugin.so").write_bytes(b"plugin library")
    monkeypatch.setenv("EMOSDK_NATIVE_DIR", str(d))
    native.reset()
    yield d / "libemosdk_trt_plugin.so"
    native.reset()


def test_plugin_graphs_are_recognised_without_onnx(tmp_path, fixture_bundle):
    assert ET.onnx_uses_plugin(_plugin_onnx(tmp_path / "p.onnx"))
    b = load_bundle(fixture_bundle)
    assert not any(ET.onnx_uses_plugin(b.graph_path(r)) for r in b.graphs)  # shipped: standard ops


def test_plugin_library_is_loaded_once(fake_gpu, plugin_library):
    import sys

    trt = sys.modules["tensorrt"]
    assert ET.load_trt_plugin(trt) == plugin_library
    assert ET.load_trt_plugin(trt) is None  # already registered: not loaded again
    assert trt.registry.loaded == [str(plugin_library)]


def test_plugin_library_registered_elsewhere_is_not_an_error(fake_gpu, plugin_library):
    import sys

    trt = sys.modules["tensorrt"]
    trt.registry.creators.add(("EmosdkMaskedAttention", "1", ""))  # e.g. trtexec --dynamicPlugins
    assert ET.load_trt_plugin(trt) is None and trt.registry.loaded == []


def test_missing_or_broken_plugin_library_says_how_to_build_it(fake_gpu, plugin_library):
    import sys

    from emosdk import native

    trt = sys.modules["tensorrt"]
    plugin_library.write_bytes(b"built for another TensorRT")
    with pytest.raises(BackendUnavailableError, match="could not load the plugin library"):
        ET.load_trt_plugin(trt)
    plugin_library.unlink()
    native.reset()
    with pytest.raises(BackendUnavailableError, match="NvInfer.h"):
        ET.load_trt_plugin(trt)


def test_backend_loads_the_plugin_for_an_engine_that_needs_it(fake_gpu, plugin_library, tmp_path):
    import sys

    from emosdk.backends.tensorrt import TensorRTBackend

    trt = sys.modules["tensorrt"]
    trt.needs_plugin = True
    engine = _xy_engine(tmp_path, plugins=["EmosdkMaskedAttention"])
    be = TensorRTBackend(tmp_path / "g.onnx", _xy_spec(), engine=engine)
    assert trt.registry.loaded == [str(plugin_library)]
    be.close()
    plain = _xy_engine(tmp_path)  # an engine built without the plugin recorded: TensorRT says no
    trt.registry.creators.clear()
    from emosdk.errors import ModelError

    with pytest.raises(ModelError, match="cannot deserialize"):
        TensorRTBackend(tmp_path / "g.onnx", _xy_spec(), engine=plain)


# ----- the builder on a fake TensorRT: typing by version (point 8), plugin graphs (point 7) -----


def _add_fake_builder(trt, version):
    """A TensorRT builder stand-in whose 'engine' is a JSON record of what it was asked for."""
    import json
    import types

    import onnx

    trt.__version__ = version
    major = int(version.split(".")[0])
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(EXPLICIT_BATCH=0, STRONGLY_TYPED=5)
    flags = {"TF32": "TF32", "GPU_FALLBACK": "GPU_FALLBACK"}
    if major < 11:  # BuilderFlag.FP16 / INT8 are gone in TensorRT 11
        flags |= {"FP16": "FP16", "INT8": "INT8"}
    trt.BuilderFlag = types.SimpleNamespace(**flags)
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")
    trt.DeviceType = types.SimpleNamespace(GPU="GPU", DLA="DLA")

    class Network:
        def __init__(self, flags):
            self.flags, self.inputs = flags, []

        @property
        def num_inputs(self):
            return len(self.inputs)

        def get_input(self, i):
            return types.SimpleNamespace(name=self.inputs[i])

    class Parser:
        def __init__(self, network, logger):
            self.network, self.errors = network, []

        def parse_from_file(self, path):
            data = open(path, "rb").read()
            if b"EmosdkMaskedAttention" in data and not trt.registry.has():
                self.errors = ["Plugin not found: EmosdkMaskedAttention"]
                return False
            self.network.inputs = [i.name for i in onnx.load(path).graph.input]
            return True

        @property
        def num_errors(self):
            return len(self.errors)

        def get_error(self, i):
            return self.errors[i]

    class Config:
        def __init__(self):
            self.flags, self.default_device_type, self.DLA_core, self.profiles = (
                set(),
                "GPU",
                -1,
                [],
            )

        def set_memory_pool_limit(self, pool, size):
            self.workspace = size

        def set_flag(self, f):
            self.flags.add(f)

        def clear_flag(self, f):
            self.flags.discard(f)

        def add_optimization_profile(self, p):
            self.profiles.append(p)

        def create_timing_cache(self, blob):
            return blob

        def set_timing_cache(self, cache, ignore_mismatch):
            return True

        def get_timing_cache(self):
            return types.SimpleNamespace(serialize=lambda: b"timing")

    class Profile(dict):
        def set_shape(self, name, lo, mid, hi):
            self[name] = [list(lo), list(mid), list(hi)]

    class Builder:
        platform_has_fast_fp16 = True
        num_DLA_cores = 2  # noqa: N815 - TensorRT's name

        def __init__(self, logger):
            pass

        def create_network(self, flags):
            return Network(flags)

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            record = {
                "strongly_typed": bool(network.flags & (1 << 5)),
                "flags": sorted(config.flags),
                "device": config.default_device_type,
                "dla_core": config.DLA_core,
                "profiles": config.profiles,
            }
            return json.dumps(record).encode()

    class IProgressMonitor:
        def __init__(self):
            pass

    trt.Builder, trt.OnnxParser, trt.IProgressMonitor = Builder, Parser, IProgressMonitor
    return trt


def _fp16_copy(src, dst):
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    onnx.save(convert_float_to_float16(onnx.load(str(src)), keep_io_types=True), str(dst))
    return dst


def _built(path):
    import json

    header, blob = ET.read_engine(path)
    return header, json.loads(blob)


@pytest.mark.parametrize("version", ["10.3.0", "10.13.0.35", "11.1.0"])
def test_builder_precision_by_tensorrt_version(fake_gpu, fixture_bundle, tmp_path, version):
    import sys

    trt = _add_fake_builder(sys.modules["tensorrt"], version)
    b = load_bundle(fixture_bundle)
    src = b.graph_path("fusion")
    profiles = ET.engine_profiles(b.graphs["fusion"], b.audio, b.stream, windows_s=(1.0, 6.0))
    strong = version != "10.3.0"
    assert ET.strongly_typed(trt) is strong
    if strong:  # BuilderFlag.FP16 deprecated (10.12) or gone (11): fp16 comes from the graph
        with pytest.raises(ValueError, match="fp16 engine needs an fp16 graph"):
            ET.build_engine(src, tmp_path / "x.engine", profiles, precision="fp16")
        src = _fp16_copy(src, tmp_path / "fusion.fp16.onnx")
    header, built = _built(ET.build_engine(src, tmp_path / "x.engine", profiles, precision="fp16"))
    assert built["strongly_typed"] is strong
    assert built["flags"] == ([] if strong else ["FP16"])
    assert header.extra["typing"] == ("strong" if strong else "flags")
    assert built["profiles"] == [{k: [list(s) for s in v] for k, v in profiles.items()}]
    header, built = _built(
        ET.build_engine(b.graph_path("fusion"), tmp_path / "y.engine", profiles, precision="fp32")
    )
    assert "TF32" not in built["flags"] and header.precision == "fp32"


def test_builder_dla_engine_is_static_and_recorded(fake_gpu, fixture_bundle, tmp_path):
    import sys

    _add_fake_builder(sys.modules["tensorrt"], "10.3.0")
    b = load_bundle(fixture_bundle)
    static = ET.engine_profiles(b.graphs["fusion"], b.audio, b.stream, dla_core=1)
    out = ET.build_engine(
        b.graph_path("fusion"), tmp_path / "d.engine", static, precision="fp16", dla_core=1
    )
    header, built = _built(out)
    assert (built["device"], built["dla_core"]) == ("DLA", 1)
    assert sorted(built["flags"]) == ["FP16", "GPU_FALLBACK"]
    assert header.dla_core == 1
    with pytest.raises(ValueError, match="this device has 2"):
        ET.build_engine(
            b.graph_path("fusion"), tmp_path / "e", static, precision="fp16", dla_core=2
        )


def test_builder_loads_the_plugin_before_parsing(fake_gpu, plugin_library, tmp_path):
    import sys

    trt = _add_fake_builder(sys.modules["tensorrt"], "10.3.0")
    onnx_path = _plugin_onnx(tmp_path / "attn.onnx")
    profiles = {n: [[1, 1, 4, 16]] * 3 for n in "qkv"}
    header, _ = _built(ET.build_engine(onnx_path, tmp_path / "a.engine", profiles))
    assert header.plugins == ("EmosdkMaskedAttention",)
    assert trt.registry.loaded == [str(plugin_library)]
    ET.build_engine(onnx_path, tmp_path / "b.engine", profiles)  # idempotent: loaded once
    assert trt.registry.loaded == [str(plugin_library)]


def test_builder_without_the_plugin_library_says_how_to_build_it(fake_gpu, tmp_path, monkeypatch):
    import sys

    from emosdk import native

    _add_fake_builder(sys.modules["tensorrt"], "10.3.0")
    monkeypatch.setenv("EMOSDK_NATIVE_DIR", str(tmp_path / "none"))
    monkeypatch.setattr(native, "PACKAGE_NATIVE_DIR", tmp_path / "none")
    onnx_path = _plugin_onnx(tmp_path / "attn.onnx")
    with pytest.raises(BackendUnavailableError, match="EmosdkMaskedAttention is unavailable"):
        ET.build_engine(onnx_path, tmp_path / "a.engine", {n: [[1, 1, 4, 16]] * 3 for n in "qkv"})


def test_engine_for_builds_once_then_the_backend_finds_it(fake_gpu, fixture_bundle, tmp_path):
    """The CLI's engine_for and the backend agree on the cache key; no builder: clear error."""
    import sys

    from emosdk.backends.tensorrt import TensorRTBackend

    _add_fake_builder(sys.modules["tensorrt"], "10.3.0")
    b = load_bundle(fixture_bundle)
    spec, src = b.graphs["fusion"], b.graph_path("fusion")
    cache = ET.EngineCache(tmp_path / "cache")
    with pytest.raises(BackendUnavailableError, match="emosdk-export engine BUNDLE"):
        ET.engine_for(src, spec, b.audio, b.stream, precision="fp16", cache=cache, build=False)
    built = ET.engine_for(src, spec, b.audio, b.stream, precision="fp16", cache=cache)
    again = ET.find_engine(src, spec, b.audio, b.stream, precision="fp16", cache=cache)
    assert again == built and len(cache.entries()) == 1
    with pytest.raises(BackendUnavailableError, match="no cached fp16 TensorRT engine"):
        ET.find_engine(src, spec, b.audio, b.stream, precision="fp16", cache=cache, dla_core=0)
    # the backend's lookup lands on the same file: it opens it and finds the fake engine's x/y
    from emosdk.errors import ModelError

    with pytest.raises(ModelError, match="declares inputs"):
        TensorRTBackend(src, spec, precision="fp16", cache_dir=cache.root)
