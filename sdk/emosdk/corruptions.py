"""Deterministic corruptions of audio and face video: what microphones, rooms, codecs, cameras and
lighting do to a recording, at five documented severities.

The robustness benchmark (:mod:`emosdk.robustness`, ``emosdk-bench robustness``) applies them to
decoded files; training may reuse the same functions as augmentation with its own parameters and
seeds (the benchmark's table :data:`CORRUPTIONS` is fixed so that figures stay comparable).

Everything here is numpy, except two functions that use a codec from the ``capture`` extra:
:func:`opus_round_trip` (PyAV's libopus) and :func:`jpeg` (OpenCV's ``imencode``); both are
imported inside the function and raise :class:`~emosdk.errors.BackendUnavailableError` naming the
extra when missing.

Conventions: audio is float32 mono PCM in [-1, 1] at ``sample_rate`` (16 kHz in the benchmark);
images are uint8 (H, W) or (H, W, C) (BGR for colour, as OpenCV and the Recognizer use), and are
returned as uint8 of the same shape, because a camera delivers 8-bit frames. A face box is
``(x, y, w, h)`` in pixels; ``None`` means the image is itself a face crop. Functions that draw
random numbers take a ``numpy.random.Generator``; the same generator state gives the same output.
"""

from __future__ import annotations

import io
import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from .errors import BackendUnavailableError, InputError
from .features.audio import resample

Box = tuple[int, int, int, int]

#: the benchmark's severities
SEVERITIES = (1, 2, 3, 4, 5)
#: 16-bit full scale, for the quantisation of a digitised signal
INT16_SCALE = 32768.0


# -- helpers ------------------------------------------------------------------------------------
def rms(x: np.ndarray) -> float:
    """Root mean square of a signal (float64 accumulation; 1e-12 for silence or no samples)."""
    if np.size(x) == 0:
        return 1e-12
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))) + 1e-12)


def _audio(x: np.ndarray, name: str = "pcm") -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1 or a.dtype.kind != "f":
        raise InputError(
            f"{name}: expected float mono PCM of shape (samples,), got {a.dtype}{a.shape}"
        )
    return a.astype(np.float32, copy=False)


def _image(img: np.ndarray, name: str = "image") -> np.ndarray:
    a = np.asarray(img)
    if a.dtype != np.uint8 or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 3)):
        raise InputError(
            f"{name}: expected a uint8 image (H, W) or (H, W, 1|3), got {a.dtype}{a.shape}"
        )
    return a


def _to_uint8(x: np.ndarray) -> np.ndarray:
    """[0, 1] floats to 8 bits, as a camera quantises."""
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _box(img: np.ndarray, box: Box | None) -> Box:
    """The face box, clipped to the image; the whole image when ``box`` is None (a crop)."""
    h, w = img.shape[:2]
    if box is None:
        return 0, 0, w, h
    x, y, bw, bh = (int(round(v)) for v in box)
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(w, x + bw), min(h, y + bh)
    if x1 <= x0 or y1 <= y0:
        raise InputError(f"box: expected (x, y, w, h) overlapping the {w}x{h} image, got {box}")
    return x0, y0, x1 - x0, y1 - y0


# -- audio --------------------------------------------------------------------------------------
def colored_noise(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with a 1/f**exponent power spectrum (0 white, 1 pink, 2 brown), unit RMS.

    Returns:
        float32 (n,).
    """
    if exponent == 0:
        x = rng.standard_normal(n)
    else:
        size = 1 << max(1, (n - 1).bit_length())  # a power of two: fast FFTs for any n
        spec = np.fft.rfft(rng.standard_normal(size))
        f = np.maximum(np.fft.rfftfreq(size), 1.0 / size)  # DC takes the lowest frequency's gain
        x = np.fft.irfft(spec / f ** (exponent / 2.0), size)[:n]
    return (x / rms(x)).astype(np.float32)


def mix_at_snr(x: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``x`` plus ``noise`` scaled so that the power ratio over the whole clip is ``snr_db``.

    The noise is tiled or cut to the length of ``x``. The sum may exceed full scale: the
    Recognizer refuses float audio beyond [-1, 1], so scale it (:func:`fit_full_scale`) or clip
    it before predicting.
    """
    x = _audio(x)
    noise = np.resize(_audio(noise, "noise"), len(x))
    gain = rms(x) / rms(noise) * 10.0 ** (-snr_db / 20.0)
    return (x + gain * noise).astype(np.float32)


def babble(n: int, talkers: Sequence[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Several other people talking: each talker's clip (tiled when shorter than ``n``) from a
    random offset, normalised to unit RMS, summed.

    Args:
        n: samples wanted.
        talkers: one float PCM array per talker (other speakers than the target).
        rng: draws the offsets.

    Returns:
        float32 (n,), unit RMS.
    """
    if not talkers:
        raise InputError("talkers: expected at least one clip of another speaker for babble")
    out = np.zeros(n, np.float64)
    for clip in talkers:
        c = _audio(clip, "talker")
        if len(c) == 0:
            continue
        start = int(rng.integers(0, len(c)))
        seg = np.resize(np.roll(c, -start), n)  # tiles a short clip, from the drawn offset on
        out += seg / rms(seg)
    return (out / rms(out)).astype(np.float32)


def room_impulse_response(
    rt60_s: float, drr_db: float, rng: np.random.Generator, sample_rate: int = 16_000
) -> np.ndarray:
    """A synthetic room impulse response: a direct path, then Gaussian noise decaying
    exponentially to -60 dB at ``rt60_s`` (Polack's statistical model of a diffuse tail).

    Args:
        rt60_s: reverberation time in seconds.
        drr_db: direct-to-reverberant energy ratio (high: close to the microphone).
        rng: draws the tail.
        sample_rate: rate of the response.

    Returns:
        float32 (round(1.2 * rt60_s * sample_rate),), the direct path at sample 0 with weight 1.

    Raises:
        InputError: ``rt60_s`` is not finite, or too short to leave a tail after the 2.5 ms
            gap before the first reflection (about 2.1 ms at any rate).
    """
    gap = max(1, int(0.0025 * sample_rate))  # the first reflection comes ~1 m later
    shortest = (gap + 1) / (1.2 * sample_rate)
    if not (math.isfinite(rt60_s) and round(1.2 * rt60_s * sample_rate) > gap):
        raise InputError(
            f"rt60_s: expected a finite reverberation time of at least {shortest:.4f} s "
            f"(a tail after the first reflection), got {rt60_s}"
        )
    n = int(round(1.2 * rt60_s * sample_rate))
    t = np.arange(n) / sample_rate
    tail = rng.standard_normal(n) * np.exp(-math.log(1000.0) * t / rt60_s)
    tail[:gap] = 0.0
    tail *= 10.0 ** (-drr_db / 20.0) / math.sqrt(float(np.sum(tail**2)))
    tail[0] = 1.0
    return tail.astype(np.float32)


def fft_convolve(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Linear convolution of ``x`` with ``h``, cut to the length of ``x`` (float32)."""
    n = len(x) + len(h) - 1
    size = 1 << max(0, (n - 1).bit_length())
    y = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(h, size), size)[: len(x)]
    return y.astype(np.float32)


def reverberate(
    x: np.ndarray,
    rt60_s: float,
    drr_db: float,
    rng: np.random.Generator,
    sample_rate: int = 16_000,
) -> np.ndarray:
    """``x`` in a synthetic room (:func:`room_impulse_response`), at the loudness (RMS) of ``x``."""
    x = _audio(x)
    y = fft_convolve(x, room_impulse_response(rt60_s, drr_db, rng, sample_rate))
    return (y * (rms(x) / rms(y))).astype(np.float32)


def mu_law(x: np.ndarray, bits: int = 8, mu: float = 255.0) -> np.ndarray:
    """Companded quantisation to ``bits`` (G.711 mu-law with 8 bits), full scale 1.0."""
    x = np.clip(_audio(x), -1.0, 1.0).astype(np.float64)
    levels = 2 ** (bits - 1) - 1
    q = np.round(np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu) * levels) / levels
    return (np.sign(q) * np.expm1(np.abs(q) * np.log1p(mu)) / mu).astype(np.float32)


def band_limit(x: np.ndarray, low_hz: float, high_hz: float, sample_rate: int) -> np.ndarray:
    """Keep ``low_hz`` to ``high_hz`` (a brick-wall band in the frequency domain of the clip)."""
    x = _audio(x)
    if len(x) == 0:
        return x.copy()
    spec = np.fft.rfft(x.astype(np.float64))
    f = np.fft.rfftfreq(len(x), 1.0 / sample_rate)
    spec[(f < low_hz) | (f > high_hz)] = 0.0
    return np.fft.irfft(spec, len(x)).astype(np.float32)


def telephone(
    x: np.ndarray,
    low_hz: float = 300.0,
    high_hz: float = 3400.0,
    companding: bool = False,
    sample_rate: int = 16_000,
) -> np.ndarray:
    """A narrowband telephone channel: down to 8 kHz, the ``low_hz``-``high_hz`` band, optionally
    G.711 mu-law (8 bits), and back up to ``sample_rate``."""
    y = band_limit(resample(_audio(x), sample_rate, 8_000), low_hz, high_hz, 8_000)
    if companding:
        y = mu_law(y)
    y = resample(y, 8_000, sample_rate)
    out = np.zeros(len(x), np.float32)
    out[: min(len(x), len(y))] = y[: len(x)]
    return out


def opus_round_trip(x: np.ndarray, bitrate: int, sample_rate: int = 16_000) -> np.ndarray:
    """Encode with libopus at ``bitrate`` b/s (constrained VBR, mono) in an Ogg stream and
    decode again, as a voice call or a compressed upload does. The codec's look-ahead is
    removed (the Ogg pre-skip), so the output lines up with ``x``.

    Needs PyAV (``pip install "emosdk[capture]"``).

    Raises:
        BackendUnavailableError: PyAV, or its libopus encoder, is not available.
    """
    try:
        import av
    except ImportError as e:
        raise BackendUnavailableError(
            'the Opus round trip needs PyAV: pip install "emosdk[capture]"'
        ) from e
    x = _audio(x)
    if sample_rate not in (8_000, 12_000, 16_000, 24_000, 48_000):
        raise InputError(f"sample_rate: Opus takes 8, 12, 16, 24 or 48 kHz, got {sample_rate}")
    if len(x) == 0:  # libopus has nothing to encode (FFmpeg reports it as out of memory)
        return x.copy()
    pcm = (np.clip(x, -1.0, 1.0) * 32767.0).round().astype(np.int16)
    buf = io.BytesIO()
    try:
        with av.open(buf, "w", format="ogg") as out:
            st = out.add_stream("libopus", rate=sample_rate)
            st.codec_context.bit_rate = int(bitrate)
            st.codec_context.layout = "mono"
            frame = av.AudioFrame.from_ndarray(pcm[None, :], format="s16", layout="mono")
            frame.sample_rate = sample_rate
            for packet in st.encode(frame):
                out.mux(packet)
            for packet in st.encode(None):
                out.mux(packet)
    except (av.error.FFmpegError, ValueError) as e:  # e.g. an FFmpeg built without libopus
        raise BackendUnavailableError(f"the Opus round trip failed in PyAV's libopus: {e}") from e
    buf.seek(0)
    chunks = []
    with av.open(buf, "r", format="ogg") as inp:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        for frame in inp.decode(audio=0):
            for f in resampler.resample(frame):
                chunks.append(f.to_ndarray().reshape(-1))
        for f in resampler.resample(None):
            chunks.append(f.to_ndarray().reshape(-1))
    y = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    out_pcm = np.zeros(len(x), np.float32)
    out_pcm[: min(len(x), len(y))] = y[: len(x)]
    return out_pcm


def fit_full_scale(x: np.ndarray, peak: float = 0.99) -> np.ndarray:
    """``x`` scaled down so that its peak is at most ``peak``, as a recorder's level is set so
    that a loud mixture does not clip (clipping is its own corruption, :func:`clip_peaks`)."""
    x = _audio(x)
    top = float(np.max(np.abs(x))) if len(x) else 0.0
    return (x * (peak / top)).astype(np.float32) if top > peak else x


def clip_peaks(x: np.ndarray, clip_fraction: float) -> np.ndarray:
    """Hard clipping, as in an overdriven input stage: the waveform is cut at ``clip_fraction``
    of its peak and brought back to the loudness (RMS) of ``x``, so that the distortion, not a
    change of level, is what differs (level is :func:`low_gain`'s business)."""
    x = _audio(x)
    if not 0 < clip_fraction <= 1:
        raise InputError(f"clip_fraction: expected a value in (0, 1], got {clip_fraction}")
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    if peak == 0:
        return x.copy()
    y = np.clip(x, -clip_fraction * peak, clip_fraction * peak)
    return (y * (rms(x) / rms(y))).astype(np.float32)


def low_gain(x: np.ndarray, gain_db: float, bits: int = 16) -> np.ndarray:
    """A microphone set far too low: ``gain_db`` applied before a ``bits``-bit converter (so the
    quiet signal loses resolution, as it would in the device)."""
    x = _audio(x) * 10.0 ** (gain_db / 20.0)
    scale = 2.0 ** (bits - 1)
    return (np.round(np.clip(x, -1.0, 1.0) * scale) / scale).astype(np.float32)


# -- images -------------------------------------------------------------------------------------
def darken(img: np.ndarray, scale: float, gamma: float = 1.0) -> np.ndarray:
    """Less light: ``scale * (img / 255) ** gamma``, quantised again to 8 bits (shadow detail
    is lost, as in a dim room with the camera's exposure at its limit)."""
    x = _image(img).astype(np.float64) / 255.0
    return _to_uint8(scale * x**gamma)


def sensor_noise(
    img: np.ndarray, read_sigma: float, shot: float, rng: np.random.Generator
) -> np.ndarray:
    """Camera sensor noise: Gaussian with variance ``read_sigma**2 + shot * x`` per pixel and
    channel (read noise plus a Poisson-like shot noise growing with the signal ``x`` in [0, 1])."""
    x = _image(img).astype(np.float64) / 255.0
    sigma = np.sqrt(read_sigma**2 + shot * x)
    return _to_uint8(x + sigma * rng.standard_normal(x.shape))


def motion_blur(img: np.ndarray, length_px: float, angle_deg: float) -> np.ndarray:
    """Linear motion blur: the mean of the image shifted along a line of ``length_px`` pixels at
    ``angle_deg``, centred (bilinear shifts, edges replicated)."""
    a = _image(img)
    if length_px <= 1:
        return a.copy()
    x = a.astype(np.float64)
    h, w = a.shape[:2]
    n = max(2, int(math.ceil(length_px)) + 1)
    t = np.linspace(-length_px / 2.0, length_px / 2.0, n)
    dx, dy = t * math.cos(math.radians(angle_deg)), t * math.sin(math.radians(angle_deg))
    pad = int(math.ceil(length_px / 2.0)) + 1
    widths = ((pad, pad), (pad, pad)) + (((0, 0),) if a.ndim == 3 else ())
    xp = np.pad(x, widths, mode="edge")
    acc = np.zeros_like(x)
    for sx, sy in zip(dx, dy):
        ix, iy = math.floor(sx), math.floor(sy)
        fx, fy = sx - ix, sy - iy
        for ox, oy, wgt in (
            (ix, iy, (1 - fx) * (1 - fy)),
            (ix + 1, iy, fx * (1 - fy)),
            (ix, iy + 1, (1 - fx) * fy),
            (ix + 1, iy + 1, fx * fy),
        ):
            if wgt > 0:
                acc += wgt * xp[pad + oy : pad + oy + h, pad + ox : pad + ox + w]
    return (np.clip(acc / n, 0, 255) + 0.5).astype(np.uint8)


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """A JPEG round trip at ``quality`` (1-100), with OpenCV's codec (``emosdk[capture]``).

    Raises:
        BackendUnavailableError: OpenCV is not installed.
    """
    try:
        import cv2
    except ImportError as e:
        raise BackendUnavailableError(
            'the JPEG corruption needs OpenCV: pip install "emosdk[capture]"'
        ) from e
    a = _image(img)
    ok, data = cv2.imencode(".jpg", a, [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise InputError(f"image: OpenCV could not encode a {a.shape} image as JPEG")
    flag = cv2.IMREAD_GRAYSCALE if a.ndim == 2 or a.shape[2] == 1 else cv2.IMREAD_COLOR
    out = cv2.imdecode(data, flag)
    return out.reshape(a.shape)


def resize(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize with area averaging when shrinking and bilinear interpolation when enlarging
    (OpenCV's INTER_AREA), in numpy; uint8 in and out."""
    a = _image(img)
    x = a.astype(np.float64)
    h, w = a.shape[:2]
    for axis, n, m in ((0, h, int(height)), (1, w, int(width))):
        if m < 1:
            raise InputError(f"size: expected at least 1x1 pixels, got {height}x{width}")
        if n == m:
            continue
        if m < n:  # fractional box filter: the share of source pixel j in output pixel i
            edges = np.linspace(0.0, n, m + 1)
            j = np.arange(n)[None, :]
            wgt = np.clip(
                np.minimum(edges[1:, None], j + 1) - np.maximum(edges[:-1, None], j), 0, None
            )
            wgt /= wgt.sum(axis=1, keepdims=True)
        else:
            pos = np.clip((np.arange(m) + 0.5) * n / m - 0.5, 0, n - 1)
            lo = np.floor(pos).astype(int)
            hi = np.minimum(lo + 1, n - 1)
            wgt = np.zeros((m, n))
            wgt[np.arange(m), lo] += 1 - (pos - lo)
            wgt[np.arange(m), hi] += pos - lo
        x = np.moveaxis(np.tensordot(wgt, np.moveaxis(x, axis, 0), axes=([1], [0])), 0, axis)
    return np.ascontiguousarray(np.clip(x, 0, 255) + 0.5, dtype=np.uint8)


def shrink_face(img: np.ndarray, box: Box | None, face_px: float) -> np.ndarray:
    """The face ``face_px`` pixels wide, as if the person sat further from the camera.

    A face crop (``box`` None) is resized to ``face_px`` wide (the Recognizer enlarges it again to
    its face size, so the detail is gone). A full frame is shrunk by ``face_px / box width`` and
    placed in the middle of a frame of the original size filled with the frame's mean colour, so
    the detector must find a small face in a full-size frame. A face already smaller is kept.
    """
    a = _image(img)
    _, _, bw, _ = _box(a, box)
    factor = float(face_px) / bw
    if factor >= 1.0:
        return a.copy()
    h, w = a.shape[:2]
    nh, nw = max(1, int(round(h * factor))), max(1, int(round(w * factor)))
    small = resize(a, nh, nw)
    if box is None:
        return small
    mean = a.reshape(h, w, -1).mean(axis=(0, 1))
    out = np.empty_like(a)
    out[...] = (mean + 0.5).astype(np.uint8).reshape((-1,) if a.ndim == 3 else ())
    top, left = (h - nh) // 2, (w - nw) // 2
    out[top : top + nh, left : left + nw] = small
    return out


def occlude(
    img: np.ndarray, box: Box | None, part: str, fraction: float, value: int = 128
) -> np.ndarray:
    """Cover part of the face with a flat grey patch (a hand, a mask, a scarf, a hat).

    ``part="upper"`` covers ``fraction`` of the upper half of the face box from its top edge
    down (forehead, then eyes); ``"lower"`` covers ``fraction`` of the lower half from the chin
    up (chin, then mouth). ``fraction`` 1 hides that whole half. ``box`` None: the crop is the box.
    """
    if part not in ("upper", "lower"):
        raise InputError(f"part: expected 'upper' or 'lower', got {part!r}")
    a = _image(img)
    x, y, bw, bh = _box(a, box)
    rows = int(round(min(max(fraction, 0.0), 1.0) * bh / 2.0))
    out = a.copy()
    if rows:
        y0, y1 = (y, y + rows) if part == "upper" else (y + bh - rows, y + bh)
        out[y0:y1, x : x + bw] = value
    return out


def frame_times(t0_ms: float, t1_ms: float, fps: float) -> np.ndarray:
    """Sampling times (ms) from ``t0_ms`` to ``t1_ms`` at ``fps``: the model's frame rate for
    clean video, a lower rate for a dropped frame rate."""
    return np.arange(t0_ms, t1_ms + 1e-6, 1000.0 / fps)


def nearest_frames(times_ms: Sequence[float], wanted_ms: np.ndarray) -> list[int]:
    """Index of the frame nearest in time to each wanted time."""
    t = np.asarray(times_ms, np.float64)
    return [int(np.abs(t - w).argmin()) for w in np.asarray(wanted_ms, np.float64)]


# -- the benchmark's table ----------------------------------------------------------------------
@dataclass(frozen=True)
class Context:
    """What a corruption may need beside the signal.

    Attributes:
        rng: random numbers for this file, corruption and severity.
        sample_rate: audio rate (Hz).
        box: the face box in a full frame (from the detector on the clean frame), or None when
            the image is a face crop.
        talkers: other speakers' clips, for babble.
    """

    rng: np.random.Generator
    sample_rate: int = 16_000
    box: Box | None = None
    talkers: Sequence[np.ndarray] = ()


@dataclass(frozen=True)
class Corruption:
    """One corruption of the benchmark, with its parameters at each severity.

    Attributes:
        name: short name (``white_noise``...).
        modality: ``"audio"`` or ``"video"``.
        description: what it models and how, with the units of its parameters.
        levels: the parameters at severity 1..5 (keyword arguments of ``fn`` beside the signal).
        fn: ``fn(signal, context, **params)`` -> the corrupted signal; None for ``frame_rate``,
            which selects frames instead of changing them (:func:`frame_rate_fps`).
        videos_only: applies to frame sequences (videos), not to single face images.
    """

    name: str
    modality: str
    description: str
    levels: tuple[MappingProxyType, ...]
    fn: Callable | None = field(default=None, repr=False)
    videos_only: bool = False

    def params(self, severity: int) -> dict:
        """The parameters at ``severity`` (1..5; a whole-number float such as 3.0 is accepted)."""
        if isinstance(severity, bool) or severity not in SEVERITIES:
            raise InputError(f"severity: expected one of {SEVERITIES}, got {severity!r}")
        return dict(self.levels[SEVERITIES.index(severity)])

    def __call__(self, signal: np.ndarray, severity: int, ctx: Context) -> np.ndarray:
        """The corrupted signal (a PCM array or one image); audio that would exceed full scale
        (loud noise added) is scaled down to fit (:func:`fit_full_scale`)."""
        if self.fn is None:
            raise InputError(f"{self.name}: selects frames; use frame_rate_fps(severity)")
        out = self.fn(signal, ctx, **self.params(severity))
        # images as a camera delivers them: C-contiguous, as the Recognizer requires
        return fit_full_scale(out) if self.modality == "audio" else np.ascontiguousarray(out)


def _levels(**columns: Sequence) -> tuple[MappingProxyType, ...]:
    n = {len(v) for v in columns.values()}
    assert n == {len(SEVERITIES)}, columns  # a table typo, not a user error
    keys = list(columns)
    return tuple(MappingProxyType({k: columns[k][i] for k in keys}) for i in range(len(SEVERITIES)))


SNR_DB = (20, 10, 5, 0, -5)


def _noise(exponent: float) -> Callable:
    def fn(x: np.ndarray, ctx: Context, snr_db: float) -> np.ndarray:
        return mix_at_snr(x, colored_noise(len(x), exponent, ctx.rng), snr_db)

    return fn


def _babble(x: np.ndarray, ctx: Context, snr_db: float, talkers: int) -> np.ndarray:
    chosen = list(ctx.talkers)[:talkers]
    return mix_at_snr(x, babble(len(x), chosen, ctx.rng), snr_db)


def _image_fn(fn: Callable, *keys: str, box: bool = False) -> Callable:
    def call(img: np.ndarray, ctx: Context, **p: object) -> np.ndarray:
        return fn(img, ctx.box, **p) if box else fn(img, **{k: p[k] for k in keys})

    return call


def _noise_img(img: np.ndarray, ctx: Context, read_sigma: float, shot: float) -> np.ndarray:
    return sensor_noise(img, read_sigma, shot, ctx.rng)


def _blur(img: np.ndarray, ctx: Context, face_fraction: float) -> np.ndarray:
    _, _, bw, _ = _box(img, ctx.box)
    return motion_blur(img, face_fraction * bw, float(ctx.rng.uniform(0.0, 180.0)))


CORRUPTIONS: MappingProxyType = MappingProxyType(
    {
        c.name: c
        for c in (
            Corruption(
                "white_noise",
                "audio",
                "additive white Gaussian noise at an SNR (dB) over the whole clip",
                _levels(snr_db=SNR_DB),
                _noise(0.0),
            ),
            Corruption(
                "pink_noise",
                "audio",
                "additive pink (1/f) Gaussian noise at an SNR (dB): fans, traffic, air",
                _levels(snr_db=SNR_DB),
                _noise(1.0),
            ),
            Corruption(
                "babble",
                "audio",
                "babble: up to `talkers` clips of OTHER speakers (unit RMS each, random offsets, "
                "tiled), summed and mixed at an SNR (dB)",
                _levels(snr_db=SNR_DB, talkers=(4,) * 5),
                _babble,
            ),
            Corruption(
                "reverb",
                "audio",
                "a synthetic room: direct path plus exponentially decaying Gaussian tail with "
                "RT60 (s) and direct-to-reverberant ratio (dB); loudness (RMS) kept",
                _levels(rt60_s=(0.2, 0.45, 0.7, 0.95, 1.2), drr_db=(6, 3, 0, -3, -6)),
                lambda x, ctx, **p: reverberate(x, rng=ctx.rng, sample_rate=ctx.sample_rate, **p),
            ),
            Corruption(
                "telephone",
                "audio",
                "narrowband phone line: 8 kHz, band low_hz-high_hz (severity 1 is the standard "
                "300-3400 Hz channel, narrower above), G.711 mu-law 8 bits from severity 2",
                _levels(
                    low_hz=(300, 300, 400, 500, 600),
                    high_hz=(3400, 3400, 3000, 2600, 2200),
                    companding=(False, True, True, True, True),
                ),
                lambda x, ctx, **p: telephone(x, sample_rate=ctx.sample_rate, **p),
            ),
            Corruption(
                "opus",
                "audio",
                "Opus round trip (libopus via PyAV, mono, VBR) at a bitrate (b/s)",
                _levels(bitrate=(24_000, 16_000, 12_000, 8_000, 6_000)),
                lambda x, ctx, **p: opus_round_trip(x, sample_rate=ctx.sample_rate, **p),
            ),
            Corruption(
                "clipping",
                "audio",
                "hard clipping at clip_fraction of the clip's peak, loudness (RMS) restored",
                _levels(clip_fraction=(0.5, 0.3, 0.15, 0.08, 0.04)),
                lambda x, ctx, **p: clip_peaks(x, **p),
            ),
            Corruption(
                "low_gain",
                "audio",
                "input gain too low: gain_db relative to the recording, before a 16-bit "
                "converter (CREMA-D speech sits near -34 dBFS RMS)",
                _levels(gain_db=(-10, -20, -30, -40, -50)),
                lambda x, ctx, **p: low_gain(x, **p),
            ),
            Corruption(
                "darken",
                "video",
                "dim light: scale * x**gamma on [0, 1] pixels, re-quantised to 8 bits",
                _levels(scale=(0.6, 0.45, 0.3, 0.2, 0.1), gamma=(1.0, 1.2, 1.4, 1.6, 1.8)),
                _image_fn(darken, "scale", "gamma"),
            ),
            Corruption(
                "sensor_noise",
                "video",
                "per-pixel, per-channel Gaussian noise with variance read_sigma^2 + shot * x "
                "(x in [0, 1]): read plus Poisson-like shot noise, fresh in every frame",
                _levels(
                    read_sigma=(0.02, 0.04, 0.06, 0.08, 0.10),
                    shot=(0.004, 0.01, 0.02, 0.035, 0.05),
                ),
                _noise_img,
            ),
            Corruption(
                "motion_blur",
                "video",
                "linear motion blur over face_fraction of the face width (the face box on the "
                "clean frame; the crop's width for face images), a random direction per frame",
                _levels(face_fraction=(0.05, 0.1, 0.15, 0.2, 0.3)),
                _blur,
            ),
            Corruption(
                "jpeg",
                "video",
                "JPEG round trip at a quality (OpenCV imencode, the capture extra)",
                _levels(quality=(25, 18, 15, 10, 7)),
                _image_fn(jpeg, "quality"),
            ),
            Corruption(
                "downscale",
                "video",
                "the face shrunk to face_px wide (area averaging): a crop is passed small, a "
                "full frame is shrunk and centred in a frame of its size",
                _levels(face_px=(40, 35, 30, 25, 20)),
                _image_fn(shrink_face, box=True),
            ),
            Corruption(
                "occlude_upper",
                "video",
                "a flat grey patch over `fraction` of the upper half of the face box, from the "
                "top (forehead, then eyes)",
                _levels(part=("upper",) * 5, fraction=(0.2, 0.4, 0.6, 0.8, 1.0)),
                _image_fn(occlude, box=True),
            ),
            Corruption(
                "occlude_lower",
                "video",
                "a flat grey patch over `fraction` of the lower half of the face box, from the "
                "chin up (chin, then mouth)",
                _levels(part=("lower",) * 5, fraction=(0.2, 0.4, 0.6, 0.8, 1.0)),
                _image_fn(occlude, box=True),
            ),
            Corruption(
                "frame_rate",
                "video",
                "the camera delivers only `fps` frames per second (below the model's rate): "
                "fewer distinct frames in the window",
                _levels(fps=(4.0, 3.0, 2.0, 1.0, 0.5)),
                None,
                videos_only=True,
            ),
        )
    }
)


def frame_rate_fps(severity: int) -> float:
    """The frame rate the ``frame_rate`` corruption leaves at ``severity``."""
    return float(CORRUPTIONS["frame_rate"].params(severity)["fps"])


def names(modality: str | None = None) -> list[str]:
    """Corruption names in table order, of one modality (``"audio"``, ``"video"``) or all."""
    return [n for n, c in CORRUPTIONS.items() if modality in (None, c.modality)]


def rng_for(seed: int, corruption: str, severity: int, item: int) -> np.random.Generator:
    """The generator of one file under one corruption and severity: the same for every run with
    the same seed, independent of which other files or corruptions run."""
    return np.random.default_rng([seed, zlib.crc32(corruption.encode()), severity, item])
