"""Live sources: microphone (sounddevice), camera (OpenCV), retries, and merging on one clock.

Every live source stamps events with ``time.monotonic()`` in milliseconds, so audio and video
share one clock. Device failures never raise out of a stream: :class:`RetryingSource` turns them
into :class:`~emosdk.capture.HealthEvent` s, keeps sending :class:`~emosdk.capture.Tick` s while
the device is away, and reopens it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np

from ..errors import BackendUnavailableError, SourceError
from ..results import Modality
from .base import (
    AudioChunk,
    Event,
    HealthEvent,
    Source,
    SourceBase,
    SourceInfo,
    Tick,
    VideoFrame,
    source_info,
)

logger = logging.getLogger("emosdk")


def now_ms() -> float:
    """The live sources' clock: ``time.monotonic()`` in milliseconds."""
    return time.monotonic() * 1000.0


def capture_time_ms(now: float, time_info: object, block_s: float, latency_s: float) -> float:
    """When the first sample of a microphone block was captured, on the :func:`now_ms` clock.

    PortAudio gives the capture time of the block's first sample (``inputBufferAdcTime``) and the
    time of the callback (``currentTime``) on its own stream clock; their difference, taken back
    from ``now`` (the callback's time on our clock), is the capture time on our clock. Some host
    APIs report zeros or nonsense there: then the block is taken to end ``latency_s`` (the
    stream's input latency) before the callback.

    Args:
        now: :func:`now_ms` when the callback runs.
        time_info: sounddevice's ``time`` argument of the callback (or None).
        block_s: the block's duration in seconds.
        latency_s: the stream's input latency in seconds (``InputStream.latency``).
    """
    adc = getattr(time_info, "inputBufferAdcTime", 0.0) or 0.0
    current = getattr(time_info, "currentTime", 0.0) or 0.0
    age = current - adc
    if adc > 0.0 and current > 0.0 and block_s <= age < block_s + 2.0:
        return now - age * 1000.0
    return now - (block_s + latency_s) * 1000.0


class MicrophoneSource(SourceBase):
    """One open microphone: a sounddevice callback fills a bounded queue (oldest blocks dropped).

    Opening raises when there is no device (sounddevice raises ``PortAudioError: Error querying
    device -1`` on a machine without a sound card); ``events()`` raises :class:`SourceError`
    when the stream stops. Wrap it in :class:`RetryingSource` (``Recognizer.stream`` does).

    Args:
        device: sounddevice input device (index or name substring); None = the default input.
        sample_rate: capture rate in Hz; None = the device's default rate (resampled later).
        block_s: callback block length in seconds.
        tick_s: heartbeat interval while no audio arrives.
        max_queue_s: audio kept while the consumer is busy; older blocks are dropped.
    """

    def __init__(
        self,
        device: int | str | None = None,
        sample_rate: int | None = None,
        *,
        block_s: float = 0.05,
        tick_s: float = 0.1,
        max_queue_s: float = 5.0,
    ) -> None:
        try:
            import sounddevice as sd
        except (ImportError, OSError) as e:  # OSError: the PortAudio library is not installed
            raise BackendUnavailableError(
                'microphone capture needs sounddevice and PortAudio: pip install "emosdk[capture]"'
                f" and apt-get install libportaudio2 ({e})"
            ) from e
        info = sd.query_devices(device, kind="input")  # raises PortAudioError without a device
        self.name = str(info["name"])
        self.info = SourceInfo(provides=(Modality.AUDIO,))
        self.sample_rate = int(sample_rate or info["default_samplerate"])
        self._tick_s = tick_s
        blocks = max(1, int(max_queue_s / block_s))
        self._queue: queue.Queue = queue.Queue(maxsize=blocks)
        self.dropped_blocks = 0
        self._closed = False
        self._latency_s = 0.0

        def callback(indata, frames, time_info, status):  # runs on PortAudio's thread
            if status:
                logger.debug("microphone status: %s", status)
            t = capture_time_ms(now_ms(), time_info, frames / self.sample_rate, self._latency_s)
            item = (t, indata[:, 0].astype(np.float32, copy=True))
            try:
                self._queue.put_nowait(item)
            except queue.Full:
                self.dropped_blocks += 1
                try:
                    self._queue.get_nowait()
                    self._queue.put_nowait(item)
                except (queue.Empty, queue.Full):
                    pass

        self._stream = sd.InputStream(
            device=device,
            channels=1,
            samplerate=self.sample_rate,
            dtype="float32",
            blocksize=int(block_s * self.sample_rate),
            callback=callback,
        )
        self._stream.start()
        # the block's first sample is this old when the callback runs, at the least
        self._latency_s = float(getattr(self._stream, "latency", 0.0) or 0.0)
        logger.info(
            "microphone: %s at %d Hz, input latency %.0f ms",
            self.name,
            self.sample_rate,
            self._latency_s * 1000.0,
        )

    def events(self) -> Iterator[Event]:
        while not self._closed:
            try:
                t, pcm = self._queue.get(timeout=self._tick_s)
            except queue.Empty:
                if not self._stream.active:
                    raise SourceError(
                        f"microphone {self.name!r} stopped delivering audio"
                    ) from None
                yield Tick(now_ms())
                continue
            yield AudioChunk(t, pcm, self.sample_rate)

    def close(self) -> None:
        self._closed = True
        try:
            self._stream.close()
        except Exception as e:
            logger.debug("microphone close: %s", e)


class CameraSource(SourceBase):
    """One open camera read by its own thread; only the newest frame is kept (never blocks).

    Args:
        index: OpenCV camera index or a device path / stream URL.
        width, height: requested capture size (the camera may choose another).
        tick_s: heartbeat interval while no new frame arrives.
        max_failures: consecutive failed reads before the camera counts as lost.

    Raises:
        SourceError: the camera cannot be opened.
        BackendUnavailableError: OpenCV is not installed.
    """

    def __init__(
        self,
        index: int | str = 0,
        *,
        width: int | None = None,
        height: int | None = None,
        tick_s: float = 0.1,
        max_failures: int = 30,
    ) -> None:
        try:
            import cv2
        except ImportError as e:
            raise BackendUnavailableError(
                'camera capture needs OpenCV: pip install "emosdk[capture]"'
            ) from e
        self._cap = cv2.VideoCapture(index)
        if not self._cap.isOpened():
            self._cap.release()
            raise SourceError(f"camera {index!r} cannot be opened (not connected, or in use)")
        if width:
            self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        if height:
            self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        self.index = index
        self.info = SourceInfo(provides=(Modality.VIDEO,))
        self._tick_s = tick_s
        self._max_failures = max_failures
        self._latest: tuple[float, np.ndarray] | None = None
        self._error: str | None = None
        self._cond = threading.Condition()
        self._closed = False
        self.dropped_frames = 0
        self._thread = threading.Thread(target=self._reader, name="emosdk-camera", daemon=True)
        self._thread.start()

    def _reader(self) -> None:
        try:
            self._read_frames()
        finally:
            if self._closed:
                self._cap.release()

    def _read_frames(self) -> None:
        failures = 0
        while not self._closed:
            ok, frame = self._cap.read()
            t = now_ms()
            with self._cond:
                if not ok:
                    failures += 1
                    if failures >= self._max_failures:
                        self._error = f"camera {self.index!r} stopped delivering frames"
                        self._cond.notify_all()
                        return
                    continue
                failures = 0
                if self._latest is not None:
                    self.dropped_frames += 1  # the consumer had not taken the previous one
                self._latest = (t, frame)
                self._cond.notify_all()

    def events(self) -> Iterator[Event]:
        while not self._closed:
            with self._cond:
                if self._latest is None and self._error is None:
                    self._cond.wait(timeout=self._tick_s)
                item, self._latest = self._latest, None
                error = self._error
            if item is not None:
                yield VideoFrame(item[0], item[1])
            elif error is not None:
                raise SourceError(error)
            else:
                yield Tick(now_ms())

    def close(self) -> None:
        self._closed = True
        self._thread.join(timeout=2.0)
        if not self._thread.is_alive():  # else the reader releases it when its read returns
            self._cap.release()


class RetryingSource(SourceBase):
    """Opens a source with ``factory`` and reopens it whenever opening or reading fails.

    While the device is away it yields a :class:`HealthEvent` (``ok=False``, with the error)
    once, then a :class:`Tick` every ``tick_s``; when the device is back, a ``HealthEvent`` with
    ``ok=True``. It ends only when closed, or when the wrapped source ends normally.

    Args:
        factory: opens the device and returns a Source (may raise).
        modality: what the device provides (for the health events).
        retry_s: wait between attempts to reopen.
        tick_s: heartbeat interval while waiting.
        clock: milliseconds on the same clock as the wrapped source's events.
    """

    def __init__(
        self,
        factory: Callable[[], Source],
        modality: Modality,
        *,
        retry_s: float = 2.0,
        tick_s: float = 0.1,
        clock: Callable[[], float] = now_ms,
    ) -> None:
        self._factory = factory
        self.modality = modality
        self.info = SourceInfo(provides=(modality,))
        self._retry_s = retry_s
        self._tick_s = tick_s
        self._clock = clock
        self._closed = threading.Event()
        self._current: Source | None = None
        self.failures = 0

    def events(self) -> Iterator[Event]:
        lost = False
        while not self._closed.is_set():
            try:
                self._current = self._factory()
                for ev in self._current.events():
                    if lost:
                        lost = False
                        yield HealthEvent(ev.t_ms, self.modality, True, "device back")
                    yield ev
                return  # the device ended normally (e.g. a replayed recording)
            except Exception as e:
                self.failures += 1
                message = f"{self.modality.value} device lost: {type(e).__name__}: {e}"
                logger.warning("%s; retrying in %.1f s", message, self._retry_s)
                if not lost:
                    lost = True
                    yield HealthEvent(self._clock(), self.modality, False, message)
            finally:
                if self._current is not None:
                    self._current.close()
                    self._current = None
            deadline = time.monotonic() + self._retry_s
            while not self._closed.is_set() and time.monotonic() < deadline:
                self._closed.wait(min(self._tick_s, max(0.0, deadline - time.monotonic())))
                yield Tick(self._clock())

    def close(self) -> None:
        self._closed.set()
        current = self._current  # the pump thread may reset it meanwhile
        if current is not None:
            current.close()


class MergedSource(SourceBase):
    """Runs several sources in their own threads and yields their events as they arrive.

    The sources must share a clock (the live sources all use :func:`now_ms`). Events from
    different sources arrive only roughly in time order: a microphone block arrives after its
    last sample (a block plus the input latency later), a camera frame at once. ``lateness_ms``
    says how far behind an event may arrive; a stream waits that long (or until every live
    modality has delivered up to the hop) before it closes a window.

    Its ``info`` declares ``lateness_ms`` and, when every merged source declares what it
    provides, the union of those modalities.

    Args:
        sources: the sources to merge.
        max_events: events held while the consumer is busy (the sources wait beyond that).
        lateness_ms: how late an event may arrive after a later event from another source.
    """

    _END = object()

    def __init__(self, *sources: Source, max_events: int = 1000, lateness_ms: float = 0.0) -> None:
        self._sources = sources
        infos = [source_info(s) for s in sources]
        provides = None
        if infos and all(i.provides is not None for i in infos):
            provides = tuple(m for m in Modality if any(m in i.provides for i in infos))
        self.info = SourceInfo(provides=provides, lateness_ms=lateness_ms)
        self._queue: queue.Queue = queue.Queue(maxsize=max_events)
        self._closed = False
        self._threads: list[threading.Thread] = []

    def _put(self, item: object) -> None:
        while not self._closed:
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _pump(self, source: Source) -> None:
        try:
            for ev in source.events():
                self._put(ev)
                if self._closed:
                    return
        except Exception as e:  # reported in-band, never lost
            self._put(e)
        finally:
            self._put(self._END)

    def events(self) -> Iterator[Event]:
        self._threads = [
            threading.Thread(target=self._pump, args=(s,), name="emosdk-source", daemon=True)
            for s in self._sources
        ]
        for th in self._threads:
            th.start()
        running = len(self._threads)
        while running and not self._closed:
            item = self._queue.get()
            if item is self._END:
                running -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield item

    def close(self) -> None:
        self._closed = True
        for s in self._sources:
            s.close()
        for th in self._threads:
            th.join(timeout=2.0)


#: how late live events may arrive relative to each other (see :class:`MergedSource`)
LIVE_LATENESS_MS = 250.0


def live_source(
    microphone: bool | int | str | None = True,
    camera: bool | int | str | None = True,
    *,
    retry_s: float = 2.0,
) -> Source:
    """The microphone and/or camera as one source with retries on one monotonic clock.

    Args:
        microphone: True (default input), a device index or name, or False/None for none.
        camera: True (camera 0), an index or device path, or False/None for none.
        retry_s: wait between attempts to reopen a lost device.
    """
    parts: list[Source] = []
    if microphone is not None and microphone is not False:
        device = None if microphone is True else microphone
        parts.append(
            RetryingSource(lambda: MicrophoneSource(device), Modality.AUDIO, retry_s=retry_s)
        )
    if camera is not None and camera is not False:
        index = 0 if camera is True else camera
        parts.append(RetryingSource(lambda: CameraSource(index), Modality.VIDEO, retry_s=retry_s))
    if not parts:
        raise BackendUnavailableError("live capture needs a microphone, a camera or both")
    # a microphone block arrives a block (50 ms) plus the input latency after its first sample;
    # 250 ms covers that on common hardware, and a stream waits only when a device lags
    # each part declares the modality it delivers: a stream reports the others as "not used"
    if len(parts) == 1:
        return parts[0]
    return MergedSource(*parts, lateness_ms=LIVE_LATENESS_MS)
