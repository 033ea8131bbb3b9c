"""How trustworthy a present modality is: signal measures a user can act on, in numpy.

A modality can be *present* and still *unreliable*: speech under fan noise, a face in a dark
room. Every result carries, per modality that was present, a :class:`~emosdk.results.Quality`:
the measures below and whether they pass the bundle's thresholds (:class:`QualityRules`, in
``model.json`` -> ``quality`` or the defaults here). The rules that turn measures into a verdict
live in :mod:`emosdk.health` beside the rules for missing modalities.

Audio measures (over the window's valid samples, 30 ms frames):

- ``snr_db``: speech frames' power over the noise floor (the non-speech frames' power, or the
  10th percentile of frame power when there are few), in dB;
- ``speech_fraction``: share of the window's frames with voice activity;
- ``level_dbfs``: RMS of the speech frames in dB full scale (very low gain reads low);
- ``clipping``: share of samples at or above 0.99 full scale;
- ``bandwidth_hz``: the frequency below which 99 % of the speech frames' energy lies (a
  telephone line reads about 3400 Hz).

Face measures (per embedded frame, then the median over the window's frames with a face):

- ``face_px``: the shorter side of the face box in frame pixels (of the crop for face crops);
- ``brightness``: mean grey level of the crop in [0, 1];
- ``contrast``: standard deviation of the crop's grey levels;
- ``sharpness``: mean absolute Laplacian of the 48 px normalised grey crop (blur reads low);
- ``detector_score``: the face detector's confidence (1.0 for given crops and Haar).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np

FRAME_MS = 30


@dataclass(frozen=True)
class QualityRules:
    """Thresholds that make a present modality *reliable*; a bundle may set its own in
    ``model.json`` -> ``quality`` (any subset of these fields).

    Attributes:
        min_snr_db: audio SNR estimate at least this.
        min_level_dbfs: speech level at least this (very low gain).
        max_clipping: share of clipped samples at most this.
        min_bandwidth_hz: speech bandwidth at least this (telephone band or heavy low-pass).
        min_face_px: face at least this many pixels across.
        min_brightness, max_brightness: mean grey level of the face crop within these.
        min_contrast: grey-level spread of the face crop at least this.
        min_sharpness: Laplacian energy of the normalised crop at least this (blur).
        min_detector_score: detector confidence at least this.
    """

    min_snr_db: float = 8.0
    min_level_dbfs: float = -45.0
    max_clipping: float = 0.01
    min_bandwidth_hz: float = 2500.0
    min_face_px: float = 32.0
    min_brightness: float = 0.12
    max_brightness: float = 0.92
    min_contrast: float = 0.05
    min_sharpness: float = 0.02
    min_detector_score: float = 0.5

    @classmethod
    def from_dict(cls, d: Mapping[str, float]) -> QualityRules:
        known = {f.name for f in fields(cls)}
        return cls(**{k: float(v) for k, v in d.items() if k in known})


def _frame_power(pcm: np.ndarray, valid: np.ndarray, frame_len: int) -> tuple[np.ndarray, int]:
    n = len(pcm) // frame_len
    frames = pcm[: n * frame_len].reshape(n, frame_len).astype(np.float64)
    ok = valid[: n * frame_len].reshape(n, frame_len).all(axis=1)
    return (frames**2).mean(axis=1), ok


def audio_measures(
    pcm: np.ndarray, valid: np.ndarray, speech: np.ndarray | None, sample_rate: int
) -> dict[str, float]:
    """Audio measures of one window (see the module docstring).

    Args:
        pcm: float32 mono PCM at ``sample_rate``.
        valid: (samples,) True where a sample was captured (not a gap, not padding).
        speech: one bool per 30 ms frame (voice activity), or None when voice activity is off
            (then the loudest half of the frames count as speech).
        sample_rate: Hz.
    """
    frame_len = sample_rate * FRAME_MS // 1000
    power, ok = _frame_power(pcm, valid, frame_len)
    if not ok.any():
        return {}
    if speech is None:
        speech = power >= np.median(power[ok])
    speech = np.asarray(speech[: len(power)], bool) & ok[: len(speech)]
    noise_frames = ok[: len(speech)] & ~speech
    eps = 1e-12
    if speech.any():
        s_power = float(power[: len(speech)][speech].mean())
    else:
        s_power = float(power[ok].mean())
    if noise_frames.sum() >= 5:
        n_power = float(np.median(power[: len(speech)][noise_frames]))
    else:
        n_power = float(np.percentile(power[ok], 10))
    snr = 10.0 * np.log10(max(s_power - n_power, eps) / max(n_power, eps))
    idx = np.flatnonzero(speech) if speech.any() else np.flatnonzero(ok)
    spectrum = np.zeros(frame_len // 2 + 1)
    for i in idx[:: max(1, len(idx) // 32)]:  # at most ~32 frames: enough for a bandwidth
        x = pcm[i * frame_len : (i + 1) * frame_len].astype(np.float64) * np.hanning(frame_len)
        spectrum += np.abs(np.fft.rfft(x)) ** 2
    cum = np.cumsum(spectrum)
    freqs = np.fft.rfftfreq(frame_len, 1.0 / sample_rate)
    bandwidth = float(freqs[np.searchsorted(cum, 0.99 * cum[-1])]) if cum[-1] > 0 else 0.0
    real = pcm[valid]
    return {
        "snr_db": float(np.clip(snr, -30.0, 80.0)),
        "speech_fraction": float(speech.sum() / max(ok.sum(), 1)),
        "level_dbfs": float(10.0 * np.log10(max(s_power, eps))),
        "clipping": float(np.mean(np.abs(real) >= 0.99)) if len(real) else 0.0,
        "bandwidth_hz": bandwidth,
    }


def face_measures(
    gray48: np.ndarray, face_px: float, detector_score: float = 1.0
) -> dict[str, float]:
    """Face measures of one crop (see the module docstring).

    Args:
        gray48: the crop as the face encoder sees it before normalisation: (S, S) grey in
            [0, 1].
        face_px: the shorter side of the face box in frame pixels.
        detector_score: the detector's confidence.
    """
    g = np.asarray(gray48, np.float64)
    lap = -4.0 * g[1:-1, 1:-1] + g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:]
    return {
        "face_px": float(face_px),
        "brightness": float(g.mean()),
        "contrast": float(g.std()),
        "sharpness": float(np.abs(lap).mean()),
        "detector_score": float(detector_score),
    }


def window_face_measures(per_frame: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """The median of each face measure over a window's frames with a face."""
    if not per_frame:
        return {}
    keys = per_frame[0].keys()
    return {k: float(np.median([m[k] for m in per_frame])) for k in keys}
