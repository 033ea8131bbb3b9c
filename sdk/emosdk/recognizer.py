"""The Recognizer: one window with ``predict``, or a stream of results with ``stream``."""

from __future__ import annotations

import dataclasses
import logging
import math
import numbers
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from . import _validate
from .backends import Backend, create_backend
from .buffers import AudioBuffer, FrameBuffer, FrameEntry, step_mask
from .capture.base import AudioChunk, HealthEvent, Source, Tick, VideoFrame
from .config import RecognizerConfig
from .errors import BackendUnavailableError, ConfigError, EmosdkError, InputError, ModelError
from .features.audio import log_mel, resample
from .features.face import normalize_face
from .models import load_model
from .results import EmotionResult, Latency, Modality
from .scores import Calibration, Smoother, softmax

logger = logging.getLogger("emosdk")

MAX_PREDICT_S = 60.0


def _feature_dim(bundle, name: str) -> int:
    """The fixed feature size of a fusion input (the runtime sizes its buffers with it)."""
    dim = bundle.graphs["fusion"].input(name).shape[-1]
    if not isinstance(dim, int):
        raise ModelError(f"{bundle.path}: fusion input {name!r} needs a fixed feature size")
    return dim


class Recognizer:
    """Audio-visual emotion recognition with a model bundle.

    Args:
        config: options; ``None`` uses :class:`RecognizerConfig` defaults.
        **overrides: fields of :class:`RecognizerConfig` to change, e.g. ``model="path/to/bundle"``.

    Raises:
        ConfigError: an option is invalid or contradicts another.
        ModelError: the model is unknown, malformed or fails its integrity check.
        BackendUnavailableError: the requested backend or precision cannot run here.

    Example:
        >>> with Recognizer() as rec:                                    # doctest: +SKIP
        ...     result = rec.predict(audio=pcm, sample_rate=16000, face=crop)
        ...     print(result.label, result.scores, result.modalities)
    """

    def __init__(self, config: RecognizerConfig | None = None, **overrides: object) -> None:
        if config is not None and not isinstance(config, RecognizerConfig):
            raise ConfigError(f"config: expected a RecognizerConfig, got {type(config).__name__}")
        config = config or RecognizerConfig()
        if overrides:
            config = config.replace(**overrides)
        self.config = config
        self.bundle = load_model(config.model, verify=config.verify_model)
        stream = self.bundle.stream
        self.window_s = config.window_s or stream.window_s
        self.hop_s = config.hop_s or stream.hop_s
        if self.hop_s > self.window_s:
            raise ConfigError(
                f"hop_s ({self.hop_s}) must not exceed window_s ({self.window_s}) "
                "(one of them comes from the model when not set)"
            )
        self.labels = self.bundle.labels
        self._d_audio = _feature_dim(self.bundle, "audio")
        self._d_video = _feature_dim(self.bundle, "video")
        self._graphs: dict[str, Backend] = {}
        variants = self.bundle.meta.get("variants", {}).get(config.precision, {})
        if config.precision == "int8" and not variants:
            raise BackendUnavailableError(
                f"model {self.bundle.name!r} has no int8 graphs; make them with "
                "`emosdk-export quantize` (needs emosdk[export]) or use precision='fp32'"
            )
        try:
            for role, spec in self.bundle.graphs.items():
                # a precision variant (e.g. int8) replaces the fp32 graph of its role
                path = self.bundle.path / variants.get(role, spec.file)
                self._graphs[role] = create_backend(
                    config.backend,
                    path,
                    spec,
                    precision=config.precision,
                    providers=config.providers,
                    num_threads=config.num_threads,
                )
        except BaseException:
            self.close()
            raise
        # the caller's channel order applies to crops and frames alike
        self._face_params = dataclasses.replace(self.bundle.face, color_order=config.color_order)
        self._detector = None
        self._vad = None
        if config.voice_activity != "off":
            from .perception.voice import VoiceActivity

            self._vad = VoiceActivity(
                config.voice_activity
                if self.bundle.audio.sample_rate in (8000, 16000, 32000, 48000)
                else "energy",
                min_rms=config.min_audio_rms,
                min_speech_ms=config.min_speech_ms,
                sample_rate=self.bundle.audio.sample_rate,
            )
        self._calibration = Calibration()
        self._closed = False
        logger.info(
            "Recognizer: model %s %s, window %.2fs hop %.2fs, %s",
            self.bundle.name,
            self.bundle.version,
            self.window_s,
            self.hop_s,
            {r: b.device for r, b in self._graphs.items()},
        )

    # -- context manager -------------------------------------------------------------------
    def __enter__(self) -> Recognizer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the graphs and the face detector. Safe to call twice."""
        for b in self._graphs.values():
            b.close()
        self._graphs = {}
        detector, self._detector = getattr(self, "_detector", None), None
        if detector is not None and hasattr(detector, "close"):
            detector.close()
        self._closed = True

    def _check_open(self) -> None:
        if getattr(self, "_closed", True):
            raise EmosdkError("this Recognizer is closed")

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
                float32 or float64 (floats in [-1, 1]); any rate, resampled to the model's.
            frame: full camera frame(s): one (H, W[, 3]) uint8 image or a sequence of them
                evenly spread over the window; faces are detected (needs ``emosdk[capture]``).
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
        self._check_open()
        t_total = time.perf_counter()
        if audio is None and frame is None and face is None:
            raise InputError("predict: expected at least one of audio=, frame=, face=")
        if frame is not None and face is not None:
            raise InputError("predict: pass either frame= (full frames) or face= (crops), not both")
        stages: dict[str, float] = {}
        pcm = None
        if audio is not None:
            t0 = time.perf_counter()
            pcm = _validate.audio("audio", audio)
            sr = _validate.sample_rate("sample_rate", sample_rate)
            if len(pcm) / sr > MAX_PREDICT_S:
                raise InputError(
                    f"audio: expected at most {MAX_PREDICT_S:.0f} s per predict call, got "
                    f"{len(pcm) / sr:.1f} s; use stream() for long recordings"
                )
            pcm = resample(pcm, sr, self.bundle.audio.sample_rate)
            stages["resample"] = (time.perf_counter() - t0) * 1e3
        images, is_face = (face, True) if face is not None else (frame, False)
        items = self._as_image_list(images, "face" if is_face else "frame")
        sr = self.bundle.audio.sample_rate
        clip_ms = len(pcm) / sr * 1000.0 if pcm is not None else self.window_s * 1000.0
        # the model was trained on windows of window_s: a shorter clip sits centred in one,
        # padded with silence marked missing (a longer clip is analysed whole)
        window_ms = max(clip_ms, self.window_s * 1000.0)
        if timestamp_ms is None:
            end = time.monotonic() * 1000.0
        elif (
            isinstance(timestamp_ms, numbers.Real)
            and not isinstance(timestamp_ms, bool)
            and (math.isfinite(timestamp_ms))
        ):
            end = float(timestamp_ms)
        else:
            raise InputError(f"timestamp_ms: expected a finite number, got {timestamp_ms!r}")
        start = end - window_ms
        frames = FrameBuffer(window_ms / 1000.0 + 1.0)
        missing: dict[Modality, str] = {}
        reach = None
        if items is not None:
            # the images are spread over the whole window, each standing for its share (the
            # model saw faces throughout its windows, also where the audio was padding)
            reach = window_ms / len(items)
            embs = self._encode_images(items, is_face, stages, missing)
            for i, e in enumerate(embs):
                frames.add(FrameEntry(start + (i + 0.5) * reach, e))
        else:
            missing[Modality.VIDEO] = "not provided"
        n_window = int(round(window_ms / 1000.0 * sr))
        if pcm is None:
            missing[Modality.AUDIO] = "not provided"
            pcm, valid = np.zeros(n_window, np.float32), np.zeros(n_window, bool)
        else:
            lead = (n_window - len(pcm)) // 2
            padded = np.zeros(n_window, np.float32)
            padded[lead : lead + len(pcm)] = pcm
            valid = np.zeros(n_window, bool)
            valid[lead : lead + len(pcm)] = True
            pcm = padded
        padding = ~valid if Modality.AUDIO not in missing else None
        audio_part = self._audio_window(pcm, valid, missing, stages, padding)
        result = self._fuse(
            start, end, audio_part, frames, missing, stages, smoother=None, reach_ms=reach
        )
        return self._with_total(result, t_total)

    def _as_image_list(self, images: object, name: str) -> list[np.ndarray | None] | None:
        if images is None:
            return None
        if isinstance(images, np.ndarray):
            is_one = images.ndim == 2 or (images.ndim == 3 and images.shape[2] in (1, 3))
            if is_one:
                return [images]
            if images.ndim in (3, 4) and len(images):
                return list(images)
            raise InputError(
                f"{name}: expected one image (H, W[, 1|3]) or a sequence (N, H, W[, 1|3]), "
                f"got shape {images.shape}"
            )
        if isinstance(images, (list, tuple)):
            if not images:
                raise InputError(f"{name}: expected at least one image, got an empty sequence")
            if len(images) > 2000:
                raise InputError(f"{name}: expected at most 2000 images per window")
            return list(images)
        raise InputError(
            f"{name}: expected a numpy image or a list of images, got {type(images).__name__}"
        )

    def _detector_or_raise(self):
        if self._detector is None:
            from .perception.face import create_face_detector

            self._detector = create_face_detector(
                self.config.face_detector, color_order=self.config.color_order
            )
        return self._detector

    def _face_crops(self, image: np.ndarray, tracker=None) -> list[tuple[int, np.ndarray]]:
        """(track id, aligned crop) per face: the largest only, or tracked faces with a tracker."""
        from .perception.face import align, crop

        boxes = self._detector_or_raise().detect(image)
        boxes = tracker.update(boxes) if tracker is not None else boxes[:1]
        cut = align if self.config.align_faces else crop
        return [(b.track_id, cut(image, b)) for b in boxes]

    def _encode_images(
        self,
        items: list[np.ndarray | None],
        is_face: bool,
        stages: dict[str, float],
        missing: dict[Modality, str],
    ) -> list[np.ndarray | None]:
        """Face embeddings per item (None where there is no face)."""
        name = "face" if is_face else "frame"
        crops: list[np.ndarray | None] = []
        t0 = time.perf_counter()
        for i, img in enumerate(items):
            if img is None:
                crops.append(None)
                continue
            _validate.image(f"{name}[{i}]", img, "an image (H, W) or (H, W, 1|3)")
            if is_face:
                crops.append(img)
            else:
                found = self._face_crops(img)
                crops.append(found[0][1] if found else None)
        if not is_face:
            stages["face_detect"] = (time.perf_counter() - t0) * 1e3
        present = [i for i, c in enumerate(crops) if c is not None]
        embs: list[np.ndarray | None] = [None] * len(crops)
        for j, e in zip(present, self._embed([crops[i] for i in present], name, stages)):
            embs[j] = e
        return embs

    def _embed(self, crops: list[np.ndarray], name: str, stages: dict[str, float]) -> np.ndarray:
        """Face embeddings (N, d_video) of face crops, in one batch."""
        if not crops:
            return np.zeros((0, self._d_video), np.float32)
        t0 = time.perf_counter()
        batch = np.stack(
            [normalize_face(c, self._face_params, f"{name}[{i}]") for i, c in enumerate(crops)]
        )
        stages["face_preprocess"] = (
            stages.get("face_preprocess", 0.0) + (time.perf_counter() - t0) * 1e3
        )
        out = self._run("face_encoder", {"face": batch}, stages)
        return next(iter(out.values()))

    def _run(self, role: str, feeds: dict, stages: dict[str, float]) -> dict[str, np.ndarray]:
        self._check_open()  # a stream may outlive close()
        backend = self._graphs[role]
        out = backend.infer(feeds)
        stages[role] = stages.get(role, 0.0) + backend.last_ms
        return out

    def _with_total(self, r: EmotionResult, t0: float, extra_ms: float = 0.0) -> EmotionResult:
        """``r`` with its total latency: time since ``t0`` plus work done earlier (``extra_ms``)."""
        total = (time.perf_counter() - t0) * 1e3 + extra_ms
        return dataclasses.replace(r, latency=Latency(r.latency.stages, total))

    # -- the shared core: one window from buffers to a result --------------------------------
    def _audio_window(
        self,
        pcm: np.ndarray,
        valid: np.ndarray,
        missing: dict[Modality, str],
        stages: dict[str, float],
        padding: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """Audio encoder output for one window: ``(audio (1, T, D), mask (1, T), coverage)``.

        ``padding`` marks samples that only fill the window up to the model's length (a short
        clip, the start of a stream): they are digital silence that the encoder sees as present,
        as in training, but they count neither as coverage nor as speech.
        Adds the reason to ``missing`` when the window's audio does not count (no samples, no
        speech); the encoder is not run then and the tensors are zeros.
        """
        cfg, p = self.config, self.bundle.audio
        k = self.bundle.stream.audio_frames_per_step
        shortest = p.win_length + (k - 1) * p.hop_length  # one encoder step needs k frames
        if len(pcm) < shortest:  # pad very short audio with invalid silence
            pad = shortest - len(pcm)
            pcm = np.concatenate([pcm, np.zeros(pad, np.float32)])
            valid = np.concatenate([valid, np.zeros(pad, bool)])
            if padding is not None:
                padding = np.concatenate([padding, np.zeros(pad, bool)])
        n_steps = max(1, p.num_frames(len(pcm)) // k)
        audio_seq = np.zeros((1, n_steps, self._d_audio), np.float32)
        audio_mask = np.zeros((1, n_steps), np.float32)
        real = valid if padding is None else valid[~padding]
        coverage = float(real.mean()) if len(real) else 0.0
        if Modality.AUDIO in missing:
            return audio_seq, audio_mask, coverage
        speech, speech_ms = (True, 0.0) if self._vad is None else self._vad.has_speech(pcm, valid)
        if not valid.any():
            missing[Modality.AUDIO] = "no audio in window"
        elif not speech:
            missing[Modality.AUDIO] = (
                f"silence: {speech_ms:.0f} ms of speech ({self._vad.method} voice activity), "
                f"need {cfg.min_speech_ms:.0f} ms"
            )
        else:
            t0 = time.perf_counter()
            mel = log_mel(pcm, p)[None]  # (1, frames, n_mels)
            stages["audio_frontend"] = (time.perf_counter() - t0) * 1e3
            emb = self._run("audio_encoder", {"logmel": mel}, stages)["audio_emb"]
            present = valid if padding is None else valid | padding
            audio_mask = step_mask(present, emb.shape[1], k * p.hop_length)[None]
            audio_seq = np.ascontiguousarray(emb * audio_mask[..., None], dtype=np.float32)
            if not audio_mask.any():
                missing[Modality.AUDIO] = "audio too short or mostly missing"
                audio_seq = np.zeros_like(audio_seq)
        return audio_seq, audio_mask, coverage

    def _fuse(
        self,
        start: float,
        end: float,
        audio: tuple[np.ndarray, np.ndarray, float],
        frames: FrameBuffer,
        missing: dict[Modality, str],
        stages: dict[str, float],
        *,
        smoother: Smoother | None,
        reach_ms: float | None = None,
        recent_ms: float | None = None,
        track_id: int = 0,
    ) -> EmotionResult:
        """Fuse one window's audio (from :meth:`_audio_window`) with one face track's frames.

        ``missing`` carries modalities already known to be absent (with the reason);
        ``reach_ms`` widens the frame lookup (predict's few images span the whole window);
        ``recent_ms`` makes video missing as soon as that last stretch has no face (streams);
        ``smoother`` None reports the raw scores.
        """
        cfg = self.config
        audio_seq, audio_mask, audio_cov = audio
        coverage = {Modality.AUDIO: audio_cov}
        fps = self.bundle.stream.video_fps
        video, vmask, seen = frames.grid(start, end, fps, self._d_video, reach_ms)
        coverage[Modality.VIDEO] = float(vmask.mean())
        if Modality.VIDEO not in missing:
            recent = vmask[-max(1, int(round(recent_ms / 1000.0 * fps))) :] if recent_ms else vmask
            if seen == 0:
                missing[Modality.VIDEO] = "no video frames in window"
            elif vmask.mean() < max(cfg.min_face_fraction, 1e-9):
                missing[Modality.VIDEO] = (
                    f"no face in {100 * (1 - vmask.mean()):.0f}% of frames "
                    f"(need a face in {100 * cfg.min_face_fraction:.0f}%)"
                )
            elif not recent.any():
                # the face is gone now: report it within one hop, not when the window empties
                missing[Modality.VIDEO] = f"no face in the last {recent_ms / 1000.0:.2f} s"
        if Modality.VIDEO in missing:
            video[:] = 0.0
            vmask[:] = 0.0
        used = tuple(m for m in (Modality.AUDIO, Modality.VIDEO) if m not in missing)
        if not used:
            return EmotionResult(
                None, {}, {}, end, (start, end), (), missing, coverage, Latency(stages), track_id
            )
        feeds = {
            "audio": audio_seq,
            "audio_mask": audio_mask,
            "video": video[None],
            "video_mask": vmask[None],
        }
        logits = self._run("fusion", feeds, stages)["logits"][0]
        raw = self._calibration.apply(softmax(logits))
        t0 = time.perf_counter()
        probs = smoother(raw) if smoother is not None else raw
        stages["smoothing"] = (time.perf_counter() - t0) * 1e3
        label = self.labels[int(np.argmax(probs))]
        return EmotionResult(
            label,
            dict(zip(self.labels, map(float, probs), strict=True)),
            dict(zip(self.labels, map(float, raw), strict=True)),
            end,
            (start, end),
            used,
            missing,
            coverage,
            Latency(stages),
            track_id,
        )

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
            degraded (or empty) results when a modality is missing, never a gap.
        """
        self._check_open()
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
        if not (hasattr(source, "events") and hasattr(source, "close")):
            raise InputError(
                f"source: expected a Source (events() and close()) or a media file path, got "
                f"{type(source).__name__}"
            )
        # a source that declares what it delivers (live devices, media files) gets the rest
        # reported with its own reason, or "microphone/camera not used"
        provides = getattr(source, "provides", None)
        reasons = getattr(source, "absent_reasons", {})
        absent = {
            m: reasons.get(m, f"{device} not used")
            for m, device in ((Modality.AUDIO, "microphone"), (Modality.VIDEO, "camera"))
            if provides is not None and m not in provides
        }
        return self._stream(source, absent)

    def _stream(self, source: Source, absent: dict[Modality, str]) -> Iterator[EmotionResult]:
        sr = self.bundle.audio.sample_rate
        hop_ms, win_ms = self.hop_s * 1000.0, self.window_s * 1000.0
        audio_buf = AudioBuffer(sr, self.window_s + self.hop_s + 1.0)
        multi = self.config.max_faces > 1
        tracker = None
        if multi:
            from .perception.face import FaceTracker

            tracker = FaceTracker(
                max_faces=self.config.max_faces,
                max_missed=int(self.window_s * self.bundle.stream.video_fps),
            )
        # one frame buffer and one smoother per face track; track 0 when following one face
        buffers: dict[int, FrameBuffer] = {} if multi else {0: FrameBuffer(self.window_s + 1.0)}

        # smoothing state belongs to this stream (and track), never to the Recognizer
        def new_smoother() -> Smoother:
            return Smoother(self.config.smoothing_alpha, enabled=self.config.smoothing == "ema")

        smoothers: dict[int, Smoother] = {} if multi else {0: new_smoother()}
        no_track_smoother = new_smoother()
        lost: dict[Modality, str] = {}
        pending: dict[str, float] = {}  # face stage times accumulated since the last result
        origin = next_t = None
        last_t = last_frame_t = None
        # perception runs at most a little faster than the frame grid the model samples
        frame_gap_ms = 0.9 * 1000.0 / self.bundle.stream.video_fps
        # live sources deliver events only roughly in time order (a microphone block arrives
        # after its last sample, a camera frame at once): with a lateness allowance, a window is
        # closed when every live modality has delivered up to its end, or when an event that
        # much later shows that one lags
        lateness = float(getattr(source, "lateness_ms", 0.0) or 0.0)
        covered: dict[Modality, float] = {}  # the newest time each modality has delivered

        def caught_up() -> bool:
            live = [m for m in Modality if m not in absent and m not in lost]
            return bool(live) and all(covered.get(m, -math.inf) >= next_t for m in live)

        events = source.events()

        def emit(t: float) -> list[EmotionResult]:
            t0 = time.perf_counter()
            start = max(origin, t - win_ms)
            pcm, valid = audio_buf.read(t - win_ms, t)  # the model's full window length
            padding = np.zeros(len(pcm), bool)
            padding[: int(round((start - (t - win_ms)) * sr / 1000.0))] = True  # before the stream
            stages = dict(pending)
            pending.clear()
            face_ms = sum(v for s, v in stages.items() if s.startswith("face"))
            known = {**absent, **lost}
            audio = self._audio_window(pcm, valid, known, stages, padding)
            for tid in [tid for tid, fb in buffers.items() if multi and fb.last_face_ms < start]:
                del buffers[tid], smoothers[tid]  # gone for a whole window: the track ends
            tracks = sorted(buffers) or [-1]  # -1: no face track at all (multi-face mode)
            out = []
            for tid in tracks:
                frames = buffers.get(tid) or FrameBuffer(0.0)
                r = self._fuse(
                    start,
                    t,
                    audio,
                    frames,
                    dict(known),
                    dict(stages),
                    smoother=smoothers.get(tid, no_track_smoother),
                    recent_ms=hop_ms,
                    track_id=tid,
                )
                out.append(self._with_total(r, t0, face_ms))
            return out

        def track(tid: int) -> FrameBuffer:
            if tid not in buffers:
                buffers[tid] = FrameBuffer(self.window_s + 1.0)
                smoothers[tid] = new_smoother()
            return buffers[tid]

        def add_frame(t: float, image: np.ndarray, is_face: bool) -> None:
            stages: dict[str, float] = {}
            try:
                if tracker is None or is_face:
                    # the largest face (or the crop given; a crop is track 0 in multi-face mode)
                    track(0).add(
                        FrameEntry(t, self._encode_images([image], is_face, stages, {})[0])
                    )
                else:
                    _validate.image("frame", image, "an image (H, W) or (H, W, 1|3)")
                    t1 = time.perf_counter()
                    found = self._face_crops(image, tracker)
                    stages["face_detect"] = (time.perf_counter() - t1) * 1e3
                    embs = self._embed([c for _, c in found], "frame", stages)
                    for (tid, _), emb in zip(found, embs):
                        track(tid).add(FrameEntry(t, emb))
                    for tid in set(buffers) - {tid for tid, _ in found}:
                        buffers[tid].add(FrameEntry(t, None))
            except BackendUnavailableError as e:
                lost[Modality.VIDEO] = str(e)
            except InputError as e:
                logger.warning("dropping a malformed frame at %.0f ms: %s", t, e)
            for name, v in stages.items():
                pending[name] = pending.get(name, 0.0) + v

        try:
            while True:
                try:
                    ev = next(events)
                except StopIteration:
                    break
                except Exception as e:
                    logger.warning("source failed: %s", e)
                    msg = f"source failed: {type(e).__name__}: {e}"
                    for m in (Modality.AUDIO, Modality.VIDEO):
                        lost[m] = msg
                    break
                t = float(ev.t_ms)
                if origin is None:
                    origin, next_t = t, t + hop_ms
                while t >= next_t + lateness:
                    yield from emit(next_t)
                    next_t += hop_ms
                if isinstance(ev, AudioChunk):
                    try:
                        pcm = _validate.audio("AudioChunk.pcm", ev.pcm)
                        rate = _validate.sample_rate("sample_rate", ev.sample_rate)
                    except InputError as e:
                        logger.warning("dropping a malformed audio chunk at %.0f ms: %s", t, e)
                        continue
                    pcm = resample(pcm, rate, sr)
                    # a long chunk goes in hop by hop, so the ring never drops audio that a
                    # window inside the chunk still needs
                    step = max(1, int(hop_ms / 1000.0 * sr))
                    for k in range(0, len(pcm), step):
                        piece_t = t + k / sr * 1000.0
                        while piece_t >= next_t + lateness:
                            yield from emit(next_t)
                            next_t += hop_ms
                        audio_buf.write(piece_t, pcm[k : k + step])
                    end = t + len(pcm) / sr * 1000.0
                    covered[Modality.AUDIO] = max(covered.get(Modality.AUDIO, -math.inf), end)
                elif isinstance(ev, VideoFrame):
                    end = t
                    covered[Modality.VIDEO] = max(covered.get(Modality.VIDEO, -math.inf), t)
                    if last_frame_t is not None and t - last_frame_t < frame_gap_ms:
                        # faster than the model's frame grid needs: drop it, never queue
                        last_t = max(last_t, t)
                        continue
                    last_frame_t = t
                    add_frame(t, ev.image, ev.is_face)
                elif isinstance(ev, Tick):
                    end = t
                elif isinstance(ev, HealthEvent):
                    if ev.ok:
                        lost.pop(ev.modality, None)
                    else:
                        lost[ev.modality] = ev.message
                    end = t
                else:
                    logger.warning("ignoring unknown source event %r", type(ev).__name__)
                    continue
                last_t = end if last_t is None else max(last_t, end)
                while lateness and caught_up():
                    yield from emit(next_t)
                    next_t += hop_ms
            if origin is None:
                return
            # flush: every full hop up to the end of the data, then the partial last hop
            while next_t <= last_t + 1e-6:
                yield from emit(next_t)
                next_t += hop_ms
            if last_t > next_t - hop_ms + 1.0 or lost:
                yield from emit(max(last_t, next_t - hop_ms))
        finally:
            source.close()

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
        self._check_open()
        secs = _validate.positive_number("seconds", seconds)
        previous, self._calibration = self._calibration, Calibration()  # collect uncalibrated
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
            self._calibration = previous  # a failed calibration keeps the old baseline
            raise
        self._calibration = collector
        return dict(zip(self.labels, map(float, base), strict=False))

    def reset_calibration(self) -> None:
        """Forget the neutral baseline."""
        self._calibration.reset()
