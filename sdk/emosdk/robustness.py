"""The corruption benchmark behind ``emosdk-bench robustness``: how accuracy falls when the real
files of a manifest are recorded in worse conditions.

Each file is decoded once; its audio and frames are corrupted in memory by every corruption of
:mod:`emosdk.corruptions` at every severity (fixed seeds), and each version goes through the
Recognizer as ``emosdk-bench accuracy`` does (one prediction per file, the whole clip as one
window; full video frames through the face detector). A file for which the Recognizer gives no
label (no face found, no speech) counts as wrong. The JSON reports accuracy and macro-F1 per
corruption and severity, and their ratio to the clean figures (schema: docs/robustness.md).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__
from . import corruptions as C
from .errors import InputError
from .evaluation import AUDIO_EXT, IMAGE_EXT, VIDEO_EXT, Progress, read_face_image, read_manifest
from .metrics import classification_report
from .recognizer import Recognizer
from .results import EmotionResult

logger = logging.getLogger("emosdk")

SCHEMA_VERSION = 1
MODALITIES = ("audio", "video", "av")
#: severity at which the issue's goal is checked, and the share of clean macro-F1 to keep
GOAL_SEVERITY = 3
GOAL_RETENTION = 0.75
#: corruptions the goal names (audio noise and reverberation, video darkening and blur)
GOAL_CORRUPTIONS = ("white_noise", "pink_noise", "babble", "reverb", "darken", "motion_blur")
#: talkers mixed into babble come from this many clips of other speakers, at most two per speaker
TALKER_POOL = 48
NO_LABEL = "(none)"

#: ``reliable(result, modality)``: whether the result is marked reliable (None: not known)
Reliability = Callable[[EmotionResult, str], "bool | None"]


def marked_reliable(result: EmotionResult, modality: str) -> bool | None:
    """The result's own verdict (:attr:`EmotionResult.reliable`: every modality that
    contributed passed the model's quality thresholds); None when it carries no quality."""
    return result.reliable if result.quality else None


# -- inputs --------------------------------------------------------------------------------------
@dataclass
class Row:
    """One manifest row: its position, file, label and speaker."""

    index: int
    path: Path
    label: str
    speaker: str


@dataclass
class Clip:
    """One decoded file.

    Attributes:
        audio: 16 kHz float32 mono, or None.
        face: the image of a face-image file (a crop), or None.
        times: timestamps (ms) of every decoded video frame.
        frames: every decoded video frame (BGR uint8).
        sampled: indices into ``frames`` at the model's frame rate (what the Recognizer sees).
        crops: the clean face crop of each sampled frame (None: no face found).
        boxes: the clean face box (x, y, w, h) of each sampled frame, from the detector; where
            it found none, the nearest frame's box (None when no frame had a face).
    """

    row: Row
    audio: np.ndarray | None = None
    face: np.ndarray | None = None
    times: list[float] = field(default_factory=list)
    frames: list[np.ndarray] = field(default_factory=list)
    sampled: list[int] = field(default_factory=list)
    crops: list[np.ndarray | None] = field(default_factory=list)
    boxes: list[tuple[int, int, int, int] | None] = field(default_factory=list)

    @property
    def has_video(self) -> bool:
        return self.face is not None or bool(self.sampled)


def _speaker(row: dict, path: Path) -> str:
    for key in ("speaker", "actor", "subject"):
        if row.get(key):
            return str(row[key]).strip()
    m = re.match(r"^(\d{4})_", path.name)  # CREMA-D names start with the actor
    return m.group(1) if m else path.stem  # unknown: every file its own talker


def read_rows(manifest: Path, labels: Sequence[str]) -> tuple[list[Row], list[Row], dict]:
    """The manifest's rows with a known label (as ``emosdk-bench accuracy`` reads them), every
    row with a speaker (for babble), and the skipped labels."""
    rows, skipped = read_manifest(manifest, tuple(labels))
    speakers: dict[Path, str] = {}
    every: list[Row] = []
    with open(manifest, newline="", encoding="utf-8") as f:
        for i, r in enumerate(csv.DictReader(f)):
            path = manifest.parent / r["file"]
            speakers[path] = _speaker(r, path)
            every.append(Row(i, path, "", speakers[path]))
    return (
        [Row(i, p, lab, speakers.get(p, p.stem)) for i, (p, lab) in enumerate(rows)],
        every,
        skipped,
    )


def read_audio(path: Path) -> np.ndarray:
    """The audio of a media file at 16 kHz (empty when it has none)."""
    from .capture.base import AudioChunk
    from .capture.media import MediaFileSource

    src = MediaFileSource(path, video=False)
    if not src.has_audio:
        return np.zeros(0, np.float32)
    chunks = [ev.pcm for ev in src.events() if isinstance(ev, AudioChunk)]
    return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


def decode(rec: Recognizer, row: Row, video: bool = True) -> Clip:
    """Decode a file once: audio, every frame, the frames at the model's rate with their clean
    face crops and boxes (face detection runs here, once per sampled frame)."""
    clip = Clip(row)
    ext = row.path.suffix.lower()
    if ext in IMAGE_EXT:
        clip.face = read_face_image(row.path)
        return clip
    if ext not in AUDIO_EXT | VIDEO_EXT:
        raise InputError(f"{row.path}: unsupported file type {ext!r}")
    if not video:
        audio = read_audio(row.path)
        clip.audio = audio if len(audio) else None
        return clip
    from .capture.media import read_media

    audio, frames = read_media(row.path)
    clip.audio = audio if len(audio) else None
    if not frames:
        return clip
    clip.times = [t for t, _ in frames]
    clip.frames = [f for _, f in frames]
    fps = rec.bundle.stream.video_fps
    clip.sampled = C.nearest_frames(clip.times, C.frame_times(clip.times[0], clip.times[-1], fps))
    found = []
    for k in clip.sampled:
        faces = rec.face_crops(clip.frames[k], boxes=True)  # [(box, crop)], one detection
        clip.crops.append(faces[0][1] if faces else None)
        box = faces[0][0] if faces else None
        found.append((box.x, box.y, box.w, box.h) if box is not None else None)
    have = [i for i, b in enumerate(found) if b is not None]
    clip.boxes = [
        found[min(have, key=lambda j: abs(j - i))] if have else None for i in range(len(found))
    ]
    return clip


class Talkers:
    """Clips of other speakers for babble: a fixed pool drawn from the whole manifest (at most two
    clips per speaker, ``TALKER_POOL`` in all), decoded when first needed."""

    def __init__(self, rows: list[Row], seed: int, size: int = TALKER_POOL) -> None:
        usable = [r for r in rows if r.path.suffix.lower() in AUDIO_EXT | VIDEO_EXT]
        order = np.random.default_rng([seed, 0xBAB]).permutation(len(usable))
        per_speaker: dict[str, int] = {}
        self.pool: list[Row] = []
        for i in order:
            r = usable[int(i)]
            if per_speaker.get(r.speaker, 0) < 2 and len(self.pool) < size:
                per_speaker[r.speaker] = per_speaker.get(r.speaker, 0) + 1
                self.pool.append(r)
        self._audio: dict[Path, np.ndarray] = {}

    def for_row(self, row: Row, seed: int, n: int = 4) -> list[np.ndarray]:
        """Up to ``n`` clips of speakers other than ``row``'s (the same for every severity)."""
        others = [r for r in self.pool if r.speaker != row.speaker and r.path != row.path]
        if not others:
            return []
        rng = np.random.default_rng([seed, 0xBAB, row.index])
        pick = rng.choice(len(others), min(n, len(others)), replace=False)
        out = []
        for j in pick:
            r = others[int(j)]
            if r.path not in self._audio:
                self._audio[r.path] = read_audio(r.path)
            if len(self._audio[r.path]):
                out.append(self._audio[r.path])
        return out


# -- one file under every condition ------------------------------------------------------------
def cell_key(name: str, severity: int) -> str:
    return f"{name}@{severity}"


def applies(corruption: C.Corruption, clip: Clip, modality: str) -> bool:
    """Whether ``corruption`` can corrupt this file in this run."""
    if corruption.modality == "audio":
        return modality in ("audio", "av") and clip.audio is not None
    if modality not in ("video", "av") or not clip.has_video:
        return False
    return bool(clip.sampled) if corruption.videos_only else True


def usable(clip: Clip, modality: str) -> str | None:
    """Why a file cannot take part in a run of ``modality`` (None: it can)."""
    if modality in ("audio", "av") and clip.audio is None:
        return "no_audio"
    if modality in ("video", "av") and not clip.has_video:
        return "no_video"
    return None


def _video_input(
    rec: Recognizer, clip: Clip, corruption: C.Corruption | None, severity: int, seed: int
) -> dict:
    """The ``predict`` arguments of the file's video, clean or corrupted."""
    if clip.face is not None:  # a face image: the crop itself is the face
        if corruption is None:
            return {"face": clip.face}
        ctx = C.Context(C.rng_for(seed, corruption.name, severity, clip.row.index))
        return {"face": corruption(clip.face, severity, ctx)}
    if corruption is None:  # the clean crops, found once in decode
        return {"face": clip.crops}
    rng = C.rng_for(seed, corruption.name, severity, clip.row.index)
    if corruption.fn is None:  # frame_rate: fewer distinct frames, through the detector
        fps = C.frame_rate_fps(severity)
        picks = C.nearest_frames(clip.times, C.frame_times(clip.times[0], clip.times[-1], fps))
        return {"frame": [clip.frames[k] for k in picks]}
    frames = []
    for k, box in zip(clip.sampled, clip.boxes):
        if box is None:  # no face anywhere in the clip: nothing to blur, shrink or cover
            frames.append(clip.frames[k])
            continue
        frames.append(corruption(clip.frames[k], severity, C.Context(rng, box=box)))
    return {"frame": frames}


def _audio_input(
    clip: Clip, corruption: C.Corruption | None, severity: int, seed: int, talkers: list
) -> np.ndarray:
    if corruption is None:
        return clip.audio
    ctx = C.Context(C.rng_for(seed, corruption.name, severity, clip.row.index), talkers=talkers)
    return corruption(clip.audio, severity, ctx)


def score_clip(
    rec: Recognizer,
    clip: Clip,
    modality: str,
    cells: list[tuple[C.Corruption | None, int]],
    seed: int,
    talkers: list[np.ndarray],
    reliable: Reliability | None = None,
) -> dict[str, list]:
    """Predict the file under each (corruption, severity) cell (None, 0: clean).

    Returns:
        cell key (``"clean"`` or ``"name@severity"``) -> [label or None, confidence, reliable
        (None: not known), the modalities that contributed (``"audio+video"``, ``""``)]; cells
        that do not apply to the file are absent.
    """
    out: dict[str, list] = {}
    for corruption, severity in cells:
        if corruption is not None and not applies(corruption, clip, modality):
            continue
        audio_c = corruption if corruption is not None and corruption.modality == "audio" else None
        video_c = corruption if corruption is not None and corruption.modality == "video" else None
        kwargs: dict = {}
        if modality in ("audio", "av"):
            kwargs["audio"] = _audio_input(clip, audio_c, severity, seed, talkers)
            kwargs["sample_rate"] = 16_000
        if modality in ("video", "av"):
            kwargs.update(_video_input(rec, clip, video_c, severity, seed))
        r = rec.predict(**kwargs)
        key = "clean" if corruption is None else cell_key(corruption.name, severity)
        flag = reliable(r, modality) if reliable is not None and r.label is not None else None
        out[key] = [r.label, round(r.confidence, 6), flag, "+".join(m.value for m in r.modalities)]
    return out


# -- metrics ---------------------------------------------------------------------------------------
def cell_metrics(
    labels: Sequence[str],
    truth: list[str],
    preds: list[str | None],
    flags: list | None = None,
    used: list[str] | None = None,
) -> dict:
    """Accuracy and macro-F1 of one cell, a file without a label counted as wrong.

    ``accuracy`` and ``macro_f1`` count files without a label as wrong (recall falls, no class's
    precision does); ``answered`` is the share of files with a label and ``accuracy_answered`` the
    accuracy over those; ``contributed`` the share of files in which each modality contributed
    (from ``used``: per file the modalities joined by "+"). ``by_quality`` splits the files by
    their reliability flag (None until results carry one).
    """
    ext = list(labels) + [NO_LABEL]
    y_true = [ext.index(t) for t in truth]
    y_pred = [ext.index(p) if p is not None else len(labels) for p in preds]
    rep = classification_report(y_true, y_pred, ext)
    per = rep["per_class"]
    present = [
        lab
        for lab in labels
        if per[lab]["support"] or sum(r[ext.index(lab)] for r in rep["confusion"])
    ]
    answered = [i for i, p in enumerate(preds) if p is not None]
    n = len(truth)
    out = {
        "n": n,
        "accuracy": rep["accuracy"],
        "macro_f1": float(np.mean([per[lab]["f1"] for lab in present])) if present else 0.0,
        "uar": rep["uar"],
        "answered": len(answered) / n if n else 0.0,
        "accuracy_answered": (
            float(np.mean([preds[i] == truth[i] for i in answered])) if answered else None
        ),
        "by_quality": None,
    }
    if used is not None:
        out["contributed"] = {
            m: (sum(m in u.split("+") for u in used) / n if n else 0.0) for m in ("audio", "video")
        }
    if flags is not None and any(f is not None for f in flags):
        out["by_quality"] = {}
        for name, want in (("reliable", True), ("unreliable", False)):
            idx = [i for i, f in enumerate(flags) if f is want]
            out["by_quality"][name] = {
                "n": len(idx),
                "share": len(idx) / n if n else 0.0,
                "accuracy": float(np.mean([preds[i] == truth[i] for i in idx])) if idx else None,
            }
    return out


def full_report(labels: Sequence[str], truth: list[str], preds: list[str | None]) -> dict:
    """The clean cell with per-class figures and the confusion matrix (last column: no label)."""
    ext = list(labels) + [NO_LABEL]
    rep = classification_report(
        [ext.index(t) for t in truth],
        [ext.index(p) if p is not None else len(labels) for p in preds],
        ext,
    )
    rep["confusion"] = [row for row in rep["confusion"][: len(labels)]]
    rep["per_class"] = {k: v for k, v in rep["per_class"].items() if k != NO_LABEL}
    return rep


def summarize(
    labels: Sequence[str],
    records: list[dict],
    corruptions: list[C.Corruption],
    severities: Sequence[int],
    reference: dict | None = None,
) -> dict:
    """Cells, per-corruption means, the means over corruptions and the goal check, from the
    per-file records (``{"label": ..., "cells": {key: [pred, confidence, reliable]}}``)."""

    def metrics_of(key: str, subset: list[dict] | None = None) -> dict:
        rs = [r for r in (subset if subset is not None else records) if key in r["cells"]]
        return cell_metrics(
            labels,
            [r["label"] for r in rs],
            [r["cells"][key][0] for r in rs],
            [r["cells"][key][2] for r in rs],
            [r["cells"][key][3] for r in rs],
        )

    clean = metrics_of("clean")
    clean_report = full_report(
        labels, [r["label"] for r in records], [r["cells"]["clean"][0] for r in records]
    )
    cells: dict[str, dict] = {}
    summary: dict[str, dict] = {}
    for c in corruptions:
        per_sev: dict[str, dict] = {}
        subset = [r for r in records if any(k.startswith(c.name + "@") for k in r["cells"])]
        if not subset:
            continue
        base = metrics_of("clean", subset)  # the same files, clean (frame_rate: videos only)
        for s in severities:
            m = metrics_of(cell_key(c.name, s), subset)
            m["relative_accuracy"] = _ratio(m["accuracy"], base["accuracy"])
            m["relative_macro_f1"] = _ratio(m["macro_f1"], base["macro_f1"])
            m["parameters"] = c.params(s)
            per_sev[str(s)] = m
        cells[c.name] = per_sev
        errs = [1.0 - m["accuracy"] for m in per_sev.values()]
        summary[c.name] = {
            "modality": c.modality,
            "n": base["n"],
            "clean_accuracy": base["accuracy"],
            "clean_macro_f1": base["macro_f1"],
            "mean_accuracy": float(np.mean([m["accuracy"] for m in per_sev.values()])),
            "mean_macro_f1": float(np.mean([m["macro_f1"] for m in per_sev.values()])),
            "relative_accuracy": _mean([m["relative_accuracy"] for m in per_sev.values()]),
            "relative_macro_f1": _mean([m["relative_macro_f1"] for m in per_sev.values()]),
            "corruption_error": float(np.mean(errs)),
            "relative_corruption_error": float(np.mean(errs)) - (1.0 - base["accuracy"]),
        }
        if reference is not None:
            summary[c.name].update(_versus_reference(c.name, per_sev, base, reference))
    means = {}
    for group in ("audio", "video", "all"):
        names = [n for n, s in summary.items() if group in ("all", s["modality"])]
        if not names:
            continue
        means[group] = {
            "corruptions": names,
            "mean_relative_accuracy": _mean([summary[n]["relative_accuracy"] for n in names]),
            "mean_relative_macro_f1": _mean([summary[n]["relative_macro_f1"] for n in names]),
            "mean_corruption_error": float(
                np.mean([summary[n]["corruption_error"] for n in names])
            ),
            "mean_relative_corruption_error": float(
                np.mean([summary[n]["relative_corruption_error"] for n in names])
            ),
        }
        ces = [summary[n].get("ce") for n in names]
        if reference is not None and all(v is not None for v in ces):
            means[group]["mce"] = float(np.mean(ces))
            rel = [summary[n].get("relative_ce") for n in names]
            means[group]["relative_mce"] = (
                float(np.mean(rel)) if all(v is not None for v in rel) else None
            )
    goal = []
    for name in GOAL_CORRUPTIONS:
        m = cells.get(name, {}).get(str(GOAL_SEVERITY))
        if m is not None:
            keep = m["relative_macro_f1"]
            goal.append(
                {
                    "corruption": name,
                    "severity": GOAL_SEVERITY,
                    "macro_f1": m["macro_f1"],
                    "clean_macro_f1": summary[name]["clean_macro_f1"],
                    "relative_macro_f1": keep,
                    "goal": GOAL_RETENTION,
                    "met": keep is not None and keep >= GOAL_RETENTION,
                }
            )
    return {
        "clean": {
            **clean,
            "per_class": clean_report["per_class"],
            "confusion": clean_report["confusion"],
            "labels": list(labels) + [NO_LABEL],
        },
        "cells": cells,
        "summary": summary,
        "mean": means,
        "goal": goal,
    }


def _ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


def _mean(values: list) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals and len(vals) == len(values) else None


def _versus_reference(name: str, per_sev: dict, base: dict, reference: dict) -> dict:
    """ImageNet-C's corruption error against a reference model's run (same manifest):
    CE = sum_s E_s / sum_s E_ref_s; relative CE = sum_s (E_s - E_clean) / sum_s (E_ref_s -
    E_ref_clean); E = 1 - accuracy."""
    ref = reference.get("cells", {}).get(name)
    ref_sum = reference.get("summary", {}).get(name)
    if not ref or not ref_sum or set(ref) != set(per_sev):
        return {"ce": None, "relative_ce": None}
    e = [1 - per_sev[s]["accuracy"] for s in per_sev]
    e_ref = [1 - ref[s]["accuracy"] for s in per_sev]
    d = [x - (1 - base["accuracy"]) for x in e]
    d_ref = [x - (1 - ref_sum["clean_accuracy"]) for x in e_ref]
    return {
        "ce": sum(e) / sum(e_ref) if sum(e_ref) > 0 else None,
        "relative_ce": sum(d) / sum(d_ref) if sum(d_ref) > 0 else None,
    }


# -- the run --------------------------------------------------------------------------------------
def bundle_info(rec: Recognizer) -> dict:
    """Name, version, folder and the SHA-256 of the bundle's model.json."""
    b = rec.bundle
    path = Path(b.path) / "model.json"
    return {
        "name": b.name,
        "version": b.version,
        "path": str(b.path),
        "model_json_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }


def choose(modality: str, names: Sequence[str] | None) -> list[C.Corruption]:
    """The corruptions of a run: the named ones (checked) or every one of the modality."""
    if modality not in MODALITIES:
        raise InputError(f"modality: expected one of {MODALITIES}, got {modality!r}")
    allowed = C.names(None if modality == "av" else modality)
    if not names:
        return [C.CORRUPTIONS[n] for n in allowed]
    bad = [n for n in names if n not in allowed]
    if bad:
        raise InputError(
            f"--corruptions: {bad} not available for --modality {modality}; expected some of "
            f"{allowed}"
        )
    return [C.CORRUPTIONS[n] for n in allowed if n in names]


def run(
    rec: Recognizer,
    manifest: Path,
    modality: str,
    corruptions: Sequence[str] | None = None,
    severities: Sequence[int] = C.SEVERITIES,
    limit: int = 0,
    seed: int = 0,
    progress: Progress | None = None,
    cache: Path | None = None,
    reliable: Reliability | None = marked_reliable,
    reference: dict | None = None,
) -> dict:
    """Run the benchmark on a manifest.

    Args:
        rec: the Recognizer (its model, backend and threads are what is measured).
        manifest: CSV with ``file,label`` (optional ``speaker``, ``actor`` or ``subject``).
        modality: ``audio`` (audio alone, audio corruptions), ``video`` (faces alone, video
            corruptions) or ``av`` (both modalities given; each corruption hits its own modality
            while the other stays clean).
        corruptions: names from :data:`emosdk.corruptions.CORRUPTIONS` (default: all of the
            modality).
        severities: subset of 1..5.
        limit: score the first N files of the manifest (0: all).
        seed: seeds every random draw (noise, talkers, blur directions).
        progress: ``progress(what, done, total)`` per file.
        cache: a JSONL file of per-file predictions; a rerun with the same settings skips the
            files already there (long runs resume).
        reliable: marks each result reliable or not (fills ``by_quality``); by default the
            result's own quality verdict (:func:`marked_reliable`).
        reference: the JSON of a reference model's run on the same manifest, for ImageNet-C's CE.

    Returns:
        The documented JSON (docs/robustness.md).
    """
    t_start = time.perf_counter()
    chosen = choose(modality, corruptions)
    sevs = sorted(set(int(s) for s in severities))
    if not sevs or any(s not in C.SEVERITIES for s in sevs):
        raise InputError(f"--severities: expected values among {C.SEVERITIES}, got {severities}")
    rows, every, skipped = read_rows(manifest, rec.labels)
    if limit:
        rows = rows[:limit]
    cells: list[tuple[C.Corruption | None, int]] = [(None, 0)]
    cells += [(c, s) for c in chosen for s in sevs]
    talkers = Talkers(every, seed) if any(c.name == "babble" for c in chosen) else None
    info = bundle_info(rec)
    settings = {
        "manifest": str(manifest),
        "modality": modality,
        "corruptions": {c.name: [c.params(s) for s in sevs] for c in chosen},
        "severities": sevs,
        "seed": seed,
        "model_json_sha256": info["model_json_sha256"],
    }
    done = _read_cache(cache, settings) if cache is not None else {}
    records: list[dict] = []
    excluded: dict[str, int] = {}
    need_video = modality in ("video", "av")
    writer = _open_cache(cache, settings, done) if cache is not None else None
    try:
        for i, row in enumerate(rows):
            if progress is not None:
                progress("scoring", i, len(rows))
            if row.index in done:
                rec_ = done[row.index]
            else:
                clip = decode(rec, row, video=need_video)
                why = usable(clip, modality)
                if why is not None:
                    rec_ = {"i": row.index, "file": str(row.path), "excluded": why}
                else:
                    talk = talkers.for_row(row, seed) if talkers is not None else []
                    rec_ = {
                        "i": row.index,
                        "file": str(row.path),
                        "label": row.label,
                        "cells": score_clip(rec, clip, modality, cells, seed, talk, reliable),
                    }
                if writer is not None:
                    writer.write(json.dumps(rec_) + "\n")
                    writer.flush()
            if "excluded" in rec_:
                excluded[rec_["excluded"]] = excluded.get(rec_["excluded"], 0) + 1
            else:
                records.append(rec_)
        if progress is not None:
            progress("scoring", len(rows), len(rows))
    finally:
        if writer is not None:
            writer.close()
    if not records:
        raise InputError(
            f"{manifest}: no file has what --modality {modality} needs (excluded: {excluded})"
        )
    summary = summarize(rec.labels, records, chosen, sevs, reference)
    out = {
        "schema_version": SCHEMA_VERSION,
        "command": "robustness",
        "emosdk": __version__,
        "bundle": info,
        "manifest": str(manifest),
        "modality": modality,
        "seed": seed,
        "severities": sevs,
        "limit": limit or None,
        "n_files": len(records),
        "excluded": excluded,
        "skipped": {"labels": skipped, "total": int(sum(skipped.values()))},
        "corruptions": {
            c.name: {
                "modality": c.modality,
                "description": c.description,
                "levels": {str(s): c.params(s) for s in sevs},
            }
            for c in chosen
        },
        "metric": (
            "accuracy and macro-F1 over every file, a file without a label counted wrong; "
            "relative_* = corrupted / clean on the same files; mean_relative_* = mean over "
            "severities, then over corruptions (the retention of clean performance); "
            "corruption_error = mean over severities of 1 - accuracy (ImageNet-C's E, "
            "unnormalised: ce and relative_ce need --reference)"
        ),
        **summary,
        "not_applicable": [c.name for c in chosen if c.name not in summary["cells"]],
        "reference": None if reference is None else reference.get("bundle"),
        "elapsed_s": round(time.perf_counter() - t_start, 1),
    }
    return out


def _read_cache(path: Path, settings: dict) -> dict[int, dict]:
    if not path.is_file():
        return {}
    lines = path.read_text().splitlines()
    if not lines:
        return {}
    try:
        head = json.loads(lines[0])
    except json.JSONDecodeError:
        head = None
    if not isinstance(head, dict):
        raise InputError(
            f"--cache: {path} is not a robustness cache (its first line is not the settings "
            "object emosdk-bench robustness writes); pass another file or delete it"
        )
    if head.get("settings") != settings:
        raise InputError(
            f"--cache: {path} holds a run with other settings ({head.get('settings')}); "
            "pass another file or delete it"
        )
    done = {}
    for line in lines[1:]:
        try:
            r = json.loads(line)
        except json.JSONDecodeError:  # a line cut short when the run was killed
            continue
        done[int(r["i"])] = r
    return done


def _open_cache(path: Path, settings: dict, done: dict):
    path.parent.mkdir(parents=True, exist_ok=True)
    # rewritten whole (drops a torn last line) into a new file that replaces the old one only
    # when complete: a run killed meanwhile keeps every record it had
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps({"settings": settings}) + "\n")
        for r in done.values():
            f.write(json.dumps(r) + "\n")
    tmp.replace(path)
    return open(path, "a", encoding="utf-8")


def plot(result: dict, folder: Path, stem: str = "robustness") -> dict[str, str]:
    """Macro-F1 against severity (0: clean) per corruption, one PNG per modality of corruption,
    with the goal line (75 % of clean macro-F1)."""
    from .plots import plot_curves

    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for group in ("audio", "video"):
        names = [n for n, s in result["summary"].items() if s["modality"] == group]
        if not names:
            continue
        series: dict[str, list[tuple[float, float]]] = {}
        for n in names:
            pts = [(0.0, result["summary"][n]["clean_macro_f1"])]
            pts += [(float(s), m["macro_f1"]) for s, m in result["cells"][n].items()]
            series[n] = pts
        clean = result["clean"]["macro_f1"]
        sevs = [0.0] + [float(s) for s in result["severities"]]
        series[f"{int(GOAL_RETENTION * 100)}% of clean"] = [
            (min(sevs), GOAL_RETENTION * clean),
            (max(sevs), GOAL_RETENTION * clean),
        ]
        b = result["bundle"]
        path = folder / f"{stem}_{group}.png"
        plot_curves(
            series,
            path,
            f"{b['name']} {b['version']}: {group} corruptions ({result['modality']}), "
            f"n={result['n_files']}",
            "severity (0 = clean)",
            "macro-F1",
        )
        out[group] = str(path)
    return out


def table(result: dict) -> str:
    """The result as text: macro-F1 per corruption and severity, and its mean ratio to clean."""
    c = result["clean"]
    sevs = [str(s) for s in result["severities"]]
    lines = [
        f"n={result['n_files']} --modality {result['modality']}  clean: accuracy "
        f"{c['accuracy']:.4f}, macro-F1 {c['macro_f1']:.4f}",
        f"{'macro-F1':<14} " + " ".join(f"{'s' + s:>6}" for s in sevs) + "  relative",
    ]
    for name, cells in result["cells"].items():
        rel = result["summary"][name]["relative_macro_f1"]
        row = " ".join(f"{cells[s]['macro_f1']:6.3f}" for s in sevs)
        lines.append(f"{name:<14} {row}  {'-' if rel is None else format(rel, '.3f')}")
    for group, m in result["mean"].items():
        rel = m["mean_relative_macro_f1"]
        lines.append(f"mean relative macro-F1 ({group}): {'-' if rel is None else f'{rel:.3f}'}")
    for g in result["goal"]:
        keep = g["relative_macro_f1"]
        lines.append(
            f"goal {g['corruption']}@{g['severity']}: {'-' if keep is None else f'{keep:.3f}'} "
            f"of clean macro-F1 ({'met' if g['met'] else 'not met'}, goal {g['goal']})"
        )
    return "\n".join(lines)
