"""Whisper's log-mel front end, in numpy: the features a Whisper-based audio encoder expects.

The algorithm is OpenAI Whisper's ``log_mel_spectrogram`` without its padding to 30 s:

1. a 400-point periodic Hann window, centred frames (reflect padding of ``n_fft // 2`` samples on
   both sides), hop 160 at 16 kHz; the last frame is dropped as Whisper does, so ``n`` samples
   give ``n // 160`` frames (10 ms each);
2. the power spectrum through Whisper's 80 Slaney-scale mel filters (0 to 8 kHz, Slaney area
   normalisation; the same numbers as ``whisper/assets/mel_filters.npz``);
3. ``log10(max(mel, 1e-10))``, clamped from below at ``max - 8`` over the whole input, then
   ``(x + 4) / 4``.

The clamp at ``max - 8`` makes every frame depend on the loudest frame of the input, so the
features of a window depend on the window: the audio encoder must be trained on exactly the
windows the runtime feeds it (3 s of the stream, a short clip centred in zeros). Zero padding
inside a window is what Whisper itself saw in pre-training (it pads every input with zeros to
30 s before this front end): digital silence sits at the clamp floor, ``(max - 8 + 4) / 4``.

Parameters come from the bundle's ``model.json`` -> ``audio`` (with ``"frontend": "whisper"``);
:func:`params_from_dict` picks this front end or the plain log-mel one of
:mod:`emosdk.features.audio` from that dict, and :func:`compute_features` runs the chosen one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from typing import ClassVar

import numpy as np

from .audio import LogMelParams, log_mel, validated_pcm

FRONTEND = "whisper"
"""Value of ``model.json`` -> ``audio`` -> ``frontend`` for this front end."""


@dataclass(frozen=True)
class WhisperMelParams:
    """Whisper log-mel parameters, stored in a bundle's ``model.json`` under ``audio``.

    The attribute names and methods match :class:`~emosdk.features.audio.LogMelParams` where the
    runtime uses them (``sample_rate``, ``n_fft``, ``win_length``, ``hop_length``, ``n_mels``,
    :meth:`num_frames`, :meth:`to_dict`, :meth:`from_dict`); :meth:`to_dict` adds
    ``"frontend": "whisper"`` so a bundle says which front end its audio encoder was trained on.

    Attributes:
        sample_rate: Rate the features are computed at (Hz); input is resampled to it.
        n_fft: FFT size and Hann window length in samples (Whisper: 400).
        win_length: Window length in samples; equal to ``n_fft`` (kept for the runtime's
            arithmetic on the shortest useful input).
        hop_length: Hop between frames in samples (Whisper: 160, 10 ms).
        n_mels: Number of Slaney mel bands from 0 Hz to ``sample_rate / 2`` (Whisper tiny: 80).
        log_floor: Mel power floor before log10 (Whisper: 1e-10).
        dynamic_range: Log10 units kept below the input's maximum (Whisper: 8.0).
    """

    frontend: ClassVar[str] = FRONTEND
    max_frames: ClassVar[int] = 3000
    """Most frames the encoder takes at once: Whisper's position table has 1500 entries after
    the stride-2 convolution (30 s). Longer input is encoded in pieces of at most this many
    frames and the steps concatenated (:func:`emosdk.pipeline.encode_in_pieces`)."""

    sample_rate: int = 16_000
    n_fft: int = 400
    win_length: int = 400
    hop_length: int = 160
    n_mels: int = 80
    log_floor: float = 1e-10
    dynamic_range: float = 8.0

    def __post_init__(self) -> None:
        if self.win_length != self.n_fft:
            raise ValueError(
                f"win_length ({self.win_length}) must equal n_fft ({self.n_fft}): Whisper's "
                "front end windows the whole FFT frame"
            )
        if self.sample_rate <= 0 or self.hop_length <= 0 or self.n_mels <= 0 or self.n_fft <= 0:
            raise ValueError(
                f"sample_rate ({self.sample_rate}), n_fft ({self.n_fft}), hop_length "
                f"({self.hop_length}) and n_mels ({self.n_mels}) must be positive"
            )
        if self.log_floor <= 0 or self.dynamic_range <= 0:
            raise ValueError("log_floor and dynamic_range must be positive")

    def to_dict(self) -> dict:
        return {"frontend": FRONTEND, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> WhisperMelParams:
        if d.get("frontend", FRONTEND) != FRONTEND:
            raise ValueError(f"audio.frontend: expected {FRONTEND!r}, got {d.get('frontend')!r}")
        return cls(**{f.name: d[f.name] for f in fields(cls)})

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for ``num_samples`` samples (shorter than one window: one window)."""
        return max(num_samples, self.win_length) // self.hop_length


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa ``htk=False``): linear to 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    logstep = np.log(6.4) / 27.0
    mel = f / f_sp
    high = f >= min_log_hz
    return np.where(
        high, min_log_hz / f_sp + np.log(np.maximum(f, 1e-12) / min_log_hz) / logstep, mel
    )


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


@lru_cache(maxsize=4)
def mel_filterbank(params: WhisperMelParams) -> np.ndarray:
    """Whisper's mel filters (librosa ``filters.mel``, Slaney scale and norm), (n_mels, n_fft//2+1).

    float64; equal to ``whisper/assets/mel_filters.npz`` for 80 and 128 bands at 16 kHz / 400.
    """
    freqs = np.linspace(0.0, params.sample_rate / 2, params.n_fft // 2 + 1)
    mel_f = _mel_to_hz(
        np.linspace(_hz_to_mel(0.0), _hz_to_mel(params.sample_rate / 2), params.n_mels + 2)
    )
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - freqs[None, :]  # (n_mels + 2, n_freqs)
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    fb = np.maximum(0.0, np.minimum(lower, upper))
    fb *= (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]  # Slaney area normalisation
    fb.setflags(write=False)
    return fb


@lru_cache(maxsize=4)
def _hann(n: int) -> np.ndarray:
    w = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)  # periodic, as torch.hann_window
    w.setflags(write=False)
    return w


def whisper_log_mel(pcm: np.ndarray, params: WhisperMelParams) -> np.ndarray:
    """Whisper's log-mel features of 16 kHz mono PCM, without padding to 30 s.

    Args:
        pcm: float PCM at ``params.sample_rate`` in [-1, 1], shape (samples,). Shorter than one
            window, it is zero-padded at the end to one window.
        params: front-end parameters from the model bundle.

    Returns:
        float32 array of shape (``params.num_frames(len(pcm))``, n_mels).
    """
    x = np.asarray(pcm, dtype=np.float64)
    if len(x) < params.win_length:
        x = np.pad(x, (0, params.win_length - len(x)))
    n_frames = len(x) // params.hop_length
    half = params.n_fft // 2
    xp = np.pad(x, (half, half), mode="reflect")
    # frame i is centred on sample i * hop; Whisper drops the frame centred on the last sample
    frames = np.lib.stride_tricks.sliding_window_view(xp, params.n_fft)[:: params.hop_length]
    frames = frames[:n_frames] * _hann(params.n_fft)[None, :]
    spec = np.fft.rfft(frames, axis=1)  # (frames, n_fft // 2 + 1)
    power = spec.real**2 + spec.imag**2  # |X|^2 without the square root of np.abs
    mel = power @ mel_filterbank(params).T  # (frames, n_mels)
    logm = np.log10(np.maximum(mel, params.log_floor))
    logm = np.maximum(logm, logm.max() - params.dynamic_range)
    return ((logm + 4.0) / 4.0).astype(np.float32)


AudioParams = LogMelParams | WhisperMelParams


def params_from_dict(d: dict) -> AudioParams:
    """The front end a bundle's ``model.json`` -> ``audio`` names: Whisper's with
    ``"frontend": "whisper"``, the plain log-mel of :mod:`emosdk.features.audio` without the key
    (bundles written before Whisper keep working).

    Raises:
        ValueError: an unknown ``frontend`` value.
    """
    kind = d.get("frontend", "logmel")
    if kind == FRONTEND:
        return WhisperMelParams.from_dict(d)
    if kind == "logmel":
        return LogMelParams.from_dict(d)
    raise ValueError(f"audio.frontend: expected 'logmel' or {FRONTEND!r}, got {kind!r}")


def compute_features(pcm: np.ndarray, params: AudioParams) -> np.ndarray:
    """The features of ``params``' front end for PCM already at ``params.sample_rate``:
    (frames, n_mels) float32."""
    if isinstance(params, WhisperMelParams):
        return whisper_log_mel(pcm, params)
    return log_mel(pcm, params)


def whisper_features(audio: object, sample_rate: object, params: WhisperMelParams) -> np.ndarray:
    """Validate any PCM input, resample it and compute Whisper log-mel features.

    Args:
        audio: int16/int32/float32/float64 PCM, shape (samples,) or (samples, channels<=2).
        sample_rate: its rate in Hz (4 kHz to 384 kHz).
        params: front-end parameters from the model bundle.

    Returns:
        float32 array of shape (frames, n_mels).

    Raises:
        InputError: on any malformed input.
    """
    return whisper_log_mel(validated_pcm(audio, sample_rate, params.sample_rate), params)
