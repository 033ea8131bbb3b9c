"""Export torch modules to ONNX with the dynamo exporter and check them with onnxruntime.

Pitfalls this avoids (``shared/notes/dependencies.md`` section 1): the legacy TorchScript exporter
bakes sequence lengths into ``nn.MultiheadAttention`` reshapes, so only ``dynamo=True`` is used;
dynamic axes are declared as named ``torch.export.Dim`` objects, one object per name, so axes
sharing a name share a symbol.

Two opsets are produced from the same module: :data:`OPSET_ONNXRUNTIME` (23, where
``F.scaled_dot_product_attention`` becomes the fused ``ai.onnx::Attention`` op that ONNX Runtime
runs) and :data:`OPSET_TENSORRT` (18, MatMul/Softmax attention that TensorRT's parser and
fusions are known to handle). Weights go into the one ``.onnx`` file by default, or into a
``<name>.onnx.data`` file beside it (``external_data=True``); :func:`set_external_data` converts
an existing file either way.

Every exported file is compared with the torch module by :func:`compare_onnx`, with a declared
absolute tolerance per output. A wrong output count or shape (or onnxruntime refusing a shape)
raises :class:`ExportShapeError`; a non-finite output or a difference above tolerance raises
:class:`ExportValueError`. The measured differences are written into the ONNX file's
``metadata_props`` (key :data:`METADATA_KEY`, JSON), read back by :func:`read_export_metadata`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from emosdk.errors import EmosdkError

logger = logging.getLogger("emosdk")

TOLERANCE = 1e-4
"""Default largest absolute difference allowed between torch and onnxruntime outputs."""

OPSET_ONNXRUNTIME = 23
"""Opset of the graphs ONNX Runtime runs: ``scaled_dot_product_attention`` -> fused Attention."""

OPSET_TENSORRT = 18
"""Opset of the graphs TensorRT builds from (MatMul/Softmax attention; TensorRT fuses it)."""

METADATA_KEY = "emosdk.export"
"""``metadata_props`` key of the JSON export record (opset, versions, validation figures)."""


class ExportValidationError(EmosdkError):
    """The exported ONNX graph does not reproduce the torch module's outputs.

    Attributes:
        path: The ONNX file.
        output: Name of the offending output (None when the failure is not about one output).
        shapes: Input name -> shape of the check that failed.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        output: str | None = None,
        shapes: Mapping[str, tuple[int, ...]] | None = None,
    ) -> None:
        super().__init__(message)
        self.path = None if path is None else Path(path)
        self.output = output
        self.shapes = dict(shapes or {})


class ExportShapeError(ExportValidationError):
    """Output count or shape differs from torch, or onnxruntime cannot run the input shape."""


class ExportValueError(ExportValidationError):
    """An output is not finite, or differs from torch by more than its tolerance.

    Attributes:
        diff: The largest absolute difference found.
        tolerance: The tolerance of that output.
    """

    def __init__(self, message: str, *, diff: float, tolerance: float, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.diff = diff
        self.tolerance = tolerance


@dataclass
class ValidationReport:
    """What :func:`compare_onnx` checked and measured.

    Attributes:
        path: The ONNX file.
        max_abs_diff: Output name -> largest absolute difference over all checked inputs.
        tolerance: Output name -> allowed difference.
        shapes: One entry per checked input set: input name -> shape.
    """

    path: Path
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    tolerance: dict[str, float] = field(default_factory=dict)
    shapes: list[dict[str, list[int]]] = field(default_factory=list)

    @property
    def worst(self) -> float:
        """The largest difference over every output."""
        return max(self.max_abs_diff.values(), default=0.0)

    def to_dict(self) -> dict:
        return {
            "max_abs_diff": dict(self.max_abs_diff),
            "tolerance": dict(self.tolerance),
            "checked_shapes": list(self.shapes),
        }


def _flatten(out: object) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _flatten(o)]
    raise TypeError(f"module output must be tensors or tuples of tensors, got {type(out)}")


def _tolerances(names: Sequence[str], tolerance: float | Mapping[str, float]) -> dict[str, float]:
    if isinstance(tolerance, Mapping):
        unknown = set(tolerance) - set(names)
        if unknown:
            raise ValueError(f"tolerance names unknown outputs {sorted(unknown)} (have {names})")
        return {n: float(tolerance.get(n, TOLERANCE)) for n in names}
    return {n: float(tolerance) for n in names}


def compare_onnx(
    module: torch.nn.Module,
    path: str | Path,
    input_sets: Sequence[Sequence[torch.Tensor]],
    input_names: Sequence[str],
    tolerance: float | Mapping[str, float] = TOLERANCE,
) -> ValidationReport:
    """Run the ONNX file with onnxruntime (CPU) on each input set and compare with torch.

    Args:
        module: the torch module (put in eval mode).
        path: the ONNX file (external data, if any, beside it).
        input_sets: positional input tuples of ``module``; each is one check.
        input_names: ONNX input names, in the order of each input tuple.
        tolerance: largest absolute difference allowed, one for all outputs or per output name
            (outputs not named get :data:`TOLERANCE`).

    Returns:
        The per-output largest differences over all input sets.

    Raises:
        ExportShapeError: different number of outputs, an output shape differs, or onnxruntime
            fails on an input shape (e.g. a sequence length baked into a reshape).
        ExportValueError: an output is not finite or differs by more than its tolerance.
    """
    import onnxruntime as ort

    path = Path(path)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 1  # small validation graphs: threads only contend on busy machines
    sess = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    out_names = [o.name for o in sess.get_outputs()]
    tol = _tolerances(out_names, tolerance)
    report = ValidationReport(path, {n: 0.0 for n in out_names}, tol)
    module.eval()
    for inputs in input_sets:
        shapes = {n: tuple(t.shape) for n, t in zip(input_names, inputs, strict=True)}
        where = ", ".join(f"{n}{list(s)}" for n, s in shapes.items())
        with torch.no_grad():
            expected = [t.detach().cpu().numpy() for t in _flatten(module(*inputs))]
        feeds = {n: t.detach().cpu().numpy() for n, t in zip(input_names, inputs, strict=True)}
        try:
            got = sess.run(None, feeds)
        except Exception as e:
            raise ExportShapeError(
                f"{path}: onnxruntime cannot run inputs {where}: {e}", path=path, shapes=shapes
            ) from e
        if len(got) != len(expected):
            raise ExportShapeError(
                f"{path}: {len(got)} outputs {out_names}, torch gives {len(expected)} ({where})",
                path=path,
                shapes=shapes,
            )
        for name, g, e in zip(out_names, got, expected, strict=True):
            if g.shape != e.shape:
                raise ExportShapeError(
                    f"{path}: output {name!r} has shape {list(g.shape)}, torch {list(e.shape)} "
                    f"(inputs {where})",
                    path=path,
                    output=name,
                    shapes=shapes,
                )
            if not np.isfinite(g).all():
                raise ExportValueError(
                    f"{path}: output {name!r} is not finite (inputs {where})",
                    diff=float("inf"),
                    tolerance=tol[name],
                    path=path,
                    output=name,
                    shapes=shapes,
                )
            diff = float(np.max(np.abs(g.astype(np.float64) - e))) if g.size else 0.0
            if not diff <= tol[name]:
                raise ExportValueError(
                    f"{path}: output {name!r} differs from torch by {diff:.3g} (tolerance "
                    f"{tol[name]:g}; inputs {where})",
                    diff=diff,
                    tolerance=tol[name],
                    path=path,
                    output=name,
                    shapes=shapes,
                )
            report.max_abs_diff[name] = max(report.max_abs_diff[name], diff)
        report.shapes.append({n: list(s) for n, s in shapes.items()})
    return report


def check_onnx(
    module: torch.nn.Module,
    path: str | Path,
    inputs: Sequence[torch.Tensor],
    input_names: Sequence[str],
    tolerance: float | Mapping[str, float] = TOLERANCE,
) -> float:
    """Compare the ONNX file with the torch module on one input tuple (see :func:`compare_onnx`).

    Returns:
        The largest absolute difference over all outputs.

    Raises:
        ExportShapeError, ExportValueError: as :func:`compare_onnx`.
    """
    return compare_onnx(module, path, [tuple(inputs)], input_names, tolerance).worst


def data_path(path: str | Path) -> Path:
    """The external data file of an ONNX file: ``<name>.onnx.data`` beside it."""
    path = Path(path)
    return path.with_name(path.name + ".data")


def has_external_data(path: str | Path) -> bool:
    """True when any initializer of the ONNX file lives in an external data file."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)


def set_external_data(path: str | Path, external: bool) -> Path:
    """Rewrite an ONNX file with its weights embedded or in ``<name>.onnx.data`` beside it.

    Args:
        path: the ONNX file.
        external: True for one external data file, False for a single self-contained file.

    Returns:
        ``path``. The stale data file is removed when the weights are embedded.
    """
    import onnx

    path = Path(path)
    model = onnx.load(str(path), load_external_data=True)
    for p in model.metadata_props:
        if p.key == METADATA_KEY:  # keep the export record truthful
            p.value = json.dumps({**json.loads(p.value), "external_data": external}, sort_keys=True)
    data = data_path(path)
    # onnx appends to an existing data file, so the old one must go before saving
    data.unlink(missing_ok=True)
    if external:
        onnx.save_model(
            model,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=data.name,
            size_threshold=1024,  # small tensors (shape constants) must stay inline for ORT
        )
    else:
        onnx.save_model(model, str(path))
    onnx.checker.check_model(str(path))
    return path


def broadcast_attention_masks(model: object) -> int:
    """Expand the ``attn_mask`` of every ``ai.onnx::Attention`` node to (.., Tq, Tk).

    The ONNX spec lets the mask broadcast over the query axis (a key-padding bias of shape
    (B, 1, 1, Tk)), but ONNX Runtime's CPU kernel (seen with 1.32) checks
    ``attn_mask.shape[-2] == q_sequence_length`` and fails with "inconsistent q_sequence_length
    (between attn_mask and Q)". An ``Expand`` to ``[1, 1, Tq, 1]`` (bidirectional broadcast)
    before each mask makes the graph run everywhere and does not change any value.

    Args:
        model: an ``onnx.ModelProto``, edited in place.

    Returns:
        Number of Attention nodes whose mask was expanded.
    """
    import onnx
    from onnx import helper

    graph = model.graph  # type: ignore[attr-defined]
    opset = max(
        (o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),  # type: ignore[attr-defined]
        default=0,
    )
    if opset < 23:
        return 0
    nodes = list(graph.node)
    out: list[onnx.NodeProto] = []
    n = 0
    ones = "emosdk_attn_mask_ones2"
    one = "emosdk_attn_mask_one1"
    for node in nodes:
        if node.op_type == "Attention" and node.domain in ("", "ai.onnx"):
            if len(node.input) > 3 and node.input[3]:
                q, mask = node.input[0], node.input[3]
                tag = f"emosdk_attn_mask_{n}"
                out += [
                    helper.make_node("Shape", [q], [f"{tag}_tq"], start=-2, end=-1),
                    helper.make_node("Concat", [ones, f"{tag}_tq", one], [f"{tag}_shape"], axis=0),
                    helper.make_node("Expand", [mask, f"{tag}_shape"], [f"{tag}_mask"]),
                ]
                node.input[3] = f"{tag}_mask"
                n += 1
        out.append(node)
    if n:
        graph.initializer.extend(
            [
                helper.make_tensor(ones, onnx.TensorProto.INT64, [2], [1, 1]),
                helper.make_tensor(one, onnx.TensorProto.INT64, [1], [1]),
            ]
        )
        del graph.node[:]
        graph.node.extend(out)
    return n


def fold_attention_heads(model: object, n_heads: int) -> int:
    """Give each packed-QKV ``ai.onnx::Attention`` (opset 23) its 3-D form.

    The torch exporter writes ``F.scaled_dot_product_attention`` after one packed Q/K/V
    projection as Reshape (B, T, 3, H, d) -> Transpose (2, 0, 3, 1, 4) -> three Slice + Squeeze
    -> Attention on (B, H, T, d) -> Transpose -> Reshape (B, T, H * d). Opset 23's Attention
    also takes (B, T, H * d) inputs with ``q_num_heads`` / ``kv_num_heads`` and returns
    (B, T, H * d), so this becomes Split -> Attention: the same values, eight fewer nodes per
    block (measured on the Whisper audio encoder's int8 graph, one core: 9.87 -> 9.67 ms).
    Other Attention nodes (a mask, another layout) are left alone; nodes left without users are
    removed.

    Args:
        model: an ``onnx.ModelProto``, edited in place.
        n_heads: attention heads of the blocks (the packed projection is 3 * n_heads * d wide).

    Returns:
        Number of Attention nodes rewritten.
    """
    import onnx
    from onnx import helper

    graph = model.graph  # type: ignore[attr-defined]
    nodes = list(graph.node)
    producer = {o: n for n in nodes for o in n.output}
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in nodes:
        for name in node.input:
            users.setdefault(name, []).append(node)

    def perm(node: onnx.NodeProto | None, op: str, want: list[int]) -> bool:
        if node is None or node.op_type != op:
            return False
        attrs = {a.name: list(a.ints) for a in node.attribute}
        return attrs.get("perm") == want

    def only_user(name: str, op: str) -> onnx.NodeProto | None:
        found = users.get(name, [])
        return found[0] if len(found) == 1 and found[0].op_type == op else None

    replace: dict[int, list[onnx.NodeProto]] = {}
    drop: set[int] = set()
    n = 0
    for att in nodes:
        if att.op_type != "Attention" or att.domain not in ("", "ai.onnx") or len(att.input) != 3:
            continue
        squeezes = [producer.get(i) for i in att.input]
        if not all(s is not None and s.op_type == "Squeeze" for s in squeezes):
            continue
        slices = [producer.get(s.input[0]) for s in squeezes]  # type: ignore[union-attr]
        if not all(s is not None and s.op_type == "Slice" for s in slices):
            continue
        split_t = producer.get(slices[0].input[0])  # type: ignore[union-attr]
        if not perm(split_t, "Transpose", [2, 0, 3, 1, 4]) or any(
            s.input[0] != split_t.output[0]  # type: ignore[union-attr]
            for s in slices
        ):
            continue
        reshape = producer.get(split_t.input[0])  # type: ignore[union-attr]
        merge_t = only_user(att.output[0], "Transpose")
        merge_r = only_user(merge_t.output[0], "Reshape") if merge_t is not None else None
        if reshape is None or reshape.op_type != "Reshape" or not perm(
            merge_t, "Transpose", [0, 2, 1, 3]
        ) or merge_r is None:  # fmt: skip
            continue
        tag = f"emosdk_attn3d_{n}"
        qkv = [f"{tag}_q", f"{tag}_k", f"{tag}_v"]
        replace[id(reshape)] = [
            helper.make_node("Split", [reshape.input[0]], qkv, axis=-1, num_outputs=3, name=tag),
            helper.make_node(
                "Attention",
                qkv,
                [merge_r.output[0]],
                name=f"{tag}_attention",
                q_num_heads=n_heads,
                kv_num_heads=n_heads,
            ),  # fmt: skip
        ]
        for node in (split_t, *slices, *squeezes, att, merge_t, merge_r):
            drop.add(id(node))
        n += 1
    if not n:
        return 0
    out: list[onnx.NodeProto] = []
    for node in nodes:
        if id(node) in replace:
            out += replace[id(node)]
        elif id(node) not in drop:
            out.append(node)
    graph_outputs = {o.name for o in graph.output}
    while True:  # dead nodes (the shape arithmetic of the removed reshapes)
        used = {i for node in out for i in node.input} | graph_outputs
        alive = [node for node in out if any(o in used for o in node.output)]
        if len(alive) == len(out):
            break
        out = alive
    used = {i for node in out for i in node.input} | graph_outputs
    inits = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    del graph.node[:]
    graph.node.extend(out)
    del graph.value_info[:]  # shapes of removed tensors; ONNX Runtime infers what it needs
    return n


def _edit_proto(
    path: Path,
    output_dim_names: Mapping[str, Mapping[int, str]] | None,
    record: Mapping[str, object] | None,
) -> None:
    """Rename output dims and write the export record without touching external data."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    if record is None:
        n = broadcast_attention_masks(model)
        if n:
            logger.info("%s: expanded the attn_mask of %d Attention nodes", path.name, n)
    outputs = {o.name: o for o in model.graph.output}
    for out_name, axes in (output_dim_names or {}).items():
        if out_name not in outputs:
            raise ValueError(f"output_dim_names names unknown output {out_name!r}")
        dims = outputs[out_name].type.tensor_type.shape.dim
        for ax, dim_name in axes.items():
            dims[ax].dim_param = dim_name
    if record is not None:
        props = [p for p in model.metadata_props if p.key != METADATA_KEY]
        del model.metadata_props[:]
        model.metadata_props.extend(props)
        model.metadata_props.add(key=METADATA_KEY, value=json.dumps(record, sort_keys=True))
    # the initializers keep their external references: the data file is not rewritten
    onnx.save_model(model, str(path))
    onnx.checker.check_model(str(path))


def read_export_metadata(path: str | Path) -> dict:
    """The export record of an ONNX file written by :func:`export_onnx` ({} if there is none)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    for p in model.metadata_props:
        if p.key == METADATA_KEY:
            return json.loads(p.value)
    return {}


def export_onnx(
    module: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    path: str | Path,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes_names: Mapping[str, Mapping[int, str]],
    opset: int = OPSET_TENSORRT,
    check_inputs: Sequence[tuple[torch.Tensor, ...]] = (),
    tolerance: float | Mapping[str, float] = TOLERANCE,
    output_dim_names: Mapping[str, Mapping[int, str]] | None = None,
    external_data: bool = False,
) -> Path:
    """Export ``module`` to ONNX and validate it against torch.

    Args:
        module: torch module; exported in eval mode.
        example_inputs: positional inputs used to trace. Give every dynamic axis a size of at
            least 2 (sizes 0 and 1 are specialised by torch.export).
        path: ONNX file to write.
        input_names: ONNX input names, one per example input.
        output_names: ONNX output names, one per (flattened) module output.
        dynamic_axes_names: input name -> {axis: dimension name}; equal names share one symbol.
        opset: ONNX opset version: :data:`OPSET_ONNXRUNTIME` (23, fused Attention) or
            :data:`OPSET_TENSORRT` (18).
        check_inputs: further input tuples (other batch sizes and window lengths) to validate on.
        tolerance: largest absolute torch/onnxruntime difference allowed, for all outputs or per
            output name.
        output_dim_names: output name -> {axis: dimension name}, to replace the symbolic
            expressions the exporter writes for derived output axes (e.g. ``frames // 4``).
        external_data: False: weights embedded in the one file. True: weights in
            ``<name>.onnx.data`` beside it (ship both files).

    Returns:
        The written path. Its ``metadata_props`` carry the export record
        (:func:`read_export_metadata`): opset, versions, per-output differences and tolerances,
        checked shapes.

    Raises:
        ExportShapeError, ExportValueError: onnxruntime disagrees with torch on a checked input.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if len(input_names) != len(example_inputs):
        raise ValueError(f"{len(input_names)} input names for {len(example_inputs)} inputs")
    unknown = set(dynamic_axes_names) - set(input_names)
    if unknown:
        raise ValueError(f"dynamic_axes_names names unknown inputs {sorted(unknown)}")
    _tolerances(output_names, tolerance)  # fail on unknown names before the slow export
    dims: dict[str, torch.export.Dim] = {}
    dynamic_shapes = []
    for name in input_names:
        axes = dynamic_axes_names.get(name, {})
        dynamic_shapes.append(
            {ax: dims.setdefault(dim, torch.export.Dim(dim)) for ax, dim in axes.items()} or None
        )
    module.eval()
    data_path(path).unlink(missing_ok=True)  # a stale data file would be appended to
    torch.onnx.export(
        module,
        tuple(example_inputs),
        str(path),
        dynamo=True,
        input_names=list(input_names),
        output_names=list(output_names),
        dynamic_shapes=tuple(dynamic_shapes),
        external_data=external_data,
        opset_version=opset,
        optimize=True,
        verbose=False,
    )
    if not external_data:
        data_path(path).unlink(missing_ok=True)
    _edit_proto(path, output_dim_names, None)
    report = compare_onnx(
        module, path, [tuple(example_inputs), *check_inputs], input_names, tolerance
    )
    logger.info(
        "%s: opset %d, onnxruntime matches torch on %d input sets (max |diff| %s)",
        path.name,
        opset,
        len(report.shapes),
        ", ".join(f"{k} {v:.2e}" for k, v in report.max_abs_diff.items()),
    )
    import onnx
    import onnxruntime

    record = {
        "opset": opset,
        "exporter": "torch.onnx.export(dynamo=True)",
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "external_data": bool(external_data),
        "dynamic_axes": {
            n: {str(a): d for a, d in ax.items()} for n, ax in dynamic_axes_names.items()
        },
        "validation": report.to_dict(),
    }
    _edit_proto(path, None, record)
    return path
