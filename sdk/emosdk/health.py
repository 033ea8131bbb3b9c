"""When a modality counts as missing: the rules in one place, as pure functions.

Each function returns the reason a result reports (``EmotionResult.missing``), or ``None`` when
the modality is present. ``predict`` and streams call the same functions, and the table in
docs/design.md ("Modality decisions") lists them.
"""

from __future__ import annotations

import numpy as np

from .capture.base import SourceInfo
from .results import Modality

DEVICE = {Modality.AUDIO: "microphone", Modality.VIDEO: "camera"}

NOT_PROVIDED = "not provided"
NO_AUDIO = "no audio in window"
AUDIO_MASKED = "audio too short or mostly missing"
NO_FRAMES = "no video frames in window"


def absent_from_source(info: SourceInfo) -> dict[Modality, str]:
    """Modalities a source says it does not deliver, with its reason or "<device> not used"."""
    if info.provides is None:
        return {}
    return {
        m: info.absent_reasons.get(m, f"{DEVICE[m]} not used")
        for m in Modality
        if m not in info.provides
    }


def source_failed(error: BaseException) -> str:
    """The reason both modalities carry after the source raised."""
    return f"source failed: {type(error).__name__}: {error}"


def audio_missing(
    any_valid: bool, speech: bool, speech_ms: float, vad_method: str | None, min_speech_ms: float
) -> str | None:
    """Audio of a window counts when it has valid samples and enough voice activity.

    Args:
        any_valid: some sample of the window was captured (not a gap, not padding).
        speech: the voice-activity detector found at least ``min_speech_ms`` of speech (True
            when voice activity is off).
        speech_ms: how much speech it found.
        vad_method: which detector ran (``"webrtc"``, ``"energy"``), for the reason.
        min_speech_ms: the speech a window needs.
    """
    if not any_valid:
        return NO_AUDIO
    if not speech:
        return (
            f"silence: {speech_ms:.0f} ms of speech ({vad_method} voice activity), "
            f"need {min_speech_ms:.0f} ms"
        )
    return None


def audio_steps_missing(step_mask: np.ndarray) -> str | None:
    """After encoding: no encoder step had enough valid samples to count."""
    return None if step_mask.any() else AUDIO_MASKED


def video_missing(
    face_mask: np.ndarray,
    frames_seen: int,
    min_face_fraction: float,
    recent_slots: int | None = None,
    recent_ms: float | None = None,
    dropped: str | None = None,
) -> str | None:
    """Video of a window counts when enough of its frame slots hold a face, including a recent one.

    Args:
        face_mask: (T,) 1.0 for each slot of the model's frame grid that has a face.
        frames_seen: slots that had a frame at all, with or without a face.
        min_face_fraction: share of slots that must hold a face.
        recent_slots: the newest slots that must hold a face (streams: the last hop), so that a
            face that leaves switches results to audio-only within one hop.
        recent_ms: how long those slots last, for the reason.
        dropped: why the source's last frames were dropped, if they were (e.g. malformed).
    """
    if frames_seen == 0:
        return NO_FRAMES if dropped is None else f"{NO_FRAMES} (frames dropped: {dropped})"
    share = float(face_mask.mean())
    if share < max(min_face_fraction, 1e-9):
        return (
            f"no face in {100 * (1 - share):.0f}% of frames "
            f"(need a face in {100 * min_face_fraction:.0f}%)"
        )
    if recent_slots and not face_mask[-recent_slots:].any():
        return f"no face in the last {(recent_ms or 0.0) / 1000.0:.2f} s"
    return None
