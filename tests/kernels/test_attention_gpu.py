"""The fused kernels on a CUDA GPU against a float64 reference (STYLE.md item 7).

Error budget: each kernel's max error against the float64 reference is at most about twice that
of a naive implementation in the same precision (scores, softmax and weighted sum all in fp16,
or all in fp32), on fresh random inputs (the seed is printed on failure) including odd sequence
lengths; masked keys have no effect; rows with every key masked are zeros.

Runs both GPU implementations: the compiled CUDA kernel (built here with tools/build_kernels.sh
for this GPU's architecture when emosdk.native does not find it) and the Triton kernel.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from attention_cases import ALL_CASES, build_kernels, find_nvcc, random_inputs  # noqa: E402

from emosdk import native  # noqa: E402
from emosdk.kernels import attention_op  # noqa: E402

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU: run on the device machine"
)
REPO = Path(__file__).resolve().parents[2]
IMPLS = ("cuda", "triton")


@pytest.fixture(scope="module")
def cuda_library(tmp_path_factory):
    """The compiled kernel: the installed/EMOSDK_NATIVE_DIR one, else built now for this GPU."""
    saved = os.environ.get("EMOSDK_NATIVE_DIR")
    native.reset()
    if native.attention_library() is None:
        if find_nvcc() is None:
            pytest.skip(
                "no nvcc on this GPU machine: build libemosdk_attention elsewhere "
                "(tools/build_kernels.sh) and set EMOSDK_NATIVE_DIR"
            )
        build = tmp_path_factory.mktemp("kernels_gpu_build")
        major, minor = torch.cuda.get_device_capability()
        build_kernels(build, archs=f"{major}{minor}")
        os.environ["EMOSDK_NATIVE_DIR"] = str(build)
        native.reset()
    lib = native.require_attention_library()
    n, err = lib.device_count()
    assert n > 0, lib.error_string(err)
    yield lib
    if saved is None:
        os.environ.pop("EMOSDK_NATIVE_DIR", None)
    else:
        os.environ["EMOSDK_NATIVE_DIR"] = saved
    native.reset()


def run_impl(impl: str, q, k, v, mask, scale):
    if impl == "cuda":
        return attention_op.cuda_kernel_attention(q, k, v, mask, scale)
    if not native.triton_installed():
        pytest.skip("triton is not installed")
    return attention_op.triton_attention(q, k, v, mask, scale)


@pytest.fixture(params=IMPLS)
def impl(request, cuda_library):
    return request.param


def naive(q, k, v, mask, scale):
    """Every step in the input precision: the error yardstick."""
    s = (q @ k.transpose(-1, -2)) * scale
    s = s.masked_fill(~(mask != 0)[:, None, None, :], float("-inf"))
    return torch.nan_to_num(torch.softmax(s, dim=-1)) @ v


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=["fp16", "fp32"])
@pytest.mark.parametrize("case", ALL_CASES, ids=lambda c: "x".join(map(str, c)))
def test_error_within_twice_naive(impl, dtype, case):
    seed = secrets.randbits(32)
    rng = np.random.default_rng(seed)
    q, k, v, mask = (torch.from_numpy(x).cuda() for x in random_inputs(rng, *case))
    scale = case[-1] ** -0.5
    ref = attention_op.reference_attention(q, k, v, mask, scale)  # float64
    x = [t.to(dtype) for t in (q, k, v)]
    prev_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        naive_err = (naive(*x, mask, scale).double() - ref).abs().max().item()
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev_tf32
    out = run_impl(impl, *x, mask, scale)
    torch.cuda.synchronize()
    assert out.dtype == dtype and out.shape == q.shape and torch.isfinite(out).all()
    err = (out.double() - ref).abs().max().item()
    eps = 1e-6 if dtype == torch.float32 else 1e-5
    assert err <= 2 * naive_err + eps, f"seed={seed} err={err:.3g} naive={naive_err:.3g}"


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=["fp16", "fp32"])
def test_masked_keys_have_no_effect(impl, dtype):
    rng = np.random.default_rng(secrets.randbits(32))
    q, k, v, mask = (torch.from_numpy(x).cuda() for x in random_inputs(rng, 4, 4, 75, 150, 16))
    q, k, v = (t.to(dtype) for t in (q, k, v))
    base = run_impl(impl, q, k, v, mask, 0.25)
    gone = (mask == 0)[:, None, :, None]
    k2 = k.masked_fill(gone, 100.0)
    v2 = v.masked_fill(gone, -100.0)
    torch.testing.assert_close(run_impl(impl, q, k2, v2, mask, 0.25), base, atol=0, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=["fp16", "fp32"])
def test_all_masked_rows_are_zero(impl, dtype):
    q, k, v = (torch.randn(3, 4, s, 16, device="cuda", dtype=dtype) for s in (5, 31, 31))
    mask = torch.ones(3, 31, device="cuda")
    mask[1] = 0
    out = run_impl(impl, q, k, v, mask, 0.25)
    assert torch.isfinite(out).all() and (out[1] == 0).all() and (out[0] != 0).any()
    empty = run_impl(impl, q, k[:, :, :0], v[:, :, :0], None, 0.25)
    assert (empty == 0).all()


def test_strided_layout_and_broadcast_mask(impl):
    # [B, T, H, D] projections viewed as [B, H, T, D] without a copy (the model's layout)
    x = torch.randn(2, 25, 4, 16, device="cuda", dtype=torch.float16)
    kv = torch.randn(2, 6, 2, 4, 16, device="cuda", dtype=torch.float16)
    q, k, v = x.transpose(1, 2), kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)
    mask = torch.tensor([[1, 1, 0, 1, 0, 1]], device="cuda", dtype=torch.float32)
    out = run_impl(impl, q, k, v, mask, 0.25)
    ref = run_impl(impl, q.contiguous(), k.contiguous(), v.contiguous(), mask.expand(2, 6), 0.25)
    torch.testing.assert_close(out, ref, atol=0, rtol=0)


def test_cuda_kernel_runs_on_the_current_stream(cuda_library):
    q, k, v = (torch.randn(8, 4, s, 16, device="cuda", dtype=torch.float16) for s in (16, 75, 75))
    mask = (torch.rand(8, 75, device="cuda") > 0.3).float()
    expected = attention_op.cuda_kernel_attention(q, k, v, mask, 0.25)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        out = attention_op.cuda_kernel_attention(q, k, v, mask, 0.25)
    torch.cuda.current_stream().wait_stream(stream)
    torch.testing.assert_close(out, expected, atol=0, rtol=0)


@pytest.mark.parametrize("choice", ["cuda", "triton", "reference", "auto"])
def test_custom_op_dispatch_on_cuda(cuda_library, monkeypatch, choice):
    if choice == "triton" and not native.triton_installed():
        pytest.skip("triton is not installed")
    monkeypatch.setenv("EMOSDK_ATTENTION_IMPL", choice)
    q, k, v = (torch.randn(2, 4, s, 16, device="cuda") for s in (6, 25, 25))
    mask = torch.ones(2, 25, device="cuda")
    mask[0, 3:] = 0
    out = torch.ops.emosdk.masked_attention(q, k, v, mask, 0.0)
    ref = attention_op.reference_attention(q.double(), k.double(), v.double(), mask, 0.25)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)
