"""Model bundles: a folder of ONNX graphs plus ``model.json`` (the format is in docs/bundle.md).

The runtime reads every parameter it needs from ``model.json`` and verifies the SHA-256 of each
file before anything is loaded. A bundle holds no pickled Python objects.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..errors import ModelError
from ..features.audio import LogMelParams
from ..features.face import FaceParams
from ..features.whisper import FRONTEND as WHISPER
from ..features.whisper import AudioParams, WhisperMelParams
from ..quality import QualityRules

logger = logging.getLogger("emosdk")

FORMAT_VERSION = 1
MANIFEST = "model.json"
GRAPH_ROLES = ("audio_encoder", "face_encoder", "fusion")
DTYPES = ("float32", "float16", "int64", "int32", "bool", "uint8")
#: the tensors the runtime feeds and reads, per graph role
REQUIRED_INPUTS = {
    "audio_encoder": ("logmel",),
    "face_encoder": ("face",),
    "fusion": ("audio", "audio_mask", "video", "video_mask"),
}
REQUIRED_OUTPUTS = {
    "audio_encoder": ("audio_emb",),
    "face_encoder": ("face_emb",),
    "fusion": ("logits",),
}
#: perception graphs a bundle may carry (model.json -> perception), with their tensors
PERCEPTION_ROLES = ("face_detector", "face_landmarks", "face_blendshapes")
REQUIRED_INPUTS.update(face_detector=("image",), face_landmarks=("image",))
REQUIRED_OUTPUTS.update(
    face_detector=("regressors", "classificators"),
    face_landmarks=("landmarks", "presence"),
    face_blendshapes=("blendshapes",),
)
MIN_HOP_S = 0.05  # at most 20 results per second of input
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: a name, a shape (ints, or strings for dynamic axes), a dtype."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str) -> TensorSpec:
        if not isinstance(d, Mapping) or not all(k in d for k in ("name", "shape", "dtype")):
            raise ModelError(f"{where}: a tensor spec needs name, shape and dtype, got {d!r:.80}")
        name, shape, dtype = d["name"], d["shape"], d["dtype"]
        if not isinstance(name, str) or not name:
            raise ModelError(f"{where}: tensor name must be a non-empty string, got {name!r:.80}")
        if not isinstance(shape, list) or not 0 < len(shape) <= 8:
            raise ModelError(f"{where}: tensor {name!r} shape must be a list of 1-8 dims")
        shape = tuple(shape)
        if not isinstance(dtype, str) or dtype not in DTYPES:
            raise ModelError(f"{where}: tensor {name!r} has unsupported dtype {dtype!r}")
        for dim in shape:
            ok_int = isinstance(dim, int) and not isinstance(dim, bool) and dim > 0
            if not (ok_int or (isinstance(dim, str) and dim)):
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

    def __post_init__(self) -> None:
        if not 0.0 < self.window_s <= 60.0:
            raise ValueError(f"window_s must be in (0, 60], got {self.window_s}")
        if not MIN_HOP_S <= self.hop_s <= self.window_s:
            raise ValueError(f"hop_s must be in [{MIN_HOP_S}, window_s], got {self.hop_s}")
        if not 0.0 < self.video_fps <= 120.0:
            raise ValueError(f"video_fps must be in (0, 120], got {self.video_fps}")
        if not 1 <= self.audio_frames_per_step <= 64:
            raise ValueError(
                f"audio_frames_per_step must be in [1, 64], got {self.audio_frames_per_step}"
            )

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
        audio: Audio front-end parameters: :class:`~emosdk.features.audio.LogMelParams`, or
            :class:`~emosdk.features.whisper.WhisperMelParams` when ``audio.frontend`` is
            ``"whisper"``.
        face: Face crop parameters.
        stream: Window, hop and frame rate the model expects.
        graphs: The graphs by role (``audio_encoder``, ``face_encoder``, ``fusion``).
        perception: The perception graphs by role (``face_detector``, ``face_landmarks``,
            ``face_blendshapes``; ``model.json`` -> ``perception``), hash-checked like the
            others; empty when the bundle carries none.
        quality: Thresholds that make a present modality reliable (``model.json`` ->
            ``quality``, any subset of :class:`~emosdk.quality.QualityRules`; defaults
            otherwise).
        meta: The whole ``model.json`` (read-only), including ``data_card`` and ``metrics``.
    """

    path: Path
    name: str
    version: str
    labels: tuple[str, ...]
    audio: AudioParams
    face: FaceParams
    stream: StreamParams
    graphs: Mapping[str, GraphSpec]
    meta: Mapping[str, Any] = field(repr=False)
    quality: QualityRules = field(default_factory=QualityRules)
    perception: Mapping[str, GraphSpec] = field(default_factory=dict)

    def graph_path(self, role: str) -> Path:
        return self.path / self.graphs[role].file

    def perception_path(self, role: str) -> Path | None:
        """The file of a perception graph, or None when the bundle has none for ``role``."""
        spec = self.perception.get(role)
        return None if spec is None else self.path / spec.file

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
    if not isinstance(meta[key], kind) or isinstance(meta[key], bool):
        raise ModelError(f"{where}: key {key!r} must be a {kind.__name__}")
    return meta[key]


def params_from_dict(
    cls: type, d: Mapping[str, Any], where: str, optional: tuple[str, ...] = ()
) -> Any:
    """A front-end or stream parameter dataclass from ``model.json``, every field required (the
    runtime never guesses a parameter; ``optional`` names those older bundles may lack) and
    type-checked (an int field takes an int, a float field a finite number, a str a string).

    Raises:
        ModelError: a field is missing, has the wrong type, or fails the class's own checks.
    """
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if f.name not in d:
            if f.name not in optional:
                raise ModelError(f"{where}: missing required key {f.name!r}")
            continue
        v, kind = d[f.name], hints[f.name]
        if kind is int:
            ok = isinstance(v, int) and not isinstance(v, bool)
        elif kind is float:
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            v = float(v) if ok else v
        elif kind is str:
            ok = isinstance(v, str)
        elif kind == (float | None):
            ok = v is None or (
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            )
            v = float(v) if ok and v is not None else v
        else:
            ok = True
        if not ok:
            raise ModelError(
                f"{where}: {f.name!r} must be {getattr(kind, '__name__', kind)}, got {v!r:.80}"
            )
        values[f.name] = v
    try:
        return cls(**values)
    except (TypeError, ValueError, ZeroDivisionError) as e:
        raise ModelError(f"{where}: invalid parameters ({e})") from None


def _graph_spec(role: str, g: object, files: Mapping[str, str], where: str) -> GraphSpec:
    section = "perception" if role in PERCEPTION_ROLES else "graphs"
    gw = f"{where} {section}.{role}"
    if not isinstance(g, dict) or not isinstance(g.get("file"), str):
        raise ModelError(f"{gw}: needs file, inputs and outputs")
    if g["file"] not in files:
        raise ModelError(f"{gw}: file {g['file']!r} has no SHA-256 entry under files")
    tensors = {}
    for key in ("inputs", "outputs"):
        items = g.get(key, [])
        if not isinstance(items, list):
            raise ModelError(f"{gw}: {key} must be a list of tensor specs")
        tensors[key] = tuple(TensorSpec.from_dict(t, gw) for t in items)
        names = [t.name for t in tensors[key]]
        if len(set(names)) != len(names):
            raise ModelError(f"{gw}: {key} repeat a name ({names})")
    spec = GraphSpec(role, g["file"], tensors["inputs"], tensors["outputs"])
    have_in = {t.name for t in spec.inputs}
    have_out = {t.name for t in spec.outputs}
    need_in = [n for n in REQUIRED_INPUTS.get(role, ()) if n not in have_in]
    need_out = [n for n in REQUIRED_OUTPUTS.get(role, ()) if n not in have_out]
    if need_in or need_out:
        raise ModelError(
            f"{gw}: the runtime needs inputs {list(REQUIRED_INPUTS.get(role, ()))} and outputs "
            f"{list(REQUIRED_OUTPUTS.get(role, ()))}; missing {need_in + need_out}"
        )
    if not spec.outputs:
        raise ModelError(f"{gw}: declares no outputs")
    return spec


def _variants(meta: Mapping[str, Any], files: Mapping[str, str], where: str) -> None:
    """``variants``: precision -> role -> a file listed (and so hash-checked) under ``files``."""
    variants = meta.get("variants", {})
    if not isinstance(variants, dict):
        raise ModelError(f"{where}: variants must be an object precision -> role -> file")
    for precision, roles in variants.items():
        if not isinstance(roles, dict):
            raise ModelError(f"{where}: variants.{precision} must be an object role -> file")
        for role, name in roles.items():
            if role not in meta["graphs"]:
                raise ModelError(f"{where}: variants.{precision} names unknown graph {role!r}")
            if not isinstance(name, str) or name not in files:
                raise ModelError(
                    f"{where}: variants.{precision}.{role} file {name!r:.80} has no SHA-256 "
                    "entry under files (every graph the runtime may load is hash-checked)"
                )


def bundle_file(path: Path, rel: object) -> Path:
    """The real path of a file a bundle lists, refusing names that leave the bundle.

    Raises:
        ModelError: ``rel`` is not a plain relative file name inside the bundle (absolute,
            ``..``, a NUL byte, a symlink out of it or a symlink loop).
    """
    where = path / MANIFEST
    if not isinstance(rel, str) or not rel or "\0" in rel or Path(rel).is_absolute():
        raise ModelError(f"{where}: file entry {rel!r:.80} is not a relative file name")
    try:
        root = path.resolve(strict=True)
        f = (path / rel).resolve()
    except (OSError, RuntimeError, ValueError) as e:  # a symlink loop raises RuntimeError
        raise ModelError(f"{where}: file entry {rel!r:.80} cannot be resolved ({e})") from None
    if root not in f.parents:
        raise ModelError(f"{where}: file entry {rel!r:.80} points outside the bundle")
    return f


def verify_files(path: Path, files: Mapping[str, str]) -> None:
    """Check that every listed file exists and matches its SHA-256; raise ModelError naming it."""
    for rel, digest in files.items():
        f = bundle_file(path, rel)
        if not f.is_file():
            raise ModelError(f"{f}: listed in {MANIFEST} but missing (or not a regular file)")
        try:
            actual = sha256_file(f)
        except OSError as e:
            raise ModelError(f"{f}: cannot be read ({e})") from None
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
    except (OSError, UnicodeDecodeError, ValueError) as e:  # JSONDecodeError is a ValueError
        raise ModelError(f"{manifest}: cannot be read as JSON ({e})") from None
    except RecursionError:
        raise ModelError(f"{manifest}: cannot be read as JSON (nested too deeply)") from None
    where = str(manifest)
    if not isinstance(meta, dict):
        raise ModelError(f"{where}: top level must be an object")
    fmt = _require(meta, "format_version", int, where)
    if fmt != FORMAT_VERSION:
        raise ModelError(f"{where}: format_version {fmt} is not supported (this emosdk reads 1)")
    files = _require(meta, "files", dict, where)
    for rel, digest in files.items():
        bundle_file(path, rel)
        if not isinstance(digest, str) or (verify and not _SHA256.fullmatch(digest)):
            raise ModelError(f"{where}: files.{rel} must be a SHA-256 in hex, got {digest!r:.80}")
    labels = tuple(_require(meta, "labels", list, where))
    if not labels or not all(isinstance(x, str) and x for x in labels):
        raise ModelError(f"{where}: labels must be a non-empty list of strings")
    if len(set(labels)) != len(labels):
        raise ModelError(f"{where}: labels repeat a name ({list(labels)})")
    for key in ("name", "version"):
        if key in meta and not isinstance(meta[key], str):
            raise ModelError(f"{where}: {key} must be a string")
    audio_meta = _require(meta, "audio", dict, where)
    frontend = audio_meta.get("frontend", "logmel")
    if frontend not in ("logmel", WHISPER):
        raise ModelError(
            f"{where} audio: frontend must be 'logmel' or {WHISPER!r}, got {frontend!r}"
        )
    kind = WhisperMelParams if frontend == WHISPER else LogMelParams
    audio = params_from_dict(kind, audio_meta, f"{where} audio")
    face = params_from_dict(
        FaceParams,
        _require(meta, "face", dict, where),
        f"{where} face",
        ("color_order", "eye_line", "eye_distance"),
    )
    stream = params_from_dict(
        StreamParams, _require(meta, "stream", dict, where), f"{where} stream"
    )
    graphs = {
        role: _graph_spec(role, g, files, where)
        for role, g in _require(meta, "graphs", dict, where).items()
    }
    misplaced = sorted(set(graphs) & set(PERCEPTION_ROLES))
    if misplaced:
        raise ModelError(f"{where}: graphs {misplaced} belong under perception, not graphs")
    missing = [r for r in GRAPH_ROLES if r not in graphs]
    if missing:
        raise ModelError(f"{where}: missing graphs {missing}")
    _variants(meta, files, where)
    perception = meta.get("perception", {})
    if not isinstance(perception, dict):
        raise ModelError(f"{where}: perception must be an object role -> graph")
    unknown = sorted(set(perception) - set(PERCEPTION_ROLES))
    if unknown:
        raise ModelError(f"{where}: unknown perception graphs {unknown}; known: {PERCEPTION_ROLES}")
    perception = {role: _graph_spec(role, g, files, where) for role, g in perception.items()}
    if "face_blendshapes" in perception and "face_landmarks" not in perception:
        raise ModelError(f"{where}: perception.face_blendshapes needs face_landmarks")
    quality = meta.get("quality", {})
    if not isinstance(quality, dict):
        raise ModelError(f"{where}: quality must be an object of thresholds")
    quality = params_from_dict(
        QualityRules, quality, f"{where} quality", tuple(QualityRules.__dataclass_fields__)
    )
    logits = next(t for t in graphs["fusion"].outputs if t.name == "logits")
    n_out = logits.shape[-1]
    if isinstance(n_out, int) and n_out != len(labels):
        raise ModelError(f"{where}: fusion output has {n_out} classes but {len(labels)} labels")
    if verify:
        verify_files(path, files)
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
        quality=quality,
        perception=MappingProxyType(perception),
    )
