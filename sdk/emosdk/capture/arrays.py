"""Replay arrays as a source: recorded audio and frames played back on their own timeline."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

import numpy as np

from .. import _validate
from ..errors import InputError
from .base import AudioChunk, Event, SourceBase, VideoFrame, event_time


class ArraySource(SourceBase):
    """Replays PCM audio and/or a sequence of frames as a stream.

    Args:
        audio: PCM, (samples,) or (samples, channels<=2), int16/int32/float32/float64.
        sample_rate: rate of ``audio`` in Hz.
        frames: images (each (H, W) or (H, W, 3) uint8); ``None`` entries mean "no frame
            captured at this instant" and are skipped.
        fps: frame rate of ``frames`` (frame ``i`` is at ``i / fps`` seconds).
        faces_are_crops: True when ``frames`` are already face crops (no detection needed).
        chunk_s: size of the audio chunks the source emits, in seconds.
        realtime: pace the events at the speed they were recorded (as a live device would)
            instead of as fast as possible.
        start_ms: timestamp of the first sample and first frame.
    """

    def __init__(
        self,
        audio: np.ndarray | None = None,
        sample_rate: int = 16_000,
        frames: Sequence[np.ndarray | None] | np.ndarray | None = None,
        fps: float = 30.0,
        *,
        faces_are_crops: bool = False,
        chunk_s: float = 0.1,
        realtime: bool = False,
        start_ms: float = 0.0,
    ) -> None:
        if audio is None and frames is None:
            raise InputError("ArraySource: expected audio=..., frames=... or both, got neither")
        self._pcm = None if audio is None else _validate.audio("audio", audio)
        self._sr = _validate.sample_rate("sample_rate", sample_rate)
        self._fps = _validate.positive_number("fps", fps)
        self._chunk = max(1, int(round(_validate.positive_number("chunk_s", chunk_s) * self._sr)))
        if frames is not None:
            if isinstance(frames, np.ndarray):
                if frames.ndim not in (3, 4):
                    raise InputError(
                        "frames: expected a sequence of images or an array (N, H, W[, 3]), "
                        f"got shape {frames.shape}"
                    )
                frames = list(frames)
            elif not isinstance(frames, (list, tuple)):
                raise InputError(
                    f"frames: expected a sequence of images, got {type(frames).__name__}"
                )
            for i, f in enumerate(frames):
                if f is not None:
                    _validate.image(f"frames[{i}]", f, "an image (H, W) or (H, W, 3)")
        self._frames = frames
        self._is_face = bool(faces_are_crops)
        self._realtime = bool(realtime)
        self._start = event_time("start_ms", start_ms)
        self._closed = False

    @property
    def duration_ms(self) -> float:
        a = 0.0 if self._pcm is None else len(self._pcm) / self._sr * 1000.0
        v = 0.0 if self._frames is None else len(self._frames) / self._fps * 1000.0
        return max(a, v)

    def events(self) -> Iterator[Event]:
        self._closed = False  # a source can be replayed after a stream closed it
        items: list[tuple[float, int, Event]] = []
        if self._pcm is not None:
            for k in range(0, len(self._pcm), self._chunk):
                t = self._start + k / self._sr * 1000.0
                items.append((t, 0, AudioChunk(t, self._pcm[k : k + self._chunk], self._sr)))
        for i, f in enumerate(self._frames or ()):
            if f is not None:
                t = self._start + i / self._fps * 1000.0
                items.append((t, 1, VideoFrame(t, f, self._is_face)))
        items.sort(key=lambda x: (x[0], x[1]))
        wall0 = time.monotonic()
        for t, _, ev in items:
            if self._closed:
                return
            if self._realtime:
                delay = (t - self._start) / 1000.0 - (time.monotonic() - wall0)
                if delay > 0:
                    time.sleep(delay)
            yield ev

    def close(self) -> None:
        self._closed = True
