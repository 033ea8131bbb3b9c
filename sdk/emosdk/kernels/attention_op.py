"""The torch custom op ``emosdk::masked_attention`` and its CPU, CUDA and fake implementations.

Importing this module imports torch and registers the op (once per process). triton and the
native library are touched only when a CUDA tensor reaches the op.

Environment variable read here (per call, on CUDA tensors):

``EMOSDK_ATTENTION_IMPL``
    ``auto`` (default): the compiled CUDA kernel if built, else Triton if installed, else the
    reference in torch ops; ``cuda`` / ``triton``: that one or a
    :class:`~emosdk.errors.BackendUnavailableError` saying how to get it; ``reference``: the
    reference in torch ops.

The op is inference-only (no autograd formula): training keeps
``F.scaled_dot_product_attention``.
"""

from __future__ import annotations

import logging
import math
import os

import torch

from .. import native
from ..errors import BackendUnavailableError, InputError

logger = logging.getLogger("emosdk")

IMPLS = ("auto", "cuda", "triton", "reference")
KERNEL_HEAD_DIMS = (16, 32, 64)
KERNEL_DTYPES = (torch.float32, torch.float16)


def default_scale(head_dim: int) -> float:
    return 1.0 / math.sqrt(head_dim)


def reference_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    scale: float = 0.0,
) -> torch.Tensor:
    """Masked softmax attention in fp32 (fp64 for fp64 inputs); the op's CPU implementation.

    ``scale <= 0`` means ``1 / sqrt(D)``. Rows whose keys are all masked are zeros.
    """
    if scale <= 0:
        scale = default_scale(q.shape[-1])
    acc = torch.promote_types(q.dtype, torch.float32)
    s = torch.matmul(q.to(acc), k.to(acc).transpose(-1, -2)) * scale  # (B, H, Tq, Tk)
    if mask is not None:
        keep = (mask != 0)[:, None, None, :]  # (B, 1, 1, Tk)
        s = s.masked_fill(~keep, float("-inf"))
    m = s.amax(dim=-1, keepdim=True) if s.shape[-1] else s.new_zeros(*s.shape[:-1], 1)
    m = torch.where(torch.isneginf(m), torch.zeros_like(m), m)  # all-masked rows: no NaN
    p = torch.exp(s - m)
    denom = p.sum(dim=-1, keepdim=True)
    out = torch.matmul(p, v.to(acc)) / torch.where(denom == 0, torch.ones_like(denom), denom)
    return out.to(q.dtype)


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> None:
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise InputError(
            "masked_attention: expected q [B, H, Tq, D], k and v [B, H, Tk, D], got shapes "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    B, H, _, D = q.shape
    if k.shape != v.shape or k.shape[0] != B or k.shape[1] != H or k.shape[3] != D:
        raise InputError(
            "masked_attention: k and v must be [B, H, Tk, D] matching q "
            f"{tuple(q.shape)}, got {tuple(k.shape)} and {tuple(v.shape)}"
        )
    if not (q.dtype == k.dtype == v.dtype) or not q.is_floating_point():
        raise InputError(
            f"masked_attention: q, k, v must share one float dtype, got {q.dtype}, {k.dtype}, "
            f"{v.dtype}"
        )
    if mask is not None and (
        mask.dim() != 2 or mask.shape[1] != k.shape[2] or mask.shape[0] not in (1, B)
    ):
        raise InputError(
            f"masked_attention: mask must be [B, Tk] = [{B}, {k.shape[2]}] (or [1, Tk]), got "
            f"{tuple(mask.shape)}"
        )


def _impl() -> str:
    impl = os.environ.get("EMOSDK_ATTENTION_IMPL", "auto").strip().lower() or "auto"
    if impl not in IMPLS:
        raise InputError(f"EMOSDK_ATTENTION_IMPL: expected one of {IMPLS}, got {impl!r}")
    return impl


def _kernel_fits(q: torch.Tensor) -> bool:
    return q.dtype in KERNEL_DTYPES and q.shape[-1] in KERNEL_HEAD_DIMS


def _mask_f32(mask: torch.Tensor | None) -> torch.Tensor | None:
    if mask is None:
        return None
    mask = mask.to(torch.float32)
    return mask if mask.stride(-1) == 1 else mask.contiguous()


def _last_dim_contiguous(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def cuda_kernel_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    scale: float,
) -> torch.Tensor:
    """The compiled kernel (``libemosdk_attention`` via ctypes) on the current CUDA stream.

    Raises:
        BackendUnavailableError: the library was not built (the message says how).
    """
    lib = native.require_attention_library()
    if not _kernel_fits(q):
        raise InputError(
            f"cuda kernel: supports dtypes {KERNEL_DTYPES} and head_dim {KERNEL_HEAD_DIMS}, got "
            f"{q.dtype} and {q.shape[-1]}"
        )
    q, k, v = (_last_dim_contiguous(t) for t in (q, k, v))
    mask = _mask_f32(mask)
    B, H, Tq, D = q.shape
    out = torch.empty((B, H, Tq, D), dtype=q.dtype, device=q.device)
    p = native.EmosdkAttentionParams()
    p.q, p.k, p.v, p.out = q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr()
    p.mask = mask.data_ptr() if mask is not None else None
    p.q_stride[:] = q.stride()[:3]
    p.k_stride[:] = k.stride()[:3]
    p.v_stride[:] = v.stride()[:3]
    p.o_stride[:] = out.stride()[:3]
    p.mask_stride = 0 if mask is None or mask.shape[0] == 1 else mask.stride(0)
    p.batch, p.heads, p.q_len, p.kv_len, p.head_dim = B, H, Tq, k.shape[2], D
    p.dtype = native.F16 if q.dtype == torch.float16 else native.F32
    p.scale = scale
    with torch.cuda.device(q.device):
        lib.forward(p, torch.cuda.current_stream(q.device).cuda_stream)
    return out


def triton_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    scale: float,
) -> torch.Tensor:
    """The Triton kernel.

    Raises:
        BackendUnavailableError: triton is not installed.
    """
    if not native.triton_installed():
        raise BackendUnavailableError(
            f"the Triton attention kernel is unavailable. {native.TRITON_HINT}"
        )
    from .triton_attention import masked_attention_triton

    return masked_attention_triton(q, k, v, _mask_f32(mask), scale)


_warned: set[str] = set()


def _cuda_impl(q, k, v, mask, scale) -> torch.Tensor:
    impl = _impl()
    if impl == "cuda":
        return cuda_kernel_attention(q, k, v, mask, scale)
    if impl == "triton":
        return triton_attention(q, k, v, mask, scale)
    if impl == "auto" and _kernel_fits(q):
        if native.attention_library() is not None:
            return cuda_kernel_attention(q, k, v, mask, scale)
        if native.triton_installed():
            return triton_attention(q, k, v, mask, scale)
        if "auto" not in _warned:
            _warned.add("auto")
            logger.info(
                "masked_attention: no fused kernel here (neither libemosdk_attention nor "
                "triton); using the reference in torch ops. %s",
                native.BUILD_HINT,
            )
    return reference_attention(q, k, v, mask, scale)


@torch.library.custom_op(
    "emosdk::masked_attention",
    mutates_args=(),
    schema="(Tensor q, Tensor k, Tensor v, Tensor? mask, float scale) -> Tensor",
)
def _masked_attention_op(q, k, v, mask, scale):
    # Default for devices with no registered kernel (e.g. mps): the reference.
    return reference_attention(q, k, v, mask, scale)


@_masked_attention_op.register_kernel("cpu")
def _masked_attention_cpu(q, k, v, mask, scale):
    return reference_attention(q, k, v, mask, scale)


@_masked_attention_op.register_kernel("cuda")
def _masked_attention_cuda(q, k, v, mask, scale):
    if scale <= 0:
        scale = default_scale(q.shape[-1])
    return _cuda_impl(q, k, v, mask, scale)


@_masked_attention_op.register_fake
def _masked_attention_fake(q, k, v, mask, scale):
    return q.new_empty(q.shape)


def masked_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Check the arguments and call ``torch.ops.emosdk.masked_attention``.

    ``scale`` None means ``1 / sqrt(D)``; it is resolved here, so an exported graph carries the
    number. A bool mask is converted to fp32.
    """
    _check(q, k, v, mask)
    if mask is not None and mask.dtype != torch.float32:
        mask = mask.to(torch.float32)
    s = default_scale(q.shape[-1]) if scale is None else float(scale)
    return torch.ops.emosdk.masked_attention(q, k, v, mask, s)
