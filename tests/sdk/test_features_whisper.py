"""Whisper's log-mel front end (emosdk.features.whisper) against a reference transcription.

The reference below follows OpenAI Whisper's ``log_mel_spectrogram`` step by step (torch.stft
with a periodic Hann window, ``center=True``, reflect padding; the last frame dropped; Whisper's
own ``mel_filters.npz``; log10 with floor 1e-10; clamp at max - 8; (x + 4) / 4) in plain numpy,
frame by frame, so this file runs where torch is not installed. tests/train/test_whisper.py
compares with torch.stft itself.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import DATA

from emosdk.errors import InputError, ModelError
from emosdk.features.audio import LogMelParams
from emosdk.features.whisper import (
    WhisperMelParams,
    compute_features,
    mel_filterbank,
    params_from_dict,
    whisper_features,
    whisper_log_mel,
)

WHISPER_FILTERS = DATA / "whisper" / "mel_filters.npz"


def reference_log_mel(x: np.ndarray, filters: np.ndarray) -> np.ndarray:
    """Whisper's algorithm, one frame at a time; returns (frames, n_mels)."""
    n_fft, hop = 400, 160
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    padded = np.pad(x.astype(np.float64), n_fft // 2, mode="reflect")
    n_frames = 1 + len(x) // hop  # torch.stft(center=True)
    spec = np.empty((n_frames, n_fft // 2 + 1))
    for i in range(n_frames):
        seg = padded[i * hop : i * hop + n_fft] * window
        spec[i] = np.abs(np.fft.fft(seg)[: n_fft // 2 + 1]) ** 2
    mel = spec[:-1] @ filters.astype(np.float64).T  # Whisper drops the last frame
    log_spec = np.log10(np.maximum(mel, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


@pytest.fixture(scope="module")
def real_clips() -> list[tuple[str, np.ndarray]]:
    """16 kHz audio of the twelve real CREMA-D clips in tests/data (mp3 and flv audio)."""
    import soundfile as sf

    from emosdk.capture.media import read_media
    from emosdk.features.audio import resample

    out = []
    for p in sorted((DATA / "cremad").glob("*.mp3")):
        x, sr = sf.read(str(p), dtype="float32", always_2d=True)
        out.append((p.name, resample(x.mean(axis=1), sr, 16_000)))
    for p in sorted((DATA / "cremad").glob("*.flv")):
        out.append((p.name, read_media(p)[0]))
    return out


def test_filterbank_is_whisper_s():
    with np.load(WHISPER_FILTERS) as z:
        for n in (80, 128):
            ours = mel_filterbank(WhisperMelParams(n_mels=n))
            assert ours.shape == z[f"mel_{n}"].shape
            np.testing.assert_allclose(ours, z[f"mel_{n}"], rtol=0, atol=1e-7)


def test_equals_reference_on_real_clips(real_clips):
    with np.load(WHISPER_FILTERS) as z:
        filters = z["mel_80"]
    params = WhisperMelParams()
    clips = real_clips
    assert len(clips) == 12
    worst = 0.0
    for name, x in clips:
        ours = whisper_log_mel(x, params)
        ref = reference_log_mel(x, filters)
        assert ours.dtype == np.float32 and ours.shape == (len(x) // 160, 80), name
        assert ours.shape == (params.num_frames(len(x)), 80)
        worst = max(worst, float(np.abs(ours - ref).max()))
    assert worst < 1e-4, worst


def test_window_dependence_and_silence_floor(real_clips):
    """The clamp at max - 8 is per input: zero padding sits at the floor of its window."""
    x = real_clips[0][1]
    params = WhisperMelParams()
    padded = np.concatenate([np.zeros(8000, np.float32), x, np.zeros(8000, np.float32)])
    m = whisper_log_mel(padded, params)
    assert m.shape == (len(padded) // 160, 80)
    floor = m.max() - 2.0  # (max - 8 + 4) / 4 = max_scaled - 2
    np.testing.assert_allclose(m[:40], floor, atol=1e-6)  # the first 0.4 s is pure silence
    assert np.all(m >= floor - 1e-6)


@pytest.mark.parametrize("n", [1, 100, 399, 400, 401, 559, 560, 48_000, 48_123])
def test_frame_count(n):
    params = WhisperMelParams()
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32) * 0.1
    m = whisper_log_mel(x, params)
    assert m.shape == (params.num_frames(n), 80)
    assert np.isfinite(m).all()


def test_params_round_trip_and_dispatch():
    p = WhisperMelParams()
    d = p.to_dict()
    assert d["frontend"] == "whisper"
    assert WhisperMelParams.from_dict(d) == p
    assert params_from_dict(d) == p
    old = LogMelParams().to_dict()  # a bundle written before Whisper: no "frontend" key
    assert params_from_dict(old) == LogMelParams()
    x = np.zeros(16_000, np.float32)
    assert compute_features(x, params_from_dict(old)).shape == (
        LogMelParams().num_frames(16_000),
        64,
    )
    assert compute_features(x, p).shape == (100, 80)
    with pytest.raises(ValueError, match="frontend"):
        params_from_dict({**d, "frontend": "wav2vec"})
    with pytest.raises(ValueError, match="win_length"):
        WhisperMelParams(win_length=320)


@pytest.mark.parametrize("sr", [0, -16_000])
def test_a_sample_rate_that_is_not_positive_is_refused(sr):
    # sample_rate 0 gave a filterbank of NaNs and NaN features without a word
    with pytest.raises(ValueError, match="sample_rate"):
        WhisperMelParams(sample_rate=sr)
    from emosdk.models import bundle

    d = {**WhisperMelParams().to_dict(), "sample_rate": sr}
    with pytest.raises(ModelError, match="sample_rate"):
        bundle.params_from_dict(WhisperMelParams, d, "model.json audio")


def test_whisper_features_validates_and_resamples():
    x = (np.random.default_rng(0).standard_normal(44_100) * 3000).astype(np.int16)
    m = whisper_features(x, 44_100, WhisperMelParams())
    assert m.shape == (100, 80)
    with pytest.raises(InputError, match="sample rate"):
        whisper_features(x, 100, WhisperMelParams())
    with pytest.raises(InputError):
        whisper_features(x.astype(np.uint8), 16_000, WhisperMelParams())


def test_input_longer_than_whisper_takes_is_encoded_in_pieces() -> None:
    """Whisper's position table covers 30 s (3000 frames): a longer window (predict on a 70 s
    clip) is encoded in pieces of at most 3000 frames whose steps line up with one long run of a
    step-local encoder (4 frames per step, as the shipped branch)."""
    from emosdk.errors import ModelError
    from emosdk.pipeline import encode_in_pieces

    max_frames = WhisperMelParams.max_frames
    assert max_frames == 3000 and LogMelParams.max_frames is None

    def encoder(piece: np.ndarray, limit: int | None = max_frames):
        n = piece.shape[1] // 4
        if limit is not None and piece.shape[1] > limit:
            raise IndexError("position table exhausted")
        return {"audio_emb": piece[:, : 4 * n].reshape(1, n, 4, -1).mean(2)}, 1.5

    rng = np.random.default_rng(0)
    # frames -> encoder runs (6002: the last 2 frames make no step and are left out)
    for frames, runs in {7001: 3, 6002: 2, 3000: 1, 120: 1}.items():
        mel = rng.standard_normal((1, frames, 80)).astype(np.float32)
        whole = encoder(mel, limit=None)[0]["audio_emb"]
        emb, ms = encode_in_pieces(encoder, mel, max_frames, 4)
        assert emb.shape == (1, frames // 4, 80)
        np.testing.assert_array_equal(emb, whole)
        assert ms == 1.5 * runs
    with pytest.raises(IndexError):
        encoder(np.zeros((1, 3004, 80), np.float32))
    with pytest.raises(ModelError, match="multiple"):
        encode_in_pieces(encoder, np.zeros((1, 4000, 80), np.float32), 3001, 4)
