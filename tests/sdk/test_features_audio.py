"""The log-mel front-end and resampler: the numbers training and the runtime share."""

import numpy as np
import pytest

from emosdk.errors import InputError
from emosdk.features import LogMelParams, audio_features, log_mel, resample
from emosdk.features.audio import mel_filterbank

P = LogMelParams()


def tone(freq, sr, seconds=1.0, amp=0.5):
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("sr", [8000, 22050, 44100, 48000])
def test_resample_keeps_frequency_and_level(sr):
    y = resample(tone(440.0, sr), sr, 16000)
    assert len(y) == 16000
    spec = np.abs(np.fft.rfft(y[2000:-2000] * np.hanning(12000)))
    peak_hz = np.argmax(spec) * 16000 / 12000
    assert abs(peak_hz - 440.0) < 2.0
    rms = np.sqrt(np.mean(y[2000:-2000] ** 2))
    assert rms == pytest.approx(0.5 / np.sqrt(2), rel=0.02)


def test_resample_removes_content_above_new_nyquist():
    y = resample(tone(7000.0, 44100) + tone(1000.0, 44100), 44100, 8000)
    spec = np.abs(np.fft.rfft(y))
    freqs = np.fft.rfftfreq(len(y), 1 / 8000)
    # the 7 kHz tone would alias to 1 kHz; only the real 1 kHz tone may remain there
    assert spec[np.abs(freqs - 1000).argmin()] == pytest.approx(len(y) / 4, rel=0.05)


def test_resample_identity_at_16k():
    x = tone(300, 16000)
    assert np.array_equal(resample(x, 16000, 16000), x)


def test_frame_count_is_stream_stable():
    for n in (0, 1, 399, 400, 401, 560, 48000):
        assert log_mel(np.zeros(n, np.float32), P).shape == (P.num_frames(n), P.n_mels)
    assert P.num_frames(48000) == 1 + (48000 - 400) // 160


def test_tone_peaks_in_the_right_mel_band():
    m = log_mel(tone(1000.0, 16000), P)
    band = int(np.argmax(m.mean(axis=0)))
    fb = mel_filterbank(P)
    freqs = np.linspace(0, 8000, P.n_fft // 2 + 1)
    centre = freqs[np.argmax(fb[band])]
    assert abs(centre - 1000.0) < 80.0


def test_frames_are_local_so_windows_cut_from_a_stream_match():
    x = np.random.default_rng(0).standard_normal(32000).astype(np.float32) * 0.1
    full = log_mel(x, P)
    part = log_mel(x[160 * 50 :], P)  # start 50 hops later
    np.testing.assert_allclose(part[:100], full[50:150], rtol=1e-5, atol=1e-5)


def test_silence_is_the_log_floor():
    m = log_mel(np.zeros(16000, np.float32), P)
    assert np.allclose(m, np.log(P.log_floor))


def test_int16_float_and_stereo_agree():
    x = tone(500, 16000)
    as_int = (x * 32767).astype(np.int16)
    stereo = np.stack([x, x], axis=1)
    a = audio_features(x, 16000, P)
    # int16 quantisation noise shows only in near-empty bands (log floor)
    np.testing.assert_allclose(audio_features(as_int, 16000, P), a, atol=0.02)
    np.testing.assert_allclose(audio_features(stereo, 16000, P), a, atol=1e-6)
    np.testing.assert_allclose(audio_features(x.astype(np.float64), 16000, P), a, atol=1e-6)


@pytest.mark.parametrize(
    ("audio", "sr", "match"),
    [
        (np.zeros(100, np.uint8), 16000, "dtype"),
        (np.zeros((10, 3), np.float32), 16000, "channels"),
        (np.zeros((2, 3, 4), np.float32), 16000, "shape"),
        (np.zeros(0, np.float32), 16000, "empty"),
        (np.array([0.0, np.nan], np.float32), 16000, "finite"),
        (np.zeros(100, np.float32), 1000, "sample rate"),
        (np.zeros(100, np.float32), 10_000_000, "sample rate"),
        (np.zeros(100, np.float32), 16000.5, "integer"),
        (np.zeros((100, 2), np.float32)[:, 0], 16000, "contiguous"),
        ([0.0, 0.1], 16000, "ndarray"),
        (np.full(100, 12000.0, np.float32), 16000, r"\[-1, 1\].*int16"),
    ],
)
def test_bad_audio_raises_input_error_with_expected_form(audio, sr, match):
    with pytest.raises(InputError, match=match):
        audio_features(audio, sr, P)


def test_params_reject_contradictions():
    with pytest.raises(ValueError, match="win_length"):
        LogMelParams(n_fft=256, win_length=400)
    with pytest.raises(ValueError, match="f_max"):
        LogMelParams(f_max=9000.0)
    assert LogMelParams.from_dict(P.to_dict()) == P
