"""Fused masked attention in Triton (the same op as kernels/emosdk_attention.cu).

One program per (tile of BLOCK_M queries, batch x head). The program walks the keys in tiles of
BLOCK_N with an online softmax in fp32 (log2 domain), skipping padded and masked keys by giving
them a score of -inf; a running max that is still -inf is replaced by 0 before exponentiating, so
a row whose keys are all masked ends with l = 0 and is written as zeros instead of NaN.

fp16 inputs: both matmuls run on tensor cores with fp32 accumulation (p is rounded to fp16 for
the second one, as in flash attention). fp32 inputs: ``input_precision="ieee"`` so that the
result is true fp32 (no TF32).

This module imports torch and triton; it is imported only by
:func:`emosdk.kernels.attention_op.triton_attention`. With ``TRITON_INTERPRET=1`` set before the
import it also runs on CPU tensors (Triton's interpreter), which is how the CPU tests exercise it.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634


@triton.jit
def _masked_attention_fwd(
    Q, K, V, M, Out,
    sqb, sqh, sqt, skb, skh, skt, svb, svh, svt, sob, soh, sot, smb,
    H, Tq, Tk, scale_log2,
    HAS_MASK: tl.constexpr,
    D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    IEEE: tl.constexpr,
):  # fmt: skip
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D)
    row_ok = offs_m < Tq

    q_ptrs = Q + b * sqb + h * sqh + offs_m[:, None] * sqt + offs_d[None, :]
    q = tl.load(q_ptrs, mask=row_ok[:, None], other=0.0)  # (BLOCK_M, D)
    k_base = K + b * skb + h * skh
    v_base = V + b * svb + h * svh

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, D], dtype=tl.float32)
    for start in range(0, Tk, BLOCK_N):
        cols = start + offs_n
        keep = cols < Tk
        kt = tl.load(
            k_base + cols[None, :] * skt + offs_d[:, None], mask=keep[None, :], other=0.0
        )  # (D, BLOCK_N)
        v = tl.load(v_base + cols[:, None] * svt + offs_d[None, :], mask=keep[:, None], other=0.0)
        if HAS_MASK:
            present = tl.load(M + b * smb + cols, mask=keep, other=0.0)
            keep = keep & (present != 0.0)
        if IEEE:
            s = tl.dot(q, kt, input_precision="ieee")
        else:
            s = tl.dot(q, kt)
        s = tl.where(keep[None, :], s * scale_log2, float("-inf"))  # (BLOCK_M, BLOCK_N)
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp2(m_i - m_safe)
        p = tl.exp2(s - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        if IEEE:
            acc = tl.dot(p, v, acc, input_precision="ieee")
        else:
            acc = tl.dot(p.to(v.dtype), v, acc)
        m_i = m_new

    out = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
    o_ptrs = Out + b * sob + h * soh + offs_m[:, None] * sot + offs_d[None, :]
    tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=row_ok[:, None])


def block_sizes(q_len: int, kv_len: int) -> tuple[int, int]:
    """(BLOCK_M, BLOCK_N) for the fusion model's short sequences (tl.dot needs >= 16)."""
    block_m = 16 if q_len <= 16 else (32 if q_len <= 32 else 64)
    block_n = 16 if kv_len <= 16 else (32 if kv_len <= 32 else 64)
    return block_m, block_n


def masked_attention_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    scale: float,
) -> torch.Tensor:
    """Launch the kernel: q ``[B, H, Tq, D]``, k/v ``[B, H, Tk, D]``, mask fp32 ``[B, Tk]``.

    D must be 16, 32 or 64; dtype fp16 or fp32; ``scale > 0``. Returns a contiguous output.
    """
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    if D not in (16, 32, 64):
        raise ValueError(f"triton kernel: head_dim must be 16, 32 or 64, got {D}")
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    out = torch.empty((B, H, Tq, D), dtype=q.dtype, device=q.device)
    if B == 0 or H == 0 or Tq == 0:
        return out
    if Tk == 0:
        return out.zero_()
    if mask is not None:
        mask = mask.to(torch.float32)
        mask = mask if mask.stride(-1) == 1 else mask.contiguous()
        smb = 0 if mask.shape[0] == 1 else mask.stride(0)
    else:
        smb = 0
    block_m, block_n = block_sizes(Tq, Tk)
    grid = (triton.cdiv(Tq, block_m), B * H)
    _masked_attention_fwd[grid](
        q, k, v, mask if mask is not None else q, out,
        *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *out.stride()[:3], smb,
        H, Tq, Tk, scale * LOG2E,
        HAS_MASK=mask is not None,
        D=D,
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        IEEE=q.dtype == torch.float32,
        num_warps=4,
    )  # fmt: skip
    return out
