"""Loaders for the real corpora in ``../shared/data`` other than the CREMA-D partitions.

Every corpus goes through one generic manifest reader (ARCHITECTURE section 7: a CSV with at
least ``file,label``, ``file`` relative to the CSV's folder) with an explicit label map per corpus.
A label the map sends to ``None`` is dropped on purpose, a label the map does not know is dropped
as unknown; both are counted per label in :attr:`Corpus.dropped` and logged, so nothing
disappears silently.

    from train.corpora import load_corpus
    ravdess = load_corpus("ravdess")          # 880 clips kept; calm 160, surprise 160 dropped
    print(ravdess.report())

CREMA-D's six audio-visual clips (Flash video with MP3 audio) decode to frames and audio on one
timeline with :func:`load_cremad_av_clips`, the same decoder the runtime uses for media files,
so a real audio-visual corpus in flv/mp4/avi works the day one is available.
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import LABELS
from .data import DATA_ROOT

logger = logging.getLogger("emosdk.train")

#: identity on the six project classes
SIX = {name: name for name in LABELS}

#: per corpus: manifest, speaker column, modality and the explicit label map (None = drop).
CORPORA: dict[str, dict] = {
    "ravdess": {
        "manifest": "ravdess/manifest.csv",
        "speaker": "actor",
        "kind": "audio",
        # calm is not neutral (RAVDESS records both, with different prosody); surprise has no
        # project class
        "labels": SIX | {"calm": None, "surprise": None},
    },
    "emodb": {
        "manifest": "emodb/manifest.csv",
        "speaker": "speaker",
        "kind": "audio",
        "labels": SIX | {"boredom": None},
    },
    "ckplus48": {
        "manifest": "ckplus48/manifest.csv",
        "speaker": "subject",
        "kind": "face",
        "labels": SIX | {"contempt": None, "surprise": None},
    },
    "fer2013": {
        "manifest": "fer2013/manifest.csv",
        "speaker": None,  # web images: no subject ids
        "kind": "face",
        "labels": SIX | {"surprise": None},
    },
    "cremad": {  # intended labels from the file names; the papers use the partitions instead
        "manifest": "cremad/manifest.csv",
        "speaker": "actor",
        "label_column": "intended",
        "kind": "audio",
        "labels": SIX,
    },
}


@dataclass(frozen=True)
class Item:
    """One file of a corpus: its absolute path, project label index and speaker (or "")."""

    path: Path
    label: int
    speaker: str
    row: dict = field(compare=False, repr=False)


@dataclass
class Corpus:
    """The kept items of a manifest, and what was dropped and why."""

    name: str
    kind: str  # "audio", "face" or "video"
    items: list[Item]
    dropped: Counter  # source label -> rows dropped on purpose (mapped to None)
    unknown: Counter  # source label -> rows whose label the map does not know

    @property
    def labels(self) -> np.ndarray:
        return np.array([it.label for it in self.items], np.int64)

    def report(self) -> str:
        kept = Counter(LABELS[it.label] for it in self.items)
        counts = ", ".join(f"{k} {v}" for k, v in sorted(kept.items()))
        parts = [f"{self.name}: kept {len(self.items)} ({counts})"]
        if self.dropped:
            parts.append(
                "dropped " + ", ".join(f"{k} {v}" for k, v in sorted(self.dropped.items()))
            )
        if self.unknown:
            parts.append(
                "unknown labels " + ", ".join(f"{k} {v}" for k, v in sorted(self.unknown.items()))
            )
        return "; ".join(parts)


def load_manifest(
    path: str | Path,
    label_map: dict[str, str | None] | None = None,
    *,
    name: str | None = None,
    kind: str = "audio",
    speaker_column: str | None = "speaker",
    label_column: str = "label",
    filters: dict[str, str] | None = None,
) -> Corpus:
    """Read a manifest CSV (``file,label[,speaker]``; ``file`` relative to the CSV's folder).

    Args:
        path: the CSV.
        label_map: source label -> project label (one of ``LABELS``) or None to drop it. None
            means the six project labels as they are.
        name: the corpus name in reports (default: the CSV's folder name).
        kind: "audio", "face" or "video" (what the files hold).
        speaker_column: optional column naming the speaker/subject (speakers are "" without it).
        label_column: column holding the label.
        filters: keep only rows whose columns equal these values (e.g. ``{"usage": "Training"}``).

    Raises:
        FileNotFoundError: the CSV does not exist.
        ValueError: a required column is missing, or the map targets a label outside ``LABELS``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest {path} does not exist")
    label_map = dict(SIX if label_map is None else label_map)
    bad = {v for v in label_map.values() if v is not None and v not in LABELS}
    if bad:
        raise ValueError(f"label map targets {sorted(bad)}; project labels are {list(LABELS)}")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        cols = set(reader.fieldnames or ())
        need = {"file", label_column} | set(filters or ())
        if need - cols:
            raise ValueError(f"{path}: missing column(s) {sorted(need - cols)}; has {sorted(cols)}")
        rows = list(reader)
    items, dropped, unknown = [], Counter(), Counter()
    for r in rows:
        if filters and any(r[k] != v for k, v in filters.items()):
            continue
        src = r[label_column]
        if src not in label_map:
            unknown[src] += 1
            continue
        target = label_map[src]
        if target is None:
            dropped[src] += 1
            continue
        speaker = r.get(speaker_column, "") if speaker_column else ""  # optional column
        items.append(Item(path.parent / r["file"], LABELS.index(target), speaker, r))
    corpus = Corpus(name or path.parent.name, kind, items, dropped, unknown)
    logger.info("%s", corpus.report())
    if unknown:
        logger.warning(
            "%s: %d rows with labels the map does not know", corpus.name, sum(unknown.values())
        )
    return corpus


def load_corpus(name: str, root: Path = DATA_ROOT, **filters: str) -> Corpus:
    """One of :data:`CORPORA` with its explicit label map, e.g. ``load_corpus("fer2013",
    usage="PublicTest")``."""
    if name not in CORPORA:
        raise ValueError(f"corpus: expected one of {sorted(CORPORA)}, got {name!r}")
    spec = CORPORA[name]
    return load_manifest(
        Path(root) / spec["manifest"],
        spec["labels"],
        name=name,
        kind=spec["kind"],
        speaker_column=spec["speaker"],
        label_column=spec.get("label_column", "label"),
        filters=filters or None,
    )


@dataclass
class AVClip:
    """A real audio-visual recording decoded on one timeline."""

    path: Path
    label: int  # the intended emotion from the CREMA-D file name
    audio: np.ndarray  # (samples,) float32 at 16 kHz
    frames: list[tuple[float, np.ndarray]]  # (t_ms, BGR uint8 image), t from the clip's start

    @property
    def duration_s(self) -> tuple[float, float]:
        """(audio seconds, video seconds)."""
        fps_gap = np.median(np.diff([t for t, _ in self.frames])) if len(self.frames) > 1 else 0
        return len(self.audio) / 16000.0, (self.frames[-1][0] + fps_gap) / 1000.0


CREMAD_CODES = {
    "ANG": "anger", "DIS": "disgust", "FEA": "fear", "HAP": "happiness", "NEU": "neutral",
    "SAD": "sadness",
}  # fmt: skip


def load_cremad_av_clips(root: Path = DATA_ROOT, pattern: str = "*.flv") -> list[AVClip]:
    """The CREMA-D audio-visual clips (``cremad/av_clips``), frames and audio on one timeline.

    Decoded with the runtime's media reader (PyAV; needs ``emosdk[capture]``), so mp4, avi and
    webm recordings load the same way. Labels are the intended emotions of the file names.
    """
    from emosdk.capture.media import read_media

    clips = []
    for p in sorted((Path(root) / "cremad" / "av_clips").glob(pattern)):
        code = p.stem.split("_")[2]
        if code not in CREMAD_CODES:
            logger.warning("skipping %s: unknown emotion code %s", p.name, code)
            continue
        audio, frames = read_media(p)
        clips.append(AVClip(p, LABELS.index(CREMAD_CODES[code]), audio, frames))
    if not clips:
        raise FileNotFoundError(f"no {pattern} clips in {Path(root) / 'cremad' / 'av_clips'}")
    return clips
