"""precision='fp16' on ONNX Runtime: the CUDA (or TensorRT) provider, never a silent CPU run.
(Here, not in tests/sdk: the fp16 graphs are made by emosdk.export, which needs onnx.)

The GPU run itself is in tools/gpu_check.py (`emosdk-bench --engine fp16` on the CUDA provider);
here: what a machine without one says, the explicit CPU check mode, and ONNX Runtime's silent
fall-back to the CPU when its CUDA provider cannot start, caught on a real session."""

from __future__ import annotations

import shutil

import numpy as np
import onnxruntime as ort
import pytest

from emosdk.backends import create_backend
from emosdk.backends.onnxruntime import provider_chain
from emosdk.errors import BackendUnavailableError
from emosdk.export.quantize import fp16_bundle
from emosdk.models.bundle import load_bundle

GPU = {"CUDAExecutionProvider", "TensorrtExecutionProvider"}


@pytest.fixture(scope="module")
def fp16_fixture(fixture_bundle, tmp_path_factory):
    dst = tmp_path_factory.mktemp("fp16") / "bundle"
    shutil.copytree(fixture_bundle, dst)
    fp16_bundle(dst, roles=("face_encoder",))
    return load_bundle(dst)


def _face(b):
    return b.path / b.meta["variants"]["fp16"]["face_encoder"], b.graphs["face_encoder"]


@pytest.mark.skipif(
    bool(GPU & set(ort.get_available_providers())), reason="a GPU provider is installed here"
)
def test_fp16_without_a_gpu_provider_says_why_and_what_to_install(fp16_fixture):
    path, spec = _face(fp16_fixture)
    with pytest.raises(BackendUnavailableError) as e:
        create_backend("auto", path, spec, precision="fp16")
    msg = str(e.value)
    assert "CUDA" in msg and "onnxruntime-gpu" in msg and "CPUExecutionProvider" in msg
    with pytest.raises(BackendUnavailableError, match="onnxruntime-gpu"):
        create_backend("onnxruntime", path, spec, precision="fp16")


def test_fp16_on_the_cpu_only_when_asked_for_by_name(fp16_fixture):
    path, spec = _face(fp16_fixture)
    be = create_backend(
        "onnxruntime", path, spec, precision="fp16", providers=("CPUExecutionProvider",)
    )
    assert be.device == "CPUExecutionProvider"
    x = np.random.default_rng(0).normal(size=(3, 1, 48, 48)).astype(np.float32)
    out = be.infer({"face": x})
    ref = create_backend("onnxruntime", fp16_fixture.graph_path("face_encoder"), spec).infer(
        {"face": x}
    )
    for n in ref:
        assert out[n].dtype == np.float32 and np.abs(out[n] - ref[n]).max() < 0.05
    be.close()


def test_fp16_provider_chain_puts_the_gpu_first():
    avail = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert provider_chain(avail, None, "fp16", None) == avail  # CPU stays for unsupported nodes
    chain = provider_chain(["TensorrtExecutionProvider", *avail], None, "fp16", None)
    assert chain[0][0] == "TensorrtExecutionProvider" and chain[0][1]["trt_fp16_enable"] is True


def test_a_cuda_provider_that_cannot_start_is_not_a_silent_cpu_run(fp16_fixture, monkeypatch):
    """ONNX Runtime answers a CUDA provider it cannot use (here: not built in; on a GPU machine:
    libcudnn missing, driver too old) with a log line and a CPU session. fp16 refuses that."""
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("the CUDA provider is really installed here: it starts (tools/gpu_check.py)")
    real = ort.get_available_providers()
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", *real])
    path, spec = _face(fp16_fixture)
    with pytest.raises(BackendUnavailableError, match="could not start it and would run on"):
        create_backend("auto", path, spec, precision="fp16")


def test_an_fp32_graph_is_not_run_as_fp16(fp16_fixture):
    """Without the bundle's fp16 variant, 'fp16' on the CUDA or CPU provider would be fp32 under
    another name: refused, with the command that makes the variant."""
    spec = fp16_fixture.graphs["face_encoder"]
    fp32_graph = fp16_fixture.graph_path("face_encoder")
    with pytest.raises(BackendUnavailableError, match="emosdk-export fp16 BUNDLE"):
        create_backend(
            "onnxruntime", fp32_graph, spec, precision="fp16", providers=("CPUExecutionProvider",)
        )
