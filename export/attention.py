"""ONNX export of graphs that use the fused masked attention op ``emosdk::masked_attention``.

Two targets, chosen by ``target`` in :func:`export_attention_onnx`:

``"tensorrt"``
    each op becomes one node ``EmosdkMaskedAttention`` in the custom domain ``trt.plugins``
    (attributes ``scale``, ``plugin_version="1"``, ``plugin_namespace=""``). TensorRT's ONNX
    parser builds it with the IPluginV3 plugin from ``kernels/attention_plugin.cpp`` once the
    plugin library is loaded (:func:`emosdk.native.require_trt_plugin` finds it;
    ``trtexec --onnx=... --dynamicPlugins=libemosdk_trt_plugin.so``;
    ``emosdk.export.tensorrt.build_engine`` loads it itself). onnxruntime cannot run this graph.
``"onnx"``
    each op is decomposed into standard ONNX ops (opset 18) with the same semantics, including
    zero rows for all-masked queries, so onnxruntime runs the graph; used to check the export and
    for backends without the plugin.

The dynamo exporter is used (``torch.onnx.export(..., dynamo=True,
custom_translation_table=...)``), as everywhere in export/ (see ``export/onnx.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from emosdk.kernels import attention_op

PLUGIN_NAME = "EmosdkMaskedAttention"
PLUGIN_VERSION = "1"
PLUGIN_DOMAIN = "trt.plugins"
OPSET = 18
TARGETS = ("tensorrt", "onnx")


class MaskedAttention(torch.nn.Module):
    """``emosdk::masked_attention`` as a module: q, k, v ``[B, H, T, D]``, mask ``[B, Tk]`` or
    ``[1, Tk]`` (broadcast; the plugin reads it with batch stride 0)."""

    def __init__(self, scale: float | None = None) -> None:
        super().__init__()
        self.scale = scale

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return attention_op.masked_attention(q, k, v, mask, self.scale)


def plugin_schema() -> Any:
    """The ``onnx.defs.OpSchema`` of the plugin node (the exporter needs one to build a node)."""
    from onnx.defs import OpSchema

    def param(name: str, optional: bool = False) -> OpSchema.FormalParameter:
        option = OpSchema.FormalParameterOption
        return OpSchema.FormalParameter(
            name,
            "T" if name != "mask" else "M",
            param_option=option.Optional if optional else option.Single,
        )

    attr = OpSchema.AttrType
    return OpSchema(
        PLUGIN_NAME,
        PLUGIN_DOMAIN,
        1,
        "emosdk fused masked attention (TensorRT IPluginV3 plugin, kernels/attention_plugin.cpp)",
        inputs=[param("q"), param("k"), param("v"), param("mask", optional=True)],
        outputs=[param("out")],
        type_constraints=[
            ("T", ["tensor(float)", "tensor(float16)"], "q, k, v and out"),
            ("M", ["tensor(float)"], "key-padding mask, != 0 = present"),
        ],
        attributes=[
            OpSchema.Attribute("scale", attr.FLOAT, "softmax scale (0 = 1/sqrt(D))"),
            OpSchema.Attribute("plugin_version", attr.STRING, "TensorRT plugin version"),
            OpSchema.Attribute("plugin_namespace", attr.STRING, "TensorRT plugin namespace"),
        ],
    )


def _plugin_translation(q, k, v, mask=None, scale: float = 0.0):
    import onnxscript

    opset = onnxscript.values.Opset(PLUGIN_DOMAIN, 1)
    plugin = onnxscript.values.Op(opset, PLUGIN_NAME, plugin_schema())
    inputs = (q, k, v) if mask is None else (q, k, v, mask)
    return plugin(*inputs, scale=float(scale), plugin_version=PLUGIN_VERSION, plugin_namespace="")


def _decomposed_translation(q, k, v, mask=None, scale: float = 0.0):
    from onnxscript import opset18 as op

    FLOAT = 1  # onnx.TensorProto.FLOAT
    qf, kf, vf = op.Cast(q, to=FLOAT), op.Cast(k, to=FLOAT), op.Cast(v, to=FLOAT)
    s = op.Mul(op.MatMul(qf, op.Transpose(kf, perm=[0, 1, 3, 2])), op.Constant(value_float=scale))
    if mask is not None:
        present = op.Not(op.Equal(op.Cast(mask, to=FLOAT), op.Constant(value_float=0.0)))
        present = op.Unsqueeze(present, op.Constant(value_ints=[1, 2]))  # (B, 1, 1, Tk)
        s = op.Where(present, s, op.Constant(value_float=float("-inf")))
    axis = op.Constant(value_ints=[-1])
    m = op.ReduceMax(s, axis, keepdims=1)
    zero = op.Constant(value_float=0.0)
    m = op.Where(op.IsInf(m, detect_positive=0), zero, m)  # all-masked rows: no NaN
    p = op.Exp(op.Sub(s, m))
    denom = op.ReduceSum(p, axis, keepdims=1)
    denom = op.Where(op.Equal(denom, zero), op.Constant(value_float=1.0), denom)
    return op.CastLike(op.MatMul(op.Div(p, denom), vf), q)


def translation_table(target: str = "tensorrt") -> dict[Any, Any]:
    """``custom_translation_table`` for ``torch.onnx.export`` mapping the op for ``target``."""
    if target not in TARGETS:
        raise ValueError(f"target: expected one of {TARGETS}, got {target!r}")
    fn = _plugin_translation if target == "tensorrt" else _decomposed_translation
    return {torch.ops.emosdk.masked_attention.default: fn}


def export_attention_onnx(
    module: torch.nn.Module,
    args: Sequence[torch.Tensor],
    path: str | Path,
    input_names: Sequence[str],
    output_names: Sequence[str] = ("out",),
    dynamic_shapes: Mapping[str, Any] | Sequence[Any] | None = None,
    target: str = "tensorrt",
) -> Path:
    """Export ``module`` (which calls the op) to ONNX for ``target`` (see the module docstring).

    Args:
        module: a module whose forward uses :func:`emosdk.kernels.masked_attention` (or the op).
        args: example positional inputs.
        path: the ``.onnx`` file to write (weights inside the file).
        input_names: ONNX input names, in the order of ``args``.
        output_names: ONNX output names.
        dynamic_shapes: as for ``torch.export`` (named ``torch.export.Dim`` objects).
        target: ``"tensorrt"`` (plugin node) or ``"onnx"`` (standard ops).

    Returns:
        The written path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module.eval()
    program = torch.onnx.export(
        module,
        tuple(args),
        dynamo=True,
        input_names=list(input_names),
        output_names=list(output_names),
        dynamic_shapes=dynamic_shapes,
        custom_translation_table=translation_table(target),
        opset_version=OPSET,
        external_data=False,
        optimize=True,
        verbose=False,
    )
    program.save(str(path))
    return path
