"""Live capture on a machine whose devices may be absent: real sounddevice and OpenCV calls,
and replay sources that feed the real CREMA-D recordings where hardware would be."""

import itertools

import numpy as np
import pytest

from emosdk import Modality, Recognizer
from emosdk.capture import (
    ArraySource,
    HealthEvent,
    MergedSource,
    MicrophoneSource,
    RetryingSource,
    Tick,
    now_ms,
)
from emosdk.capture.live import CameraSource
from emosdk.errors import SourceError


def has_microphone() -> bool:
    try:
        MicrophoneSource().close()
        return True
    except Exception:
        return False


def has_camera() -> bool:
    try:
        CameraSource(0).close()
        return True
    except SourceError:
        return False


@pytest.fixture(scope="module")
def rec(fixture_bundle):
    with Recognizer(model=fixture_bundle, hop_s=0.25) as r:
        yield r


def test_live_stream_without_devices_keeps_yielding_degraded_results(rec):
    stream = rec.stream()  # microphone + camera
    results = list(itertools.islice(stream, 4))
    stream.close()
    times = [r.timestamp_ms for r in results]
    assert np.allclose(np.diff(times), 250.0)
    if not has_microphone():
        # the real sounddevice error on a machine without a sound card, as a reason
        assert all("audio device lost" in r.missing[Modality.AUDIO] for r in results)
        assert all("PortAudioError" in r.missing[Modality.AUDIO] for r in results)
    if not has_camera():
        assert all("camera 0 cannot be opened" in r.missing[Modality.VIDEO] for r in results)
    if not has_microphone() and not has_camera():
        assert all(r.label is None and r.degraded for r in results)


def test_microphone_only_stream_says_the_camera_is_not_used(rec):
    stream = rec.stream(microphone=True)
    results = list(itertools.islice(stream, 2))
    stream.close()
    assert all(r.missing[Modality.VIDEO] == "camera not used" for r in results)


class ReplayDevice:
    """A real recording replayed at recording pace on the live clock; it can 'unplug' itself."""

    def __init__(self, audio, fail_after_ms=None):
        self.start = now_ms()
        self.inner = ArraySource(
            audio=audio, sample_rate=16000, realtime=True, start_ms=self.start, chunk_s=0.05
        )
        self.fail_after_ms = fail_after_ms

    def events(self):
        for ev in self.inner.events():
            if self.fail_after_ms is not None and ev.t_ms - self.start >= self.fail_after_ms:
                raise OSError("[Errno 19] No such device (unplugged)")
            yield ev

    def close(self):
        self.inner.close()


def test_unplugged_microphone_degrades_then_recovers(rec, decoded_clips):
    _, audio, _ = decoded_clips[0]
    speech = np.tile(audio, 2)
    opened = []

    def factory():
        opened.append(now_ms())
        # the first device dies after 1 s of audio; after the retry it works again
        return ReplayDevice(speech, fail_after_ms=1000 if len(opened) == 1 else None)

    src = RetryingSource(factory, Modality.AUDIO, retry_s=0.6, tick_s=0.05)
    results = list(rec.stream(source=src))
    assert len(opened) == 2
    lost = [r for r in results if "audio device lost" in (r.missing.get(Modality.AUDIO) or "")]
    assert lost, "the unplug must show in the results"
    assert "No such device" in lost[0].reason
    first_lost = results.index(lost[0])
    assert results[first_lost - 1].modalities == (Modality.AUDIO,)
    recovered = [r for r in results[first_lost:] if r.modalities == (Modality.AUDIO,)]
    assert len(recovered) >= 4, "audio results must come back when the device returns"
    times = [r.timestamp_ms for r in results]
    assert np.all(np.diff(times) > 0) and np.allclose(np.diff(times)[:-1], 250.0)


def test_retrying_source_reports_loss_once_and_ticks_while_waiting():
    calls = []

    def factory():
        calls.append(1)
        raise OSError("no device")

    src = RetryingSource(factory, Modality.VIDEO, retry_s=0.2, tick_s=0.05)
    events = list(itertools.islice(src.events(), 12))
    src.close()
    health = [e for e in events if isinstance(e, HealthEvent)]
    assert len(health) == 1 and not health[0].ok and "no device" in health[0].message
    assert sum(isinstance(e, Tick) for e in events) == 11 and len(calls) >= 2
    ticks = [e.t_ms for e in events if isinstance(e, Tick)]
    assert ticks == sorted(ticks)


def test_merged_source_interleaves_on_one_clock(decoded_clips):
    _, audio, frames = decoded_clips[0]
    t0 = now_ms()
    a = ArraySource(audio=audio[:8000], sample_rate=16000, realtime=True, start_ms=t0)
    v = ArraySource(frames=[f for _, f in frames[:15]], fps=29.97, realtime=True, start_ms=t0)
    merged = MergedSource(a, v)
    events = list(merged.events())
    merged.close()
    assert len(events) == 5 + 15
    times = [e.t_ms for e in events]
    # delivered as they arrive: in time order up to thread scheduling jitter
    assert max(np.maximum.accumulate(times) - times) < 60.0
