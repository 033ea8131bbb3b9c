"""Audio front-end: resampling to 16 kHz and log-mel features, in numpy.

This is the one implementation used both by the runtime and by ``train/``: a model trained on
these features sees exactly the same numbers on the device. Parameters come from the model
bundle (``model.json`` -> ``audio``), never from defaults hidden in the runtime.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from typing import ClassVar

import numpy as np

from .. import _validate
from ..errors import InputError

TARGET_SAMPLE_RATE = 16_000


@dataclass(frozen=True)
class LogMelParams:
    """Log-mel front-end parameters, stored in a bundle's ``model.json`` under ``audio``.

    Attributes:
        sample_rate: Rate the features are computed at (Hz); input is resampled to it.
        n_fft: FFT size in samples.
        win_length: Hann window length in samples (<= n_fft).
        hop_length: Hop between frames in samples.
        n_mels: Number of mel bands.
        f_min: Lowest mel filter edge (Hz).
        f_max: Highest mel filter edge (Hz), at most sample_rate / 2.
        log_floor: Added to the mel power before the natural log.
    """

    max_frames: ClassVar[int | None] = None
    """Most frames the audio encoder takes at once (None: any length; see WhisperMelParams)."""

    sample_rate: int = TARGET_SAMPLE_RATE
    n_fft: int = 512
    win_length: int = 400
    hop_length: int = 160
    n_mels: int = 64
    f_min: float = 50.0
    f_max: float = 8000.0
    log_floor: float = 1e-6

    def __post_init__(self) -> None:
        if self.win_length > self.n_fft:
            raise ValueError(f"win_length ({self.win_length}) must not exceed n_fft ({self.n_fft})")
        if not 0 <= self.f_min < self.f_max <= self.sample_rate / 2:
            raise ValueError(
                f"need 0 <= f_min ({self.f_min}) < f_max ({self.f_max}) <= sample_rate/2 "
                f"({self.sample_rate / 2})"
            )
        if self.hop_length <= 0 or self.n_mels <= 0 or self.log_floor <= 0:
            raise ValueError("hop_length, n_mels and log_floor must be positive")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> LogMelParams:
        return cls(**{f.name: d[f.name] for f in fields(cls)})

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for ``num_samples`` samples (shorter signals pad to one frame)."""
        return 1 + max(0, num_samples - self.win_length) // self.hop_length


def _kaiser_sinc_kernel(
    phase: np.ndarray, cutoff: float, half_width: int, beta: float
) -> np.ndarray:
    # phase: (..., taps) distance in input samples between output instant and each input tap
    x = phase * cutoff
    window = np.i0(beta * np.sqrt(np.clip(1.0 - (phase / (half_width + 1)) ** 2, 0.0, 1.0)))
    return cutoff * np.sinc(x) * window / np.i0(beta)


def resample(x: np.ndarray, orig_sr: int, target_sr: int = TARGET_SAMPLE_RATE) -> np.ndarray:
    """Band-limited resampling by Kaiser-windowed sinc interpolation.

    Args:
        x: float32 mono PCM, shape (samples,).
        orig_sr: Rate of ``x`` in Hz.
        target_sr: Output rate in Hz.

    Returns:
        float32 array of shape (round(samples * target_sr / orig_sr),).
    """
    if orig_sr == target_sr:
        return np.ascontiguousarray(x, dtype=np.float32)
    n_out = int(round(len(x) * target_sr / orig_sr))
    if n_out == 0:
        return np.zeros(0, np.float32)
    half_width = 16  # taps on each side, at the lower of the two rates
    cutoff = min(1.0, target_sr / orig_sr) * 0.97  # keep a little guard band below Nyquist
    span = int(math.ceil(half_width / cutoff))
    beta = 8.6
    offsets = np.arange(-span, span + 1)
    xp = np.pad(x.astype(np.float64), (span, span + 1))
    # output n sits at input position n * down / up: its phase repeats every `up` outputs, so
    # for common rate pairs one kernel per phase, computed once, serves every call
    g = math.gcd(orig_sr, target_sr)
    up, down = target_sr // g, orig_sr // g
    table = _phase_kernels(up, down, span, cutoff, beta) if up * len(offsets) <= 60_000 else None
    if table is not None and n_out >= 200 * up:
        return _resample_polyphase(xp, n_out, up, down, offsets, span, table)
    out = np.empty(n_out, np.float32)
    step = 8192  # output samples per block keeps the (block, taps) matrix small
    for start in range(0, n_out, step):
        n = np.arange(start, min(n_out, start + step))
        if table is not None:
            base = (n * down) // up
            w = table[n % up]
        else:
            t = n * (orig_sr / target_sr)  # input positions
            base = np.floor(t).astype(np.int64)
            w = _kaiser_sinc_kernel(t[:, None] - (base[:, None] + offsets), cutoff, span, beta)
        idx = base[:, None] + offsets[None, :]  # (block, taps)
        out[start : start + len(n)] = (xp[idx + span] * w).sum(axis=1)
    return out


@lru_cache(maxsize=16)
def _phase_kernels(up: int, down: int, span: int, cutoff: float, beta: float) -> np.ndarray:
    """(up, taps) kernels: row r for the outputs at phase ``(r * down mod up) / up``."""
    offsets = np.arange(-span, span + 1)
    phase = (np.arange(up) * down % up / up)[:, None] - offsets[None, :]
    table = _kaiser_sinc_kernel(phase, cutoff, span, beta)
    table.setflags(write=False)
    return table


def _resample_polyphase(
    xp: np.ndarray,
    n_out: int,
    up: int,
    down: int,
    offsets: np.ndarray,
    span: int,
    table: np.ndarray,
) -> np.ndarray:
    """:func:`resample` for long inputs: the outputs of each phase ``r`` (``r, r + up, ...``)
    are a strided sum over the input with one kernel, in numpy vector operations."""
    out = np.empty(n_out, np.float64)
    for r in range(up):
        count = (n_out - 1 - r) // up + 1
        base = (r * down) // up  # input sample at or before output r
        acc = np.zeros(count)
        for k, wk in zip(offsets, table[r]):
            first = base + k + span
            acc += wk * xp[first : first + (count - 1) * down + 1 : down]
        out[r::up] = acc
    return out.astype(np.float32)


def _hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


@lru_cache(maxsize=8)
def mel_filterbank(params: LogMelParams) -> np.ndarray:
    """HTK-scale triangular filters, shape (n_mels, n_fft // 2 + 1), float64, area-normalised."""
    n_freqs = params.n_fft // 2 + 1
    freqs = np.linspace(0.0, params.sample_rate / 2, n_freqs)
    edges = _mel_to_hz(
        np.linspace(_hz_to_mel(params.f_min), _hz_to_mel(params.f_max), params.n_mels + 2)
    )
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None, :] - lower) / (centre - lower)
    down = (upper - freqs[None, :]) / (upper - centre)
    fb = np.maximum(0.0, np.minimum(up, down))
    fb *= 2.0 / (upper - lower)  # Slaney-style area normalisation keeps bands comparable
    fb.setflags(write=False)
    return fb


@lru_cache(maxsize=8)
def _window(params: LogMelParams) -> np.ndarray:
    w = np.zeros(params.n_fft)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(params.win_length) / params.win_length)
    start = (params.n_fft - params.win_length) // 2
    w[start : start + params.win_length] = hann
    w.setflags(write=False)
    return w


def log_mel(x: np.ndarray, params: LogMelParams) -> np.ndarray:
    """Log-mel spectrogram of 16 kHz mono PCM.

    Frames are not centred: frame ``i`` covers samples ``[i*hop, i*hop + win_length)``, so a
    window of audio always yields ``params.num_frames(len(x))`` frames wherever it was cut from a
    stream. Signals shorter than one window are zero-padded to one frame.

    Args:
        x: float32 PCM at ``params.sample_rate``, shape (samples,).
        params: front-end parameters from the model bundle.

    Returns:
        float32 array of shape (frames, n_mels).
    """
    x = np.asarray(x, dtype=np.float64)
    if len(x) < params.win_length:
        x = np.pad(x, (0, params.win_length - len(x)))
    n_frames = params.num_frames(len(x))
    offset = (params.n_fft - params.win_length) // 2
    # pad so each frame of n_fft samples is centred on its win_length window
    xp = np.pad(x, (offset, params.n_fft))
    idx = np.arange(params.n_fft)[None, :] + params.hop_length * np.arange(n_frames)[:, None]
    frames = xp[idx] * _window(params)[None, :]
    power = np.abs(np.fft.rfft(frames, n=params.n_fft, axis=1)) ** 2  # (frames, n_freqs)
    mel = power @ mel_filterbank(params).T  # (frames, n_mels)
    return np.log(mel + params.log_floor).astype(np.float32)


def audio_features(audio: object, sample_rate: object, params: LogMelParams) -> np.ndarray:
    """Validate any PCM input, resample it and compute log-mel features.

    Args:
        audio: int16/int32/float32/float64 PCM, shape (samples,) or (samples, channels<=2).
        sample_rate: its rate in Hz (4 kHz to 384 kHz).
        params: front-end parameters from the model bundle.

    Returns:
        float32 array of shape (frames, n_mels).

    Raises:
        InputError: on any malformed input.
    """
    return log_mel(validated_pcm(audio, sample_rate, params.sample_rate), params)


def validated_pcm(audio: object, sample_rate: object, rate: int) -> np.ndarray:
    """Any PCM input validated, mixed to mono float and resampled to ``rate`` Hz: what every
    front end's ``*_features`` computes its features from.

    Raises:
        InputError: on any malformed input, or no sample left after resampling.
    """
    pcm = _validate.audio("audio", audio)
    sr = _validate.sample_rate("sample_rate", sample_rate)
    pcm = resample(pcm, sr, rate)
    if len(pcm) == 0:
        raise InputError("audio: expected at least one sample after resampling")
    return pcm
