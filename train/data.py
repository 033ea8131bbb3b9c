"""Corpus loaders: CREMA-D (perceived labels, VAVL partitions) and FER2013.

Data lives read-only under ``../shared/data`` beside the checkout (see its README.md); nothing
is copied into the repository. Features are computed with the runtime's own front-ends
(:func:`emosdk.features.log_mel`, :func:`emosdk.features.normalize_face`) and cached under
``/tmp`` so a model sees the same numbers in training and on the device.

Label mapping is explicit and every loader logs how many rows it keeps and drops.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emosdk.features.audio import LogMelParams, log_mel, resample
from emosdk.features.face import FaceParams, normalize_face

from . import FER_CLASSES, LABELS

logger = logging.getLogger("emosdk.train")

# the corpora sit beside the checkout (../shared/data), as on the developers' machines and in CI
DATA_ROOT = Path(
    os.environ.get("EMOSDK_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
CACHE_DIR = Path(os.environ.get("EMOSDK_CACHE", "/tmp/emosdk_cache"))

CREMAD_COLUMNS = {
    "angry": "anger",
    "disgust": "disgust",
    "fear": "fear",
    "happy": "happiness",
    "neutral": "neutral",
    "sad": "sadness",
}
"""CREMA-D partition CSV score column -> project label."""

FER_LABELS = {name: name for name in FER_CLASSES}
"""FER2013 manifest label -> face-encoder class (the manifest already uses project names)."""


@dataclass(frozen=True)
class Clip:
    """One CREMA-D clip of a partition file."""

    name: str  # e.g. 1001_DFA_ANG_XX (no extension)
    label: int  # index into LABELS (argmax of the perceived scores)
    split: str  # Train / Development / Test
    speaker: str
    score: float  # the winning perceived score


def load_cremad_partition(partition: int, root: Path = DATA_ROOT) -> list[Clip]:
    """Clips of one speaker-independent partition with their perceived (consensus) label.

    The label is the argmax of the six soft scores; rows whose maximum is tied are dropped.

    Args:
        partition: 1..5.
        root: the shared data folder.

    Returns:
        Clips in file order.
    """
    path = root / "cremad" / "labels" / f"partition_{partition}.csv"
    clips, ties, below_half = [], 0, 0
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        scores = np.array([float(row[c]) for c in CREMAD_COLUMNS])
        best = scores.max()
        if (scores == best).sum() > 1:
            ties += 1
            continue
        below_half += int(best <= 0.5)
        label = LABELS.index(CREMAD_COLUMNS[list(CREMAD_COLUMNS)[int(scores.argmax())]])
        name = row["FileName"].rsplit(".", 1)[0]
        clips.append(Clip(name, label, row["Split_Set"], row["SpkrID"], float(best)))
    counts = Counter(c.split for c in clips)
    logger.info(
        "CREMA-D partition %d: %d rows, kept %d (%s), dropped %d with tied top scores; "
        "%d kept clips have a winning score <= 0.5",
        partition,
        len(rows),
        len(clips),
        dict(counts),
        ties,
        below_half,
    )
    return clips


def cremad_audio_path(name: str, root: Path = DATA_ROOT) -> Path:
    """The 16 kHz Opus file of a CREMA-D clip."""
    return root / "cremad" / "audio" / f"{name}.opus"


def read_audio(path: Path, sample_rate: int) -> np.ndarray:
    """Mono float32 PCM at ``sample_rate`` (resampled with the runtime's resampler if needed)."""
    import soundfile as sf

    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    return resample(x, sr, sample_rate) if sr != sample_rate else x


def _logmel_one(args: tuple[str, str, dict]) -> np.ndarray:
    path, _, params = args
    p = LogMelParams.from_dict(params)
    return log_mel(read_audio(Path(path), p.sample_rate), p)


def _read_ragged(cache: Path | None) -> dict[str, np.ndarray]:
    """Arrays of different lengths stored in one .npz (names, offsets, data); {} if absent."""
    out: dict[str, np.ndarray] = {}
    if cache is not None and cache.exists():
        with np.load(cache) as z:
            offsets, data = z["offsets"], z["data"]
            for i, n in enumerate(z["names"].tolist()):
                out[n] = data[offsets[i] : offsets[i + 1]]
    return out


def _write_ragged(cache: Path, arrays: dict[str, np.ndarray], what: str) -> None:
    """Write :func:`_read_ragged`'s format atomically (a temporary file, then a rename)."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    names = sorted(arrays)
    lens = np.array([len(arrays[n]) for n in names])
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(
        tmp,
        names=np.array(names),
        offsets=np.concatenate([[0], np.cumsum(lens)]),
        data=np.concatenate([arrays[n] for n in names]),
    )
    tmp.replace(cache)
    logger.info("cached %s of %d clips in %s", what, len(names), cache)


def logmel_cache(
    names: list[str],
    params: LogMelParams,
    root: Path = DATA_ROOT,
    workers: int = 2,
    cache_dir: Path | None = CACHE_DIR,
) -> dict[str, np.ndarray]:
    """Log-mel features (frames, n_mels) of CREMA-D clips, computed once and cached in /tmp.

    The cache file name hashes the front-end parameters, so a change of ``params`` recomputes.
    With ``cache_dir=None`` everything is read from the audio files and nothing is cached.
    """
    from tqdm import tqdm

    key = hashlib.sha256(json.dumps(params.to_dict(), sort_keys=True).encode()).hexdigest()[:12]
    cache = cache_dir / f"cremad_logmel_{key}.npz" if cache_dir else None
    feats = _read_ragged(cache)
    todo = sorted(set(names) - set(feats))
    if todo:
        jobs = [(str(cremad_audio_path(n, root)), n, params.to_dict()) for n in todo]
        with ProcessPoolExecutor(max_workers=workers) as ex:
            results = ex.map(_logmel_one, jobs, chunksize=32)
            for n, m in tqdm(zip(todo, results), total=len(todo), desc="log-mel", leave=False):
                feats[n] = m
        if cache is not None:
            _write_ragged(cache, feats, "log-mel")
    return {n: feats[n] for n in names}


def load_fer2013(
    usage: str,
    params: FaceParams,
    root: Path = DATA_ROOT,
    limit_per_class: int | None = None,
    cache_dir: Path | None = CACHE_DIR,
) -> tuple[np.ndarray, np.ndarray]:
    """FER2013 faces of one usage, normalised with :func:`emosdk.features.normalize_face`.

    Args:
        usage: ``Training`` or ``PublicTest`` (PrivateTest is held back from this data folder).
        params: the bundle's face parameters.
        root: the shared data folder.
        limit_per_class: keep only the first N images of each class (smoke tests; not cached).
        cache_dir: where the normalised faces are cached (None: no cache).

    Returns:
        faces float32 (N, 1, size, size) and labels int64 (N,) indexing ``FER_CLASSES``.
    """
    import cv2

    key = hashlib.sha256(json.dumps(params.to_dict(), sort_keys=True).encode()).hexdigest()[:12]
    use_cache = cache_dir is not None and limit_per_class is None
    cache = cache_dir / f"fer2013_{usage}_{key}.npz" if use_cache else None
    if cache is not None and cache.exists():
        with np.load(cache) as z:
            return z["faces"], z["labels"]
    base = root / "fer2013"
    with open(base / "manifest.csv", newline="", encoding="utf-8") as f:
        every = list(csv.DictReader(f))
    rows = [r for r in every if r["usage"] == usage]
    if not rows:
        held = sorted({r["usage"] for r in every})
        raise ValueError(f"FER2013 has no {usage!r} faces here (usages present: {held})")
    unknown = [r for r in rows if r["label"] not in FER_LABELS]
    rows = [r for r in rows if r["label"] in FER_LABELS]
    if limit_per_class is not None:
        seen: Counter = Counter()
        kept = []
        for r in rows:
            if seen[r["label"]] < limit_per_class:
                seen[r["label"]] += 1
                kept.append(r)
        rows = kept
    faces = np.empty((len(rows), 1, params.size, params.size), np.float32)
    labels = np.empty(len(rows), np.int64)
    for i, r in enumerate(rows):
        img = cv2.imread(str(base / r["file"]), cv2.IMREAD_GRAYSCALE)
        if img is None:
            raise OSError(f"{base / r['file']}: cannot be read as an image")
        faces[i] = normalize_face(img, params)
        labels[i] = FER_CLASSES.index(FER_LABELS[r["label"]])
    logger.info(
        "FER2013 %s: kept %d faces %s, dropped %d with unmapped labels",
        usage,
        len(rows),
        dict(Counter(FER_CLASSES[i] for i in labels.tolist())),
        len(unknown),
    )
    if cache is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        np.savez(cache, faces=faces, labels=labels)
    return faces, labels


def fer_to_project(labels: np.ndarray) -> np.ndarray:
    """Map FER class indices to project label indices; surprise (not a project label) -> -1."""
    table = np.array([LABELS.index(c) if c in LABELS else -1 for c in FER_CLASSES])
    out = table[labels]
    logger.info("FER2013 -> 6 project labels: dropping %d surprise faces", int((out < 0).sum()))
    return out


def load_cremad_soft(partition: int, root: Path = DATA_ROOT) -> dict[str, np.ndarray]:
    """Perceived soft label of every clip of a partition file, by clip name.

    The six consensus scores of the partition file in ``LABELS`` order, normalised to sum 1
    (the files' scores already sum to about 1). Hard labels: :func:`load_cremad_partition`.
    """
    path = root / "cremad" / "labels" / f"partition_{partition}.csv"
    order = [next(c for c, lab in CREMAD_COLUMNS.items() if lab == name) for name in LABELS]
    soft = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            s = np.array([float(row[c]) for c in order], np.float32)
            soft[row["FileName"].rsplit(".", 1)[0]] = s / max(float(s.sum()), 1e-8)
    return soft


def waveform_cache(
    names: list[str],
    sample_rate: int,
    root: Path = DATA_ROOT,
    cache_dir: Path | None = CACHE_DIR,
) -> dict[str, np.ndarray]:
    """16 kHz PCM of CREMA-D clips as float32, cached as int16 in one .npz (None: no cache)."""
    from tqdm import tqdm

    cache = cache_dir / f"cremad_pcm_{sample_rate}.npz" if cache_dir else None
    pcm = _read_ragged(cache)
    todo = sorted(set(names) - set(pcm))
    for n in tqdm(todo, desc="pcm", leave=False):
        x = read_audio(cremad_audio_path(n, root), sample_rate)
        pcm[n] = np.round(np.clip(x, -1.0, 1.0) * 32767).astype(np.int16)
    if todo and cache is not None:
        _write_ragged(cache, pcm, "PCM")
    return {n: pcm[n].astype(np.float32) / 32767.0 for n in names}
