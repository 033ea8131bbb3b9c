"""Recognizer.predict and stream on real clips, real decoding, real face detection and real
onnxruntime sessions (the fixture bundle: real torch modules with random weights)."""

import numpy as np
import pytest

from emosdk import EmosdkError, InputError, Modality, Recognizer
from emosdk.capture import ArraySource, AudioChunk, HealthEvent, VideoFrame

LABELS = ("anger", "disgust", "fear", "happiness", "neutral", "sadness")
AV = (Modality.AUDIO, Modality.VIDEO)


@pytest.fixture(scope="module")
def rec(fixture_bundle):
    with Recognizer(model=fixture_bundle) as r:
        yield r


def check_scores(result):
    assert tuple(result.scores) == LABELS
    assert sum(result.scores.values()) == pytest.approx(1.0, abs=1e-6)
    assert sum(result.raw_scores.values()) == pytest.approx(1.0, abs=1e-6)
    assert result.label == max(result.scores, key=result.scores.get)


def test_predict_audio_and_frames_from_a_real_clip(rec, decoded_clips):
    _, audio, frames = decoded_clips[0]
    r = rec.predict(audio=audio, frame=[f for _, f in frames[::6]], sample_rate=16000)
    check_scores(r)
    assert r.modalities == AV and not r.degraded and r.reason is None
    assert r.coverage[Modality.VIDEO] == 1.0  # Haar finds the actor's face in every frame
    for stage in ("face_detect", "face_encoder", "audio_frontend", "audio_encoder", "fusion"):
        assert r.latency.stages[stage] > 0
    assert r.latency.total_ms >= r.latency.fusion_ms
    # a 2.3 s clip sits centred in the model's 3 s window
    assert r.window_ms[1] - r.window_ms[0] == pytest.approx(rec.window_s * 1000, rel=1e-6)
    assert r.coverage[Modality.AUDIO] == 1.0  # the padding counts neither for nor against


def test_predict_audio_only_is_degraded_with_reason(rec, speech_clips):
    from emosdk.capture.media import read_media

    audio, frames = read_media(speech_clips[0])
    assert not frames
    r = rec.predict(audio=audio)
    check_scores(r)
    assert r.modalities == (Modality.AUDIO,)
    assert r.degraded and r.missing == {Modality.VIDEO: "not provided"}
    assert "video: not provided" in r.reason


def test_predict_resamples_any_rate_and_format(rec, decoded_clips):
    _, audio, _ = decoded_clips[1]
    from emosdk.features.audio import resample

    a44 = resample(audio, 16000, 44100)
    stereo_int16 = (np.stack([a44, a44], axis=1) * 32767).astype(np.int16)
    r1 = rec.predict(audio=audio)
    r2 = rec.predict(audio=stereo_int16, sample_rate=44100)
    assert r2.modalities == (Modality.AUDIO,)
    # same speech through resampling both ways and int16: the same class distribution
    np.testing.assert_allclose(
        list(r2.raw_scores.values()), list(r1.raw_scores.values()), atol=0.05
    )


def test_predict_face_crops_with_gaps(rec, decoded_clips):
    from emosdk.perception import HaarFaceDetector, crop

    _, _, frames = decoded_clips[2]
    det = HaarFaceDetector()
    crops = [crop(f, det.detect(f)[0]) for _, f in frames[::5]]
    half = [c if i % 2 == 0 else None for i, c in enumerate(crops)]
    r = rec.predict(face=half)
    assert r.modalities == (Modality.VIDEO,)
    assert 0.3 < r.coverage[Modality.VIDEO] < 0.8
    none = rec.predict(face=[None, None, None])
    assert none.label is None and none.scores == {} and none.modalities == ()
    assert "no face" in none.missing[Modality.VIDEO]


def test_silence_counts_as_missing_audio(rec, decoded_clips):
    _, _, frames = decoded_clips[0]
    r = rec.predict(audio=np.zeros(48000, np.float32), frame=frames[0][1])
    assert r.modalities == (Modality.VIDEO,)
    assert r.missing[Modality.AUDIO].startswith("silence")


def test_frame_without_a_face_masks_video(rec, decoded_clips):
    _, audio, _ = decoded_clips[0]
    black = np.zeros((360, 480, 3), np.uint8)
    r = rec.predict(audio=audio, frame=[black] * 5)
    assert r.modalities == (Modality.AUDIO,)
    assert "no face" in r.missing[Modality.VIDEO]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "at least one"),
        ({"face": np.zeros((48, 48), np.uint8), "frame": np.zeros((48, 48), np.uint8)}, "either"),
        ({"audio": np.zeros(16000 * 61, np.float32)}, "at most 60"),
        ({"face": []}, "at least one image"),
        ({"face": "face.png"}, "got str"),
        ({"face": np.zeros((2, 3, 48, 48, 3), np.uint8)}, "sequence"),
        ({"audio": np.zeros(1000, np.float32), "timestamp_ms": float("nan")}, "finite"),
    ],
)
def test_predict_bad_input(rec, kwargs, match):
    with pytest.raises(InputError, match=match):
        rec.predict(**kwargs)


def test_stream_each_real_clip_yields_a_result_every_hop(rec, av_clips):
    for clip in av_clips:
        results = list(rec.stream(source=clip))
        times = [r.timestamp_ms for r in results]
        full_hops = [t for t in times if t % 500 == 0]
        assert full_hops == [500.0 * (i + 1) for i in range(len(full_hops))], clip.name
        assert len(full_hops) >= 3 and len(results) <= len(full_hops) + 1
        for r in results:
            check_scores(r)
            assert Modality.VIDEO in r.modalities, (clip.name, r.timestamp_ms, r.reason)
            # the actors start speaking within the first second; before that is true silence
            if r.timestamp_ms >= 1000:
                assert r.modalities == AV, (clip.name, r.timestamp_ms, r.reason)
            elif r.modalities != AV:
                assert r.missing[Modality.AUDIO].startswith("silence")
            assert r.window_ms[1] - r.window_ms[0] <= rec.window_s * 1000 + 1e-6


def test_stream_each_real_clip_without_voice_activity_is_audio_visual_every_hop(
    fixture_bundle, av_clips
):
    # the only non-AV hops above are the silent starts: without the voice detector (and without
    # the quality gate, which finds the room tone of a silent start unreliable), every hop of
    # every clip has both modalities
    with Recognizer(model=fixture_bundle, voice_activity="off", quality_gate=False) as rec:
        for clip in av_clips:
            results = list(rec.stream(source=clip))
            assert len(results) >= 4
            assert all(r.modalities == AV for r in results), (
                clip.name,
                [r.reason for r in results],
            )
    with Recognizer(model=fixture_bundle, voice_activity="off") as rec:
        first = next(iter(rec.stream(source=av_clips[1])))  # DIS: room tone until 0.6 s
    assert first.modalities == (Modality.VIDEO,)
    assert first.missing[Modality.AUDIO].startswith("unreliable: SNR")
    assert not first.quality[Modality.AUDIO].reliable and first.quality[Modality.VIDEO].reliable


def test_stream_smooths_but_keeps_raw_scores(fixture_bundle, av_clips):
    with Recognizer(model=fixture_bundle, smoothing="ema", smoothing_alpha=0.3) as r_ema:
        ema = list(r_ema.stream(source=av_clips[3]))
    with Recognizer(model=fixture_bundle, smoothing="none") as r_raw:
        raw = list(r_raw.stream(source=av_clips[3]))
    assert len(ema) == len(raw)
    for a, b in zip(ema, raw):
        assert list(a.raw_scores.values()) == pytest.approx(list(b.raw_scores.values()), abs=1e-6)
    assert all(r.scores == r.raw_scores for r in raw)
    assert any(abs(r.scores["anger"] - r.raw_scores["anger"]) > 1e-6 for r in ema[1:]), (
        "EMA should differ from the raw per-window scores after the first window"
    )


def test_video_lost_from_one_second_switches_to_audio_only_within_one_hop(rec, decoded_clips):
    _, audio, frames = decoded_clips[4]
    fps = 29.97
    # two plays of the real clip back to back (4.5 s); black frames from t = 1 s on
    audio = np.concatenate([audio, audio])
    images = [f for _, f in frames] * 2
    images = [f if i / fps < 1.0 else np.zeros_like(f) for i, f in enumerate(images)]
    src = ArraySource(audio=audio, sample_rate=16000, frames=images, fps=fps)
    results = list(rec.stream(source=src))
    assert results[1].timestamp_ms == 1000.0 and results[1].modalities == AV  # speech + face
    assert Modality.VIDEO in results[0].modalities  # 0-0.5 s: face, speech only starts at 0.4 s
    later = [r for r in results if r.timestamp_ms >= 1500]  # one hop after the face is gone
    assert len(later) >= 6 and all(r.label is not None for r in later)
    assert all(r.modalities == (Modality.AUDIO,) for r in later)
    assert all("no face" in r.missing[Modality.VIDEO] for r in later)
    # coverage falls monotonically once the face is gone
    cov = [r.coverage[Modality.VIDEO] for r in results if r.timestamp_ms > 1000]
    assert cov == sorted(cov, reverse=True) and cov[-1] == 0.0


class FlakySource:
    """Replays a real clip and raises part-way through, like an unplugged device."""

    def __init__(self, audio, fail_at_ms):
        self.inner = ArraySource(audio=audio, sample_rate=16000)
        self.fail_at_ms = fail_at_ms
        self.closed = False

    def events(self):
        for ev in self.inner.events():
            if ev.t_ms >= self.fail_at_ms:
                raise OSError("device unplugged")
            yield ev

    def close(self):
        self.closed = True


def test_a_source_that_raises_gives_a_degraded_result_not_an_exception(rec, decoded_clips):
    _, audio, _ = decoded_clips[0]
    src = FlakySource(audio, fail_at_ms=1200)
    results = list(rec.stream(source=src))
    assert src.closed
    assert [r.timestamp_ms for r in results[:2]] == [500.0, 1000.0]
    last = results[-1]
    assert last.degraded and "device unplugged" in last.reason
    assert last.modalities == ()


def test_health_events_mark_a_modality_lost_and_recovered(rec, decoded_clips):
    _, audio, _ = decoded_clips[0]

    class Source:
        def events(self):
            for ev in ArraySource(audio=audio, sample_rate=16000).events():
                if ev.t_ms == 700:
                    yield HealthEvent(700, Modality.AUDIO, False, "microphone lost")
                if ev.t_ms == 1600:
                    yield HealthEvent(1600, Modality.AUDIO, True, "microphone back")
                yield ev

        def close(self):
            pass

    by_t = {r.timestamp_ms: r for r in rec.stream(source=Source())}
    assert by_t[500.0].modalities == (Modality.AUDIO,)
    assert by_t[1000.0].missing[Modality.AUDIO] == "microphone lost"
    assert by_t[1500.0].label is None
    assert by_t[2000.0].modalities == (Modality.AUDIO,)


def test_audio_gap_is_masked_not_shifted(rec, decoded_clips):
    _, audio, _ = decoded_clips[0]

    class Gappy:
        def events(self):
            for ev in ArraySource(audio=audio, sample_rate=16000, chunk_s=0.1).events():
                if not 500 <= ev.t_ms < 1500:
                    yield ev

        def close(self):
            pass

    by_t = {r.timestamp_ms: r for r in rec.stream(source=Gappy())}
    assert by_t[2000.0].coverage[Modality.AUDIO] == pytest.approx(0.5, abs=0.02)
    assert by_t[1500.0].coverage[Modality.AUDIO] == pytest.approx(1 / 3, abs=0.02)


def test_stream_never_goes_silent_on_frames_without_audio(rec, decoded_clips):
    _, _, frames = decoded_clips[5]
    src = ArraySource(frames=[f for _, f in frames], fps=29.97)
    results = list(rec.stream(source=src))
    last_frame_ms = (len(frames) - 1) / 29.97 * 1000
    hops = [500.0 * (i + 1) for i in range(int(last_frame_ms // 500))]
    assert [r.timestamp_ms for r in results][: len(hops)] == hops and len(hops) >= 3
    assert results[-1].timestamp_ms == pytest.approx(last_frame_ms)
    assert all(r.modalities == (Modality.VIDEO,) for r in results)
    assert all(r.missing[Modality.AUDIO] == "no audio in window" for r in results)


def test_stream_arguments(rec):
    with pytest.raises(InputError, match="not both"):
        rec.stream(source="x.mp4", microphone=True)
    with pytest.raises(InputError, match="Source"):
        rec.stream(source=42)
    with pytest.raises(InputError, match="existing media file"):
        rec.stream(source="no/such/file.mp4")


def test_stream_accepts_events_of_every_kind(rec):
    tone = (0.3 * np.sin(np.arange(8000) / 16000 * 2 * np.pi * 200)).astype(np.float32)

    class Mixed:
        def events(self):
            yield AudioChunk(0.0, tone, 16000)
            yield VideoFrame(100.0, np.zeros((48, 48), np.uint8), is_face=True)
            yield AudioChunk(500.0, tone, 16000)

        def close(self):
            pass

    results = list(rec.stream(source=Mixed()))
    assert results[0].modalities == AV and results[0].timestamp_ms == 500.0


def test_calibration_shifts_scores_and_resets(fixture_bundle, decoded_clips):
    _, audio, _ = decoded_clips[4]  # the neutral clip
    with Recognizer(model=fixture_bundle, smoothing="none") as rec:
        before = rec.predict(audio=audio, timestamp_ms=0.0)
        base = rec.calibrate(ArraySource(audio=audio, sample_rate=16000), seconds=2.0)
        assert tuple(base) == LABELS and all(v > 0 for v in base.values())
        after = rec.predict(audio=audio, timestamp_ms=0.0)
        assert after.raw_scores != before.raw_scores
        rec.reset_calibration()
        again = rec.predict(audio=audio, timestamp_ms=0.0)
        assert again.raw_scores == pytest.approx(before.raw_scores)
        with pytest.raises(InputError, match="seconds"):
            rec.calibrate(ArraySource(audio=audio, sample_rate=16000), seconds=0)


def test_closed_recognizer_refuses(fixture_bundle):
    rec = Recognizer(model=fixture_bundle)
    rec.close()
    rec.close()
    with pytest.raises(EmosdkError, match="closed"):
        rec.predict(audio=np.zeros(16000, np.float32))


def test_result_serialises(rec, decoded_clips):
    import json

    _, audio, frames = decoded_clips[0]
    d = json.loads(rec.predict(audio=audio, frame=frames[0][1]).to_json())
    assert d["modalities"] == ["audio", "video"] and d["degraded"] is False
    assert set(d["scores"]) == set(LABELS) and d["latency_ms"]["total"] > 0


def test_very_short_audio_is_padded_to_the_window_not_an_error(decoded_clips):
    _, audio, _ = decoded_clips[0]
    with Recognizer(voice_activity="off") as rec:  # the default model: needs 4 log-mel frames
        for n in (1, 200, 400, 700, 1100):  # up to 70 ms, centred in a 3 s window
            r = rec.predict(audio=audio[8000 : 8000 + n])
            assert r.modalities == (Modality.AUDIO,), n
            assert abs(sum(r.scores.values()) - 1) < 1e-6
    with Recognizer() as rec:  # with voice activity: 12 ms is no speech
        r = rec.predict(audio=audio[8000:8200])
        assert r.label is None and r.missing[Modality.AUDIO].startswith("silence")
