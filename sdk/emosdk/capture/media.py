"""Media files as a source (PyAV): mp4, flv, avi, webm, mkv, wav, mp3, ogg... on one timeline."""

from __future__ import annotations

import heapq
import itertools
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import BackendUnavailableError, InputError, SourceError
from ..results import Modality
from .base import AudioChunk, Event, SourceBase, SourceInfo, VideoFrame

logger = logging.getLogger("emosdk")

SAMPLE_RATE = 16_000
_REORDER_MS = 500.0  # containers interleave audio and video only roughly in time order


class MediaFileSource(SourceBase):
    """Decodes a media file's audio (to 16 kHz mono float32) and video (to BGR uint8 frames).

    Timestamps come from the streams' presentation times, so audio and video stay on one timeline
    (and an encoder's priming samples do not shift the audio).

    Args:
        path: the media file.
        realtime: pace events at recording speed, as a live device would deliver them.
        audio: decode the audio stream (if any).
        video: decode the video stream (if any).

    Raises:
        InputError: the file does not exist, has neither audio nor video, or nothing in it
            decodes.
        BackendUnavailableError: PyAV is not installed (``pip install "emosdk[capture]"``).
    """

    def __init__(
        self, path: str | Path, *, realtime: bool = False, audio: bool = True, video: bool = True
    ) -> None:
        try:
            import av
        except ImportError as e:
            raise BackendUnavailableError(
                'reading media files needs PyAV: pip install "emosdk[capture]"'
            ) from e
        self._av = av
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"source: expected an existing media file, got {str(path)!r}")
        try:
            with av.open(str(self.path)) as c:
                streams = [
                    *(c.streams.audio[:1] if audio else ()),
                    *(c.streams.video[:1] if video else ()),
                ]
                self.has_audio = any(st.type == "audio" for st in streams)
                self.has_video = any(st.type == "video" for st in streams)
                # a file that opens may still hold nothing decodable (a truncated or mislabelled
                # file): refuse it here, with its name, rather than stream nothing from it
                first = next(c.decode(*streams), None) if streams else None
        except (av.error.FFmpegError, AttributeError, ValueError) as e:
            raise InputError(f"source: {self.path} is not a readable media file ({e})") from None
        if not (self.has_audio or self.has_video):
            raise InputError(f"source: {self.path} has no audio or video stream to read")
        if first is None:
            raise InputError(
                f"source: {self.path} has an audio or video stream but no frame of it decodes "
                "(empty, truncated or not a media file)"
            )
        # what this source can deliver; a stream reports the rest with these reasons
        self.info = SourceInfo(
            provides=tuple(
                m
                for m, ok in ((Modality.AUDIO, self.has_audio), (Modality.VIDEO, self.has_video))
                if ok
            ),
            absent_reasons={
                Modality.AUDIO: "the file has no audio stream" if audio else "audio not read",
                Modality.VIDEO: "the file has no video stream" if video else "video not read",
            },
        )
        self._realtime = realtime
        self._closed = False

    def _decoded(self) -> Iterator[tuple[float, Event]]:
        av = self._av
        try:
            container = av.open(str(self.path))
        except av.error.FFmpegError as e:
            raise SourceError(f"{self.path}: cannot open ({e})") from e
        with container:
            streams = []
            if self.has_audio:
                streams.append(container.streams.audio[0])
            if self.has_video:
                streams.append(container.streams.video[0])
            resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
            for frame in container.decode(*streams):
                if self._closed:
                    return
                if frame.time is None:
                    continue
                t_ms = float(frame.time) * 1000.0
                if isinstance(frame, av.AudioFrame):
                    for out in resampler.resample(frame):
                        pcm = out.to_ndarray().reshape(-1).astype(np.float32)
                        ts = float(out.time) * 1000.0 if out.time is not None else t_ms
                        yield ts, AudioChunk(ts, pcm, SAMPLE_RATE)
                else:
                    yield t_ms, VideoFrame(t_ms, frame.to_ndarray(format="bgr24"))
            if self.has_audio and not self._closed:
                for out in resampler.resample(None):  # flush the resampler's tail
                    if out.time is not None:
                        ts = float(out.time) * 1000.0
                        yield (
                            ts,
                            AudioChunk(
                                ts, out.to_ndarray().reshape(-1).astype(np.float32), SAMPLE_RATE
                            ),
                        )

    def events(self) -> Iterator[Event]:
        self._closed = False  # a source can be replayed after a stream closed it
        heap: list[tuple[float, int, Event]] = []
        seq = itertools.count()
        origin = None
        wall0 = time.monotonic()

        def release(ev_t: float, ev: Event) -> Event:
            if self._realtime:
                delay = (ev_t - origin) / 1000.0 - (time.monotonic() - wall0)
                if delay > 0:
                    time.sleep(delay)
            return ev

        for t, ev in self._decoded():
            origin = t if origin is None else min(origin, t)
            heapq.heappush(heap, (t, next(seq), ev))
            while heap and heap[0][0] < t - _REORDER_MS:
                et, _, e = heapq.heappop(heap)
                yield release(et, e)
        while heap and not self._closed:
            et, _, e = heapq.heappop(heap)
            yield release(et, e)

    def close(self) -> None:
        self._closed = True


def read_media(path: str | Path) -> tuple[np.ndarray, list[tuple[float, np.ndarray]]]:
    """Decode a whole file: 16 kHz mono float32 audio and (t_ms, BGR frame) pairs."""
    src = MediaFileSource(path)
    chunks, frames = [], []
    for ev in src.events():
        if isinstance(ev, AudioChunk):
            chunks.append(ev.pcm)
        else:
            frames.append((ev.t_ms, ev.image))
    audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    return audio, frames
