"""Streams at their edges: long chunks, channel order, source reuse, per-stream smoothing,
errors after close, malformed chunks, failed calibration."""

import itertools

import numpy as np
import pytest

from emosdk import EmosdkError, InputError, Modality, Recognizer
from emosdk.capture import ArraySource, AudioChunk


@pytest.fixture(scope="module")
def rec(fixture_bundle):
    with Recognizer(model=fixture_bundle) as r:
        yield r


@pytest.fixture(scope="module")
def speech(decoded_clips):
    return np.tile(decoded_clips[0][1], 6)  # about 13.6 s of real speech, back to back


def test_one_long_chunk_is_analysed_like_many_short_ones(rec, speech):
    whole = list(rec.stream(source=ArraySource(audio=speech, chunk_s=20.0)))
    short = list(rec.stream(source=ArraySource(audio=speech, chunk_s=0.1)))
    assert [r.timestamp_ms for r in whole] == [r.timestamp_ms for r in short]
    for a, b in zip(whole, short):
        assert a.coverage[Modality.AUDIO] == pytest.approx(b.coverage[Modality.AUDIO])
        assert a.modalities == b.modalities


def test_color_order_applies_to_face_crops(fixture_bundle, decoded_clips):
    from emosdk.perception import HaarFaceDetector, crop

    frame = decoded_clips[3][2][10][1]
    face = crop(frame, HaarFaceDetector().detect(frame)[0])
    with (
        Recognizer(model=fixture_bundle) as bgr,
        Recognizer(model=fixture_bundle, color_order="rgb") as rgb,
    ):
        a = bgr.predict(face=face).raw_scores
        b = rgb.predict(face=face).raw_scores
        c = rgb.predict(face=np.ascontiguousarray(face[..., ::-1])).raw_scores
    assert a != b
    assert list(a.values()) == pytest.approx(list(c.values()), abs=1e-6)


def test_a_source_can_be_streamed_twice(rec, speech):
    src = ArraySource(audio=speech[:48000])
    first = list(rec.stream(source=src))
    second = list(rec.stream(source=src))
    assert len(first) == len(second) >= 5
    assert [r.scores for r in first] == [r.scores for r in second]


def test_interleaved_streams_do_not_share_smoothing(rec, speech):
    alone = [r.scores for r in rec.stream(source=ArraySource(audio=speech[:64000]))]
    a = rec.stream(source=ArraySource(audio=speech[:64000]))
    b = rec.stream(source=ArraySource(audio=speech[64000:128000]))
    mixed = []
    for ra, _ in zip(a, b):
        mixed.append(ra.scores)
    assert mixed == alone[: len(mixed)] and len(mixed) >= 6


def test_bad_timestamps_and_start_times_are_input_errors(rec, speech):
    for bad in ("abc", "5", object(), True, float("inf")):
        with pytest.raises(InputError, match="timestamp_ms"):
            rec.predict(audio=speech[:16000], timestamp_ms=bad)
    with pytest.raises(InputError, match="start_ms"):
        ArraySource(audio=speech[:16000], start_ms=float("nan"))


def test_a_stream_outliving_close_raises_emosdk_error(fixture_bundle, speech):
    rec = Recognizer(model=fixture_bundle)
    stream = rec.stream(source=ArraySource(audio=speech[:48000]))
    next(stream)
    rec.close()
    with pytest.raises(EmosdkError, match="closed"):
        next(stream)


def test_a_malformed_audio_chunk_is_dropped_not_fatal(rec, speech):
    class Source:
        def events(self):
            for ev in ArraySource(audio=speech[:48000]).events():
                if ev.t_ms == 1000.0:
                    yield AudioChunk(ev.t_ms, np.full(160, np.nan, np.float32), 16000)
                    continue
                yield ev

        def close(self):
            pass

    results = list(rec.stream(source=Source()))
    assert [r.timestamp_ms for r in results][:5] == [500.0, 1000.0, 1500.0, 2000.0, 2500.0]


def test_a_failed_calibration_keeps_the_previous_baseline(fixture_bundle, speech):
    with Recognizer(model=fixture_bundle, smoothing="none") as rec:
        rec.calibrate(ArraySource(audio=speech[:48000]), seconds=2.0)
        calibrated = rec.predict(audio=speech[:32000], timestamp_ms=0.0).raw_scores
        with pytest.raises(InputError, match="no window"):
            rec.calibrate(ArraySource(audio=np.zeros(48000, np.float32)), seconds=2.0)
        again = rec.predict(audio=speech[:32000], timestamp_ms=0.0).raw_scores
        assert list(again.values()) == pytest.approx(list(calibrated.values()))


def test_live_merged_close_is_clean():
    from emosdk.capture import live_source

    src = live_source(True, True, retry_s=0.2)
    events = list(itertools.islice(src.events(), 5))
    src.close()
    assert len(events) == 5
