"""emosdk.native: the one module that knows whether the native pieces exist, and the CUDA build.

The build test compiles kernels/ with nvcc (nothing runs on a GPU) and then drives the compiled
library's C ABI through ctypes on this machine: argument checks and error strings work without a
GPU, and the CUDA runtime reports the missing device instead of crashing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from attention_cases import build_kernels, find_nvcc

from emosdk import native
from emosdk.errors import BackendUnavailableError

REPO = Path(__file__).resolve().parents[2]
DEFAULT_ARCHS = ("80", "86", "87", "89", "90")


@pytest.fixture
def clean_native(monkeypatch, tmp_path):
    """No native library anywhere: an empty EMOSDK_NATIVE_DIR and no installed copies."""
    monkeypatch.setenv("EMOSDK_NATIVE_DIR", str(tmp_path / "empty"))
    monkeypatch.setattr(native, "PACKAGE_NATIVE_DIR", tmp_path / "no_native")
    native.reset()
    yield tmp_path
    native.reset()


def test_missing_library_is_reported_with_how_to_build_it(clean_native):
    assert native.attention_library() is None
    with pytest.raises(BackendUnavailableError) as e:
        native.require_attention_library()
    msg = str(e.value)
    assert "EMOSDK_BUILD_NATIVE=1 pip install ." in msg and "tools/build_kernels.sh" in msg
    assert "not found in" in msg and str(clean_native / "empty") in msg
    assert native.trt_plugin_path() is None
    with pytest.raises(BackendUnavailableError, match="NvInfer.h.*libnvinfer-dev"):
        native.require_trt_plugin()
    s = native.status()
    assert s["attention"] is False and s["trt_plugin"] is None and "cuda_devices" not in s


def test_disable_knob_hides_everything(clean_native, monkeypatch):
    d = clean_native / "empty"
    d.mkdir()
    (d / "libemosdk_trt_plugin.so").write_bytes(b"")
    assert native.trt_plugin_path() == d / "libemosdk_trt_plugin.so"
    monkeypatch.setenv("EMOSDK_DISABLE_NATIVE", "1")
    native.reset()
    assert native.trt_plugin_path() is None and not native.triton_installed()
    assert "EMOSDK_DISABLE_NATIVE" in native.status()["attention_detail"]


def test_unloadable_library_says_why(clean_native):
    d = clean_native / "empty"
    d.mkdir()
    (d / "libemosdk_attention.so").write_bytes(b"not an ELF file")
    assert native.attention_library() is None
    with pytest.raises(BackendUnavailableError, match="failed to load"):
        native.require_attention_library()


def test_unknown_piece_is_rejected():
    with pytest.raises(ValueError, match="piece"):
        native.find_library("cudnn")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, str]:
    """Run tools/build_kernels.sh into a fresh directory; (build dir, its output)."""
    build = tmp_path_factory.mktemp("kernels_build")
    return build, build_kernels(build)


def test_build_kernels_compiles_every_architecture(built):
    build, log = built
    if find_nvcc() is None or shutil.which("cmake") is None:
        assert "skipped the CUDA build" in log  # no toolkit: a clear message, exit 0
        return
    lib = build / "libemosdk_attention.so"
    assert lib.is_file() and lib.stat().st_size > 0
    assert list(build.rglob("emosdk_attention.cu.o")), "no object file for the kernel"
    for arch in DEFAULT_ARCHS:  # ptxas -v ran for every architecture, for every variant
        assert log.count(f"for 'sm_{arch}'") >= 6, f"sm_{arch} kernels missing from the build"
    assert "0 bytes spill stores" in log and "bytes spill stores" in log
    assert not [ln for ln in log.splitlines() if "spill stores" in ln and "0 bytes spill" not in ln]
    if "building the TensorRT plugin" in log:
        assert (build / "libemosdk_trt_plugin.so").is_file()
    else:
        assert "skipped the TensorRT plugin" in log and "NvInfer.h" in log
    nm = shutil.which("nm")
    if nm:
        syms = subprocess.run(
            [nm, "-D", "--defined-only", str(lib)], capture_output=True, text=True, check=True
        ).stdout
        for name in (
            "emosdk_attention_forward",
            "emosdk_attention_abi_version",
            "emosdk_cuda_device_count",
            "emosdk_attention_error_string",
        ):
            assert name in syms


def test_compiled_library_c_abi_without_running_a_kernel(built, monkeypatch):
    build, _ = built
    if not (build / "libemosdk_attention.so").is_file():
        pytest.skip("no CUDA toolkit here: nothing was compiled (checked by the test above)")
    monkeypatch.setenv("EMOSDK_NATIVE_DIR", str(build))
    native.reset()
    try:
        lib = native.require_attention_library()
        assert lib.path == build / "libemosdk_attention.so"
        n, err = lib.device_count()
        assert n >= 0 and (n > 0) == (err == 0)
        assert lib.error_string(0) == "success"
        assert "head_dim" in lib.error_string(-1)

        p = lib.contiguous(2, 4, 5, 31, 16)
        assert list(p.q_stride) == [4 * 5 * 16, 5 * 16, 16]
        assert list(p.k_stride) == [4 * 31 * 16, 31 * 16, 16] and p.mask_stride == 31
        p.head_dim = 24
        with pytest.raises(RuntimeError, match="head_dim must be 16, 32 or 64"):
            lib.forward(p)
        p.head_dim, p.dtype = 16, 7
        with pytest.raises(RuntimeError, match="dtype"):
            lib.forward(p)
        p.dtype = native.F16
        with pytest.raises(RuntimeError, match="NULL"):
            lib.forward(p)  # valid shape, no pointers: refused before any CUDA call
        p.q_len = 0
        lib.forward(p)  # nothing to compute: success without touching the device
        s = native.status()
        assert s["attention"] is True and s["cuda_devices"] == n
    finally:
        native.reset()


def test_native_module_does_not_import_torch():
    code = "import sys, emosdk.native as n; n.status(); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow
def test_opt_in_native_wheel_puts_the_library_inside_the_package(tmp_path):
    """EMOSDK_BUILD_NATIVE=1: scikit-build-core runs CMake and installs into emosdk/_native/."""
    pytest.importorskip("scikit_build_core")
    env = {
        **os.environ,
        "EMOSDK_BUILD_NATIVE": "1",
        "CMAKE_ARGS": "-DCMAKE_CUDA_ARCHITECTURES=87",  # one architecture keeps it quick
    }
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    r = subprocess.run(
        [*cmd, "-w", str(tmp_path), str(REPO)], env=env, capture_output=True, text=True
    )
    if find_nvcc() is None:  # a requested native build without CUDA fails loudly
        assert r.returncode != 0 and "no CUDA compiler was found" in r.stdout + r.stderr
        return
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    (wheel,) = tmp_path.glob("*.whl")
    assert not wheel.name.endswith("-py3-none-any.whl")  # a platform wheel
    names = zipfile.ZipFile(wheel).namelist()
    assert "emosdk/_native/libemosdk_attention.so" in names
    assert "emosdk/native.py" in names and "emosdk/kernels/attention_op.py" in names
