"""How trustworthy a present modality is: signal measures a user can act on, in numpy.

A modality can be *present* and still *unreliable*: speech under fan noise, a face in a dark
room. Every result carries, per modality that was present, a :class:`~emosdk.results.Quality`:
the measures below and whether they pass the bundle's thresholds (:class:`QualityRules`, in
``model.json`` -> ``quality`` or the defaults here). The rules that turn measures into a verdict
live in :mod:`emosdk.health` beside the rules for missing modalities.

Audio measures (over the window's valid samples, 30 ms frames):

- ``snr_db``: the mean over four bands (0.1-1, 1-2, 2-4, 4-7.8 kHz) of the speech frames' power
  above the noise floor, over the noise floor, in dB; the floor of each frequency is its 10th
  percentile over the window's frames (minimum statistics). Band by band, hiss that fills the
  high bands reads as noise even when the overall level barely moves;
- ``speech_fraction``: share of the window's frames with voice activity;
- ``level_dbfs``: power of the speech frames in dB full scale (very low gain reads low);
- ``clipping``: share of samples within 0.01 % of the window's peak (a clipped waveform sits
  flat at its peak, wherever its gain was set afterwards; speech is there in 1e-5 of samples);
- ``hf_db``: the speech frames' power above 3.8 kHz relative to their total, in dB (a telephone
  line or a heavy low-pass reads below -60).

Face measures (per embedded frame, then the median over the window's frames with a face):

- ``face_px``: the shorter side of the face box in frame pixels (of the crop for face crops);
- ``brightness``: mean grey level of the crop in [0, 1];
- ``contrast``: standard deviation of the crop's grey levels;
- ``sharpness``: mean absolute Laplacian of the 48 px normalised grey crop (blur reads low);
- ``noise``: the noise the face encoder sees: Immerkaer's estimate of the noise standard
  deviation (a Laplacian-difference mask that cancels edges to first order) on the crop at its
  own resolution, divided by the factor by which the crop is shrunk to the encoder's size (area
  averaging divides white noise by it). Sensor noise in a dim room reads high;
- ``detector_score``: the face detector's confidence (1.0 for given crops and Haar).

Evidence measures (per window, from the fusion graph's unimodal auxiliary heads, AuxFormer's
``logits_audio`` / ``logits_video``, when the graph has them):

- ``audio_confidence``, ``face_confidence``: the top class probability of that modality's own
  head: how clearly the voice (the face) alone points to one emotion. Corruptions that pass
  the signal rules (other people talking, a narrow band, heavy clipping) show here: the branch
  hears the window but cannot tell. A low value with clean signal measures means the
  expression itself is ambiguous; the reason string says which.
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
        min_snr_db: band-averaged audio SNR estimate at least this.
        min_level_dbfs: speech level at least this (very low gain).
        max_clipping: share of samples at the peak at most this.
        min_hf_db: speech power above 3.8 kHz at least this, relative (telephone band).
        min_face_px: face at least this many pixels across.
        min_brightness, max_brightness: mean grey level of the face crop within these.
        min_contrast: grey-level spread of the face crop at least this.
        min_sharpness: Laplacian energy of the normalised crop at least this (blur).
        max_noise: noise standard deviation of the crop at most this (sensor noise).
        min_detector_score: detector confidence at least this.
        min_audio_confidence, min_face_confidence: top probability of the modality's own
            auxiliary head at least this (0: off).
    """

    min_snr_db: float = 8.0
    min_level_dbfs: float = -45.0
    max_clipping: float = 0.005
    min_hf_db: float = -45.0
    min_face_px: float = 32.0
    min_brightness: float = 0.15
    max_brightness: float = 0.92
    min_contrast: float = 0.05
    min_sharpness: float = 0.05
    max_noise: float = 0.045
    min_detector_score: float = 0.5
    min_audio_confidence: float = 0.0
    min_face_confidence: float = 0.0

    @classmethod
    def from_dict(cls, d: Mapping[str, float]) -> QualityRules:
        known = {f.name for f in fields(cls)}
        return cls(**{k: float(v) for k, v in d.items() if k in known})


BANDS_HZ = ((100.0, 1000.0), (1000.0, 2000.0), (2000.0, 4000.0), (4000.0, 7800.0))
HF_HZ = 3800.0


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
    n = len(pcm) // frame_len
    ok = valid[: n * frame_len].reshape(n, frame_len).all(axis=1) if n else np.zeros(0, bool)
    if not ok.any():
        return {}
    frames = pcm[: n * frame_len].reshape(n, frame_len).astype(np.float64)[ok]
    power = np.abs(np.fft.rfft(frames * np.hanning(frame_len), axis=1)) ** 2  # (frames, bins)
    freqs = np.fft.rfftfreq(frame_len, 1.0 / sample_rate)
    total = power.sum(axis=1)
    if speech is None:
        is_speech = total >= np.median(total)
    else:
        is_speech = np.zeros(n, bool)
        is_speech[: min(n, len(speech))] = np.asarray(speech[:n], bool)
        is_speech = is_speech[ok]
    if not is_speech.any():
        is_speech = np.ones(len(total), bool)
    eps = 1e-12
    # minimum statistics per frequency: a noise bin's power is exponentially distributed, so its
    # 10th percentile is 0.105 of its mean (-9.8 dB); divide that bias out
    floor = np.percentile(power, 10, axis=0) / 0.1054 + eps
    voiced = power[is_speech].mean(axis=0)
    bands = []
    for lo, hi in BANDS_HZ:
        band = (freqs >= lo) & (freqs < min(hi, sample_rate / 2))
        # a band the speech frames leave empty (a telephone line's top) says nothing of noise
        if band.any() and voiced[band].sum() > 1e-4 * voiced.sum():
            excess = max(voiced[band].sum() - floor[band].sum(), eps)
            bands.append(10.0 * np.log10(excess / floor[band].sum()))
    real = pcm[valid].astype(np.float64)
    peak = float(np.abs(real).max()) if len(real) else 0.0
    # the frames' power is the windowed half spectrum's: back to mean square per sample
    scale = frame_len * float((np.hanning(frame_len) ** 2).sum()) / 2.0
    return {
        "snr_db": float(np.clip(np.mean(bands), -30.0, 80.0)) if bands else 0.0,
        "speech_fraction": float(is_speech.sum() / len(is_speech)),
        "level_dbfs": float(10.0 * np.log10(max(total[is_speech].mean() / scale, eps))),
        "clipping": float(np.mean(np.abs(real) >= (1 - 1e-4) * peak)) if peak > 0 else 0.0,
        "hf_db": float(10.0 * np.log10(voiced[freqs >= HF_HZ].sum() / voiced.sum() + eps)),
    }


def head_confidence(logits: np.ndarray) -> float:
    """Top softmax probability of one window's logits (C,) (an auxiliary head's)."""
    z = np.asarray(logits, np.float64).reshape(-1)
    e = np.exp(z - z.max())
    return float(e.max() / e.sum())


def immerkaer_noise(gray: np.ndarray) -> float:
    """Immerkaer (1996): the standard deviation of white noise in a grey image, from the mean
    absolute response to [[1,-2,1],[-2,4,-2],[1,-2,1]] (a difference of two Laplacians: zero on
    planes, small on edges)."""
    g = np.asarray(gray, np.float64)
    h, w = g.shape
    if h < 3 or w < 3:
        return 0.0
    mask = np.array([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])
    resp = sum(mask[i, j] * g[i : h - 2 + i, j : w - 2 + j] for i in range(3) for j in range(3))
    return float(np.sqrt(np.pi / 2.0) * np.abs(resp).sum() / (6.0 * (w - 2) * (h - 2)))


def face_measures(
    gray48: np.ndarray,
    face_px: float,
    detector_score: float = 1.0,
    native_gray: np.ndarray | None = None,
) -> dict[str, float]:
    """Face measures of one crop (see the module docstring).

    Args:
        gray48: the crop as the face encoder sees it before normalisation: (S, S) grey in
            [0, 1].
        face_px: the shorter side of the face box in frame pixels.
        detector_score: the detector's confidence.
        native_gray: the crop in grey [0, 1] at its own resolution, for the noise estimate
            (default: ``gray48``).
    """
    g = np.asarray(gray48, np.float64)
    lap = -4.0 * g[1:-1, 1:-1] + g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:]
    native = g if native_gray is None else np.asarray(native_gray, np.float64)
    shrink = max(1.0, min(native.shape) / g.shape[0])
    noise = immerkaer_noise(native) / shrink
    return {
        "face_px": float(face_px),
        "brightness": float(g.mean()),
        "contrast": float(g.std()),
        "sharpness": float(np.abs(lap).mean()),
        "noise": float(noise),
        "detector_score": float(detector_score),
    }


def window_face_measures(per_frame: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """The median of each face measure over a window's frames with a face."""
    if not per_frame:
        return {}
    keys = per_frame[0].keys()
    return {k: float(np.median([m[k] for m in per_frame])) for k in keys}
