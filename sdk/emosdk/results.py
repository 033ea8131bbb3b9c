"""Result types: frozen dataclasses, safe to share across threads and to serialise."""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


class Modality(str, enum.Enum):
    """An input modality."""

    AUDIO = "audio"
    VIDEO = "video"

    def __str__(self) -> str:
        return self.value


def _frozen(d: Mapping) -> Mapping:
    return MappingProxyType(dict(d))


@dataclass(frozen=True)
class Latency:
    """Time spent per stage for one result, in milliseconds.

    Attributes:
        stages: Stage name -> milliseconds: ``resample``, ``audio_frontend``, ``audio_encoder``,
            ``face_detect``, ``face_preprocess``, ``face_encoder``, ``fusion``, ``smoothing``.
            Stages that did not run are absent; each also has a ``<stage>_ms`` property (None
            when it did not run).
        total_ms: Wall time from the start of processing the window to the result (in a
            stream: the hop's work, including its frames' face stages).
    """

    stages: Mapping[str, float] = field(default_factory=dict)
    total_ms: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", _frozen(self.stages))

    def _stage(self, name: str) -> float | None:
        return self.stages.get(name)

    @property
    def resample_ms(self) -> float | None:
        """Resampling the audio to the model's rate (``predict``); None when it did not run."""
        return self._stage("resample")

    @property
    def audio_frontend_ms(self) -> float | None:
        """The audio front end (log-mel); None when it did not run."""
        return self._stage("audio_frontend")

    @property
    def audio_encoder_ms(self) -> float | None:
        """The audio encoder graph; None when it did not run."""
        return self._stage("audio_encoder")

    @property
    def face_detect_ms(self) -> float | None:
        """Face detection and alignment in full frames; None when it did not run."""
        return self._stage("face_detect")

    @property
    def face_preprocess_ms(self) -> float | None:
        """Face crop normalisation; None when it did not run."""
        return self._stage("face_preprocess")

    @property
    def face_encoder_ms(self) -> float | None:
        """The face encoder graph; None when it did not run."""
        return self._stage("face_encoder")

    @property
    def fusion_ms(self) -> float | None:
        """The fusion graph; None when it did not run (no modality present)."""
        return self._stage("fusion")

    @property
    def smoothing_ms(self) -> float | None:
        """Calibration and smoothing of the scores; None when it did not run."""
        return self._stage("smoothing")


@dataclass(frozen=True)
class Quality:
    """How trustworthy one present modality was in a window.

    Attributes:
        reliable: the measures pass the model's thresholds (``model.json`` -> ``quality``).
        measures: what was measured (see :mod:`emosdk.quality`): for audio ``snr_db``,
            ``speech_fraction``, ``level_dbfs``, ``clipping``, ``hf_db``; for video
            ``face_px``, ``brightness``, ``contrast``, ``sharpness``, ``noise``,
            ``detector_score``
            (medians over the window's frames with a face); and ``audio_confidence`` /
            ``face_confidence``, the top probability of that modality's own head in the fusion
            graph, when the graph has one.
        reason: why it is not reliable (e.g. ``"SNR 2 dB < 8 dB"``), None when it is.
    """

    reliable: bool
    measures: Mapping[str, float] = field(default_factory=dict)
    reason: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "measures", _frozen(self.measures))

    def to_dict(self) -> dict[str, Any]:
        return {
            "reliable": self.reliable,
            "measures": {k: round(float(v), 4) for k, v in self.measures.items()},
            "reason": self.reason,
        }


@dataclass(frozen=True)
class EmotionResult:
    """One emotion estimate for one window.

    Attributes:
        label: Most probable class, or ``None`` when no modality was usable.
        scores: Class -> probability after smoothing (empty when ``label`` is None).
        raw_scores: Class -> probability of this window alone, before smoothing.
        timestamp_ms: End of the window on the source's monotonic clock (ms).
        window_ms: (start, end) of the analysed window (ms).
        modalities: Modalities that contributed, e.g. ``(Modality.AUDIO, Modality.VIDEO)``.
        missing: Modality -> why it did not contribute (e.g. ``"no face in 80% of frames"``).
        coverage: Modality -> fraction of the window in which it was present (0..1).
        degraded: True when a modality is missing.
        reason: Human-readable summary of ``missing`` (``None`` when nothing is missing).
        latency: Per-stage latency breakdown.
        track_id: Face track the result belongs to (0 for the primary face).
        quality: Modality -> :class:`Quality` for each modality that was present: measures of
            its signal (SNR, face size, blur, brightness...) and whether they make it reliable.
            An unreliable modality next to a reliable one is left out of the fusion (it then
            appears in ``missing`` as ``"unreliable: ..."``) unless ``quality_gate=False``.
    """

    label: str | None
    scores: Mapping[str, float]
    raw_scores: Mapping[str, float]
    timestamp_ms: float
    window_ms: tuple[float, float]
    modalities: tuple[Modality, ...]
    missing: Mapping[Modality, str]
    coverage: Mapping[Modality, float]
    latency: Latency
    track_id: int = 0
    quality: Mapping[Modality, Quality] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("scores", "raw_scores", "missing", "coverage", "quality"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))

    @property
    def degraded(self) -> bool:
        return bool(self.missing)

    @property
    def reason(self) -> str | None:
        if not self.missing:
            return None
        return "; ".join(f"{m.value}: {why}" for m, why in self.missing.items())

    @property
    def reliable(self) -> bool:
        """Every modality that contributed was reliable (False when none contributed)."""
        return bool(self.modalities) and all(
            self.quality[m].reliable for m in self.modalities if m in self.quality
        )

    @property
    def confidence(self) -> float:
        """Probability of ``label`` (0 when there is no label)."""
        return float(self.scores[self.label]) if self.label is not None else 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of the result."""
        return {
            "label": self.label,
            "confidence": round(self.confidence, 6),
            "scores": {k: round(float(v), 6) for k, v in self.scores.items()},
            "raw_scores": {k: round(float(v), 6) for k, v in self.raw_scores.items()},
            "timestamp_ms": round(self.timestamp_ms, 3),
            "window_ms": [round(self.window_ms[0], 3), round(self.window_ms[1], 3)],
            "modalities": [m.value for m in self.modalities],
            "degraded": self.degraded,
            "reason": self.reason,
            "missing": {m.value: why for m, why in self.missing.items()},
            "coverage": {m.value: round(v, 4) for m, v in self.coverage.items()},
            "latency_ms": {
                **{k: round(v, 3) for k, v in self.latency.stages.items()},
                "total": round(self.latency.total_ms, 3),
            },
            "track_id": self.track_id,
            "reliable": self.reliable,
            "quality": {m.value: q.to_dict() for m, q in self.quality.items()},
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict())
