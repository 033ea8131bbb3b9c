"""Live capture on a machine whose devices may be absent: real sounddevice and OpenCV calls,
and replay sources that feed the real CREMA-D recordings where hardware would be."""

import itertools
import time

import numpy as np
import pytest

from emosdk import Modality, Recognizer
from emosdk.capture import (
    ArraySource,
    AudioChunk,
    HealthEvent,
    MergedSource,
    MicrophoneSource,
    RetryingSource,
    Tick,
    now_ms,
)
from emosdk.capture.live import LIVE_LATENESS_MS, CameraSource, capture_time_ms
from emosdk.errors import SourceError


def portaudio_installed() -> bool:
    """sounddevice imports only where the system PortAudio library (libportaudio2) is."""
    try:
        import sounddevice  # noqa: F401
    except OSError:
        return False
    return True


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
        # the real error, as a reason: without PortAudio, how to install it; with PortAudio
        # but no sound card, sounddevice's own error (CI runs this test both ways)
        assert all("audio device lost" in r.missing[Modality.AUDIO] for r in results)
        expected = "PortAudioError" if portaudio_installed() else "apt-get install libportaudio2"
        assert all(expected in r.missing[Modality.AUDIO] for r in results)
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


class ReplayMicrophone:
    """A recording delivered like a sound card does: each block once its last sample has been
    captured, plus the input latency, stamped with the capture time of its first sample."""

    def __init__(self, audio, start_ms, block_s=0.05, latency_s=0.03):
        self.audio, self.start, self.closed = audio, start_ms, False
        self.block, self.latency_s = int(block_s * 16000), latency_s

    def events(self):
        for k in range(0, len(self.audio), self.block):
            pcm = self.audio[k : k + self.block]
            t = self.start + k / 16.0
            arrive = t + len(pcm) / 16.0 + self.latency_s * 1000.0
            while not self.closed and now_ms() < arrive:
                time.sleep(0.002)
            if self.closed:
                return
            yield AudioChunk(t, pcm, 16000)

    def close(self):
        self.closed = True


@pytest.mark.parametrize("lateness_ms", [0.0, LIVE_LATENESS_MS])
def test_live_windows_wait_for_late_microphone_blocks(rec, decoded_clips, lateness_ms):
    # camera frames arrive at once, microphone blocks 110 ms after their first sample (a 50 ms
    # block, 60 ms input latency; the next frame after a hop comes within 34 ms, so scheduling
    # jitter cannot reorder them): without the lateness allowance every window closes before
    # its last block arrived
    _, audio, frames = decoded_clips[0]
    t0 = now_ms() + 50.0
    mic = ReplayMicrophone(audio, t0, latency_s=0.06)
    cam = ArraySource(frames=[f for _, f in frames], fps=29.97, realtime=True, start_ms=t0)
    results = list(rec.stream(source=MergedSource(mic, cam, lateness_ms=lateness_ms)))
    inside = [r for r in results if r.timestamp_ms <= t0 + len(audio) / 16.0 - 100.0]
    assert len(inside) >= 6
    coverage = [r.coverage[Modality.AUDIO] for r in inside]
    if lateness_ms:
        assert all(c == 1.0 for c in coverage), coverage
        assert all(Modality.AUDIO in r.modalities for r in inside[2:])
    else:  # the problem the allowance solves: the newest block is not there yet
        assert all(c < 1.0 for c in coverage), coverage


def test_microphone_capture_time_from_portaudio_clock():
    from types import SimpleNamespace

    def info(adc, current):  # sounddevice's time_info: PortAudio's stream clock, in seconds
        return SimpleNamespace(inputBufferAdcTime=adc, currentTime=current)

    assert capture_time_ms(5000.0, info(100.0, 100.08), 0.05, 0.02) == pytest.approx(4920.0)
    # host APIs that report nothing, or an ADC time after the callback: block + latency back
    assert capture_time_ms(5000.0, info(0.0, 0.0), 0.05, 0.02) == pytest.approx(4930.0)
    assert capture_time_ms(5000.0, info(100.0, 99.0), 0.05, 0.02) == pytest.approx(4930.0)
