"""The shared core of ``predict`` and streams: one window from buffers to an ``EmotionResult``.

A :class:`Pipeline` holds what every window needs (the bundle's graphs, the front ends, voice
activity, the face detector, the calibration) and no per-stream state: a Recognizer owns one,
``predict`` and every :class:`~emosdk.stream.StreamSession` use it. Its methods return their
reasons and stage timings instead of filling the caller's dicts. It is safe to call from several
threads: the graphs' sessions run concurrently, voice activity keeps no state between calls, and
the face detector (which is not thread-safe) is used under a lock.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from . import _validate, health
from ._malloc import tune_malloc
from .backends import Backend
from .buffers import FrameBuffer, FrameEntry, step_mask
from .config import RecognizerConfig
from .errors import BackendUnavailableError, EmosdkError, ModelError
from .features.face import normalize_face, to_gray
from .features.whisper import compute_features
from .models import ModelBundle
from .perception.voice import FRAME_MS as VAD_FRAME_MS
from .quality import audio_measures, face_measures, head_confidence, window_face_measures
from .results import EmotionResult, Latency, Modality, Quality
from .scores import Calibration, Smoother, softmax

logger = logging.getLogger("emosdk")

Stages = dict[str, float]


def add_stages(into: Stages, more: Mapping[str, float]) -> Stages:
    """Sum stage timings into ``into`` (returned for convenience)."""
    for name, ms in more.items():
        into[name] = into.get(name, 0.0) + ms
    return into


def encode_in_pieces(
    run: Callable[[np.ndarray], tuple[Mapping[str, np.ndarray], float]],
    mel: np.ndarray,
    max_frames: int | None,
    frames_per_step: int,
) -> tuple[np.ndarray, float]:
    """``audio_emb`` (1, steps, D) of log-mel ``mel`` (1, frames, n_mels) and the encoder's time
    in ms, running ``run`` on pieces of at most ``max_frames`` frames when the encoder has such
    a limit (Whisper: 30 s) and concatenating their steps. ``max_frames`` is a multiple of
    ``frames_per_step``, so the pieces' steps line up with those of one long run; a last piece
    shorter than one step (which would give no step) is left out, as the encoder would drop it.
    """
    if max_frames is None or mel.shape[1] <= max_frames:
        out, ms = run(mel)
        return out["audio_emb"], ms
    if max_frames % frames_per_step:
        raise ModelError(
            f"audio front end: max_frames {max_frames} is not a multiple of the encoder's "
            f"{frames_per_step} frames per step"
        )
    embs, total = [], 0.0
    for s in range(0, mel.shape[1], max_frames):
        piece = mel[:, s : s + max_frames]
        if piece.shape[1] < frames_per_step:
            break
        out, ms = run(np.ascontiguousarray(piece))
        embs.append(out["audio_emb"])
        total += ms
    return np.concatenate(embs, axis=1), total


def feature_dim(bundle: ModelBundle, name: str) -> int:
    """The fixed feature size of a fusion input (the runtime sizes its buffers with it)."""
    dim = bundle.graphs["fusion"].input(name).shape[-1]
    if not isinstance(dim, int):
        raise ModelError(f"{bundle.path}: fusion input {name!r} needs a fixed feature size")
    return dim


@dataclass(frozen=True)
class AudioWindow:
    """The audio encoder's view of one window.

    Attributes:
        seq: (1, T, D) encoder output, zeros where masked.
        mask: (1, T) 1.0 for the steps that count.
        coverage: share of the window's real (not padding) samples that were captured.
        missing: why the window's audio does not count, or None.
        stages: time spent (ms) per stage.
        measures: quality measures of the window's real samples (:mod:`emosdk.quality`),
            empty when the audio does not count.
    """

    seq: np.ndarray
    mask: np.ndarray
    coverage: float
    missing: str | None
    stages: Mapping[str, float] = field(default_factory=dict)
    measures: Mapping[str, float] = field(default_factory=dict)


class Pipeline:
    """Graphs, front ends and perception shared by predict and streams (see module docstring).

    Args:
        bundle: the loaded, verified model bundle.
        config: the recognizer's options.
        graphs: role -> backend for each of the bundle's graphs.
    """

    def __init__(
        self, bundle: ModelBundle, config: RecognizerConfig, graphs: Mapping[str, Backend]
    ) -> None:
        tune_malloc()  # the front ends' per-window buffers stay mapped (see emosdk._malloc)
        self.bundle = bundle
        self.config = config
        self.graphs = graphs
        self.labels = bundle.labels
        self.d_audio = feature_dim(bundle, "audio")
        self.d_video = feature_dim(bundle, "video")
        # the caller's channel order applies to crops and frames alike
        self.face_params = dataclasses.replace(bundle.face, color_order=config.color_order)
        self.calibration = Calibration()
        self.closed = False
        self._detector = None
        self._detector_lock = threading.Lock()
        self._landmarker = None
        self._perception_src: ModelBundle | bool | None = None
        self._vad = None
        if config.voice_activity != "off":
            from .perception.voice import VoiceActivity

            rate = bundle.audio.sample_rate
            self._vad = VoiceActivity(
                config.voice_activity if rate in (8000, 16000, 32000, 48000) else "energy",
                min_rms=config.min_audio_rms,
                min_speech_ms=config.min_speech_ms,
                sample_rate=rate,
            )

    def close(self) -> None:
        self.closed = True
        with self._detector_lock:
            parts = (self._detector, self._landmarker)
            self._detector = self._landmarker = None
        for part in parts:
            if part is not None and hasattr(part, "close"):
                part.close()

    # -- graphs ----------------------------------------------------------------------------
    def run(
        self, role: str, feeds: Mapping[str, np.ndarray]
    ) -> tuple[dict[str, np.ndarray], float]:
        """Run one graph: its outputs and the milliseconds it took."""
        if self.closed:  # a stream may outlive close()
            raise EmosdkError("this Recognizer is closed")
        t0 = time.perf_counter()
        out = self.graphs[role].infer(feeds)
        return out, (time.perf_counter() - t0) * 1e3

    # -- faces -----------------------------------------------------------------------------
    def _perception(self) -> ModelBundle | None:
        """The bundle whose perception graphs serve this model: its own, else the bundled
        default model's (loaded and hash-checked once), else None."""
        if self._perception_src is None:
            src = self.bundle
            if "face_detector" not in src.perception:
                from .models import DEFAULT_MODEL, load_model

                try:
                    src = load_model(DEFAULT_MODEL)
                except ModelError as e:
                    logger.warning("no perception graphs: the default model fails to load: %s", e)
                    src = None
            self._perception_src = src if src and "face_detector" in src.perception else False
        return self._perception_src or None

    def _face_detector(self):
        """The shared face detector, made on first use (called under the detector lock)."""
        if self._detector is None:
            from .perception.face import create_face_detector

            src = self._perception()
            cfg = self.config
            self._detector = create_face_detector(
                cfg.face_detector,
                color_order=cfg.color_order,
                detector_model=src.perception_path("face_detector") if src else False,
                small_faces="always" if cfg.max_faces > 1 else "auto",
            )
        return self._detector

    def detect(self, image: np.ndarray) -> tuple[list, float]:
        """Faces in a full frame (largest first) and the milliseconds it took."""
        t0 = time.perf_counter()
        with self._detector_lock:  # Haar and mediapipe's detectors are not thread-safe
            boxes = self._face_detector().detect(image)
        return boxes, (time.perf_counter() - t0) * 1e3

    def mesh_tracker(self, max_faces: int | None = None) -> object:
        """A new FaceMeshTracker (one per stream): faces followed by their landmarks, the shared
        BlazeFace detector run only when the landmarks lose a face.

        Raises:
            BackendUnavailableError: no landmark graph, or the detector is not BlazeFace.
        """
        from .perception.blazeface import BlazeFaceDetector
        from .perception.landmarks import FaceLandmarker, FaceMeshTracker

        with self._detector_lock:
            detector = self._face_detector()
            src = self._perception()
            landmarks = src.perception_path("face_landmarks") if src else None
            if landmarks is None or not isinstance(detector, BlazeFaceDetector):
                raise BackendUnavailableError(
                    "face_mesh=True needs the BlazeFace detector and the face_landmarks graph "
                    "in the model bundle (the bundled default model has them)"
                )
            if self._landmarker is None:
                self._landmarker = FaceLandmarker(
                    landmarks,
                    src.perception_path("face_blendshapes"),
                    color_order=self.config.color_order,
                )
        return FaceMeshTracker(
            detector,
            self._landmarker,
            max_faces=max_faces or self.config.max_faces,
            blendshapes=self._landmarker.has_blendshapes,
        )

    def face_crops(
        self, image: np.ndarray, tracker: object = None
    ) -> tuple[list[tuple[int, np.ndarray, object]], float]:
        """(track id, aligned crop, box) per face: the largest, or the faces a tracker follows
        (a :class:`~emosdk.perception.face.FaceTracker` over detections, or a
        :class:`~emosdk.perception.landmarks.FaceMeshTracker`, which detects by itself)."""
        from .perception.face import FaceTracker, align, crop

        if image.dtype.kind == "f":  # [0, 1] floats: detect, align and crop on 8 bits
            image = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        if tracker is None or isinstance(tracker, FaceTracker):
            boxes, ms = self.detect(image)
            boxes = tracker.update(boxes) if tracker is not None else boxes[:1]
        else:
            t0 = time.perf_counter()
            boxes = tracker.detect(image)[: self.config.max_faces]
            ms = (time.perf_counter() - t0) * 1e3
        fp = self.face_params
        t0 = time.perf_counter()
        if self.config.align_faces:
            crops = [
                (b.track_id, align(image, b, eye_line=fp.eye_line, eye_distance=fp.eye_distance), b)
                for b in boxes
            ]
        else:
            crops = [(b.track_id, crop(image, b), b) for b in boxes]
        return crops, ms + (time.perf_counter() - t0) * 1e3

    def embed(
        self, crops: Sequence[np.ndarray], name: str, boxes: Sequence[object] | None = None
    ) -> tuple[np.ndarray, Stages, list[dict[str, float]]]:
        """Face embeddings (N, d_video) of face crops, in one batch, with each face's quality
        measures (``boxes``: the detector's boxes, for face size and score; None for crops
        given as they are)."""
        if not crops:
            return np.zeros((0, self.d_video), np.float32), {}, []
        t0 = time.perf_counter()
        fp = self.face_params
        batch = np.stack([normalize_face(c, fp, f"{name}[{i}]") for i, c in enumerate(crops)])
        measures = []
        for i, c in enumerate(crops):
            box = boxes[i] if boxes is not None else None
            px = min(box.w, box.h) if box is not None else min(c.shape[:2])
            score = float(getattr(box, "score", 1.0)) if box is not None else 1.0
            native = to_gray(c, fp.color_order)
            measures.append(face_measures(batch[i, 0] * fp.std + fp.mean, px, score, native))
        stages = {"face_preprocess": (time.perf_counter() - t0) * 1e3}
        out, ms = self.run("face_encoder", {"face": batch})
        stages["face_encoder"] = ms
        return out["face_emb"], stages, measures

    def encode_images(
        self, items: Sequence[np.ndarray | None], is_face: bool, tracker: object = None
    ) -> tuple[list[FrameEntry | None], Stages]:
        """Per image, its face embedding and quality as a FrameEntry with time 0 (None where
        there is no image or no face); ``tracker`` follows the face across full frames."""
        name = "face" if is_face else "frame"
        crops: list[tuple[np.ndarray, object] | None] = []
        stages: Stages = {}
        for i, img in enumerate(items):
            if img is None:
                crops.append(None)
                continue
            _validate.image(f"{name}[{i}]", img, "an image (H, W) or (H, W, 1|3)")
            if is_face:
                crops.append((img, None))
            else:
                found, ms = self.face_crops(img, tracker)
                add_stages(stages, {"face_detect": ms})
                crops.append(found[0][1:] if found else None)
        present = [i for i, c in enumerate(crops) if c is not None]
        entries: list[FrameEntry | None] = [None] * len(crops)
        vectors, embed_stages, measures = self.embed(
            [crops[i][0] for i in present],
            name,
            None if is_face else [crops[i][1] for i in present],
        )
        for j, e, m in zip(present, vectors, measures):
            entries[j] = FrameEntry(0.0, e, m)
        return entries, add_stages(stages, embed_stages)

    # -- one window ------------------------------------------------------------------------
    def speech_frames(self, pcm: np.ndarray, valid: np.ndarray) -> np.ndarray | None:
        """Voice activity per 30 ms frame (None when voice activity is off)."""
        return None if self._vad is None else self._vad.speech_frames(pcm, valid)

    def audio_window(
        self,
        pcm: np.ndarray,
        valid: np.ndarray,
        padding: np.ndarray | None = None,
        known_missing: bool = False,
    ) -> AudioWindow:
        """Encode one window of audio.

        ``padding`` marks samples that only fill the window up to the model's length (a short
        clip, the start of a stream): digital silence that the encoder sees as present, as in
        training, but that counts neither as coverage nor as speech. With ``known_missing``
        (the audio is already known to be absent) or when :mod:`emosdk.health` says the audio
        does not count, the encoder is not run and the tensors are zeros.
        """
        p = self.bundle.audio
        k = self.bundle.stream.audio_frames_per_step
        shortest = p.win_length + (k - 1) * p.hop_length  # one encoder step needs k frames
        if len(pcm) < shortest:  # pad very short audio with invalid silence
            pad = shortest - len(pcm)
            pcm = np.concatenate([pcm, np.zeros(pad, np.float32)])
            valid = np.concatenate([valid, np.zeros(pad, bool)])
            if padding is not None:
                padding = np.concatenate([padding, np.zeros(pad, bool)])
        n_steps = max(1, p.num_frames(len(pcm)) // k)
        seq = np.zeros((1, n_steps, self.d_audio), np.float32)
        mask = np.zeros((1, n_steps), np.float32)
        real = valid if padding is None else valid[~padding]
        coverage = float(real.mean()) if len(real) else 0.0
        if known_missing:
            return AudioWindow(seq, mask, coverage, None)
        frames = self.speech_frames(pcm, valid)
        speech_ms = 0.0 if frames is None else float(frames.sum() * VAD_FRAME_MS)
        speech = frames is None or speech_ms >= self.config.min_speech_ms
        vad = self._vad.method if self._vad is not None else None
        reason = health.audio_missing(
            bool(valid.any()), speech, speech_ms, vad, self.config.min_speech_ms
        )
        if reason is not None:
            return AudioWindow(seq, mask, coverage, reason)
        real = valid if padding is None else valid & ~padding
        measures = audio_measures(pcm, real, frames, p.sample_rate)
        t0 = time.perf_counter()
        mel = compute_features(pcm, p)[None]  # (1, frames, n_mels): the bundle's front end
        stages = {"audio_frontend": (time.perf_counter() - t0) * 1e3}
        emb, stages["audio_encoder"] = encode_in_pieces(
            lambda piece: self.run("audio_encoder", {"logmel": piece}), mel, p.max_frames, k
        )
        present = valid if padding is None else valid | padding
        mask = step_mask(present, emb.shape[1], k * p.hop_length)[None]
        reason = health.audio_steps_missing(mask)
        if reason is not None:
            return AudioWindow(np.zeros_like(emb, np.float32), mask, coverage, reason, stages)
        seq = np.ascontiguousarray(emb * mask[..., None], dtype=np.float32)
        return AudioWindow(seq, mask, coverage, None, stages, measures)

    def fuse(
        self,
        start: float,
        end: float,
        audio: AudioWindow,
        frames: FrameBuffer,
        known: Mapping[Modality, str],
        stages: Mapping[str, float],
        *,
        smoother: Smoother | None,
        reach_ms: float | None = None,
        recent_ms: float | None = None,
        track_id: int = 0,
        dropped: str | None = None,
    ) -> EmotionResult:
        """Fuse one window's audio with one face track's frames into a result.

        Args:
            start, end: the window (ms).
            audio: from :meth:`audio_window`.
            frames: the face track's embeddings.
            known: modalities already known to be absent, with the reason.
            stages: time already spent on this window (ms per stage).
            smoother: the stream's (track's) smoother; None reports the raw scores.
            reach_ms: widens the frame lookup (predict's few images span the whole window).
            recent_ms: video is missing as soon as that last stretch has no face (streams).
            track_id: the face track the result belongs to.
            dropped: why recent frames were dropped, for a window without frames.
        """
        stages = dict(stages)
        missing = dict(known)
        if audio.missing is not None and Modality.AUDIO not in missing:
            missing[Modality.AUDIO] = audio.missing
        add_stages(stages, audio.stages)
        fps = self.bundle.stream.video_fps
        faces: list[FrameEntry] = []
        video, vmask, seen = frames.grid(start, end, fps, self.d_video, reach_ms, faces)
        coverage = {Modality.AUDIO: audio.coverage, Modality.VIDEO: float(vmask.mean())}
        if Modality.VIDEO not in missing:
            recent = max(1, int(round(recent_ms / 1000.0 * fps))) if recent_ms else None
            reason = health.video_missing(
                vmask, seen, self.config.min_face_fraction, recent, recent_ms, dropped
            )
            if reason is not None:
                missing[Modality.VIDEO] = reason
        # the gate acts on the signal measures; each used modality's own head's confidence
        # joins its verdict after the fusion (an ambiguous voice stays in: the fusion weighs it)
        quality = self._quality(audio, faces, missing)
        unreliable = {m: q.reason for m, q in quality.items()}
        present = tuple(m for m in Modality if m not in missing)
        missing.update(health.gate(unreliable, present, self.config.quality_gate))
        used = tuple(m for m in Modality if m not in missing)
        if not used:
            return EmotionResult(
                None,
                {},
                {},
                end,
                (start, end),
                (),
                missing,
                coverage,
                Latency(stages),
                track_id,
                quality,
            )
        audio_seq, audio_mask = audio.seq, audio.mask
        if Modality.AUDIO in missing:
            audio_seq, audio_mask = np.zeros_like(audio_seq), np.zeros_like(audio_mask)
        if Modality.VIDEO in missing:
            video[:] = 0.0
            vmask[:] = 0.0
        feeds = {
            "audio": audio_seq,
            "audio_mask": audio_mask,
            "video": video[None],
            "video_mask": vmask[None],
        }
        out, stages["fusion"] = self.run("fusion", feeds)
        quality = self._confidence(quality, used, out)
        raw = self.calibration.apply(softmax(out["logits"][0]))
        t0 = time.perf_counter()
        probs = smoother(raw) if smoother is not None else raw
        stages["smoothing"] = (time.perf_counter() - t0) * 1e3
        return EmotionResult(
            self.labels[int(np.argmax(probs))],
            dict(zip(self.labels, map(float, probs), strict=True)),
            dict(zip(self.labels, map(float, raw), strict=True)),
            end,
            (start, end),
            used,
            missing,
            coverage,
            Latency(stages),
            track_id,
            quality,
        )

    def _quality(
        self, audio: AudioWindow, faces: Sequence[FrameEntry], missing: Mapping[Modality, str]
    ) -> dict[Modality, Quality]:
        """Quality of each present modality: its signal measures and the bundle's verdict."""
        rules = self.bundle.quality
        out = {}
        if Modality.AUDIO not in missing and audio.measures:
            why = health.audio_unreliable(dict(audio.measures), rules)
            out[Modality.AUDIO] = Quality(why is None, audio.measures, why)
        measured = [f.quality for f in faces if f.quality]
        if Modality.VIDEO not in missing and measured:
            m = window_face_measures(measured)
            why = health.video_unreliable(m, rules)
            out[Modality.VIDEO] = Quality(why is None, m, why)
        return out

    def _confidence(
        self,
        quality: Mapping[Modality, Quality],
        used: tuple[Modality, ...],
        fused: Mapping[str, np.ndarray],
    ) -> dict[Modality, Quality]:
        """``quality`` with each used modality's ``audio_confidence`` / ``face_confidence`` (the
        top probability of the fusion graph's auxiliary head for it, when the graph has one)
        added to its measures and its verdict."""
        out = dict(quality)
        for m, head, name, judge in (
            (Modality.AUDIO, "logits_audio", "audio_confidence", health.audio_unreliable),
            (Modality.VIDEO, "logits_video", "face_confidence", health.video_unreliable),
        ):
            if m in used and m in quality and head in fused:
                measures = {**quality[m].measures, name: head_confidence(fused[head][0])}
                why = judge(measures, self.bundle.quality)
                out[m] = Quality(why is None, measures, why)
        return out
