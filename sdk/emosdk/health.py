"""When a modality counts as missing: the rules in one place, as pure functions.

Each function returns the reason a result reports (``EmotionResult.missing``), or ``None`` when
the modality is present. ``predict`` and streams call the same functions, and the table in
docs/design.md ("Modality decisions") lists them.
"""

from __future__ import annotations

import numpy as np

from .capture.base import SourceInfo
from .quality import QualityRules
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


def audio_unreliable(measures: dict[str, float], rules: QualityRules) -> str | None:
    """Why present audio is not reliable (noise, very low gain, clipping, a telephone band, a
    voice the audio branch finds ambiguous), or None."""
    if not measures:
        return None
    why = []
    if measures["snr_db"] < rules.min_snr_db:
        why.append(f"SNR {measures['snr_db']:.0f} dB < {rules.min_snr_db:.0f} dB")
    if measures["level_dbfs"] < rules.min_level_dbfs:
        why.append(f"level {measures['level_dbfs']:.0f} dBFS < {rules.min_level_dbfs:.0f} dBFS")
    if measures["clipping"] > rules.max_clipping:
        why.append(f"{100 * measures['clipping']:.1f}% of samples clipped")
    if measures["hf_db"] < rules.min_hf_db:
        why.append(f"no high frequencies ({measures['hf_db']:.0f} dB above 3.8 kHz; telephone?)")
    why += _ambiguous("audio", "the voice", measures, rules.min_audio_confidence, bool(why))
    return "; ".join(why) or None


def _ambiguous(
    modality: str, what: str, measures: dict[str, float], threshold: float, explained: bool
) -> list[str]:
    """The confidence rule's reason (empty when it passes or was not measured)."""
    c = measures.get(f"{modality}_confidence")
    if c is None or c >= threshold:
        return []
    why = f"{what} alone is ambiguous ({modality} confidence {c:.2f} < {threshold:.2f}"
    return [why + (")" if explained else "; the signal measures look clean)")]


def video_unreliable(measures: dict[str, float], rules: QualityRules) -> str | None:
    """Why a present face is not reliable (small, dark or bright, flat, blurred, doubtful,
    ambiguous to the face branch), or None."""
    if not measures:
        return None
    why = []
    if measures["face_px"] < rules.min_face_px:
        why.append(f"face {measures['face_px']:.0f} px < {rules.min_face_px:.0f} px")
    if not rules.min_brightness <= measures["brightness"] <= rules.max_brightness:
        why.append(
            f"brightness {measures['brightness']:.2f} outside [{rules.min_brightness}, "
            f"{rules.max_brightness}]"
        )
    if measures["contrast"] < rules.min_contrast:
        why.append(f"contrast {measures['contrast']:.3f} < {rules.min_contrast}")
    if measures["sharpness"] < rules.min_sharpness:
        why.append(f"sharpness {measures['sharpness']:.3f} < {rules.min_sharpness} (blur)")
    if measures.get("noise", 0.0) > rules.max_noise:
        why.append(f"noise {measures['noise']:.3f} > {rules.max_noise} (a dark room?)")
    if measures["detector_score"] < rules.min_detector_score:
        why.append(f"detector score {measures['detector_score']:.2f} < {rules.min_detector_score}")
    why += _ambiguous("face", "the face", measures, rules.min_face_confidence, bool(why))
    return "; ".join(why) or None


def gate(unreliable: dict, present: tuple, enabled: bool) -> dict:
    """The present modalities to leave out of the fusion for being unreliable: one that is
    unreliable while another present one is reliable (with nothing better, all stay in).

    Args:
        unreliable: modality -> reason (None when reliable), for the present modalities.
        present: the modalities that would be fused.
        enabled: the recognizer's ``quality_gate``.
    """
    if not enabled or len(present) < 2:
        return {}
    bad = {m: why for m, why in unreliable.items() if m in present and why}
    if not bad or len(bad) == len(present):
        return {}
    return {m: f"unreliable: {why}" for m, why in bad.items()}
