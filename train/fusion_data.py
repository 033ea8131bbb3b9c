"""Embeddings of a bundle's encoders exactly as the runtime computes them, with corruption
augmentation, cached; and the evaluation of a fusion model on them. The part that
``train_fusion``, ``calibrate_quality`` and ``build_bundle`` share (no script imports another).

Everything is generic over the encoders: an encoder is an ONNX file whose input and output names
and shapes are read from the graph (:class:`AudioGraph`, :class:`FaceGraph`); the audio front end
is a dict for :func:`emosdk.features.whisper.params_from_dict` (log-mel or Whisper) and runs
through :func:`emosdk.features.whisper.compute_features`; the audio encoder's
``audio_frames_per_step`` is measured on the graph (:meth:`AudioGraph.probe_frames_per_step`).

Runtime parity (tested against ``Recognizer.predict`` in tests/train/test_train_fusion.py):

* audio (:func:`encode_windows`) is ``Pipeline.audio_window``: the front end on the whole window,
  the encoder, the step mask of the present samples, the features zeroed where masked; a clip
  shorter than the window sits centred in zeros marked as padding (:func:`predict_window`, as
  ``Recognizer.predict`` places it); a longer clip is analysed whole;
* whether the audio counts and its quality measures (:class:`AudioJudge`) come from the runtime's
  voice activity (:class:`emosdk.perception.voice.VoiceActivity` with the
  :class:`~emosdk.config.RecognizerConfig` defaults), :func:`emosdk.health.audio_missing` and
  :func:`emosdk.quality.audio_measures`;
* a face crop goes through :func:`emosdk.features.normalize_face` and the face encoder's first
  output, its measures through :func:`emosdk.quality.face_measures` (face size = the crop's
  shorter side, detector score 1.0, as ``predict(face=...)`` measures a given crop);
* one face image given to ``predict`` fills every frame slot of the window, so evaluation repeats
  a face's embedding over ``Tv = round(window_s * video_fps)`` slots (more for a clip longer than
  the window).

Augmentation (:func:`corrupt_audio`, :func:`corrupt_face`) uses the functions of
:mod:`emosdk.corruptions` (the robustness benchmark's) with this module's own parameter ranges
(continuous, drawn per copy) and seeds (``numpy.random.default_rng([seed, SEED_TAG, set, item,
copy])``; the benchmark draws from ``[seed, crc32(name), severity, item]`` at fixed severities),
so training never sees the benchmark's exact conditions. Each item gets ``n_clean`` clean copies
and ``k`` corrupted ones; copy ``j`` of item ``i`` takes corruption kind ``(i * k + j) % kinds``
so every kind is equally represented.

Caches (:func:`audio_set`, :func:`face_set`) are folders of npz shards under a cache directory,
named by a key over the encoder's SHA-256, the front end, the windowing, the item list, the
copies and the augmentation seed; a run that stops keeps its finished shards.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emosdk import corruptions as C
from emosdk import health
from emosdk.buffers import step_mask
from emosdk.config import RecognizerConfig
from emosdk.features.face import FaceParams, normalize_face, to_gray
from emosdk.features.whisper import AudioParams, compute_features
from emosdk.metrics import classification_report
from emosdk.models.bundle import StreamParams, sha256_file
from emosdk.perception.voice import FRAME_MS as VAD_FRAME_MS
from emosdk.perception.voice import VoiceActivity
from emosdk.quality import QualityRules, audio_measures, face_measures, head_confidence

from . import LABELS
from .data import CREMAD_COLUMNS, DATA_ROOT, cremad_audio_path, read_audio

logger = logging.getLogger("emosdk.train")

SR = 16_000
SEED_TAG = 0xF0510
"""Second entry of every augmentation generator's seed (the benchmark's has a crc32 there)."""
AUG_VERSION = 1
"""Part of every cache key: bump when the augmentation or the windows change."""


def runtime_key() -> str:
    """A digest of the runtime code that decides whether audio counts and measures quality
    (emosdk.quality, emosdk.health, emosdk.perception.voice): part of the key of every cached
    measure, so measures are recomputed (the embeddings kept) when that code changes."""
    import inspect

    from emosdk import quality
    from emosdk.perception import voice

    src = "".join(inspect.getsource(m) for m in (quality, health, voice))
    return hashlib.sha256(src.encode()).hexdigest()[:12]


# -----------------------------------------------------------------------------------------------
# the encoders, as ONNX graphs


def ort_session(path: str | Path, threads: int = 1):
    """An onnxruntime CPU session with ``threads`` intra-op threads (one inter-op thread)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def _io(sess) -> tuple[list, list]:
    return sess.get_inputs(), sess.get_outputs()


class AudioGraph:
    """An audio encoder ONNX graph: one input (B, frames, n_mels) -> (B, steps, d_audio).

    The input is the graph's only input; the output is ``audio_emb`` when the graph has one (the
    runtime's name), else its first output.

    Args:
        path: the ONNX file.
        params: the front end it was trained on.
        threads: onnxruntime intra-op threads.

    Raises:
        ValueError: the graph's input does not take ``params.n_mels`` features, or its steps
            are not a whole number of frames.
    """

    def __init__(self, path: str | Path, params: AudioParams, threads: int = 1) -> None:
        self.path = Path(path)
        self.params = params
        self.sha256 = sha256_file(self.path)
        self.sess = ort_session(self.path, threads)
        ins, outs = _io(self.sess)
        if len(ins) != 1:
            raise ValueError(f"{path}: an audio encoder takes one input, has {len(ins)}")
        self.input = ins[0].name
        names = [o.name for o in outs]
        self.output = "audio_emb" if "audio_emb" in names else names[0]
        n_mels = ins[0].shape[-1]
        if isinstance(n_mels, int) and n_mels != params.n_mels:
            raise ValueError(
                f"{path}: input {self.input!r} takes {n_mels} features, the front end gives "
                f"{params.n_mels}"
            )
        self.frames_per_step = self.probe_frames_per_step()
        self.d = int(self.encode(np.zeros((1, 4 * self.frames_per_step, params.n_mels))).shape[-1])

    def encode(self, mel: np.ndarray) -> np.ndarray:
        """(B, frames, n_mels) -> (B, steps, d) float32."""
        out = self.sess.run([self.output], {self.input: np.ascontiguousarray(mel, np.float32)})
        return out[0]

    def probe_frames_per_step(self) -> int:
        """Mel frames per output step, measured: steps for 400 and for 800 frames."""
        x = np.random.default_rng(0).standard_normal((1, 800, self.params.n_mels)) * 0.3
        s1 = self.encode(x[:, :400]).shape[1]
        s2 = self.encode(x).shape[1]
        k = 400 / max(s2 - s1, 1)
        if s2 <= s1 or abs(k - round(k)) > 1e-6 or s1 != 400 // round(k):
            raise ValueError(
                f"{self.path}: 400 frames give {s1} steps and 800 give {s2}: not a fixed number "
                "of frames per step (stream.audio_frames_per_step)"
            )
        return int(round(k))


class FaceGraph:
    """A face encoder ONNX graph: (B, 1, S, S) normalised crops -> its first output (B, d).

    Args:
        path: the ONNX file.
        params: the face crop parameters; None: the defaults with the graph's size ``S``.
        threads: onnxruntime intra-op threads.

    Raises:
        ValueError: the graph's input is not (B, 1, S, S) with ``S == params.size``.
    """

    def __init__(
        self, path: str | Path, params: FaceParams | None = None, threads: int = 1
    ) -> None:
        self.path = Path(path)
        self.sha256 = sha256_file(self.path)
        self.sess = ort_session(self.path, threads)
        ins, outs = _io(self.sess)
        if len(ins) != 1 or len(ins[0].shape) != 4:
            raise ValueError(f"{path}: a face encoder takes one input (B, 1, S, S)")
        self.input = ins[0].name
        size = ins[0].shape[-1]
        self.params = params or FaceParams(size=int(size) if isinstance(size, int) else 48)
        if isinstance(size, int) and size != self.params.size:
            raise ValueError(f"{path}: input is {size} px, face params say {self.params.size}")
        self.outputs = [o.name for o in outs]
        self.d = int(self.encode(np.zeros((1, 1, self.params.size, self.params.size))).shape[-1])

    def encode(self, faces: np.ndarray) -> np.ndarray:
        """(B, 1, S, S) -> the first output (B, d) float32, as ``Pipeline.embed`` reads it."""
        out = self.sess.run(
            [self.outputs[0]], {self.input: np.ascontiguousarray(faces, np.float32)}
        )
        return out[0]

    def prepare(self, crop: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
        """(normalised (1, S, S), quality measures) of one crop given as ``predict(face=crop)``
        takes it (``Pipeline.embed``: face size = the crop's shorter side, score 1.0)."""
        fp = self.params
        x = normalize_face(crop, fp)
        native = to_gray(crop, fp.color_order)
        return x, face_measures(x[0] * fp.std + fp.mean, min(crop.shape[:2]), 1.0, native)


# -----------------------------------------------------------------------------------------------
# windows and the runtime's audio path


def predict_window(
    pcm: np.ndarray, window_s: float, sr: int = SR
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``Recognizer.predict``'s window of a clip: (pcm, valid, padding). A clip shorter than
    ``window_s`` sits centred in zeros marked as padding; a longer one is the whole clip."""
    clip_ms = len(pcm) / sr * 1000.0
    window_ms = max(clip_ms, window_s * 1000.0)
    n = int(round(window_ms / 1000.0 * sr))
    lead = (n - len(pcm)) // 2
    out = np.zeros(n, np.float32)
    out[lead : lead + len(pcm)] = pcm
    valid = np.zeros(n, bool)
    valid[lead : lead + len(pcm)] = True
    return out, valid, ~valid


def stream_window(
    pcm: np.ndarray, window_s: float, rng: np.random.Generator, sr: int = SR
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A window of a stream over the clip: a random ``window_s`` crop of a longer clip, or the
    clip at a random place in zeros (digital silence, valid as a live microphone's would be)."""
    n = int(round(window_s * sr))
    if len(pcm) >= n:
        s = int(rng.integers(0, len(pcm) - n + 1))
        out = pcm[s : s + n].astype(np.float32)
    else:
        out = np.zeros(n, np.float32)
        d = int(rng.integers(0, n - len(pcm) + 1))
        out[d : d + len(pcm)] = pcm
    return out, np.ones(n, bool), np.zeros(n, bool)


def fit_window(
    pcm: np.ndarray, valid: np.ndarray, padding: np.ndarray, params: AudioParams, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pad audio shorter than one encoder step with invalid zeros (``Pipeline.audio_window``)."""
    shortest = params.win_length + (k - 1) * params.hop_length
    if len(pcm) >= shortest:
        return pcm, valid, padding
    pad = shortest - len(pcm)
    z = np.zeros(pad, bool)
    return np.concatenate([pcm, np.zeros(pad, np.float32)]), np.r_[valid, z], np.r_[padding, z]


class AudioJudge:
    """Whether a window's audio counts and its quality measures, as the runtime decides them
    (voice activity from the recognizer's defaults; see the module docstring)."""

    def __init__(self, config: RecognizerConfig | None = None, sample_rate: int = SR) -> None:
        cfg = config or RecognizerConfig()
        self.min_speech_ms = cfg.min_speech_ms
        self.sample_rate = sample_rate
        self.vad = None
        if cfg.voice_activity != "off":
            self.vad = VoiceActivity(
                cfg.voice_activity if sample_rate in (8000, 16000, 32000, 48000) else "energy",
                min_rms=cfg.min_audio_rms,
                min_speech_ms=cfg.min_speech_ms,
                sample_rate=sample_rate,
            )

    def __call__(
        self, pcm: np.ndarray, valid: np.ndarray, padding: np.ndarray
    ) -> tuple[str | None, dict[str, float]]:
        """(why the audio is missing or None, the quality measures; empty when missing)."""
        frames = None if self.vad is None else self.vad.speech_frames(pcm, valid)
        speech_ms = 0.0 if frames is None else float(frames.sum() * VAD_FRAME_MS)
        speech = frames is None or speech_ms >= self.min_speech_ms
        method = self.vad.method if self.vad is not None else None
        reason = health.audio_missing(
            bool(valid.any()), speech, speech_ms, method, self.min_speech_ms
        )
        if reason is not None:
            return reason, {}
        return None, audio_measures(pcm, valid & ~padding, frames, self.sample_rate)


def encode_windows(
    graph: AudioGraph,
    windows: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    batch: int = 16,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(seq (T, d), step mask (T,)) of each (pcm, valid, padding) window, as
    ``Pipeline.audio_window`` computes them (features zeroed where the mask is 0)."""
    p, k = graph.params, graph.frames_per_step
    prepared = [fit_window(*w, p, k) for w in windows]
    mels = [compute_features(w[0], p) for w in prepared]
    out: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(windows)
    by_len: dict[int, list[int]] = {}
    for i, m in enumerate(mels):
        by_len.setdefault(len(m), []).append(i)
    for idx in by_len.values():
        for s in range(0, len(idx), batch):
            part = idx[s : s + batch]
            emb = graph.encode(np.stack([mels[i] for i in part]))
            for j, i in zip(part, emb):
                pcm, valid, padding = prepared[j]
                mask = step_mask(valid | padding, i.shape[0], k * p.hop_length)
                out[j] = ((i * mask[:, None]).astype(np.float32), mask)
    return out  # type: ignore[return-value]


# -----------------------------------------------------------------------------------------------
# augmentation: the benchmark's corruption functions, our own parameters and seeds

AUDIO_KINDS = (
    "white_noise",
    "pink_noise",
    "brown_noise",
    "babble",
    "reverb",
    "reverb_noise",
    "telephone",
    "clipping",
    "low_gain",
)
FACE_KINDS = (
    "darken",
    "sensor_noise",
    "motion_blur",
    "jpeg",
    "low_res",
    "occlude_upper",
    "occlude_lower",
)


def corrupt_audio(
    x: np.ndarray, kind: str, rng: np.random.Generator, talkers: Sequence[np.ndarray] = ()
) -> tuple[np.ndarray, dict]:
    """One corrupted copy of a 16 kHz clip and the parameters drawn (ranges in docs/models.md,
    section "Fusion v2"). The result is scaled to fit full scale, as the benchmark does."""
    u = rng.uniform
    if kind in ("white_noise", "pink_noise", "brown_noise"):
        exponent = {"white_noise": 0.0, "pink_noise": 1.0, "brown_noise": 2.0}[kind]
        prm = {"snr_db": round(u(-5.0, 25.0), 2)}
        y = C.mix_at_snr(x, C.colored_noise(len(x), exponent, rng), prm["snr_db"])
    elif kind == "babble":
        n = int(rng.integers(3, 7))
        chosen = [talkers[i] for i in rng.permutation(len(talkers))[:n]] if talkers else []
        if not chosen:  # no other speaker at hand: pink noise instead, said so in the params
            prm = {"snr_db": round(u(-3.0, 20.0), 2), "fallback": "pink_noise"}
            y = C.mix_at_snr(x, C.colored_noise(len(x), 1.0, rng), prm["snr_db"])
        else:
            prm = {"snr_db": round(u(-3.0, 20.0), 2), "talkers": len(chosen)}
            y = C.mix_at_snr(x, C.babble(len(x), chosen, rng), prm["snr_db"])
    elif kind == "reverb":
        prm = {"rt60_s": round(u(0.15, 1.3), 3), "drr_db": round(u(-8.0, 8.0), 2)}
        y = C.reverberate(x, prm["rt60_s"], prm["drr_db"], rng)
    elif kind == "reverb_noise":
        prm = {
            "rt60_s": round(u(0.2, 1.0), 3),
            "drr_db": round(u(-4.0, 6.0), 2),
            "snr_db": round(u(0.0, 20.0), 2),
        }
        y = C.reverberate(x, prm["rt60_s"], prm["drr_db"], rng)
        y = C.mix_at_snr(y, C.colored_noise(len(y), 1.0, rng), prm["snr_db"])
    elif kind == "telephone":
        prm = {
            "low_hz": round(u(200.0, 600.0)),
            "high_hz": round(u(2200.0, 3600.0)),
            "companding": bool(rng.random() < 0.6),
        }
        y = C.telephone(x, **prm)
    elif kind == "clipping":
        prm = {"clip_fraction": round(float(np.exp(u(np.log(0.03), np.log(0.6)))), 4)}
        y = C.clip_peaks(x, **prm)
    elif kind == "low_gain":
        prm = {"gain_db": round(u(-50.0, -12.0), 2)}
        y = C.low_gain(x, **prm)
    else:
        raise ValueError(f"unknown audio corruption {kind!r}; known: {AUDIO_KINDS}")
    return C.fit_full_scale(y), prm


def corrupt_face(img: np.ndarray, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """One corrupted copy of a face crop (uint8, as the camera delivers it) and the parameters."""
    u = rng.uniform
    if kind == "darken":
        prm = {"scale": round(u(0.08, 0.7), 3), "gamma": round(u(1.0, 2.0), 3)}
        y = C.darken(img, **prm)
    elif kind == "sensor_noise":
        prm = {"read_sigma": round(u(0.01, 0.12), 4), "shot": round(u(0.002, 0.06), 4)}
        y = C.sensor_noise(img, prm["read_sigma"], prm["shot"], rng)
    elif kind == "motion_blur":
        frac, angle = u(0.04, 0.35), u(0.0, 180.0)
        prm = {"face_fraction": round(frac, 3), "angle_deg": round(angle, 1)}
        y = C.motion_blur(img, frac * img.shape[1], angle)
    elif kind == "jpeg":
        prm = {"quality": int(rng.integers(5, 31))}
        y = C.jpeg(img, prm["quality"])
    elif kind == "low_res":
        prm = {"face_px": int(rng.integers(16, 41))}
        y = C.shrink_face(img, None, prm["face_px"])
    elif kind in ("occlude_upper", "occlude_lower"):
        prm = {"fraction": round(u(0.2, 1.0), 3), "value": int(rng.integers(0, 256))}
        y = C.occlude(img, None, kind.split("_")[1], prm["fraction"], prm["value"])
    else:
        raise ValueError(f"unknown face corruption {kind!r}; known: {FACE_KINDS}")
    return np.ascontiguousarray(y), prm


def jitter_face(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A nearby video frame of the same face: a shift of up to 2 px, maybe mirrored, a slight
    brightness and contrast change (the frames of a window in the synthetic pairs)."""
    pad = 2
    widths = ((pad, pad), (pad, pad)) + (((0, 0),) if img.ndim == 3 else ())
    p = np.pad(img, widths, mode="reflect")
    oy, ox = rng.integers(0, 2 * pad + 1, 2)
    h, w = img.shape[:2]
    y = p[oy : oy + h, ox : ox + w].astype(np.float64)
    if rng.random() < 0.5:
        y = y[:, ::-1]
    y = (y - 128.0) * rng.uniform(0.85, 1.15) + 128.0 + rng.uniform(-20.0, 20.0)
    return np.ascontiguousarray(np.clip(y + 0.5, 0, 255).astype(np.uint8))


def aug_rng(seed: int, set_name: str, item: int, copy: int) -> np.random.Generator:
    """The generator of one copy of one item of a set (independent of shards and order)."""
    return np.random.default_rng([seed, SEED_TAG, zlib.crc32(set_name.encode()), item, copy])


# -----------------------------------------------------------------------------------------------
# data: CREMA-D items, PCM, FER2013 images


@dataclass(frozen=True)
class Item:
    """One labelled clip: name (CREMA-D file stem), label index, speaker, and where its label
    comes from (``partition`` split name, or ``summary`` for summaryTable's plurality vote)."""

    name: str
    label: int
    speaker: str
    source: str


VOTE = {"A": "anger", "D": "disgust", "F": "fear", "H": "happiness", "N": "neutral", "S": "sadness"}
"""summaryTable.csv MultiModalVote letters -> project labels."""


def cremad_items(partition: int = 1, root: Path = DATA_ROOT, extras: bool = True) -> list[Item]:
    """Every labelled CREMA-D clip: the partition file's clips (perceived label = argmax of the
    six scores, ties dropped, as :func:`train.data.load_cremad_partition`) with their split as
    ``source``, plus (``extras``) the clips the partition file leaves out whose perceived
    audio-visual vote in ``summaryTable.csv`` (MultiModalVote) names one class (no tie) as
    ``source="summary"``."""
    items = []
    seen = set()
    with open(root / "cremad" / "labels" / f"partition_{partition}.csv", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            name = row["FileName"].rsplit(".", 1)[0]
            seen.add(name)
            scores = np.array([float(row[c]) for c in CREMAD_COLUMNS])
            if (scores == scores.max()).sum() > 1:
                continue
            label = LABELS.index(CREMAD_COLUMNS[list(CREMAD_COLUMNS)[int(scores.argmax())]])
            items.append(Item(name, label, row["SpkrID"], row["Split_Set"]))
    if extras:
        ties = 0
        with open(root / "cremad" / "labels" / "summaryTable.csv", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                name = row["FileName"]
                if name in seen:
                    continue
                vote = row["MultiModalVote"]
                if vote not in VOTE:
                    ties += 1
                    continue
                items.append(Item(name, LABELS.index(VOTE[vote]), name.split("_")[0], "summary"))
        logger.info(
            "CREMA-D: %d partition clips, %d more with a single summaryTable vote (%d tied left "
            "out)",
            len(seen),
            sum(i.source == "summary" for i in items),
            ties,
        )
    return items


class PcmStore:
    """16 kHz PCM of CREMA-D clips, decoded once and kept as int16 in one npz (names, offsets,
    data); :meth:`get` returns float32."""

    def __init__(self, cache: Path | None, root: Path = DATA_ROOT) -> None:
        self.cache, self.root = cache, root
        self._pcm: dict[str, np.ndarray] = {}
        if cache is not None and cache.is_file():
            with np.load(cache) as z:
                offsets, data = z["offsets"], z["data"]
                for i, n in enumerate(z["names"].tolist()):
                    self._pcm[n] = data[offsets[i] : offsets[i + 1]]

    def ensure(self, names: Sequence[str]) -> None:
        """Decode the clips not stored yet (and save the store when it has a cache file)."""
        todo = sorted(set(names) - set(self._pcm))
        if not todo:
            return
        t0 = time.time()
        for n in todo:
            x = read_audio(cremad_audio_path(n, self.root), SR)
            self._pcm[n] = np.round(np.clip(x, -1.0, 1.0) * 32767).astype(np.int16)
        logger.info("decoded %d clips in %.0f s", len(todo), time.time() - t0)
        if self.cache is not None:
            keys = sorted(self._pcm)
            self.cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.cache.with_suffix(".tmp.npz")
            np.savez(
                tmp,
                names=np.array(keys),
                offsets=np.cumsum([0] + [len(self._pcm[k]) for k in keys]),
                data=np.concatenate([self._pcm[k] for k in keys]),
            )
            tmp.replace(self.cache)

    def get(self, name: str) -> np.ndarray:
        return self._pcm[name].astype(np.float32) / 32767.0


def fer_images(
    usage: str,
    root: Path = DATA_ROOT,
    limit_per_class: int = 0,
    classes: Sequence[str] = LABELS,
) -> tuple[np.ndarray, np.ndarray]:
    """FER2013 faces of one usage with a label among ``classes`` (the project's LABELS: surprise
    dropped; ``train.FER_CLASSES`` for a face encoder's 7-class head): uint8 (N, 48, 48, 3) BGR,
    as ``cv2.imread(IMREAD_COLOR)`` gives them to the robustness benchmark, and label indices
    into ``classes``. ``limit_per_class`` > 0 keeps the first N of each class (smoke runs)."""
    import cv2

    base = root / "fer2013"
    with open(base / "manifest.csv", newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["usage"] == usage and r["label"] in classes]
    if limit_per_class:
        kept, seen = [], {}
        for r in rows:
            if seen.get(r["label"], 0) < limit_per_class:
                seen[r["label"]] = seen.get(r["label"], 0) + 1
                kept.append(r)
        rows = kept
    imgs = np.empty((len(rows), 48, 48, 3), np.uint8)
    for i, r in enumerate(rows):
        img = cv2.imread(str(base / r["file"]), cv2.IMREAD_COLOR)
        if img is None or img.shape != (48, 48, 3):
            raise OSError(f"{base / r['file']}: not a 48x48 image")
        imgs[i] = img
    return imgs, np.array([list(classes).index(r["label"]) for r in rows], np.int64)


# -----------------------------------------------------------------------------------------------
# what the scripts share: encoders from files, the CREMA-D and FER2013 splits


def read_params_json(path: str | Path, keys: tuple[str, ...]) -> dict:
    """A parameter dict from a JSON file: the dict itself, or the first of ``keys`` it holds
    (``audio`` or ``face`` of a model.json, ``frontend`` of ``train.export_speech``'s report)."""
    d = json.loads(Path(path).read_text())
    for k in keys:
        if isinstance(d.get(k), dict):
            return d[k]
    return d


def load_encoders(
    audio_encoder: str | Path,
    audio_frontend: str | Path,
    face_encoder: str | Path,
    face_params: str | Path | None,
    stream: StreamParams,
    threads: int = 1,
) -> tuple[AudioGraph, FaceGraph, StreamParams]:
    """The two encoder graphs and the stream parameters (``audio_frames_per_step`` measured on
    the audio encoder).

    Args:
        audio_encoder, face_encoder: ONNX files.
        audio_frontend: JSON of the audio front-end parameters (see :func:`read_params_json`).
        face_params: JSON of the face crop parameters; empty or None: the defaults at the face
            encoder's input size.
        stream: window, hop and frame rate (its ``audio_frames_per_step`` is replaced).
    """
    from emosdk.features.whisper import params_from_dict

    if not audio_encoder or not face_encoder or not audio_frontend:
        raise ValueError("an audio encoder, its front-end JSON and a face encoder are required")
    audio_p = params_from_dict(read_params_json(audio_frontend, ("audio", "frontend")))
    face_p = FaceParams.from_dict(read_params_json(face_params, ("face",))) if face_params else None
    audio = AudioGraph(audio_encoder, audio_p, threads)
    face = FaceGraph(face_encoder, face_p, threads)
    return (
        audio,
        face,
        StreamParams(stream.window_s, stream.hop_s, stream.video_fps, audio.frames_per_step),
    )


def split_items(
    partition: int = 1, root: Path = DATA_ROOT, extras: bool = True, limit: int = 0
) -> dict[str, list[Item]]:
    """CREMA-D items per role: ``select`` (the partition's Train speakers), ``final`` (every
    speaker but the partition's Test speakers), ``dev`` and ``test`` (its Development and Test
    clips). ``limit`` > 0 keeps the first N of each (smoke runs)."""
    items = cremad_items(partition, root, extras)
    test_spk = {it.speaker for it in items if it.source == "Test"}
    dev_spk = {it.speaker for it in items if it.source == "Development"}
    out = {
        "final": [it for it in items if it.speaker not in test_spk],
        "select": [it for it in items if it.speaker not in test_spk | dev_spk],
        "dev": [it for it in items if it.source == "Development"],
        "test": [it for it in items if it.source == "Test"],
    }
    if limit:
        out = {k: v[:limit] for k, v in out.items()}
        out["final"] = list({it.name: it for it in out["select"] + out["final"]}.values())
    return out


def talker_pool(items: Sequence[Item], seed: int, size: int = 64) -> list[Item]:
    """Babble talkers: at most two clips per speaker, ``size`` in all (seeded)."""
    order = np.random.default_rng([seed, 0xBAB]).permutation(len(items))
    per: dict[str, int] = {}
    pool = []
    for i in order:
        it = items[int(i)]
        if per.get(it.speaker, 0) < 2 and len(pool) < size:
            per[it.speaker] = per.get(it.speaker, 0) + 1
            pool.append(it)
    return pool


def face_halves(labels: np.ndarray) -> np.ndarray:
    """True for the PublicTest faces of the test half (every second face of each class; the
    other half selects)."""
    half = np.zeros(len(labels), bool)
    for c in range(len(LABELS)):
        half[np.flatnonzero(labels == c)[1::2]] = True
    return half


def calib_split(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """True for about ``n`` FER2013 Training faces held out of fusion training for the quality
    calibration (stratified by label, seeded)."""
    rng = np.random.default_rng([seed, 0xCA1])
    held = np.zeros(len(labels), bool)
    share = min(1.0, n / max(len(labels), 1))
    for c in range(len(LABELS)):
        idx = np.flatnonzero(labels == c)
        held[rng.permutation(idx)[: int(round(share * len(idx)))]] = True
    return held


# -----------------------------------------------------------------------------------------------
# cached embedding sets


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _as_table(measures: list[dict[str, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Measure dicts (some empty) -> (names, (N, M) float32, NaN where a dict is empty)."""
    names = next((list(m) for m in measures if m), [])
    table = np.full((len(measures), len(names)), np.nan, np.float32)
    for i, m in enumerate(measures):
        if m:
            table[i] = [m[k] for k in names]
    return np.array(names), table


@dataclass
class AudioSet:
    """Embedded windows of clips: ``copies`` per item, the first ``n_clean`` clean.

    Attributes:
        names, labels, speakers: per item.
        data: (steps in all, d) float16; window (i, c) is rows ``offsets[i * copies + c]`` to
            ``offsets[i * copies + c + 1]``.
        masks: (steps in all,) the runtime's step mask of each step.
        n_samples: (items, copies) samples in each window (for the frame grid).
        kind: (items, copies) index into :data:`AUDIO_KINDS`, -1 for clean copies.
        params: (items, copies) JSON of the drawn corruption parameters.
        missing: (items, copies) the runtime would find no usable audio (no speech).
        measure_names: the runtime's quality measures, in the order of ``measures``.
        measures: (items, copies, M) (NaN when missing).
    """

    names: np.ndarray
    labels: np.ndarray
    speakers: np.ndarray
    copies: int
    n_clean: int
    data: np.ndarray
    masks: np.ndarray
    offsets: np.ndarray
    n_samples: np.ndarray
    kind: np.ndarray
    params: np.ndarray
    missing: np.ndarray
    measure_names: tuple[str, ...]
    measures: np.ndarray
    meta: dict = field(default_factory=dict)

    def window(self, i: int, c: int) -> tuple[np.ndarray, np.ndarray]:
        """(seq (T, d) float32, mask (T,)) of copy ``c`` of item ``i``."""
        a, b = self.offsets[i * self.copies + c], self.offsets[i * self.copies + c + 1]
        return self.data[a:b].astype(np.float32), self.masks[a:b].astype(np.float32)

    def fixed(self) -> tuple[np.ndarray, np.ndarray]:
        """(items, copies, T, d) and (items, copies, T) views when every window has T steps."""
        lens = np.diff(self.offsets)
        if not (lens == lens[0]).all():
            raise ValueError("windows of different lengths: no fixed view")
        n, c, t = len(self.names), self.copies, int(lens[0])
        return self.data.reshape(n, c, t, -1), self.masks.reshape(n, c, t)

    def measure(self, i: int, c: int) -> dict[str, float]:
        return dict(zip(self.measure_names, map(float, self.measures[i, c])))


def audio_set(
    cache_dir: Path,
    set_name: str,
    items: Sequence[Item],
    store: PcmStore,
    graph: AudioGraph,
    stream: StreamParams,
    *,
    mode: str,
    n_clean: int,
    k: int,
    seed: int,
    talkers: Sequence[Item] = (),
    shard: int = 128,
) -> AudioSet:
    """Embed ``n_clean`` clean and ``k`` corrupted windows of every item (cached, resumable).

    Each shard of ``shard`` items keeps its embeddings (``shard_NNNN.npz``, keyed by the encoder,
    front end, windows, items and seed) apart from the runtime's verdicts on them (voice
    activity, quality measures: ``measures_<runtime_key>_NNNN.npz``), so a change of the
    runtime's quality code recomputes the measures and keeps the embeddings.

    Args:
        mode: ``"predict"`` (the clip centred as ``Recognizer.predict`` places it; clean copies
            beyond the first are identical, so use ``n_clean=1``) or ``"stream"`` (a random
            window of a stream over the clip per copy).
        talkers: clips babble may mix in; for each item only other speakers' clips are used.
        shard: items per cache shard.
    """
    if mode not in ("predict", "stream"):
        raise ValueError(f"mode must be 'predict' or 'stream', got {mode!r}")
    names = [it.name for it in items]
    key = _key(
        AUG_VERSION,
        graph.sha256,
        graph.params.to_dict(),
        stream.window_s,
        mode,
        n_clean,
        k,
        seed,
        names,
        [t.name for t in talkers],
    )
    folder = cache_dir / f"audio_{set_name}_{graph.sha256[:12]}_s{seed}_{key}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "key.json").write_text(
        json.dumps(
            {
                "set": set_name,
                "encoder": str(graph.path),
                "encoder_sha256": graph.sha256,
                "frontend": graph.params.to_dict(),
                "window_s": stream.window_s,
                "mode": mode,
                "n_clean": n_clean,
                "k": k,
                "seed": seed,
                "items": len(names),
            },
            indent=1,
        )
    )
    judge = AudioJudge()
    rkey = runtime_key()
    copies = n_clean + k
    n_shards = math.ceil(len(items) / shard)
    store.ensure(names + [t.name for t in talkers])
    talker_pcm = [(t.speaker, store.get(t.name)) for t in talkers]

    def windows_of(part: range):
        for i in part:
            it = items[i]
            pcm = store.get(it.name)
            others = [x for spk, x in talker_pcm if spk != it.speaker]
            for c in range(copies):
                rng = aug_rng(seed, set_name, i, c)
                kind, prm, x = -1, {}, pcm
                if c >= n_clean:
                    kind = (i * k + c - n_clean) % len(AUDIO_KINDS)
                    pool = [others[j] for j in rng.permutation(len(others))[:8]]
                    x, prm = corrupt_audio(pcm, AUDIO_KINDS[kind], rng, pool)
                if mode == "predict":
                    w = predict_window(x, stream.window_s)
                else:
                    w = stream_window(x, stream.window_s, rng)
                yield w, kind, prm

    for s in range(n_shards):
        path = folder / f"shard_{s:04d}.npz"
        mpath = folder / f"measures_{rkey}_{s:04d}.npz"
        if path.is_file() and mpath.is_file():
            continue
        t0 = time.time()
        part = range(s * shard, min(len(items), (s + 1) * shard))
        windows, kinds, prms, verdicts = [], [], [], []
        for w, kind, prm in windows_of(part):
            verdicts.append(judge(*fit_window(*w, graph.params, graph.frames_per_step)))
            windows.append(w)
            kinds.append(kind)
            prms.append(json.dumps(prm))
        if not path.is_file():
            enc = encode_windows(graph, windows)
            np.savez(
                folder / f"shard_{s:04d}.tmp.npz",
                data=np.concatenate([e[0] for e in enc]).astype(np.float16),
                masks=np.concatenate([e[1] for e in enc]).astype(np.uint8),
                lens=np.array([len(e[1]) for e in enc]),
                kind=np.array(kinds, np.int16),
                params=np.array(prms),
                n_samples=np.array([len(w[0]) for w in windows]),
            )
            (folder / f"shard_{s:04d}.tmp.npz").replace(path)
        with np.load(path) as z:  # a window whose every step is masked is missing too
            steps = np.split(z["masks"], np.cumsum(z["lens"])[:-1])
        mnames, table = _as_table([m for _, m in verdicts])
        np.savez(
            folder / f"measures_{rkey}_{s:04d}.tmp.npz",
            names=mnames,
            measures=table,
            missing=np.array(
                [why is not None or not st.any() for (why, _), st in zip(verdicts, steps)]
            ),
        )
        (folder / f"measures_{rkey}_{s:04d}.tmp.npz").replace(mpath)
        logger.info(
            "%s: shard %d/%d (%d windows) in %.0f s",
            folder.name,
            s + 1,
            n_shards,
            len(windows),
            time.time() - t0,
        )
    keep = ("data", "masks", "lens", "kind", "params", "n_samples")
    parts = [np.load(folder / f"shard_{s:04d}.npz") for s in range(n_shards)]
    cat = {key: np.concatenate([p[key] for p in parts]) for key in keep}
    mparts = [np.load(folder / f"measures_{rkey}_{s:04d}.npz") for s in range(n_shards)]
    mnames = next((tuple(p["names"].tolist()) for p in mparts if len(p["names"])), ())
    n = len(items)
    return AudioSet(
        names=np.array(names),
        labels=np.array([it.label for it in items], np.int64),
        speakers=np.array([it.speaker for it in items]),
        copies=copies,
        n_clean=n_clean,
        data=cat["data"],
        masks=cat["masks"],
        offsets=np.concatenate([[0], np.cumsum(cat["lens"])]),
        n_samples=cat["n_samples"].reshape(n, copies),
        kind=cat["kind"].reshape(n, copies),
        params=cat["params"].reshape(n, copies),
        missing=np.concatenate([p["missing"] for p in mparts]).reshape(n, copies),
        measure_names=mnames,
        measures=np.concatenate(
            [
                p["measures"]
                if len(p["names"])
                else np.full((len(p["missing"]), len(mnames)), np.nan, np.float32)
                for p in mparts
            ]
        ).reshape(n, copies, -1),
        meta={"folder": str(folder), "set": set_name, "mode": mode, "seed": seed, "runtime": rkey},
    )


@dataclass
class FaceSet:
    """Embedded copies of face crops: copy 0 clean, then ``n_jitter`` nearby frames, then ``k``
    corrupted copies.

    Attributes:
        emb: (faces, copies, d) float16.
        labels: (faces,) label indices.
        kind: (faces, copies) index into :data:`FACE_KINDS`, -1 clean, -2 jittered.
        params: (faces, copies) JSON of the corruption parameters.
        measure_names: the runtime's face quality measures, in the order of ``measures``.
        measures: (faces, copies, M).
    """

    emb: np.ndarray
    labels: np.ndarray
    n_jitter: int
    k: int
    kind: np.ndarray
    params: np.ndarray
    measure_names: tuple[str, ...]
    measures: np.ndarray
    meta: dict = field(default_factory=dict)

    @property
    def corrupted(self) -> slice:
        return slice(1 + self.n_jitter, 1 + self.n_jitter + self.k)

    def measure(self, i: int, c: int) -> dict[str, float]:
        return dict(zip(self.measure_names, map(float, self.measures[i, c])))


def face_set(
    cache_dir: Path,
    set_name: str,
    images: np.ndarray,
    labels: np.ndarray,
    graph: FaceGraph,
    *,
    n_jitter: int,
    k: int,
    seed: int,
    shard: int = 2048,
    batch: int = 256,
) -> FaceSet:
    """Embed every face clean, ``n_jitter`` jittered and ``k`` corrupted (cached, resumable;
    measures apart from embeddings, as in :func:`audio_set`)."""
    key = _key(
        AUG_VERSION,
        graph.sha256,
        graph.params.to_dict(),
        n_jitter,
        k,
        seed,
        hashlib.sha256(images.tobytes()).hexdigest(),
    )
    folder = cache_dir / f"face_{set_name}_{graph.sha256[:12]}_s{seed}_{key}"
    folder.mkdir(parents=True, exist_ok=True)
    rkey = runtime_key()
    copies = 1 + n_jitter + k
    n_shards = math.ceil(len(images) / shard)
    for s in range(n_shards):
        path = folder / f"shard_{s:04d}.npz"
        mpath = folder / f"measures_{rkey}_{s:04d}.npz"
        if path.is_file() and mpath.is_file():
            continue
        t0 = time.time()
        xs, kinds, prms, meas = [], [], [], []
        for i in range(s * shard, min(len(images), (s + 1) * shard)):
            for c in range(copies):
                rng = aug_rng(seed, set_name, i, c)
                img, kind, prm = images[i], -1, {}
                if 1 <= c <= n_jitter:
                    img, kind = jitter_face(img, rng), -2
                elif c > n_jitter:
                    kind = (i * k + c - 1 - n_jitter) % len(FACE_KINDS)
                    img, prm = corrupt_face(img, FACE_KINDS[kind], rng)
                x, m = graph.prepare(img)
                xs.append(x)
                kinds.append(kind)
                prms.append(json.dumps(prm))
                meas.append(m)
        if not path.is_file():
            x = np.stack(xs)
            emb = np.concatenate([graph.encode(x[j : j + batch]) for j in range(0, len(x), batch)])
            np.savez(
                folder / f"shard_{s:04d}.tmp.npz",
                emb=emb.astype(np.float16),
                kind=np.array(kinds, np.int16),
                params=np.array(prms),
            )
            (folder / f"shard_{s:04d}.tmp.npz").replace(path)
        mnames, table = _as_table(meas)
        np.savez(folder / f"measures_{rkey}_{s:04d}.tmp.npz", names=mnames, measures=table)
        (folder / f"measures_{rkey}_{s:04d}.tmp.npz").replace(mpath)
        logger.info(
            "%s: shard %d/%d (%d crops) in %.0f s",
            folder.name,
            s + 1,
            n_shards,
            len(xs),
            time.time() - t0,
        )
    keep = ("emb", "kind", "params")
    parts = [np.load(folder / f"shard_{s:04d}.npz") for s in range(n_shards)]
    cat = {key: np.concatenate([p[key] for p in parts]) for key in keep}
    mparts = [np.load(folder / f"measures_{rkey}_{s:04d}.npz") for s in range(n_shards)]
    n = len(images)
    return FaceSet(
        emb=cat["emb"].reshape(n, copies, -1),
        labels=np.asarray(labels, np.int64),
        n_jitter=n_jitter,
        k=k,
        kind=cat["kind"].reshape(n, copies),
        params=cat["params"].reshape(n, copies),
        measure_names=tuple(mparts[0]["names"].tolist()),
        measures=np.concatenate([p["measures"] for p in mparts]).reshape(n, copies, -1),
        meta={"folder": str(folder), "set": set_name, "seed": seed, "runtime": rkey},
    )


def pair_by_label(
    clip_labels: np.ndarray, face_labels: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """For each clip, a random face with the same label (SYNTHETIC PAIRS)."""
    by = {c: np.flatnonzero(face_labels == c) for c in range(len(LABELS))}
    return np.array([rng.choice(by[int(c)]) for c in clip_labels])


def eval_pairs(
    dev_labels: np.ndarray, test_labels: np.ndarray, pt_labels: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """The fixed SYNTHETIC PAIRS of evaluation: each Development clip with a face of the
    selection half of FER2013 PublicTest, each Test clip with a face of the test half
    (:func:`face_halves`); indices into PublicTest."""
    half = face_halves(pt_labels)
    rng = np.random.default_rng([seed, 4])
    sel, test = np.flatnonzero(~half), np.flatnonzero(half)
    dev_pair = sel[pair_by_label(dev_labels, pt_labels[sel], rng)]
    return dev_pair, test[pair_by_label(test_labels, pt_labels[test], rng)]


# -----------------------------------------------------------------------------------------------
# evaluation: windows as predict() builds them, the quality gate, metrics

Fusion = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], dict[str, np.ndarray]]
"""(audio (B, Ta, Da), audio_mask (B, Ta), video (B, Tv, Dv), video_mask (B, Tv)) -> outputs
by name: ``logits`` and, when the model has them, the unimodal auxiliary heads
``logits_audio`` / ``logits_video`` (each (B, C))."""

FUSION_OUTPUTS = ("logits", "logits_av", "logits_audio", "logits_video")


def torch_fusion(model) -> Fusion:
    """A torch fusion module (``AuxFormerDeploy``) as a :data:`Fusion` (eval mode, no grad)."""
    import torch

    model.eval()

    def run(a, am, v, vm):
        with torch.no_grad():
            t = [torch.from_numpy(np.ascontiguousarray(x, np.float32)) for x in (a, am, v, vm)]
            return {k: o.numpy() for k, o in zip(FUSION_OUTPUTS, model(*t))}

    return run


def onnx_fusion(path: str | Path, threads: int = 1) -> Fusion:
    """A fusion ONNX graph (inputs audio, audio_mask, video, video_mask; outputs ``logits`` and
    the auxiliary heads it has)."""
    sess = ort_session(path, threads)
    names = [o.name for o in sess.get_outputs() if o.name in FUSION_OUTPUTS]

    def run(a, am, v, vm):
        feeds = {"audio": a, "audio_mask": am, "video": v, "video_mask": vm}
        feeds = {k: np.ascontiguousarray(x, np.float32) for k, x in feeds.items()}
        return dict(zip(names, sess.run(names, feeds)))

    return run


@dataclass
class Case:
    """One predict() call of an evaluation: clip ``item`` with audio copy ``a`` (None: no audio)
    and the face of the pair with copy ``f`` (None: no face)."""

    item: int
    a: int | None
    f: int | None
    condition: str
    mode: str


def cases(n_items: int, k_audio: int, k_face: int, face_offset: int = 1) -> list[Case]:
    """Every case of the evaluation grid: per clip, AV clean / audio corrupted / video corrupted
    / both corrupted (copy j of each), audio only and video only, clean and corrupted. Face copy
    ``face_offset + j`` is the j-th corrupted face copy."""
    out = []
    k = min(k_audio, k_face)
    for i in range(n_items):
        out.append(Case(i, 0, 0, "clean", "av"))
        out.append(Case(i, 0, None, "clean", "audio_only"))
        out.append(Case(i, None, 0, "clean", "video_only"))
        for j in range(k_audio):
            out.append(Case(i, 1 + j, 0, "audio_corrupted", "av"))
            out.append(Case(i, 1 + j, None, "corrupted", "audio_only"))
        for j in range(k_face):
            out.append(Case(i, 0, face_offset + j, "video_corrupted", "av"))
            out.append(Case(i, None, face_offset + j, "corrupted", "video_only"))
        for j in range(k):
            out.append(Case(i, 1 + j, face_offset + j, "both_corrupted", "av"))
    return out


def predict_cases(
    fusion: Fusion,
    aset: AudioSet,
    fset: FaceSet,
    pair: np.ndarray,
    stream: StreamParams,
    audio_params: AudioParams,
    frames_per_step: int,
    todo: Sequence[Case],
    rules: QualityRules | None = None,
    batch: int = 256,
) -> dict[str, np.ndarray]:
    """Labels of ``todo`` as ``Recognizer.predict`` would give them.

    Missing audio (no speech) is left out, as the runtime leaves it; with ``rules`` each present
    modality gets its reliability verdict on its signal measures and, as with ``quality_gate``
    on, an unreliable modality next to a reliable one is left out of the fusion; each used
    modality's auxiliary head's confidence (``audio_confidence`` / ``face_confidence``, when the
    fusion gives the heads) then joins its verdict, as in ``Pipeline.fuse``.

    Returns:
        ``pred`` (-1: no label), ``reliable`` (1/0, -1 unknown: no rules or no label),
        ``used`` (bit 1 audio, bit 2 video), ``probs`` (softmax of ``logits``, zeros where
        there is no label), ``audio_confidence`` / ``face_confidence`` (NaN where the modality
        was not used or the fusion has no such head).
    """
    fps = stream.video_fps
    n_missing_steps = max(1, audio_params.num_frames(int(stream.window_s * SR)) // frames_per_step)
    d_a, d_v = aset.data.shape[1], fset.emb.shape[2]
    pred = np.full(len(todo), -1, np.int64)
    reliable = np.full(len(todo), -1, np.int64)
    used_bits = np.zeros(len(todo), np.int64)
    probs = np.zeros((len(todo), len(LABELS)), np.float32)
    conf = {"a": np.full(len(todo), np.nan), "v": np.full(len(todo), np.nan)}
    measures: dict[tuple[int, str], dict[str, float]] = {}
    groups: dict[tuple[int, int], list[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]]
    groups = {}
    for n, c in enumerate(todo):
        a_ok = c.a is not None and not aset.missing[c.item, c.a]
        v_ok = c.f is not None
        if c.a is not None:
            samples = int(aset.n_samples[c.item, c.a])
        else:
            samples = int(round(stream.window_s * SR))
        tv = max(1, int(round(samples / SR * fps)))
        verdict = {}
        if rules is not None:
            if a_ok:
                measures[n, "a"] = aset.measure(c.item, c.a)
                verdict["a"] = health.audio_unreliable(measures[n, "a"], rules) is None
            if v_ok:
                measures[n, "v"] = fset.measure(pair[c.item], c.f)
                verdict["v"] = health.video_unreliable(measures[n, "v"], rules) is None
            if a_ok and v_ok and verdict["a"] != verdict["v"]:  # health.gate
                a_ok, v_ok = verdict["a"], verdict["v"]
        if not (a_ok or v_ok):
            continue
        if c.a is not None:
            seq, am = aset.window(c.item, c.a)
        else:
            seq, am = np.zeros((n_missing_steps, d_a), np.float32), np.zeros(n_missing_steps)
        if not a_ok:
            seq, am = np.zeros_like(seq), np.zeros_like(am)
        if v_ok:
            vid = np.repeat(fset.emb[pair[c.item], c.f][None].astype(np.float32), tv, 0)
            vm = np.ones(tv, np.float32)
        else:
            vid, vm = np.zeros((tv, d_v), np.float32), np.zeros(tv, np.float32)
        used_bits[n] = int(a_ok) + 2 * int(v_ok)
        groups.setdefault((len(am), tv), []).append((n, seq, am, vid, vm))
    heads = (("a", "logits_audio", "audio_confidence"), ("v", "logits_video", "face_confidence"))
    judge = {"a": health.audio_unreliable, "v": health.video_unreliable}
    for rows in groups.values():
        for s in range(0, len(rows), batch):
            part = rows[s : s + batch]
            out = fusion(*(np.stack([r[j] for r in part]) for j in range(1, 5)))
            for i, (n, *_) in enumerate(part):
                logits = out["logits"][i]
                pred[n] = int(np.argmax(logits))
                e = np.exp(logits - logits.max())
                probs[n] = e / e.sum()
                for bit, (m, head, name) in enumerate(heads):
                    if used_bits[n] >> bit & 1 and head in out:
                        conf[m][n] = head_confidence(out[head][i])
                        if (n, m) in measures:
                            measures[n, m][name] = float(conf[m][n])
                if rules is not None:  # the used modalities' verdicts, confidence included
                    reliable[n] = int(
                        all(
                            judge[m](measures[n, m], rules) is None
                            for bit, m in enumerate("av")
                            if used_bits[n] >> bit & 1
                        )
                    )
    return {
        "pred": pred,
        "reliable": reliable,
        "used": used_bits,
        "probs": probs,
        "audio_confidence": conf["a"],
        "face_confidence": conf["v"],
    }


def score(y: np.ndarray, pred: np.ndarray) -> dict:
    """Accuracy and macro-F1 with no label counted as wrong (``emosdk-bench robustness``)."""
    ext = list(LABELS) + ["(none)"]
    p = np.where(pred < 0, len(LABELS), pred)
    rep = classification_report(y, p, ext)
    per = rep["per_class"]
    present = [lab for i, lab in enumerate(LABELS) if per[lab]["support"] or (p == i).any()]
    return {
        "n": int(len(y)),
        "accuracy": rep["accuracy"],
        "macro_f1": float(np.mean([per[lab]["f1"] for lab in present])) if present else 0.0,
        "answered": float((pred >= 0).mean()) if len(pred) else 0.0,
    }


def by_quality(y: np.ndarray, pred: np.ndarray, reliable: np.ndarray) -> dict:
    """Accuracy and share of the results marked reliable and unreliable (answered ones)."""
    out = {}
    answered = pred >= 0
    for name, want in (("reliable", 1), ("unreliable", 0)):
        idx = answered & (reliable == want)
        out[name] = {
            "n": int(idx.sum()),
            "share": float(idx.sum() / max(answered.sum(), 1)),
            "accuracy": float((pred[idx] == y[idx]).mean()) if idx.any() else None,
        }
    r, u = out["reliable"]["accuracy"], out["unreliable"]["accuracy"]
    out["gap"] = None if r is None or u is None else r - u
    return out


def evaluate(
    fusion: Fusion,
    aset: AudioSet,
    fset: FaceSet,
    pair: np.ndarray,
    stream: StreamParams,
    audio_params: AudioParams,
    frames_per_step: int,
    rules: QualityRules | None = None,
) -> dict:
    """Figures per mode and condition on synthetic pairs (SYNTHETIC PAIRS: clip ``i`` with face
    ``pair[i]``), clean and corrupted, plus per corruption kind for the unimodal modes; with
    ``rules`` also ``by_quality`` (reliable vs unreliable) per mode and condition."""
    k_a = aset.copies - aset.n_clean
    todo = cases(len(aset.names), k_a, fset.k, 1 + fset.n_jitter)
    res = predict_cases(
        fusion, aset, fset, pair, stream, audio_params, frames_per_step, todo, rules
    )
    y = aset.labels[[c.item for c in todo]]
    keyed: dict[str, list[int]] = {}
    for n, c in enumerate(todo):
        keyed.setdefault(f"{c.mode}/{c.condition}", []).append(n)
        if c.mode == "audio_only" and c.condition == "corrupted":
            keyed.setdefault(f"audio_kind/{AUDIO_KINDS[aset.kind[c.item, c.a]]}", []).append(n)
        if c.mode == "video_only" and c.condition == "corrupted":
            kind = FACE_KINDS[fset.kind[pair[c.item], c.f]]
            keyed.setdefault(f"video_kind/{kind}", []).append(n)
    out: dict = {}
    for key, idx in sorted(keyed.items()):
        ix = np.array(idx)
        out[key] = score(y[ix], res["pred"][ix])
        out[key]["audio_used"] = float((res["used"][ix] & 1).astype(bool).mean())
        out[key]["video_used"] = float((res["used"][ix] & 2).astype(bool).mean())
        if rules is not None:
            out[key]["by_quality"] = by_quality(y[ix], res["pred"][ix], res["reliable"][ix])
    return out


def headline(metrics: dict) -> dict[str, float]:
    """macro-F1 per mode, clean and corrupted (the selection figure is their mean)."""
    keys = {
        "av_clean": "av/clean",
        "av_audio_corrupted": "av/audio_corrupted",
        "av_video_corrupted": "av/video_corrupted",
        "av_both_corrupted": "av/both_corrupted",
        "audio_only_clean": "audio_only/clean",
        "audio_only_corrupted": "audio_only/corrupted",
        "video_only_clean": "video_only/clean",
        "video_only_corrupted": "video_only/corrupted",
    }
    out = {k: metrics[v]["macro_f1"] for k, v in keys.items() if v in metrics}
    sel = ("av_clean", "av_both_corrupted", "audio_only_clean", "audio_only_corrupted")
    sel += ("video_only_clean", "video_only_corrupted")
    out["selection_mean_macro_f1"] = float(np.mean([out[k] for k in sel if k in out]))
    return out
