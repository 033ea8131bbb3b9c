"""Write model bundles (ONNX graphs + model.json with hashes, front-end parameters and cards)."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import onnx

from emosdk.features.audio import LogMelParams
from emosdk.features.face import FaceParams
from emosdk.models.bundle import (
    FORMAT_VERSION,
    GRAPH_ROLES,
    MANIFEST,
    StreamParams,
    load_bundle,
    sha256_file,
)

logger = logging.getLogger("emosdk")

_ONNX_DTYPES = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.BOOL: "bool",
    onnx.TensorProto.UINT8: "uint8",
}


def graph_io(onnx_path: str | Path) -> dict:
    """Read the declared inputs and outputs of an ONNX file as bundle tensor specs."""
    model = onnx.load(str(onnx_path), load_external_data=False)

    def spec(v: onnx.ValueInfoProto) -> dict:
        t = v.type.tensor_type
        shape = [d.dim_param if d.dim_param else d.dim_value for d in t.shape.dim]
        shape = [s if s not in (0, "") else f"dim{i}" for i, s in enumerate(shape)]
        return {"name": v.name, "shape": shape, "dtype": _ONNX_DTYPES[t.elem_type]}

    init = {i.name for i in model.graph.initializer}
    return {
        "inputs": [spec(v) for v in model.graph.input if v.name not in init],
        "outputs": [spec(v) for v in model.graph.output],
    }


def write_bundle(
    out_dir: str | Path,
    *,
    name: str,
    version: str,
    labels: list[str],
    graphs: Mapping[str, str | Path],
    audio: LogMelParams,
    face: FaceParams,
    stream: StreamParams,
    data_card: Mapping[str, Any],
    metrics: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Copy ONNX graphs into ``out_dir`` and write ``model.json``; then load it back to check it.

    Args:
        out_dir: bundle folder to create (emptied first if it exists).
        name, version: model identity.
        labels: class labels in the fusion output order.
        graphs: ONNX file per role (``audio_encoder``, ``face_encoder``, ``fusion``). An ONNX file
            with external data has its ``.data`` file copied and hashed too.
        audio, face, stream: front-end and windowing parameters the model was trained with.
        data_card: what the model was trained and evaluated on (corpora, partitions, pairing).
        metrics: measured figures, each with the command that produced it.
        extra: further keys merged into model.json (e.g. ``model_card`` text).

    Returns:
        The bundle folder.
    """
    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    files: dict[str, str] = {}
    graph_meta: dict[str, dict] = {}
    for role in GRAPH_ROLES:
        if role not in graphs:
            raise ValueError(f"graphs: missing role {role!r}")
    for role, src in graphs.items():
        src = Path(src)
        dst = out / f"{role}.onnx"
        shutil.copyfile(src, dst)
        data = src.with_name(src.name + ".data")
        if data.exists():
            shutil.copyfile(data, out / data.name)
            files[data.name] = sha256_file(out / data.name)
        files[dst.name] = sha256_file(dst)
        graph_meta[role] = {"file": dst.name, **graph_io(dst)}
    meta = {
        "format_version": FORMAT_VERSION,
        "name": name,
        "version": version,
        "labels": list(labels),
        "audio": audio.to_dict(),
        "face": face.to_dict(),
        "stream": {k: getattr(stream, k) for k in stream.__dataclass_fields__},
        "graphs": graph_meta,
        "files": files,
        "data_card": dict(data_card),
        "metrics": dict(metrics or {}),
        **dict(extra or {}),
    }
    (out / MANIFEST).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    load_bundle(out)  # fail here, not on a user's device
    logger.info("wrote bundle %s %s to %s", name, version, out)
    return out
