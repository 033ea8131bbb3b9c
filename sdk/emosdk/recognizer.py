"""The Recognizer: one window with ``predict``, a stream of results with ``stream`` (a source
pulled by the SDK) or ``open_stream`` (events pushed by the app)."""

from __future__ import annotations

import dataclasses
import logging
import math
import numbers
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

import numpy as np

from . import _validate
from .backends import Backend, create_backend
from .backends.base import check_backend
from .buffers import FrameBuffer, FrameEntry
from .capture.base import Source, SourceInfo, source_info
from .config import RecognizerConfig
from .errors import BackendUnavailableError, ConfigError, EmosdkError, InputError, ModelError
from .features.audio import resample
from .models import load_model
from .pipeline import AudioWindow, Pipeline, add_stages
from .results import EmotionResult, Latency, Modality
from .scores import Calibration
from .stream import StreamSession, drive

logger = logging.getLogger("emosdk")

#: longest audio one ``predict`` call takes, in seconds and (bounding the resampling work for
#: high rates) in samples
MAX_PREDICT_S = 60.0
MAX_PREDICT_SAMPLES = int(MAX_PREDICT_S * 48_000)


class Recognizer:
    """Audio-visual emotion recognition with a model bundle.

    Args:
        config: options; ``None`` uses :class:`RecognizerConfig` defaults.
        backends: graphs to run instead of opening the bundle's files, role -> a
            :class:`~emosdk.backends.Backend` whose spec matches the bundle's (e.g. a torch
            reference backend for parity checks). The Recognizer closes them with itself.
        **overrides: fields of :class:`RecognizerConfig` to change, e.g. ``model="path/to/bundle"``.

    Raises:
        ConfigError: an option is invalid or contradicts another, or an injected backend does
            not match the bundle.
        ModelError: the model is unknown, malformed or fails its integrity check.
        BackendUnavailableError: the requested backend or precision cannot run here.

    Threads: one Recognizer may be used from several threads at once (``predict``, and one
    stream per thread); its graphs run concurrently and its face and voice-activity detectors
    are used under locks. A stream session itself belongs to one thread. ``calibrate`` changes
    the baseline every thread sees.

    Example:
        >>> with Recognizer() as rec:                                    # doctest: +SKIP
        ...     result = rec.predict(audio=pcm, sample_rate=16000, face=crop)
        ...     print(result.label, result.scores, result.modalities)
    """

    def __init__(
        self,
        config: RecognizerConfig | None = None,
        *,
        backends: Mapping[str, Backend] | None = None,
        **overrides: object,
    ) -> None:
        self._pipeline: Pipeline | None = None
        if config is not None and not isinstance(config, RecognizerConfig):
            raise ConfigError(f"config: expected a RecognizerConfig, got {type(config).__name__}")
        config = config or RecognizerConfig()
        if overrides:
            config = config.replace(**overrides)
        self.config = config
        self.bundle = load_model(config.model, verify=config.verify_model)
        self.window_s = config.window_s or self.bundle.stream.window_s
        self.hop_s = config.hop_s or self.bundle.stream.hop_s
        if self.hop_s > self.window_s:
            raise ConfigError(
                f"hop_s ({self.hop_s}) must not exceed window_s ({self.window_s}) "
                "(one of them comes from the model when not set)"
            )
        self.labels = self.bundle.labels
        graphs = self._open_graphs(dict(backends or {}))
        try:
            self._pipeline = Pipeline(self.bundle, config, MappingProxyType(graphs))
            self._check_labels()
        except BaseException:
            for b in graphs.values():
                b.close()
            raise
        self._lock = threading.Lock()
        logger.info(
            "Recognizer: model %s %s, window %.2fs hop %.2fs, %s",
            self.bundle.name,
            self.bundle.version,
            self.window_s,
            self.hop_s,
            {r: b.device for r, b in graphs.items()},
        )

    def _open_graphs(self, injected: dict[str, Backend]) -> dict[str, Backend]:
        """One backend per graph role: the injected ones (checked) and the bundle's files."""
        cfg, bundle = self.config, self.bundle
        unknown = set(injected) - set(bundle.graphs)
        if unknown:
            raise ConfigError(
                f"backends: unknown roles {sorted(unknown)}; the bundle has {sorted(bundle.graphs)}"
            )
        for role, backend in injected.items():
            check_backend(f"backends[{role!r}]", backend, bundle.graphs[role])
        files = bundle.variant_files(cfg.precision)
        if cfg.precision == "int8" and not files and set(injected) != set(bundle.graphs):
            raise BackendUnavailableError(
                f"model {bundle.name!r} has no {cfg.precision} graphs; make them with "
                "`emosdk-export quantize` (needs emosdk[export]) or use precision='fp32'"
            )
        graphs: dict[str, Backend] = {}
        try:
            for role, spec in bundle.graphs.items():
                if role in injected:
                    graphs[role] = injected[role]
                    continue
                # a precision variant (e.g. int8) replaces the fp32 graph of its role
                path = bundle.path / files.get(role, spec.file)
                graphs[role] = create_backend(
                    cfg.backend,
                    path,
                    spec,
                    precision=cfg.precision,
                    providers=cfg.providers,
                    num_threads=cfg.num_threads,
                )
        except BaseException:
            for b in graphs.values():
                if b not in injected.values():
                    b.close()
            raise
        return graphs

    def _check_labels(self) -> None:
        """Run the fusion graph once on a blank window: its logits must match the labels."""
        b = self.bundle
        steps = max(1, b.audio.num_frames(int(self.window_s * b.audio.sample_rate)))
        steps = max(1, steps // b.stream.audio_frames_per_step)
        slots = max(1, int(round(self.window_s * b.stream.video_fps)))
        p = self._pipeline
        feeds = {
            "audio": np.zeros((1, steps, p.d_audio), np.float32),
            "audio_mask": np.ones((1, steps), np.float32),
            "video": np.zeros((1, slots, p.d_video), np.float32),
            "video_mask": np.ones((1, slots), np.float32),
        }
        try:
            logits = p.run("fusion", feeds)[0].get("logits")
        except EmosdkError as e:
            raise ModelError(f"{b.path}: the fusion graph fails on a blank window: {e}") from e
        if logits is None or logits.ndim != 2 or logits.shape[-1] != len(self.labels):
            shape = None if logits is None else logits.shape
            raise ModelError(
                f"{b.path}: the fusion graph's logits have shape {shape}, expected "
                f"(batch, {len(self.labels)}) for the labels {list(self.labels)}"
            )

    # -- context manager -------------------------------------------------------------------
    def __enter__(self) -> Recognizer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the graphs and the face detector. Safe to call twice."""
        pipeline = self._pipeline
        if pipeline is None or pipeline.closed:
            return
        pipeline.close()
        for b in pipeline.graphs.values():
            b.close()

    def _open(self) -> Pipeline:
        if self._pipeline is None or self._pipeline.closed:
            raise EmosdkError("this Recognizer is closed")
        return self._pipeline

    @property
    def graphs(self) -> Mapping[str, Backend]:
        """The backend running each graph role (read-only)."""
        return self._open().graphs

    # -- one window --------------------------------------------------------------------------
    def predict(
        self,
        audio: np.ndarray | None = None,
        frame: np.ndarray | Sequence[np.ndarray | None] | None = None,
        face: np.ndarray | Sequence[np.ndarray | None] | None = None,
        *,
        sample_rate: int = 16_000,
        timestamp_ms: float | None = None,
    ) -> EmotionResult:
        """Recognise the emotion in one window of audio and/or video.

        Args:
            audio: PCM of the window, (samples,) or (samples, channels<=2), int16, int32,
                float32 or float64 (floats in [-1, 1]); any rate, resampled to the model's; at
                most 60 s (and 2,880,000 samples).
            frame: full camera frame(s): one (H, W[, 3]) image or a sequence of them (a list,
                or an array (N, H, W[, 1|3])) evenly spread over the window; faces are
                detected (needs ``emosdk[capture]``).
            face: face crop(s) instead of frames: one (H, W[, 1|3]) image or a sequence; ``None``
                items mark frames without a face.
            sample_rate: rate of ``audio`` in Hz.
            timestamp_ms: end of the window on your clock (default: ``time.monotonic()``).

        Returns:
            An :class:`EmotionResult`; ``degraded`` with the reason when a modality is missing.
            Scores are not smoothed across calls (``stream`` smooths).

        Raises:
            InputError: malformed input, with the expected form in the message.
        """
        p = self._open()
        t_total = time.perf_counter()
        if audio is None and frame is None and face is None:
            raise InputError("predict: expected at least one of audio=, frame=, face=")
        if frame is not None and face is not None:
            raise InputError("predict: pass either frame= (full frames) or face= (crops), not both")
        stages: dict[str, float] = {}
        sr = self.bundle.audio.sample_rate
        pcm = None
        if audio is not None:
            t0 = time.perf_counter()
            pcm = _validate.audio("audio", audio)
            rate = _validate.sample_rate("sample_rate", sample_rate)
            if len(pcm) / rate > MAX_PREDICT_S or len(pcm) > MAX_PREDICT_SAMPLES:
                raise InputError(
                    f"audio: expected at most {MAX_PREDICT_S:.0f} s and {MAX_PREDICT_SAMPLES} "
                    f"samples per predict call, got {len(pcm) / rate:.1f} s ({len(pcm)} "
                    "samples); use stream() for long recordings"
                )
            pcm = resample(pcm, rate, sr)
            stages["resample"] = (time.perf_counter() - t0) * 1e3
        is_face = face is not None
        items = _validate.image_list(face if is_face else frame, "face" if is_face else "frame")
        clip_ms = len(pcm) / sr * 1000.0 if pcm is not None else self.window_s * 1000.0
        # the model was trained on windows of window_s: a shorter clip sits centred in one,
        # padded with silence marked missing (a longer clip is analysed whole)
        window_ms = max(clip_ms, self.window_s * 1000.0)
        end = time.monotonic() * 1000.0 if timestamp_ms is None else _timestamp(timestamp_ms)
        start = end - window_ms
        frames = FrameBuffer(window_ms / 1000.0 + 1.0)
        known: dict[Modality, str] = {}
        reach = None
        if items is not None:
            # the images are spread over the whole window, each standing for its share (the
            # model saw faces throughout its windows, also where the audio was padding)
            reach = window_ms / len(items)
            tracker = p.mesh_tracker(1) if self.config.face_mesh and not is_face else None
            entries, more = p.encode_images(items, is_face, tracker)
            add_stages(stages, more)
            for i, e in enumerate(entries):
                t = start + (i + 0.5) * reach
                frames.add(FrameEntry(t, None) if e is None else dataclasses.replace(e, t_ms=t))
        else:
            known[Modality.VIDEO] = "not provided"
        audio_part = self._audio_part(pcm, window_ms, known)
        result = p.fuse(
            start, end, audio_part, frames, known, stages, smoother=None, reach_ms=reach
        )
        total = (time.perf_counter() - t_total) * 1e3
        return dataclasses.replace(result, latency=Latency(result.latency.stages, total))

    def _audio_part(
        self, pcm: np.ndarray | None, window_ms: float, known: dict[Modality, str]
    ) -> AudioWindow:
        """The window's audio, a shorter clip centred in it with padding (predict)."""
        n_window = int(round(window_ms / 1000.0 * self.bundle.audio.sample_rate))
        if pcm is None:
            known[Modality.AUDIO] = "not provided"
            zeros = np.zeros(n_window, np.float32)
            return self._pipeline.audio_window(zeros, zeros.astype(bool), known_missing=True)
        lead = (n_window - len(pcm)) // 2
        padded = np.zeros(n_window, np.float32)
        padded[lead : lead + len(pcm)] = pcm
        valid = np.zeros(n_window, bool)
        valid[lead : lead + len(pcm)] = True
        return self._pipeline.audio_window(padded, valid, ~valid)

    # -- faces -------------------------------------------------------------------------------
    def detect_faces(self, image: np.ndarray) -> list:
        """Faces in a full frame, largest first, as the recognizer finds them.

        Args:
            image: (H, W) or (H, W, 1|3) frame, uint8 or float in [0, 1], in ``color_order``.

        Returns:
            :class:`~emosdk.perception.FaceBox` es in frame pixels (with eye centres when found;
            with ``face_mesh=True`` also MediaPipe's 478 landmarks and 52 blendshapes).

        Raises:
            InputError: a malformed image. BackendUnavailableError: no face detector here.
        """
        _validate.image("image", image, "an image (H, W) or (H, W, 1|3)")
        p = self._open()
        if self.config.face_mesh:
            return p.mesh_tracker().detect(image)
        return p.detect(image)[0]

    def face_crops(self, image: np.ndarray, boxes: bool = False) -> list:
        """The aligned face crops the recognizer would embed from a full frame (largest first;
        at most one unless ``max_faces`` > 1); with ``boxes``, (FaceBox, crop) pairs from the
        same detection. Same arguments and errors as :meth:`detect_faces`."""
        _validate.image("image", image, "an image (H, W) or (H, W, 1|3)")
        p = self._open()
        if self.config.face_mesh:
            tracker = p.mesh_tracker()
        elif self.config.max_faces > 1:
            from .perception.face import FaceTracker

            tracker = FaceTracker(max_faces=self.config.max_faces)
        else:
            tracker = None
        found = p.face_crops(image, tracker)[0]
        return [(b, c) for _, c, b in found] if boxes else [c for _, c, _ in found]

    # -- streams -------------------------------------------------------------------------------
    def stream(
        self,
        microphone: object = None,
        camera: object = None,
        source: Source | str | Path | None = None,
    ) -> Iterator[EmotionResult]:
        """Yield one result every hop from a source, never going silent.

        Args:
            microphone: True for the default input, a sounddevice index or name, or False.
            camera: True for camera 0, an OpenCV index or device path, or False. With neither
                ``source`` nor these, both the microphone and the camera are used; a missing or
                failing device gives degraded results (with the reason) and is retried.
            source: a :class:`~emosdk.capture.Source` (e.g. :class:`~emosdk.capture.ArraySource`),
                or the path of a media file (mp4, flv, avi, webm, wav, mp3...; needs
                ``emosdk[capture]``).

        Yields:
            :class:`EmotionResult` every ``hop_s`` of source time, smoothed per the config;
            degraded (or empty) results when a modality is missing, never a gap. A source that
            fails gives degraded results carrying its error; one that delivers nothing gives
            one empty result saying so.

        Raises:
            InputError: the source is not a Source or a readable media file.
        """
        self._open()
        if source is None:
            from .capture.live import live_source

            if microphone is None and camera is None:
                microphone = camera = True
            source = live_source(microphone, camera)
        elif microphone is not None or camera is not None:
            raise InputError("stream: pass either source= or microphone=/camera=, not both")
        if isinstance(source, (str, Path)):
            from .capture.media import MediaFileSource

            source = MediaFileSource(source)
        if not (
            callable(getattr(source, "events", None)) and callable(getattr(source, "close", None))
        ):
            raise InputError(
                f"source: expected a Source (events() and close()) or a media file path, got "
                f"{type(source).__name__}"
            )
        return drive(self.open_stream(source_info(source)), source)

    def open_stream(self, info: SourceInfo | None = None) -> StreamSession:
        """A stream for an app that runs its own capture loop (the push mode).

        Push :class:`~emosdk.capture.AudioChunk`, :class:`~emosdk.capture.VideoFrame`,
        :class:`~emosdk.capture.HealthEvent` and :class:`~emosdk.capture.Tick` events on one
        monotonic clock (ms) with ``session.push(event)`` (or ``push_audio``/``push_frame``);
        each call returns the results it completes, a result per hop of that clock, exactly as
        ``stream(source=...)`` gives for the same events. ``session.finish()`` returns the rest.

        Args:
            info: what your events will deliver (:class:`~emosdk.capture.SourceInfo`): e.g.
                ``SourceInfo(provides=(Modality.AUDIO,))`` reports video as "camera not used"
                from the first result; ``lateness_ms`` when events of one modality arrive late.
        """
        return StreamSession(self._open(), self.window_s, self.hop_s, info)

    # -- calibration ---------------------------------------------------------------------------
    def calibrate(
        self, source: Source | str | Path | None = None, seconds: float = 10.0
    ) -> dict[str, float]:
        """Learn a per-person neutral baseline from ``seconds`` of them at rest.

        Later results are adjusted by it until :meth:`reset_calibration`.

        Args:
            source: what to watch (a Source or a media file); None uses the live microphone and
                camera, as :meth:`stream` does.
            seconds: how long to collect, in source time.

        Returns:
            The baseline: label -> mean probability over the calibration windows.

        Raises:
            InputError: ``seconds`` is not positive, or no window had a usable modality.
        """
        p = self._open()
        secs = _validate.positive_number("seconds", seconds)
        with self._lock:  # one calibration at a time
            previous, p.calibration = p.calibration, Calibration()  # collect uncalibrated
            collector = Calibration()
            try:
                first = None
                for r in self.stream(source=source) if source is not None else self.stream():
                    first = r.window_ms[0] if first is None else first
                    if r.label is not None:
                        collector.add(np.array([r.raw_scores[k] for k in self.labels]))
                    if r.timestamp_ms - first >= secs * 1000.0:
                        break
                neutral = self.labels.index("neutral") if "neutral" in self.labels else None
                base = collector.finish(neutral)
                if base is None:
                    raise InputError("calibrate: no window of the source had a usable modality")
            except BaseException:
                p.calibration = previous  # a failed calibration keeps the old baseline
                raise
            p.calibration = collector
        return dict(zip(self.labels, map(float, base), strict=False))

    def reset_calibration(self) -> None:
        """Forget the neutral baseline."""
        self._open().calibration = Calibration()


def _timestamp(value: object) -> float:
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    raise InputError(f"timestamp_ms: expected a finite number, got {value!r}")
