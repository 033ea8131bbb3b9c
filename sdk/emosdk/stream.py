"""One stream's state as an object: events in, a result every hop out.

:class:`StreamSession` owns everything a stream accumulates (the audio ring, the per-track face
embeddings and smoothers, the face tracker, the hop clock, the modalities lost) and turns each
event into the results it completes: ``push(event) -> [EmotionResult, ...]``, then
``finish()`` for the rest. ``Recognizer.stream(source)`` is a short loop over one
(:func:`drive`); ``Recognizer.open_stream()`` hands one to apps that run their own capture loop
(GStreamer, ROS, a game engine) — the push mode.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections import Counter
from collections.abc import Iterator

import numpy as np

from . import _validate, health
from .buffers import AudioBuffer, FrameBuffer, FrameEntry
from .capture.base import (
    AudioChunk,
    Event,
    HealthEvent,
    Source,
    SourceInfo,
    Tick,
    VideoFrame,
    event_time,
)
from .errors import BackendUnavailableError, ConfigError, EmosdkError, InputError
from .features.audio import resample
from .pipeline import Pipeline, add_stages
from .results import EmotionResult, Latency, Modality
from .scores import Smoother

logger = logging.getLogger("emosdk")

#: shortest hop a stream accepts (20 results per second of input)
MIN_HOP_S = 0.05


class _Track:
    """One face track: its embeddings and its own smoother."""

    def __init__(self, capacity_s: float, smoother: Smoother) -> None:
        self.frames = FrameBuffer(capacity_s)
        self.smoother = smoother


class StreamSession:
    """The state of one stream: push events, get a result every hop of source time.

    Results come out in time order, one per hop (one per face track and hop with
    ``max_faces > 1``), smoothed per the recognizer's config; a modality that is missing makes
    a degraded result with the reason, never a gap. A session that saw no usable event at all
    still gives one (empty, degraded) result from :meth:`finish`, so a stream is never silent.

    Create it with :meth:`Recognizer.open_stream`. Not thread-safe: push from one thread (each
    session has its own state; several sessions of one Recognizer may run in parallel).

    Example:
        >>> with rec.open_stream() as session:                           # doctest: +SKIP
        ...     for t_ms, pcm in microphone_blocks():
        ...         for r in session.push_audio(pcm, 16000, t_ms):
        ...             print(r.label, r.modalities)
        ...     for r in session.finish():
        ...         print(r.label)
    """

    def __init__(
        self,
        pipeline: Pipeline,
        window_s: float,
        hop_s: float,
        info: SourceInfo | None = None,
    ) -> None:
        if not (math.isfinite(hop_s) and MIN_HOP_S <= hop_s <= window_s):
            raise ConfigError(f"hop_s: expected a value in [{MIN_HOP_S}, {window_s}], got {hop_s}")
        info = info or SourceInfo()
        self._p = pipeline
        cfg, bundle = pipeline.config, pipeline.bundle
        self.window_s, self.hop_s = window_s, hop_s
        self._hop_ms, self._win_ms = hop_s * 1000.0, window_s * 1000.0
        self._sr = bundle.audio.sample_rate
        self._audio = AudioBuffer(self._sr, window_s + hop_s + 1.0)
        self._multi = cfg.max_faces > 1
        # who follows faces across frames: MediaPipe's landmarks (face_mesh), an IoU tracker
        # over detections (several faces), or nobody (the largest face of each frame)
        self._tracker = None
        if cfg.face_mesh:
            self._tracker = pipeline.mesh_tracker()
        elif self._multi:
            from .perception.face import FaceTracker

            self._tracker = FaceTracker(
                max_faces=cfg.max_faces, max_missed=int(window_s * bundle.stream.video_fps)
            )
        # one frame buffer and one smoother per face track; track 0 when following one face
        self._tracks: dict[int, _Track] = {} if self._multi else {0: self._new_track()}
        self._no_track_smoother = self._new_smoother()
        self._absent = health.absent_from_source(info)
        self._lost: dict[Modality, str] = {}
        self._pending: dict[str, float] = {}  # face stage times since the last result
        self._origin: float | None = None
        self._next_t = 0.0
        self._last_t: float | None = None
        self._last_frame_t: float | None = None
        # perception runs at most a little faster than the frame grid the model samples
        self._frame_gap_ms = 0.9 * 1000.0 / bundle.stream.video_fps
        self._lateness = info.lateness_ms
        self._covered: dict[Modality, float] = {}  # the newest time each modality delivered
        # a jump of the source clock emits at most one window's worth of empty hops
        self._max_gap_hops = math.ceil(window_s / hop_s) + 1
        self._frame_dropped: str | None = None
        self.dropped: Counter[str] = Counter()
        """Events dropped, by reason (malformed, out of order, faster than the frame grid)."""
        self._emitted = 0  # hops emitted so far
        self._finished = False

    def _new_smoother(self) -> Smoother:
        cfg = self._p.config
        return Smoother(cfg.smoothing_alpha, enabled=cfg.smoothing == "ema")

    def _new_track(self) -> _Track:
        return _Track(self.window_s + 1.0, self._new_smoother())

    # -- context manager -------------------------------------------------------------------
    def __enter__(self) -> StreamSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self._finished = True

    # -- push mode -------------------------------------------------------------------------
    def push(self, event: Event) -> list[EmotionResult]:
        """Add one event; returns the results it completes (often none, at most a few).

        Raises:
            InputError: a malformed event (unknown kind, bad timestamp, bad PCM or image);
                nothing of it was used.
            EmosdkError: the session was finished, or its Recognizer closed.
        """
        if self._finished:
            raise EmosdkError("this stream session is finished")
        if self._p.closed:
            raise EmosdkError("this Recognizer is closed")
        if not isinstance(event, (AudioChunk, VideoFrame, HealthEvent, Tick)):
            raise InputError(
                "event: expected an AudioChunk, VideoFrame, HealthEvent or Tick, got "
                f"{type(event).__name__}"
            )
        kind = type(event).__name__
        t = event_time(f"{kind}.t_ms", event.t_ms)
        pcm = image = modality = None
        if isinstance(event, AudioChunk):
            pcm = _validate.audio(f"{kind}.pcm", event.pcm)
            rate = _validate.sample_rate(f"{kind}.sample_rate", event.sample_rate)
            pcm = resample(pcm, rate, self._sr)
        elif isinstance(event, VideoFrame):
            image = _validate.image(f"{kind}.image", event.image, "an image (H, W) or (H, W, 1|3)")
        elif isinstance(event, HealthEvent):
            modality = _modality(event.modality)
            if not isinstance(event.message, str):
                raise InputError(f"{kind}.message: expected a str, got {event.message!r}")
        out: list[EmotionResult] = []
        if self._origin is None:
            self._origin, self._next_t = t, t + self._hop_ms
        self._emit_until(t, out)
        end = t
        if pcm is not None:
            # a long chunk goes in hop by hop, so the ring never drops audio that a window
            # inside the chunk still needs
            step = max(1, int(self._hop_ms / 1000.0 * self._sr))
            for k in range(0, len(pcm), step):
                piece_t = t + k / self._sr * 1000.0
                self._emit_until(piece_t, out)
                self._audio.write(piece_t, pcm[k : k + step])
            end = t + len(pcm) / self._sr * 1000.0
            self._cover(Modality.AUDIO, end)
        elif image is not None:
            self._cover(Modality.VIDEO, t)
            if self._last_frame_t is not None and t < self._last_frame_t:
                self._drop("video frame out of order", t)
            elif self._last_frame_t is not None and t - self._last_frame_t < self._frame_gap_ms:
                # faster than the model's frame grid needs: dropped, never queued
                self.dropped["video frame faster than the model's frame rate"] += 1
            else:
                self._last_frame_t = t
                self._add_frame(t, image, event.is_face)
        elif modality is not None:
            if event.ok:
                self._lost.pop(modality, None)
            else:
                self._lost[modality] = event.message
        self._last_t = end if self._last_t is None else max(self._last_t, end)
        while self._lateness and self._caught_up():
            self._emit_next(out)
        return out

    def push_audio(self, pcm: np.ndarray, sample_rate: int, t_ms: float) -> list[EmotionResult]:
        """:meth:`push` an :class:`~emosdk.capture.AudioChunk` whose first sample is at ``t_ms``."""
        return self.push(AudioChunk(t_ms, pcm, sample_rate))

    def push_frame(
        self, image: np.ndarray, t_ms: float, is_face: bool = False
    ) -> list[EmotionResult]:
        """:meth:`push` a :class:`~emosdk.capture.VideoFrame` (a camera frame, or a face crop)."""
        return self.push(VideoFrame(t_ms, image, is_face))

    def fail(self, reason: str) -> None:
        """Mark both modalities lost for the rest of the session (the source failed)."""
        for m in Modality:
            self._lost[m] = reason

    def drop(self, event: object, error: Exception) -> None:
        """Record a malformed event that the caller dropped (``stream`` drops, push raises)."""
        self.dropped[f"malformed {type(event).__name__}"] += 1
        if isinstance(event, VideoFrame):
            self._frame_dropped = str(error)
        logger.warning("dropping a malformed %s: %s", type(event).__name__, error)

    def finish(self) -> list[EmotionResult]:
        """The results still owed: every full hop up to the end of the data, then the partial
        last hop; one empty degraded result when no usable event ever came."""
        if self._finished:
            return []
        self._finished = True
        out: list[EmotionResult] = []
        if self._origin is None or self._last_t is None:
            return [self._nothing_result()]
        self._emit_until(self._last_t + 1e-6, out, lateness=0.0)
        last_start = self._next_t - self._hop_ms
        if self._last_t > last_start + 1.0 or self._lost or not (self._emitted or out):
            # the partial last hop, the source's failure, or data shorter than one hop
            out.extend(self._emit(max(self._last_t, last_start)))
        return out

    # -- internals -------------------------------------------------------------------------
    def _cover(self, modality: Modality, t: float) -> None:
        self._covered[modality] = max(self._covered.get(modality, -math.inf), t)

    def _drop(self, reason: str, t: float) -> None:
        if not self.dropped[reason]:
            logger.warning("dropping a %s at %.0f ms (further ones are counted)", reason, t)
        self.dropped[reason] += 1

    def _caught_up(self) -> bool:
        live = [m for m in Modality if m not in self._absent and m not in self._lost]
        return bool(live) and all(self._covered.get(m, -math.inf) >= self._next_t for m in live)

    def _emit_next(self, out: list[EmotionResult]) -> None:
        out.extend(self._emit(self._next_t))
        self._next_t += self._hop_ms
        self._emitted += 1

    def _emit_until(
        self, t: float, out: list[EmotionResult], lateness: float | None = None
    ) -> None:
        """Emit every hop that ends at ``t`` or earlier (less the lateness allowance)."""
        horizon = t - (self._lateness if lateness is None else lateness)
        behind = (horizon - self._next_t) / self._hop_ms
        if behind > self._max_gap_hops:
            # the source clock jumped: one window of empty hops says so, then the hop clock
            # moves on (a jump of hours must not become thousands of results)
            for _ in range(self._max_gap_hops):
                self._emit_next(out)
            skip = math.floor((horizon - self._next_t) / self._hop_ms)
            logger.warning(
                "the source clock jumped %.1f s: skipping %d empty hops", skip * self.hop_s, skip
            )
            self._next_t += skip * self._hop_ms
        while horizon >= self._next_t:
            self._emit_next(out)

    def _add_frame(self, t: float, image: np.ndarray, is_face: bool) -> None:
        p = self._p
        stages: dict[str, float] = {}
        try:
            if not self._multi or is_face:
                # the largest face (or the crop given; a crop is track 0 in multi-face mode)
                entries, stages = p.encode_images([image], is_face, self._tracker)
                e = entries[0]
                self._track(0).frames.add(FrameEntry(t, e and e.embedding, e and e.quality))
            else:
                found, stages["face_detect"] = p.face_crops(image, self._tracker)
                embs, more, measures = p.embed(
                    [c for _, c, _ in found], "frame", [b for _, _, b in found]
                )
                add_stages(stages, more)
                for (tid, _, _), emb, m in zip(found, embs, measures):
                    self._track(tid).frames.add(FrameEntry(t, emb, m))
                for tid in set(self._tracks) - {tid for tid, _, _ in found}:
                    self._tracks[tid].frames.add(FrameEntry(t, None))
        except BackendUnavailableError as e:
            self._lost[Modality.VIDEO] = str(e)
        except InputError as e:
            self._frame_dropped = str(e)
            self._drop("malformed video frame", t)
            logger.debug("video frame at %.0f ms: %s", t, e)
        add_stages(self._pending, stages)

    def _track(self, tid: int) -> _Track:
        if tid not in self._tracks:
            self._tracks[tid] = self._new_track()
        return self._tracks[tid]

    def _emit(self, t: float) -> list[EmotionResult]:
        p = self._p
        t0 = time.perf_counter()
        start = max(self._origin, t - self._win_ms)
        pcm, valid = self._audio.read(t - self._win_ms, t)  # the model's full window length
        padding = np.zeros(len(pcm), bool)
        before = int(round((start - (t - self._win_ms)) * self._sr / 1000.0))
        padding[:before] = True  # before the stream began
        stages, self._pending = self._pending, {}
        face_ms = sum(v for s, v in stages.items() if s.startswith("face"))
        known = {**self._absent, **self._lost}
        audio = p.audio_window(pcm, valid, padding, known_missing=Modality.AUDIO in known)
        if self._multi:
            for tid in [tid for tid, tr in self._tracks.items() if tr.frames.last_face_ms < start]:
                del self._tracks[tid]  # gone for a whole window: the track ends
        out = []
        for tid in sorted(self._tracks) or [-1]:  # -1: no face track at all (multi-face mode)
            track = self._tracks.get(tid)
            r = p.fuse(
                start,
                t,
                audio,
                track.frames if track else FrameBuffer(0.0),
                known,
                stages,
                smoother=track.smoother if track else self._no_track_smoother,
                recent_ms=self._hop_ms,
                track_id=tid,
                dropped=self._frame_dropped,
            )
            total = (time.perf_counter() - t0) * 1e3 + face_ms
            out.append(dataclasses.replace(r, latency=Latency(r.latency.stages, total)))
        return out

    def _nothing_result(self) -> EmotionResult:
        """The one result of a session that never got a usable event."""
        reason = "the source delivered no usable data"
        if self.dropped:
            reason += f" ({sum(self.dropped.values())} events dropped)"
        missing = {m: self._lost.get(m) or self._absent.get(m) or reason for m in Modality}
        if self._frame_dropped is not None and Modality.VIDEO not in {**self._lost, **self._absent}:
            missing[Modality.VIDEO] = f"{health.NO_FRAMES} (frames dropped: {self._frame_dropped})"
        coverage = dict.fromkeys(Modality, 0.0)
        return EmotionResult(None, {}, {}, 0.0, (0.0, 0.0), (), missing, coverage, Latency())


def _modality(value: object) -> Modality:
    try:
        return Modality(value)
    except ValueError:
        raise InputError(
            f"HealthEvent.modality: expected Modality.AUDIO or Modality.VIDEO, got {value!r}"
        ) from None


def drive(session: StreamSession, source: Source) -> Iterator[EmotionResult]:
    """Stream a source through a session: the loop behind ``Recognizer.stream``.

    The source's failures (raising from ``events()``, when called or while iterating) end the
    stream with degraded results that carry the error; malformed events are dropped (counted in
    ``session.dropped``, logged); the source is always closed, even when its ``close()``
    raises (logged).
    """
    try:
        try:
            events = iter(source.events())
        except Exception as e:
            logger.warning("source failed: %s", e)
            session.fail(health.source_failed(e))
            events = iter(())
        while True:
            try:
                ev = next(events)
            except StopIteration:
                break
            except Exception as e:
                logger.warning("source failed: %s", e)
                session.fail(health.source_failed(e))
                break
            try:
                results = session.push(ev)
            except InputError as e:
                session.drop(ev, e)
                continue
            yield from results
        yield from session.finish()
    finally:
        try:
            source.close()
        except Exception as e:
            logger.warning("closing the source failed: %s: %s", type(e).__name__, e)
