"""Model bundles: a folder of ONNX graphs plus ``model.json`` (the format is in docs/bundle.md).

The runtime reads every parameter it needs from ``model.json`` and verifies the SHA-256 of each
file before anything is loaded. A bundle holds no pickled Python objects.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..errors import ModelError
from ..features.audio import LogMelParams
from ..features.face import FaceParams

logger = logging.getLogger("emosdk")

FORMAT_VERSION = 1
MANIFEST = "model.json"
GRAPH_ROLES = ("audio_encoder", "face_encoder", "fusion")
DTYPES = ("float32", "float16", "int64", "int32", "bool", "uint8")


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: a name, a shape (ints, or strings for dynamic axes), a dtype."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str) -> TensorSpec:
        try:
            name, shape, dtype = d["name"], tuple(d["shape"]), d["dtype"]
        except (KeyError, TypeError) as e:
            raise ModelError(f"{where}: tensor spec needs name, shape and dtype ({e})") from None
        if dtype not in DTYPES:
            raise ModelError(f"{where}: tensor {name!r} has unsupported dtype {dtype!r}")
        for dim in shape:
            if not (isinstance(dim, str) or (isinstance(dim, int) and dim > 0)):
                raise ModelError(f"{where}: tensor {name!r} has invalid dimension {dim!r}")
        return cls(name, shape, dtype)

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class GraphSpec:
    """One ONNX graph of a bundle and its declared interface."""

    role: str
    file: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def input(self, name: str) -> TensorSpec:
        for t in self.inputs:
            if t.name == name:
                return t
        raise KeyError(name)


@dataclass(frozen=True)
class StreamParams:
    """Windowing the model was trained for.

    Attributes:
        window_s: Length of the audio-visual window the fusion model sees (seconds).
        hop_s: Default interval between results when streaming (seconds).
        video_fps: Rate at which face embeddings are sampled into a window (frames per second).
        audio_frames_per_step: Log-mel frames per audio encoder output step (its subsampling).
    """

    window_s: float = 3.0
    hop_s: float = 0.5
    video_fps: float = 5.0
    audio_frames_per_step: int = 4

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StreamParams:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class ModelBundle:
    """A loaded, verified model bundle.

    Attributes:
        path: The bundle folder.
        name: Model name.
        version: Model version string.
        labels: Class labels, in the order of the fusion model's output.
        audio: Log-mel front-end parameters.
        face: Face crop parameters.
        stream: Window, hop and frame rate the model expects.
        graphs: The graphs by role (``audio_encoder``, ``face_encoder``, ``fusion``).
        meta: The whole ``model.json`` (read-only), including ``data_card`` and ``metrics``.
    """

    path: Path
    name: str
    version: str
    labels: tuple[str, ...]
    audio: LogMelParams
    face: FaceParams
    stream: StreamParams
    graphs: Mapping[str, GraphSpec]
    meta: Mapping[str, Any] = field(repr=False)

    def graph_path(self, role: str) -> Path:
        return self.path / self.graphs[role].file

    def variant_files(self, precision: str) -> Mapping[str, str]:
        """Role -> file of the graphs that replace the fp32 ones at ``precision`` (``variants``
        in ``model.json``; empty for fp32 or when the bundle has none)."""
        if precision == "fp32":
            return {}
        return self.meta.get("variants", {}).get(precision, {})

    @property
    def size_bytes(self) -> int:
        return (
            sum((self.path / f).stat().st_size for f in self.meta["files"])
            + (self.path / MANIFEST).stat().st_size
        )


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _require(meta: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in meta:
        raise ModelError(f"{where}: missing required key {key!r}")
    if not isinstance(meta[key], kind):
        raise ModelError(f"{where}: key {key!r} must be a {kind.__name__}")
    return meta[key]


def verify_files(path: Path, files: Mapping[str, str]) -> None:
    """Check that every listed file exists and matches its SHA-256; raise ModelError naming it."""
    for rel, digest in files.items():
        f = (path / rel).resolve()
        if path.resolve() not in f.parents:
            raise ModelError(f"{path / MANIFEST}: file entry {rel!r} points outside the bundle")
        if not f.is_file():
            raise ModelError(f"{f}: listed in {MANIFEST} but missing")
        actual = sha256_file(f)
        if actual != digest:
            raise ModelError(
                f"{f}: SHA-256 mismatch (expected {digest}, got {actual}); the file was changed "
                "or corrupted, reinstall the model"
            )


def load_bundle(path: str | Path, *, verify: bool = True) -> ModelBundle:
    """Read and verify a bundle folder.

    Args:
        path: folder containing ``model.json``.
        verify: check the SHA-256 of every file (on by default; the runtime always verifies).

    Raises:
        ModelError: the folder, manifest or a file is missing, malformed, or fails its hash.
    """
    path = Path(path)
    manifest = path / MANIFEST
    if not manifest.is_file():
        raise ModelError(f"{manifest}: no model bundle here (model.json not found)")
    try:
        meta = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"{manifest}: cannot be read as JSON ({e})") from None
    where = str(manifest)
    if not isinstance(meta, dict):
        raise ModelError(f"{where}: top level must be an object")
    fmt = _require(meta, "format_version", int, where)
    if fmt != FORMAT_VERSION:
        raise ModelError(f"{where}: format_version {fmt} is not supported (this emosdk reads 1)")
    files = _require(meta, "files", dict, where)
    if verify:
        verify_files(path, files)
    labels = tuple(_require(meta, "labels", list, where))
    if not labels or not all(isinstance(x, str) for x in labels):
        raise ModelError(f"{where}: labels must be a non-empty list of strings")
    try:
        audio = LogMelParams.from_dict(_require(meta, "audio", dict, where))
        face = FaceParams.from_dict(_require(meta, "face", dict, where))
        stream = StreamParams.from_dict(_require(meta, "stream", dict, where))
    except (KeyError, TypeError, ValueError) as e:
        raise ModelError(f"{where}: invalid front-end or stream parameters ({e})") from None
    graphs = {}
    for role, g in _require(meta, "graphs", dict, where).items():
        gw = f"{where} graphs.{role}"
        if not isinstance(g, dict) or "file" not in g:
            raise ModelError(f"{gw}: needs file, inputs and outputs")
        if g["file"] not in files:
            raise ModelError(f"{gw}: file {g['file']!r} has no SHA-256 entry under files")
        graphs[role] = GraphSpec(
            role=role,
            file=g["file"],
            inputs=tuple(TensorSpec.from_dict(t, gw) for t in g.get("inputs", [])),
            outputs=tuple(TensorSpec.from_dict(t, gw) for t in g.get("outputs", [])),
        )
    missing = [r for r in GRAPH_ROLES if r not in graphs]
    if missing:
        raise ModelError(f"{where}: missing graphs {missing}")
    n_out = graphs["fusion"].outputs[0].shape[-1] if graphs["fusion"].outputs else None
    if isinstance(n_out, int) and n_out != len(labels):
        raise ModelError(f"{where}: fusion output has {n_out} classes but {len(labels)} labels")
    logger.debug("loaded bundle %s %s from %s", meta.get("name"), meta.get("version"), path)
    return ModelBundle(
        path=path,
        name=str(meta.get("name", path.name)),
        version=str(meta.get("version", "0")),
        labels=labels,
        audio=audio,
        face=face,
        stream=stream,
        graphs=MappingProxyType(graphs),
        meta=MappingProxyType(meta),
    )
