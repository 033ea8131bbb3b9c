"""Recognizer options: one documented dataclass, checked when it is built."""

from __future__ import annotations

import dataclasses
import functools
import numbers
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

BACKENDS = ("auto", "onnxruntime", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8")
SMOOTHING = ("none", "ema")
VOICE_ACTIVITY = ("auto", "webrtc", "energy", "off")
FACE_DETECTORS = ("auto", "blazeface", "mediapipe", "haar")
MIN_HOP_S = 0.05  # at most 20 results per second of input


@dataclass(frozen=True)
class RecognizerConfig:
    """Options of a :class:`~emosdk.Recognizer`. Every field has a safe default.

    Attributes:
        model: Bundled model name (see ``emosdk.models.available_models()``) or a path to a
            bundle folder. ``"default"`` is the bundled default model.
        backend: ``"auto"`` (best available), ``"onnxruntime"`` or ``"tensorrt"``.
        precision: ``"fp32"``, ``"fp16"`` (GPU backends) or ``"int8"``.
        providers: ONNX Runtime execution providers to try in order; ``None`` picks TensorRT,
            CUDA, CPU among those installed.
        num_threads: CPU threads per graph (0 = let ONNX Runtime decide).
        window_s: Analysis window in seconds; ``None`` uses the model's.
        hop_s: Interval between streamed results in seconds (at least 0.05); ``None`` uses the
            model's.
        smoothing: ``"ema"`` (exponential moving average of class probabilities across hops) or
            ``"none"``. Raw scores are kept in every result either way.
        smoothing_alpha: EMA weight of the newest result, in (0, 1]; 1 means no smoothing.
        min_face_fraction: Fraction of a window's frames that must have a face for video to count
            as present.
        min_audio_rms: RMS level (full scale 1.0) below which a 30 ms frame is never speech.
        voice_activity: speech detector deciding whether a window's audio counts: ``"auto"``
            (WebRTC VAD when ``webrtcvad-wheels`` is installed, else energy), ``"webrtc"``,
            ``"energy"`` (RMS only), or ``"off"`` (any valid audio counts).
        min_speech_ms: speech a window needs for its audio to count as present.
        color_order: Channel order of colour frames and face crops passed in: ``"bgr"``
            (OpenCV) or ``"rgb"``.
        verify_model: Check the SHA-256 of the bundle files before loading (keep it on).
        max_faces: Faces followed in full frames. 1 follows the largest face (results have
            ``track_id`` 0); more gives each tracked face its own result per hop, with a stable
            ``track_id`` (-1 when no face is tracked).
        align_faces: Level the eyes of detected faces before the face encoder.
        face_detector: Face detector for full frames: ``"auto"`` (MediaPipe's BlazeFace on ONNX
            Runtime from the model bundle's perception graphs, or the bundled default model's;
            without them mediapipe 0.10.x when installed, else OpenCV's Haar cascade; the choice
            and the reason are logged), ``"blazeface"``, ``"mediapipe"`` (``pip install
            "emosdk[mediapipe]"``) or ``"haar"``. Face crops passed with ``face=`` are never
            detected.
        face_mesh: Follow faces with MediaPipe's 478 landmarks (and blendshapes) instead of
            detecting them in every frame: the detector runs only when the landmarks lose the
            face, crops are aligned on the irises, and face boxes carry landmarks and
            blendshapes. About 14 ms more per embedded frame on one core (docs/face.md), so off
            by default; needs the landmark graph in the bundle (the default model has it).
        quality_gate: Leave an unreliable modality (by the model's quality thresholds: noisy or
            clipped audio, a small, dark or blurred face) out of the fusion when the other one
            is present and reliable; the result says so in ``missing``. Every result reports
            each present modality's quality either way.
    """

    model: str | Path = "default"
    backend: str = "auto"
    precision: str = "fp32"
    providers: tuple[str, ...] | None = None
    num_threads: int = 0
    window_s: float | None = None
    hop_s: float | None = None
    smoothing: str = "ema"
    smoothing_alpha: float = 0.5
    min_face_fraction: float = 0.3
    min_audio_rms: float = 0.003
    voice_activity: str = "auto"
    min_speech_ms: float = 90.0
    color_order: str = "bgr"
    verify_model: bool = True
    max_faces: int = 1
    align_faces: bool = True
    face_detector: str = "auto"
    face_mesh: bool = False
    quality_gate: bool = True

    def __post_init__(self) -> None:
        def choice(name: str, options: tuple[str, ...]) -> None:
            value = getattr(self, name)
            if not isinstance(value, str) or value not in options:
                raise ConfigError(f"{name}: expected one of {options}, got {value!r}")

        def number(name: str, lo: float, hi: float, *, lo_open: bool = True) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ConfigError(f"{name}: expected a number, got {value!r}")
            ok = (value > lo if lo_open else value >= lo) and value <= hi
            if not ok:
                left = "(" if lo_open else "["
                raise ConfigError(f"{name}: expected a value in {left}{lo}, {hi}], got {value!r}")

        if not isinstance(self.model, (str, Path)) or not str(self.model):
            raise ConfigError(f"model: expected a model name or a bundle path, got {self.model!r}")
        choice("backend", BACKENDS)
        choice("precision", PRECISIONS)
        choice("smoothing", SMOOTHING)
        choice("color_order", ("bgr", "rgb"))
        choice("voice_activity", VOICE_ACTIVITY)
        choice("face_detector", FACE_DETECTORS)
        number("min_speech_ms", 0.0, 60_000.0, lo_open=False)
        if self.providers is not None:
            if not isinstance(self.providers, (list, tuple)) or not all(
                isinstance(p, str) for p in self.providers
            ):
                raise ConfigError(
                    f"providers: expected a sequence of provider names, got {self.providers!r}"
                )
            object.__setattr__(self, "providers", tuple(self.providers))
        if (
            isinstance(self.num_threads, bool)
            or not isinstance(self.num_threads, int)
            or not (0 <= self.num_threads <= 256)
        ):
            raise ConfigError(f"num_threads: expected an int in [0, 256], got {self.num_threads!r}")
        if self.window_s is not None:
            number("window_s", 0.0, 60.0)
        if self.hop_s is not None:
            number("hop_s", MIN_HOP_S, 60.0, lo_open=False)
        number("smoothing_alpha", 0.0, 1.0)
        number("min_face_fraction", 0.0, 1.0, lo_open=False)
        number("min_audio_rms", 0.0, 1.0, lo_open=False)
        for flag in ("verify_model", "align_faces", "quality_gate", "face_mesh"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigError(f"{flag}: expected a bool, got {getattr(self, flag)!r}")
        if (
            isinstance(self.max_faces, bool)
            or not isinstance(self.max_faces, int)
            or not (1 <= self.max_faces <= 16)
        ):
            raise ConfigError(f"max_faces: expected an int in [1, 16], got {self.max_faces!r}")
        # contradictory combinations name both fields
        if self.window_s is not None and self.hop_s is not None and self.hop_s > self.window_s:
            raise ConfigError(
                f"hop_s ({self.hop_s}) must not exceed window_s ({self.window_s}): "
                "audio between windows would never be analysed"
            )
        if (
            self.backend == "onnxruntime"
            and self.precision == "int8"
            and self.providers
            and ("CPUExecutionProvider" not in self.providers)
        ):
            raise ConfigError(
                "precision='int8' needs 'CPUExecutionProvider' in providers "
                f"(providers={self.providers}): int8 ONNX graphs run on the CPU provider"
            )
        if self.face_mesh and self.face_detector not in ("auto", "blazeface"):
            raise ConfigError(
                f"face_mesh=True follows faces with MediaPipe's landmarks and BlazeFace; "
                f"face_detector={self.face_detector!r} cannot serve it (use 'auto' or 'blazeface')"
            )
        if self.providers is not None and self.backend == "tensorrt":
            raise ConfigError(
                f"providers ({self.providers}) only apply to backend='onnxruntime' or 'auto', "
                "not backend='tensorrt'"
            )

    def replace(self, **changes: object) -> RecognizerConfig:
        """A copy with some fields changed (checked again)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ConfigError(f"unknown RecognizerConfig fields: {sorted(unknown)}")
        return dataclasses.replace(self, **changes)


def _checked_init(init):
    """Wrap the dataclass ``__init__`` so that unknown fields and too many positional
    arguments are a ConfigError naming the fields, not a plain TypeError."""
    names = [f.name for f in dataclasses.fields(RecognizerConfig)]

    @functools.wraps(init)
    def checked(self, *args: object, **kwargs: object) -> None:
        unknown = sorted(set(kwargs) - set(names))
        if unknown:
            raise ConfigError(f"unknown RecognizerConfig fields {unknown}; the fields are {names}")
        if len(args) > len(names):
            raise ConfigError(
                f"RecognizerConfig takes at most {len(names)} positional arguments ({names}), "
                f"got {len(args)}; pass options by name"
            )
        try:
            init(self, *args, **kwargs)
        except TypeError as e:  # e.g. a field given both by position and by name
            raise ConfigError(f"RecognizerConfig: {e}") from None

    return checked


RecognizerConfig.__init__ = _checked_init(RecognizerConfig.__init__)
