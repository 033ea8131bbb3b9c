"""Fused masked attention for the fusion models: a torch custom op over three implementations.

``torch.ops.emosdk.masked_attention(q, k, v, mask, scale)`` computes, for q ``[B, H, Tq, D]`` and
k, v ``[B, H, Tk, D]`` (cross-modal: queries of one modality over keys and values of the other;
or self-attention), ``softmax(scale * q @ k^T) @ v`` over the keys whose ``mask[b, j] != 0``
(mask: fp32 ``[B, Tk]``, 1 = present frame, 0 = missing frame, or None). A query whose keys are
all masked gets a zero row. Accumulation is fp32 for fp16 inputs.

Implementations (chosen per call on CUDA tensors; ``EMOSDK_ATTENTION_IMPL`` is read in
:mod:`emosdk.kernels.attention_op`):

- CPU: the fp32 reference (:func:`emosdk.kernels.attention_op.reference_attention`).
- CUDA: the compiled kernel ``libemosdk_attention`` (found by :mod:`emosdk.native`), else the
  Triton kernel (:mod:`emosdk.kernels.triton_attention`), else the reference on the GPU.

Importing this package imports neither torch nor triton; :func:`masked_attention` imports torch
and registers the op on first use (``import emosdk.kernels.attention_op`` does it explicitly).
"""

from __future__ import annotations

from typing import Any


def masked_attention(q: Any, k: Any, v: Any, mask: Any = None, scale: float | None = None) -> Any:
    """Fused masked attention on torch tensors (see the module docstring).

    Args:
        q: queries ``[B, H, Tq, D]``, fp32 or fp16 (other float types use the reference).
        k: keys ``[B, H, Tk, D]``, same dtype and device as ``q``.
        v: values ``[B, H, Tk, D]``, same dtype and device as ``q``.
        mask: fp32 (or bool) ``[B, Tk]``, nonzero = present; None = every key present.
        scale: softmax scale; None = ``1 / sqrt(D)``.

    Returns:
        ``[B, H, Tq, D]`` in the dtype of ``q``.
    """
    from .attention_op import masked_attention as op

    return op(q, k, v, mask, scale)


__all__ = ["masked_attention"]
