"""Export torch modules to ONNX with the dynamo exporter and check them with onnxruntime.

Pitfalls this avoids (``shared/notes/dependencies.md`` section 1): the legacy TorchScript exporter
bakes sequence lengths into ``nn.MultiheadAttention`` reshapes, so only ``dynamo=True`` is used;
weights go into the one ``.onnx`` file (``external_data=False``); dynamic axes are declared as
named ``torch.export.Dim`` objects, one object per name, so axes sharing a name share a symbol.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from emosdk.errors import EmosdkError

logger = logging.getLogger("emosdk")

TOLERANCE = 1e-4
"""Largest absolute difference allowed between torch and onnxruntime outputs."""


class ExportValidationError(EmosdkError):
    """The exported ONNX graph does not reproduce the torch module's outputs."""


def _flatten(out: object) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _flatten(o)]
    raise TypeError(f"module output must be tensors or tuples of tensors, got {type(out)}")


def check_onnx(
    module: torch.nn.Module,
    path: str | Path,
    inputs: Sequence[torch.Tensor],
    input_names: Sequence[str],
    tolerance: float = TOLERANCE,
) -> float:
    """Run the ONNX file with onnxruntime and compare every output with the torch module.

    Args:
        module: the torch module (put in eval mode).
        path: the ONNX file.
        inputs: positional inputs of ``module``.
        input_names: ONNX input names, in the order of ``inputs``.
        tolerance: largest absolute difference allowed.

    Returns:
        The largest absolute difference over all outputs.

    Raises:
        ExportValidationError: on a shape mismatch, a non-finite output or a difference above
            ``tolerance``.
    """
    import onnxruntime as ort

    module.eval()
    with torch.no_grad():
        expected = [t.detach().cpu().numpy() for t in _flatten(module(*inputs))]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {n: t.detach().cpu().numpy() for n, t in zip(input_names, inputs, strict=True)}
    got = sess.run(None, feeds)
    if len(got) != len(expected):
        raise ExportValidationError(f"{path}: {len(got)} outputs, torch gives {len(expected)}")
    worst = 0.0
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        if g.shape != e.shape:
            raise ExportValidationError(f"{path}: output {i} shape {g.shape}, torch {e.shape}")
        if not np.isfinite(g).all():
            raise ExportValidationError(f"{path}: output {i} is not finite")
        diff = float(np.max(np.abs(g.astype(np.float64) - e))) if g.size else 0.0
        worst = max(worst, diff)
    if worst > tolerance:
        raise ExportValidationError(
            f"{path}: onnxruntime differs from torch by {worst:.3g} (tolerance {tolerance:g})"
        )
    return worst


def _rename_output_dims(path: Path, names: Mapping[str, Mapping[int, str]]) -> None:
    import onnx

    model = onnx.load(str(path))
    outputs = {o.name: o for o in model.graph.output}
    for out_name, axes in names.items():
        if out_name not in outputs:
            raise ValueError(f"output_dim_names names unknown output {out_name!r}")
        dims = outputs[out_name].type.tensor_type.shape.dim
        for ax, dim_name in axes.items():
            dims[ax].dim_param = dim_name
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def export_onnx(
    module: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    path: str | Path,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes_names: Mapping[str, Mapping[int, str]],
    opset: int = 18,
    check_inputs: Sequence[tuple[torch.Tensor, ...]] = (),
    tolerance: float = TOLERANCE,
    output_dim_names: Mapping[str, Mapping[int, str]] | None = None,
) -> Path:
    """Export ``module`` to a single ONNX file and validate it against torch.

    Args:
        module: torch module; exported in eval mode.
        example_inputs: positional inputs used to trace. Give every dynamic axis a size of at
            least 2 (sizes 0 and 1 are specialised by torch.export).
        path: ONNX file to write (weights embedded, no external data file).
        input_names: ONNX input names, one per example input.
        output_names: ONNX output names, one per (flattened) module output.
        dynamic_axes_names: input name -> {axis: dimension name}; equal names share one symbol.
        opset: ONNX opset version.
        check_inputs: further input tuples (e.g. other sequence lengths) to validate on.
        tolerance: largest absolute torch/onnxruntime difference allowed.
        output_dim_names: output name -> {axis: dimension name}, to replace the symbolic
            expressions the exporter writes for derived output axes (e.g. ``frames // 4``).

    Returns:
        The written path.

    Raises:
        ExportValidationError: if onnxruntime disagrees with torch on any checked input.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if len(input_names) != len(example_inputs):
        raise ValueError(f"{len(input_names)} input names for {len(example_inputs)} inputs")
    unknown = set(dynamic_axes_names) - set(input_names)
    if unknown:
        raise ValueError(f"dynamic_axes_names names unknown inputs {sorted(unknown)}")
    dims: dict[str, torch.export.Dim] = {}
    dynamic_shapes = []
    for name in input_names:
        axes = dynamic_axes_names.get(name, {})
        dynamic_shapes.append(
            {ax: dims.setdefault(dim, torch.export.Dim(dim)) for ax, dim in axes.items()} or None
        )
    module.eval()
    torch.onnx.export(
        module,
        tuple(example_inputs),
        str(path),
        dynamo=True,
        input_names=list(input_names),
        output_names=list(output_names),
        dynamic_shapes=tuple(dynamic_shapes),
        external_data=False,
        opset_version=opset,
        optimize=True,
        verbose=False,
    )
    if output_dim_names:
        _rename_output_dims(path, output_dim_names)
    for inputs in (tuple(example_inputs), *check_inputs):
        diff = check_onnx(module, path, inputs, input_names, tolerance)
        logger.info("%s: onnxruntime matches torch (max |diff| %.2e)", path.name, diff)
    return path
