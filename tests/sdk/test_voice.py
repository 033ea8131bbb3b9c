"""Voice activity on the real CREMA-D speech."""

import numpy as np
import pytest

from emosdk.perception.voice import FRAME_MS, VoiceActivity


@pytest.mark.parametrize("method", ["webrtc", "energy"])
def test_speech_is_found_in_the_middle_of_real_clips(method, decoded_clips):
    vad = VoiceActivity(method)
    assert vad.method == method
    for path, audio, _ in decoded_clips:
        frames = vad.speech_frames(audio)
        ms = np.flatnonzero(frames) * FRAME_MS
        assert frames.sum() * FRAME_MS > 500, path.name  # about a second of speech per clip
        # the actors are silent at the start of each recording
        assert not frames[:2].any(), path.name
        assert 200 < np.median(ms) < 1600, path.name


def test_silence_and_faint_noise_are_not_speech():
    vad = VoiceActivity("webrtc")
    assert vad.has_speech(np.zeros(48000, np.float32)) == (False, 0.0)
    noise = np.random.default_rng(0).standard_normal(48000).astype(np.float32) * 0.001
    assert not vad.has_speech(noise)[0]


def test_invalid_samples_are_never_speech(decoded_clips):
    _, audio, _ = decoded_clips[0]
    vad = VoiceActivity()
    assert vad.has_speech(audio)[0]
    assert vad.has_speech(audio, np.zeros(len(audio), bool)) == (False, 0.0)


def test_a_window_gets_the_same_answer_whatever_was_heard_before(decoded_clips):
    # WebRTC's VAD adapts to what it hears: one shared detector made a Recognizer's answers
    # depend on its history (and on other threads)
    vad = VoiceActivity("webrtc")
    _, audio, _ = decoded_clips[2]
    window = audio[4000:20000]
    first = vad.speech_frames(window)
    for _, other, _ in decoded_clips:
        vad.speech_frames(other)
        vad.speech_frames(np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.3)
    np.testing.assert_array_equal(vad.speech_frames(window), first)


def test_unknown_method():
    with pytest.raises(ValueError, match="method"):
        VoiceActivity("silero-v9")
