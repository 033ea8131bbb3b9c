"""Accuracy and latency of a Recognizer on real files: the library behind ``emosdk-bench``.

``accuracy`` scores a manifest of files (audio clips, face images, videos) one prediction per
file; ``latency`` times a streamed clip per stage and the graphs' throughput. The JSON they
return is the contract of ARCHITECTURE section 7 (schema: ``bench_schema.json``, docs/bench.md).
"""

from __future__ import annotations

import csv
import logging
import os
import platform
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__
from .backends import available_backends
from .errors import InputError
from .metrics import classification_report
from .recognizer import Recognizer

logger = logging.getLogger("emosdk")

AUDIO_EXT = {".wav", ".flac", ".ogg", ".opus", ".mp3", ".m4a"}
IMAGE_EXT = {".jpg", ".jpeg", ".png", ".bmp"}
VIDEO_EXT = {".mp4", ".flv", ".avi", ".webm", ".mkv", ".mov"}
SYNONYMS = {
    "angry": "anger",
    "ang": "anger",
    "disgusted": "disgust",
    "dis": "disgust",
    "fearful": "fear",
    "fea": "fear",
    "happy": "happiness",
    "hap": "happiness",
    "joy": "happiness",
    "neu": "neutral",
    "sad": "sadness",
}
MASK_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def default_clips_manifest() -> Path:
    """The manifest of the real CREMA-D clips shipped in the package (:mod:`emosdk.samples`)."""
    from . import samples

    return samples.manifest()


# -- environment ---------------------------------------------------------------------------
CPU_ISA_FLAGS = (
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_int8",
    "asimddp",
    "i8mm",
    "sve",
)
"""The CPU features int8 and float speed depend on (ONNX Runtime's int8 kernels use VNNI or
ARM's dot-product instructions where present: the same int8 graph can be twice as fast)."""


def cpu_details(cpuinfo: str | None = None) -> dict:
    """The CPU's model name, vendor id (family/model/stepping, or ARM's implementer/part) and
    the :data:`CPU_ISA_FLAGS` it has, from ``/proc/cpuinfo`` (or the text given); empty fields
    where the system does not say."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip()
        if sep and key not in fields:  # the first processor's entry
            fields[key] = value.strip()
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    ident = [
        f"{k} {fields[k]}"
        for k in ("cpu family", "model", "stepping", "CPU implementer", "CPU part")
        if k in fields
    ]
    return {
        "model_name": fields.get("model name") or platform.processor() or platform.machine(),
        "id": ", ".join(ident),
        "isa": [f for f in CPU_ISA_FLAGS if f in flags],
    }


def environment() -> dict:
    """What the figures were measured on."""
    details = cpu_details()
    cpu = details["model_name"]
    import onnxruntime as ort

    statuses = available_backends()  # probing TensorRT/CUDA is not free: once
    backends = {
        b.name: {"available": b.available, "devices": list(b.devices), "detail": b.detail}
        for b in statuses
    }
    gpus = [d for b in statuses if b.available for d in b.devices if d.startswith("cuda")]
    return {
        "emosdk": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_id": details["id"],
        "cpu_isa": details["isa"],
        "cpu_count": os.cpu_count(),
        "gpu": gpus or None,
        "numpy": np.__version__,
        "onnxruntime": ort.__version__,
        "onnxruntime_providers": ort.get_available_providers(),
        "backends": backends,
    }


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def percentiles(values: list[float]) -> dict:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "mean": None, "n": 0}
    v = np.asarray(values)
    return {
        "p50": float(np.percentile(v, 50)),
        "p95": float(np.percentile(v, 95)),
        "p99": float(np.percentile(v, 99)),
        "mean": float(v.mean()),
        "n": len(values),
    }


# -- inputs ----------------------------------------------------------------------------------
@dataclass
class Item:
    """One manifest row, decoded: 16 kHz audio, and face crops sampled at the model's frame
    rate (``None`` where no face was found), or one face image."""

    path: Path
    label: str
    audio: np.ndarray | None = None
    faces: list[np.ndarray | None] = field(default_factory=list)
    face: np.ndarray | None = None


def read_manifest(path: Path, labels: tuple[str, ...]) -> tuple[list[tuple[Path, str]], dict]:
    """Rows (file, label) of a manifest CSV; labels outside ``labels`` are counted and skipped."""
    if not path.is_file():
        raise InputError(f"--manifest: {path} does not exist")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        cols = reader.fieldnames or []
        label_col = "label" if "label" in cols else ("intended" if "intended" in cols else None)
        if "file" not in cols or label_col is None:
            raise InputError(f"--manifest: {path} needs the columns file,label (has {cols})")
        rows, skipped = [], {}
        for row in reader:
            lab = row[label_col].strip().lower()
            lab = SYNONYMS.get(lab, lab)
            if lab not in labels:
                skipped[lab] = skipped.get(lab, 0) + 1
                continue
            rows.append((path.parent / row["file"], lab))
    return rows, skipped


def read_face_image(path: Path) -> np.ndarray:
    """A face image file (jpg, png...) as a BGR uint8 array.

    Raises:
        InputError: the file cannot be read as an image.
    """
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise InputError(f"{path}: cannot be read as an image")
    return img


def decode(rec: Recognizer, path: Path, label: str) -> Item:
    """Decode an audio file, a face image or a video into an :class:`Item`.

    Video frames are sampled at the model's frame rate and their faces detected once, so every
    condition and masking level below reuses the same crops.
    """
    ext = path.suffix.lower()
    item = Item(path, label)
    if ext in IMAGE_EXT:
        item.face = read_face_image(path)
        return item
    if ext not in AUDIO_EXT | VIDEO_EXT:
        raise InputError(f"{path}: unsupported file type {ext!r}")
    from .capture.media import read_media

    audio, frames = read_media(path)
    item.audio = audio if len(audio) else None
    if frames:
        fps = rec.bundle.stream.video_fps
        t0, t1 = frames[0][0], frames[-1][0]
        times = np.arange(t0, t1 + 1e-6, 1000.0 / fps)
        ft = np.array([t for t, _ in frames])
        for t in times:
            found = rec.face_crops(frames[int(np.abs(ft - t).argmin())][1])
            item.faces.append(found[0] if found else None)
    return item


def predict_item(
    rec: Recognizer,
    item: Item,
    modality: str,
    mask_frac: float = 0.0,
    rng: np.random.Generator | None = None,
):
    """One prediction per file: the whole clip (up to 60 s) as one window.

    ``modality`` keeps only audio, only video, or requires both (``av``); ``mask_frac`` hides
    that fraction of the face frames at random (the robustness protocol).
    """
    audio = item.audio if modality in ("auto", "audio", "av") else None
    faces = item.faces if modality in ("auto", "video", "av") else []
    if item.face is not None:
        return None if modality == "audio" else rec.predict(face=item.face)
    if modality == "av" and (audio is None or not faces):
        return None
    if faces and mask_frac > 0:
        rng = rng or np.random.default_rng(0)
        drop = set(
            rng.choice(len(faces), int(round(mask_frac * len(faces))), replace=False).tolist()
        )
        faces = [None if i in drop else f for i, f in enumerate(faces)]
    if audio is None and not faces:
        return None
    return rec.predict(audio=audio, face=faces or None, sample_rate=16_000)


#: progress callback: (what, done, total)
Progress = Callable[[str, int, int], None]


def accuracy_run(
    rec: Recognizer,
    items: list[Item],
    modality: str,
    mask_frac: float = 0.0,
    progress: Progress | None = None,
) -> tuple[dict, list[int], list[int]]:
    labels = rec.labels
    y_true, y_pred, none = [], [], 0
    rng = np.random.default_rng(0)
    for i, it in enumerate(items):
        if progress is not None:
            progress("scoring", i, len(items))
        r = predict_item(rec, it, modality, mask_frac, rng)
        if r is None or r.label is None:
            none += 1
            continue
        y_true.append(labels.index(it.label))
        y_pred.append(labels.index(r.label))
    rep = classification_report(y_true, y_pred, labels)
    rep["no_prediction"] = none
    return rep, y_true, y_pred


def accuracy(
    rec: Recognizer,
    manifest: Path,
    modality: str,
    plots: Path | None,
    robustness: bool = True,
    progress: Progress | None = None,
) -> dict:
    """The accuracy JSON of ARCHITECTURE section 7, with per-condition results and a robustness
    curve for files that have both modalities.

    ``progress`` is called as files are decoded and scored: ``progress(what, done, total)``.
    """
    rows, skipped = read_manifest(manifest, rec.labels)
    items = []
    for i, (p, lab) in enumerate(rows):
        if progress is not None:
            progress("decoding", i, len(rows))
        items.append(decode(rec, p, lab))
    out, _, _ = accuracy_run(rec, items, modality, progress=progress)
    if progress is not None:
        progress("scoring", len(items), len(items))
    out["skipped"] = {"labels": skipped, "total": int(sum(skipped.values()))}
    out["manifest"] = str(manifest)
    out["modality"] = modality
    av_items = [it for it in items if it.audio is not None and it.faces]
    conditions = {}
    if av_items and modality == "auto":
        for cond in ("av", "audio", "video"):
            rep, _, _ = accuracy_run(rec, av_items, cond)
            conditions[cond] = {k: rep[k] for k in ("n", "accuracy", "macro_f1", "micro_f1", "uar")}
    out["conditions"] = conditions
    curve = []
    if av_items and robustness and modality in ("auto", "av"):
        for frac in MASK_LEVELS:
            rep, _, _ = accuracy_run(rec, av_items, "av", frac)
            curve.append({"masked": frac, "accuracy": rep["accuracy"], "macro_f1": rep["macro_f1"]})
    out["robustness"] = curve
    if plots is not None:
        from .plots import plot_confusion, plot_robustness

        plots.mkdir(parents=True, exist_ok=True)
        out["plots"] = {"confusion": str(plot_confusion(out, plots / "confusion.png"))}
        if curve:
            out["plots"]["robustness"] = str(plot_robustness(curve, plots / "robustness.png"))
    return out


# -- latency ---------------------------------------------------------------------------------
def latency(rec: Recognizer, clip: Path, runs: int = 30, batches: tuple[int, ...] = (1, 8)) -> dict:
    """Per-stage latency per streamed result (cold: the first; warm: the next ``runs``), one
    window from scratch (``predict`` with all its frames), throughput at several batch sizes."""
    from .capture.arrays import ArraySource
    from .capture.media import read_media

    t0 = time.perf_counter()
    audio, frames = read_media(clip)
    decode_ms = (time.perf_counter() - t0) * 1e3
    imgs = [f for _, f in frames]
    fps = (len(frames) - 1) / ((frames[-1][0] - frames[0][0]) / 1000) if len(frames) > 1 else 30.0
    # replay the clip back to back until there are enough results
    reps = max(1, int(np.ceil((runs + 2) * rec.hop_s / max(len(audio) / 16_000, 0.1))))
    n_img = int(round(len(audio) / 16_000 * fps))
    src = ArraySource(
        audio=np.tile(audio, reps),
        sample_rate=16_000,
        frames=(imgs + [imgs[-1]] * max(0, n_img - len(imgs)))[:n_img] * reps if imgs else None,
        fps=fps,
    )
    results = [{**r.latency.stages, "total": r.latency.total_ms} for r in rec.stream(source=src)]
    cold, warm_runs = results[0], results[1 : runs + 1]
    stages = sorted({k for r in warm_runs for k in r})
    warm = {s: percentiles([r[s] for r in warm_runs if s in r]) for s in stages}
    window = int(rec.window_s * 16_000)
    win_audio = np.resize(audio, window) if len(audio) < window else audio[:window]
    step = max(1, int(round(len(imgs) / (rec.window_s * rec.bundle.stream.video_fps))))
    one = [
        rec.predict(audio=win_audio, frame=imgs[::step] or None).latency.total_ms for _ in range(5)
    ]
    return {
        "clip": str(clip),
        "decode_ms": decode_ms,
        "window_s": rec.window_s,
        "hop_s": rec.hop_s,
        "cold_ms": cold,
        "warm_ms": warm,
        "window_from_scratch_ms": percentiles(one),
        "throughput": throughput(rec, batches),
        "peak_rss_mb": peak_rss_mb(),
    }


def throughput(rec: Recognizer, batches: tuple[int, ...], seconds: float = 1.0) -> dict:
    """Windows per second through the three graphs at batch B (front-ends excluded)."""
    b = rec.bundle
    n_frames = b.audio.num_frames(int(rec.window_s * b.audio.sample_rate))
    tv = int(round(rec.window_s * b.stream.video_fps))
    out = {}
    rng = np.random.default_rng(0)
    for batch in batches:
        mel = rng.standard_normal((batch, n_frames, b.audio.n_mels)).astype(np.float32)
        faces = rng.standard_normal((batch * tv, 1, b.face.size, b.face.size)).astype(np.float32)
        n, t0 = 0, time.perf_counter()
        while True:
            emb = rec.graphs["audio_encoder"].infer({"logmel": mel})["audio_emb"]
            femb = rec.graphs["face_encoder"].infer({"face": faces})["face_emb"]
            video = np.ascontiguousarray(femb.reshape(batch, tv, -1))
            rec.graphs["fusion"].infer(
                {
                    "audio": emb,
                    "audio_mask": np.ones(emb.shape[:2], np.float32),
                    "video": video,
                    "video_mask": np.ones((batch, tv), np.float32),
                }
            )
            n += 1
            if time.perf_counter() - t0 > seconds and n >= 2:
                break
        out[str(batch)] = {"windows_per_s": n * batch / (time.perf_counter() - t0), "batch": batch}
    return out
