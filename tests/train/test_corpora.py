"""The corpus loaders on the real data in ../shared/data (or $EMOSDK_DATA): explicit label maps,
every dropped row counted, and the CREMA-D audio-visual clips on one timeline."""

from __future__ import annotations

import csv
from collections import Counter

import numpy as np
import pytest

from train import LABELS
from train.corpora import load_corpus, load_cremad_av_clips, load_manifest
from train.data import DATA_ROOT as DATA


def manifest_labels(name: str) -> Counter:
    path = DATA / name / "manifest.csv"
    assert path.is_file(), f"{name} missing in {DATA}"
    with open(path, newline="") as f:
        return Counter(r["label"] for r in csv.DictReader(f))


@pytest.mark.parametrize(
    ("name", "dropped"),
    [
        ("ravdess", {"calm", "surprise"}),
        ("emodb", {"boredom"}),
        ("ckplus48", {"contempt", "surprise"}),
        ("fer2013", {"surprise"}),
    ],
)
def test_corpus_keeps_the_six_classes_and_counts_what_it_drops(name, dropped):
    source = manifest_labels(name)
    corpus = load_corpus(name)
    assert set(corpus.dropped) == dropped and not corpus.unknown
    assert {k: v for k, v in corpus.dropped.items()} == {k: source[k] for k in dropped}
    assert len(corpus.items) + sum(corpus.dropped.values()) == sum(source.values())
    kept = Counter(LABELS[i] for i in corpus.labels)
    assert kept == {k: v for k, v in source.items() if k not in dropped}
    assert all(it.path.is_file() for it in corpus.items[:: max(1, len(corpus.items) // 20)])
    for k in dropped:
        assert f"{k} {source[k]}" in corpus.report()


def test_speakers_and_filters():
    ravdess = load_corpus("ravdess")
    assert len({it.speaker for it in ravdess.items}) == 20
    public = load_corpus("fer2013", usage="PublicTest")
    assert len(public.items) + public.dropped["surprise"] == 3589
    assert all("PublicTest" in str(it.path) for it in public.items)


def test_generic_manifest_relative_paths_unknown_labels_and_errors(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"")
    (tmp_path / "m.csv").write_text("file,label\na.wav,anger\nb.wav,contempt\nc.wav,joy\n")
    c = load_manifest(tmp_path / "m.csv", {"anger": "anger", "contempt": None})
    assert [it.path for it in c.items] == [tmp_path / "a.wav"]
    assert c.dropped == {"contempt": 1} and c.unknown == {"joy": 1}
    assert "unknown labels joy 1" in c.report()
    (tmp_path / "bad.csv").write_text("path,label\na.wav,anger\n")
    with pytest.raises(ValueError, match="missing column"):
        load_manifest(tmp_path / "bad.csv")
    with pytest.raises(ValueError, match="project labels"):
        load_manifest(tmp_path / "m.csv", {"anger": "rage"})
    with pytest.raises(FileNotFoundError):
        load_manifest(tmp_path / "none.csv")
    with pytest.raises(ValueError, match="expected one of"):
        load_corpus("iemocap")


def test_cremad_av_clips_decode_on_one_timeline():
    clips = load_cremad_av_clips()
    assert [LABELS[c.label] for c in clips] == list(LABELS)  # one per class, actor 1001
    for c in clips:
        audio_s, video_s = c.duration_s
        assert 1.8 < audio_s < 2.5 and abs(audio_s - video_s) < 0.1, c.path.name
        times = np.array([t for t, _ in c.frames])
        assert times[0] < 40 and np.allclose(np.diff(times), 1000 / 29.97, atol=1.0)
        assert c.frames[0][1].shape == (360, 480, 3) and c.audio.dtype == np.float32
        assert np.sqrt(np.mean(c.audio**2)) > 0.005  # real speech, not silence
