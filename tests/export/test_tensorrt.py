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
    with pytest.raises(BackendUnavailableError, match="no usable CUDA GPU"):
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
    from emosdk.export.cli import random_inputs

    bundle_dir = tmp_path / "bundle"
    shutil.copytree(fixture_bundle, bundle_dir)
    b = load_bundle(bundle_dir)
    cache = tmp_path / "cache"
    tol = 1e-3 if precision == "fp32" else 5e-2
    for role, spec in b.graphs.items():
        trt_b = TensorRTBackend(
            b.graph_path(role), spec, precision=precision, cache_dir=cache, windows_s=(1.0, 6.0)
        )
        ort_b = OnnxRuntimeBackend(b.graph_path(role), spec)
        for batch, w in [(1, 3.0), (1, 3.0), (1, 3.0), (4, 6.0), (2, 1.0)]:
            feeds = random_inputs(role, batch, w, b, 16, 16)
            feeds = dict(zip([t.name for t in spec.inputs], feeds))
            got, ref = trt_b.infer(feeds), ort_b.infer(feeds)
            for n in ref:
                assert got[n].shape == ref[n].shape
                assert np.abs(got[n] - ref[n]).max() < tol, (role, n, batch, w)
        with pytest.raises(InputError, match="outside the engine's range"):
            feeds = random_inputs(role, 1, 7.0, b, 16, 16)  # longer than any profile window
            trt_b.infer(dict(zip([t.name for t in spec.inputs], feeds)))
        trt_b.close()
        ort_b.close()
    entries = ET.EngineCache(cache).entries()
    assert len(entries) == 3 and {h.precision for _, h in entries} == {precision}
    # the second open uses the cache (no build)
    again = TensorRTBackend(
        b.graph_path("fusion"),
        b.graphs["fusion"],
        precision=precision,
        cache_dir=cache,
        windows_s=(1.0, 6.0),
        build=False,
    )
    again.close()


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
        self.cudaMemcpyKind = types.SimpleNamespace(
            cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2
        )
        self.cudaStreamCaptureMode = types.SimpleNamespace(cudaStreamCaptureModeThreadLocal=1)

    def cudaGetDeviceProperties(self, dev):  # noqa: N802 - the cuda-python names
        import types

        return 0, types.SimpleNamespace(name=b"Fake GPU\x00\x00")

    def cudaGetErrorString(self, err):  # noqa: N802
        return 0, b"fake error"

    def cudaSetDevice(self, dev):  # noqa: N802
        return (0,)

    def cudaStreamCreate(self):  # noqa: N802
        return 0, 7

    def cudaStreamSynchronize(self, s):  # noqa: N802
        return (0,)

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

        if kind == 1:
            base, buf = self._find(dst)
            buf[dst - base : dst - base + count] = ctypes.string_at(src, count)
        else:
            base, buf = self._find(src)
            ctypes.memmove(dst, bytes(buf[src - base : src - base + count]), count)
        return (0,)

    def cudaStreamBeginCapture(self, s, mode):  # noqa: N802
        self.capturing = []
        return (0,)

    def cudaStreamEndCapture(self, s):  # noqa: N802
        g, self.capturing = self.capturing, None
        self.graphs[id(g)] = g
        return 0, id(g)

    def cudaGraphInstantiate(self, g, flags):  # noqa: N802
        self.events.append("capture")
        return 0, g

    def cudaGraphLaunch(self, exe, s):  # noqa: N802
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
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, blob):
            assert blob == b"fake engine"
            return Engine(([1, 2], [1, 4], [2, 8]))

    trt.Logger, trt.Runtime = Logger, Runtime
    trt.nptype = lambda t: np.float32
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
        "execute",  # first call with these shapes
        "capture",  # first repeat: captured ...
        "replay",  # ... and replayed
        "replay",
        "graph_destroy",  # shape change drops the graph
        "execute",
        "execute",  # back to the first shapes: a plain enqueue again
    ]
    with pytest.raises(InputError, match="outside the engine's range"):
        be.infer({"x": np.zeros((3, 4), np.float32)})
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
