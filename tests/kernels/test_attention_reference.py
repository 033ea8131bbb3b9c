"""The custom op emosdk::masked_attention on CPU: its fp32 reference, masks, tracing."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from attention_cases import ALL_CASES, naive_attention, random_inputs  # noqa: E402

from emosdk.errors import InputError  # noqa: E402
from emosdk.kernels import attention_op, masked_attention  # noqa: E402


def t(x: np.ndarray, dtype=torch.float32) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)).to(dtype)


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda c: "x".join(map(str, c)))
def test_cpu_op_matches_naive_float64(case):
    rng = np.random.default_rng(sum(case))
    q, k, v, mask = random_inputs(rng, *case)
    expected = naive_attention(q, k, v, mask)
    out = torch.ops.emosdk.masked_attention(t(q), t(k), t(v), t(mask), 0.0)
    assert out.dtype == torch.float32 and out.shape == q.shape
    np.testing.assert_allclose(out.numpy(), expected, atol=2e-6, rtol=1e-5)
    out64 = masked_attention(t(q, torch.float64), t(k, torch.float64), t(v, torch.float64), t(mask))
    np.testing.assert_allclose(out64.numpy(), expected, atol=1e-12, rtol=1e-12)


def test_fp16_error_is_within_twice_a_naive_fp16_implementation():
    rng = np.random.default_rng(7)
    for case in ALL_CASES:
        q, k, v, mask = random_inputs(rng, *case)
        expected = naive_attention(q, k, v, mask)
        h = [t(x, torch.float16) for x in (q, k, v)]
        out = masked_attention(*h, t(mask)).double().numpy()
        # naive fp16: every step in fp16 (scores, softmax, weighted sum)
        s = (h[0] @ h[1].transpose(-1, -2)) * torch.tensor(case[-1] ** -0.5, dtype=torch.float16)
        s = s.masked_fill(~(t(mask) != 0)[:, None, None, :], float("-inf"))
        naive = torch.nan_to_num(torch.softmax(s, dim=-1)) @ h[2]
        naive_err = np.abs(naive.double().numpy() - expected).max()
        err = np.abs(out - expected).max()
        assert err <= 2 * naive_err + 1e-4, (case, err, naive_err)


def test_masked_keys_have_no_effect():
    rng = np.random.default_rng(3)
    q, k, v, mask = random_inputs(rng, 2, 4, 15, 75, 16)
    base = masked_attention(t(q), t(k), t(v), t(mask))
    missing = mask == 0
    assert missing.any()
    k2, v2 = k.copy(), v.copy()
    k2[np.broadcast_to(missing[:, None, :, None], k.shape)] = 1e4  # would dominate if used
    v2[np.broadcast_to(missing[:, None, :, None], v.shape)] = -1e4
    changed = masked_attention(t(q), t(k2), t(v2), t(mask))
    torch.testing.assert_close(changed, base, atol=0, rtol=0)
    # and equals attention over the present keys alone
    b = 1
    keep = mask[b] != 0
    alone = masked_attention(t(q[b : b + 1]), t(k[b : b + 1, :, keep]), t(v[b : b + 1, :, keep]))
    torch.testing.assert_close(base[b : b + 1], alone, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_all_masked_rows_are_zero_not_nan(dtype):
    rng = np.random.default_rng(5)
    q, k, v, mask = random_inputs(rng, 3, 4, 5, 31, 16)
    mask[1] = 0.0
    out = masked_attention(t(q, dtype), t(k, dtype), t(v, dtype), t(mask))
    assert torch.isfinite(out).all()
    assert (out[1] == 0).all()
    assert (out[0].abs().sum() > 0) and (out[2].abs().sum() > 0)
    empty = masked_attention(t(q, dtype), t(k[:, :, :0], dtype), t(v[:, :, :0], dtype))
    assert empty.shape == q.shape and (empty == 0).all()


def test_mask_forms_and_scale():
    rng = np.random.default_rng(11)
    q, k, v, mask = random_inputs(rng, 2, 2, 6, 9, 32)
    mask[:] = mask[1]
    ref = masked_attention(t(q), t(k), t(v), t(mask))
    torch.testing.assert_close(masked_attention(t(q), t(k), t(v), t(mask) != 0), ref)
    torch.testing.assert_close(masked_attention(t(q), t(k), t(v), t(mask[:1])), ref)
    no_mask = masked_attention(t(q), t(k), t(v), None, scale=0.1)
    np.testing.assert_allclose(no_mask.numpy(), naive_attention(q, k, v, None, 0.1), atol=2e-6)


def test_matches_torch_sdpa_with_boolean_mask():
    rng = np.random.default_rng(13)
    q, k, v, mask = random_inputs(rng, 4, 4, 16, 75, 16)
    mask[0, 0] = 1.0  # no all-masked row: SDPA gives NaN there
    sdpa = torch.nn.functional.scaled_dot_product_attention(
        t(q), t(k), t(v), attn_mask=(t(mask) != 0)[:, None, None, :]
    )
    torch.testing.assert_close(
        masked_attention(t(q), t(k), t(v), t(mask)), sdpa, atol=1e-5, rtol=1e-5
    )


def test_bad_arguments_say_what_was_expected():
    q = torch.zeros(1, 4, 5, 16)
    k = torch.zeros(1, 4, 7, 16)
    with pytest.raises(InputError, match=r"\[B, H, Tq, D\]"):
        masked_attention(q[0], k, k)
    with pytest.raises(InputError, match="k and v"):
        masked_attention(q, k, k[..., :8])
    with pytest.raises(InputError, match="mask must be"):
        masked_attention(q, k, k, torch.ones(1, 6))
    with pytest.raises(InputError, match="dtype"):
        masked_attention(q, k.half(), k)


def test_impl_knob_is_validated(monkeypatch):
    monkeypatch.setenv("EMOSDK_ATTENTION_IMPL", "fastest")
    with pytest.raises(InputError, match="EMOSDK_ATTENTION_IMPL"):
        attention_op._impl()
    monkeypatch.setenv("EMOSDK_ATTENTION_IMPL", "Triton")
    assert attention_op._impl() == "triton"


def test_torch_export_traces_the_op_with_dynamic_shapes():
    from emosdk.export.attention import MaskedAttention

    q, k, v = torch.randn(2, 4, 6, 16), torch.randn(2, 4, 25, 16), torch.randn(2, 4, 25, 16)
    mask = torch.ones(2, 25)
    batch, keys = torch.export.Dim("batch", max=64), torch.export.Dim("keys", max=512)
    ep = torch.export.export(
        MaskedAttention(),
        (q, k, v, mask),
        dynamic_shapes=({0: batch}, {0: batch, 2: keys}, {0: batch, 2: keys}, {0: batch, 1: keys}),
    )
    targets = [n.target for n in ep.graph.nodes if n.op == "call_function"]
    assert torch.ops.emosdk.masked_attention.default in targets
    q2, k2 = torch.randn(3, 4, 6, 16), torch.randn(3, 4, 40, 16)
    m2 = torch.ones(3, 40)
    torch.testing.assert_close(ep.module()(q2, k2, k2, m2), masked_attention(q2, k2, k2, m2))


def test_import_emosdk_imports_neither_torch_nor_triton():
    code = (
        "import sys, emosdk, emosdk.kernels, emosdk.native as n; n.status(); "
        "assert 'torch' not in sys.modules and 'triton' not in sys.modules, 'imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


TRITON_SCRIPT = r"""
import numpy as np, torch, sys
sys.path.insert(0, sys.argv[1])
from attention_cases import ALL_CASES, naive_attention, random_inputs
from emosdk.kernels.triton_attention import masked_attention_triton
rng = np.random.default_rng(0)
for case in ALL_CASES[:4] + ALL_CASES[6:]:
    q, k, v, mask = random_inputs(rng, *case)
    mask[0] = 0.0
    exp = naive_attention(q, k, v, mask)
    for dt, budget in ((torch.float32, 1e-5), (torch.float16, 2e-2)):
        tq, tk, tv = (torch.from_numpy(x).to(dt) for x in (q, k, v))
        out = masked_attention_triton(tq, tk, tv, torch.from_numpy(mask), case[-1] ** -0.5)
        assert out.dtype == dt and torch.isfinite(out).all()
        err = np.abs(out.double().numpy() - exp).max()
        assert err < budget, (case, dt, err)
        assert (out[0] == 0).all()
print("triton interpreter OK")
"""


@pytest.mark.skipif(
    __import__("importlib").util.find_spec("triton") is None,
    reason="triton is not installed (it comes with torch's CUDA wheels)",
)
def test_triton_kernel_under_the_interpreter_on_cpu():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    here = os.path.dirname(__file__)
    r = subprocess.run(
        [sys.executable, "-c", TRITON_SCRIPT, here],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "triton interpreter OK" in r.stdout
