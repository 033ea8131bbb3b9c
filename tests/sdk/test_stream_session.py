"""The push mode (``Recognizer.open_stream``): the same results as ``stream(source=...)`` on the
same events of the real clips, and its own contract (errors, finish, declared sources)."""

import numpy as np
import pytest

from emosdk import EmosdkError, InputError, Modality, Recognizer
from emosdk.capture import ArraySource, AudioChunk, HealthEvent, Tick, VideoFrame
from emosdk.capture.base import SourceInfo
from emosdk.capture.media import MediaFileSource


@pytest.fixture(scope="module")
def rec(fixture_bundle):
    with Recognizer(model=fixture_bundle) as r:
        yield r


def same(a, b):
    assert [r.timestamp_ms for r in a] == [r.timestamp_ms for r in b]
    for x, y in zip(a, b):
        assert (x.label, x.modalities, dict(x.missing), x.track_id, x.window_ms) == (
            y.label,
            y.modalities,
            dict(y.missing),
            y.track_id,
            y.window_ms,
        )
        assert list(x.scores.values()) == pytest.approx(list(y.scores.values()), abs=1e-6)
        assert list(x.raw_scores.values()) == pytest.approx(list(y.raw_scores.values()), abs=1e-6)
        assert dict(x.coverage) == pytest.approx(dict(y.coverage))


def push_all(rec, source, info=None):
    out = []
    with rec.open_stream(info) as session:
        for ev in source.events():
            out.extend(session.push(ev))
        out.extend(session.finish())
    return out


def test_push_mode_gives_the_stream_results_on_each_real_clip(rec, av_clips):
    for clip in av_clips:
        pulled = list(rec.stream(source=clip))
        pushed = push_all(rec, MediaFileSource(clip), MediaFileSource(clip).info)
        assert len(pulled) >= 4
        same(pulled, pushed)
        assert any(r.modalities == (Modality.AUDIO, Modality.VIDEO) for r in pushed), clip


def test_push_mode_with_several_faces_matches_the_stream(fixture_bundle, av_clips):
    with Recognizer(model=fixture_bundle, max_faces=2) as multi:
        pulled = list(multi.stream(source=av_clips[3]))
        pushed = push_all(multi, MediaFileSource(av_clips[3]), MediaFileSource(av_clips[3]).info)
    same(pulled, pushed)
    assert {r.track_id for r in pushed} >= {0}


def test_push_helpers_and_a_declared_source(rec, decoded_clips):
    _, audio, frames = decoded_clips[3]
    info = SourceInfo(provides=(Modality.AUDIO,))
    with rec.open_stream(info) as session:
        got = []
        for k in range(0, len(audio), 1600):
            got += session.push_audio(audio[k : k + 1600], 16000, k / 16.0)
        got += session.finish()
    assert len(got) >= 4
    assert all(r.missing[Modality.VIDEO] == "camera not used" for r in got)
    assert any(r.modalities == (Modality.AUDIO,) for r in got)
    with rec.open_stream() as session:
        got = []
        for t, image in frames:
            got += session.push_frame(image, t)
        got += session.finish()
    assert got and all(Modality.VIDEO in r.modalities for r in got[1:])


@pytest.mark.parametrize(
    ("event", "match"),
    [
        (None, "expected an AudioChunk"),
        ((0.0, np.zeros(160, np.float32)), "got tuple"),
        (Tick(float("nan")), "Tick.t_ms"),
        (Tick(float("-inf")), "Tick.t_ms"),
        (Tick(None), "Tick.t_ms"),
        (Tick("12"), "Tick.t_ms"),
        (Tick(1e300), "Tick.t_ms"),
        (AudioChunk(0.0, np.zeros((3, 4, 5), np.float32), 16000), "AudioChunk.pcm"),
        (AudioChunk(0.0, np.zeros(160, np.float32), 0), "AudioChunk.sample_rate"),
        (VideoFrame(0.0, np.zeros((1, 1, 3), np.uint8)), "VideoFrame.image"),
        (VideoFrame(0.0, np.zeros((48, 48, 4), np.uint8)), "VideoFrame.image"),
        (HealthEvent(0.0, "audio", False, "x"), None),
        (HealthEvent(0.0, "speech", False, "x"), "HealthEvent.modality"),
        (HealthEvent(0.0, Modality.AUDIO, False, None), "HealthEvent.message"),
    ],
)
def test_push_refuses_malformed_events_with_input_errors(rec, event, match):
    with rec.open_stream() as session:
        if match is None:  # a modality named by its value is accepted
            assert session.push(event) == []
            return
        with pytest.raises(InputError, match=match):
            session.push(event)
        # nothing of it was used: the session is as new and still works
        assert session.push(Tick(0.0)) == []
        assert len(session.push(Tick(1000.0))) == 2


def test_a_finished_session_refuses_more_and_a_blank_one_is_not_silent(rec):
    session = rec.open_stream()
    (only,) = session.finish()
    assert only.label is None and only.degraded
    assert "no usable data" in only.missing[Modality.AUDIO]
    assert session.finish() == []
    with pytest.raises(EmosdkError, match="finished"):
        session.push(Tick(0.0))


def test_a_source_replayed_twice_through_push_and_stream_agrees(rec, decoded_clips):
    _, audio, frames = decoded_clips[0]
    src = ArraySource(audio=audio, frames=[f for _, f in frames], fps=29.97)
    same(list(rec.stream(source=src)), push_all(rec, src))
