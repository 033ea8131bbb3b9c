"""The corruption benchmark on real files through the real runtime (the bundled default model):
the shipped CREMA-D clips (audio, video, both) and real FER2013 and CK+ faces."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import pytest

from emosdk import Recognizer, RecognizerConfig
from emosdk import robustness as R
from emosdk.bench import main
from emosdk.errors import InputError
from emosdk.evaluation import accuracy_run, decode, default_clips_manifest

SCHEMA = json.loads(
    (Path(__file__).parents[2] / "sdk" / "emosdk" / "bench_schema.json").read_text()
)
LABELS = ("anger", "disgust", "fear", "happiness", "neutral", "sadness")
SAMPLES = default_clips_manifest()  # six AV clips of actor 1001, then six mp3 of actor 1002


@pytest.fixture(scope="module")
def rec():
    with Recognizer(RecognizerConfig(num_threads=1, smoothing="none")) as r:
        yield r


@pytest.fixture(scope="module")
def rows(rec):
    rows, every, skipped = R.read_rows(SAMPLES, rec.labels)
    assert len(rows) == 12 and not skipped
    return rows, every


@pytest.fixture(scope="module")
def faces_manifest(shared_data, tmp_path_factory) -> Path:
    """Two real FER2013 PublicTest faces and two real CK+ faces per class (CK+ has no neutral)."""
    out = tmp_path_factory.mktemp("faces") / "faces.csv"
    folders = {
        "anger": ("angry", "anger"),
        "disgust": ("disgust", "disgust"),
        "fear": ("fear", "fear"),
        "happiness": ("happy", "happy"),
        "neutral": ("neutral", None),
        "sadness": ("sad", "sadness"),
    }
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "label"])
        for label, (fer, ck) in folders.items():
            for p in sorted((shared_data / "fer2013" / "PublicTest" / fer).glob("*.jpg"))[:2]:
                w.writerow([str(p), label])
            if ck is not None:
                for p in sorted((shared_data / "ckplus48" / ck).glob("*.png"))[:2]:
                    w.writerow([str(p), label])
    return out


def run_cli(capsys, *argv: str) -> dict:
    assert main(["robustness", *argv, "--json", "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out)
    jsonschema.validate(out, SCHEMA)
    return out


# -- metrics --------------------------------------------------------------------------------------
def test_a_file_without_a_label_counts_as_wrong():
    m = R.cell_metrics(
        ["a", "b"],
        ["a", "a", "b", "b"],
        ["a", None, "b", "a"],
        used=["audio", "", "audio", "audio"],
    )
    assert m["n"] == 4 and m["accuracy"] == 0.5 and m["answered"] == 0.75
    assert m["accuracy_answered"] == pytest.approx(2 / 3)
    # a: P 1/2, R 1/2; b: P 1, R 1/2 -> F1 0.5 and 2/3; the missing label is no class of its own
    assert m["macro_f1"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert m["contributed"] == {"audio": 0.75, "video": 0.0}
    assert m["by_quality"] is None
    flagged = R.cell_metrics(
        ["a", "b"], ["a", "a", "b", "b"], ["a", "b", "b", "a"], flags=[True, False, True, None]
    )
    q = flagged["by_quality"]
    assert q["reliable"] == {"n": 2, "share": 0.5, "accuracy": 1.0}
    assert q["unreliable"] == {"n": 1, "share": 0.25, "accuracy": 0.0}


def test_choose_checks_names_against_the_modality():
    assert [c.name for c in R.choose("av", None)][:2] == ["white_noise", "pink_noise"]
    assert len(R.choose("av", None)) == 16
    with pytest.raises(InputError, match="not available for --modality audio"):
        R.choose("audio", ["darken"])
    with pytest.raises(InputError, match="modality"):
        R.choose("face", None)


# -- the runtime on real files --------------------------------------------------------------------
def test_the_clean_cell_is_what_emosdk_bench_accuracy_measures(rec, rows):
    rows, _ = rows
    for modality, sel in (("audio", rows[6:]), ("video", rows[:3])):
        clips = [R.decode(rec, r, video=modality == "video") for r in sel]
        got = [R.score_clip(rec, c, modality, [(None, 0)], 0, [])["clean"] for c in clips]
        items = [decode(rec, r.path, r.label) for r in sel]
        rep, y_true, y_pred = accuracy_run(rec, items, modality)
        assert [LABELS[i] for i in y_pred] == [g[0] for g in got]
        assert all(g[3] == modality for g in got)  # audio alone, or video alone


def test_babble_talkers_are_clips_of_other_speakers(rec, rows):
    rows, every = rows
    talkers = R.Talkers(every, seed=0)
    assert {r.speaker for r in talkers.pool} == {"1001", "1002"}
    own = {R.read_audio(r.path).tobytes(): r.speaker for r in rows}
    for row in (rows[0], rows[7]):
        clips = talkers.for_row(row, seed=0)
        assert len(clips) == 2  # two clips per speaker in the pool, one other speaker
        assert {own[c.tobytes()] for c in clips} == {"1002" if row.speaker == "1001" else "1001"}
        assert [c.tobytes() for c in clips] == [c.tobytes() for c in talkers.for_row(row, 0)]


def test_video_corruptions_use_the_detector_box_of_the_clean_frame(rec, rows):
    rows, _ = rows
    clip = R.decode(rec, rows[0])
    assert len(clip.sampled) == len(clip.crops) == len(clip.boxes) >= 10
    assert all(b is not None for b in clip.boxes) and all(c is not None for c in clip.crops)
    x, y, w, h = clip.boxes[0]
    assert 60 < w < 200 and 60 < h < 200  # a face of a 480x360 CREMA-D frame
    out = R.score_clip(
        rec,
        clip,
        "video",
        [(None, 0), (R.C.CORRUPTIONS["downscale"], 5), (R.C.CORRUPTIONS["frame_rate"], 5)],
        0,
        [],
        reliable=lambda r, m: r.confidence > 0.5,
    )
    assert set(out) == {"clean", "downscale@5", "frame_rate@5"}
    assert out["frame_rate@5"][3] == "video"  # one frame in two seconds still gives a face
    assert all(v[2] in (True, False) for v in out.values() if v[0] is not None)


def test_cli_on_the_shipped_clips_both_modalities(capsys, tmp_path):
    argv = [
        "--manifest",
        str(SAMPLES),
        "--modality",
        "av",
        "--corruptions",
        "white_noise",
        "low_gain",
        "occlude_lower",
        "frame_rate",
        "--severities",
        "3",
        "5",
        "--limit",
        "2",
        "--cache",
        str(tmp_path / "cache.jsonl"),
        "--plots",
        str(tmp_path),
        "--out",
        str(tmp_path / "rb.json"),
    ]
    out = run_cli(capsys, *argv)
    assert out["command"] == "robustness" and out["modality"] == "av" and out["n_files"] == 2
    assert out["bundle"]["name"] and len(out["bundle"]["model_json_sha256"]) == 64
    assert set(out["cells"]) == {"white_noise", "low_gain", "occlude_lower", "frame_rate"}
    assert out["clean"]["contributed"] == {"audio": 1.0, "video": 1.0}
    # -50 dB of gain: the voice activity detector hears silence, the face still counts
    quiet = out["cells"]["low_gain"]["5"]
    assert quiet["contributed"] == {"audio": 0.0, "video": 1.0} and quiet["answered"] == 1.0
    assert quiet["parameters"] == {"gain_db": -50}
    assert [g["corruption"] for g in out["goal"]] == ["white_noise"]
    for name, s in out["summary"].items():
        mean = np.mean([out["cells"][name][k]["relative_macro_f1"] for k in ("3", "5")])
        assert s["relative_macro_f1"] == pytest.approx(mean)
    assert json.loads((tmp_path / "rb.json").read_text())["cells"] == out["cells"]
    for group in ("audio", "video"):
        img = cv2.imread(out["plots"][group])
        assert img is not None and img.shape[2] == 3
    # a rerun reads every file from the cache and gives the same figures
    lines = (tmp_path / "cache.jsonl").read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[0])["settings"]["modality"] == "av"
    again = run_cli(capsys, *argv)
    assert again["cells"] == out["cells"] and again["clean"] == out["clean"]
    # against itself as the reference, ImageNet-C's CE is 1
    ref = tmp_path / "rb.json"
    vs = run_cli(capsys, *argv, "--reference", str(ref))
    assert all(s["ce"] == pytest.approx(1.0) for s in vs["summary"].values() if s["ce"])
    # other settings do not mix with the cache
    with pytest.raises(InputError, match="other settings"):
        R.run(
            Recognizer(num_threads=1),
            SAMPLES,
            "av",
            ["white_noise"],
            [3],
            limit=2,
            cache=tmp_path / "cache.jsonl",
        )


@pytest.mark.parametrize("text", ['{\n  "schema_version": 1\n}\n', "[1, 2]\n", "file,label\n"])
def test_a_cache_file_that_is_not_a_robustness_cache_is_an_input_error(rec, tmp_path, text):
    # e.g. the pretty-printed --out JSON of an earlier run passed as --cache: it raised an
    # untyped JSONDecodeError (AttributeError for a list); the file is left as it was
    cache = tmp_path / "rb.json"
    cache.write_text(text)
    with pytest.raises(InputError, match="--cache: .*rb.json is not a robustness cache"):
        R.run(rec, SAMPLES, "audio", ["white_noise"], [3], limit=1, cache=cache)
    assert cache.read_text() == text


def test_cli_on_real_fer2013_and_ckplus_faces(capsys, faces_manifest):
    out = run_cli(
        capsys,
        "--manifest",
        str(faces_manifest),
        "--modality",
        "video",
        "--corruptions",
        "darken",
        "downscale",
        "occlude_upper",
        "frame_rate",
        "--severities",
        "3",
    )
    assert out["n_files"] == 22 and out["excluded"] == {}
    assert out["not_applicable"] == ["frame_rate"]  # single images have no frame rate
    assert set(out["cells"]) == {"darken", "downscale", "occlude_upper"}
    assert out["cells"]["downscale"]["3"]["parameters"] == {"face_px": 30}
    # a face crop is given as it is: every file gets a label, whatever the corruption
    for cells in out["cells"].values():
        assert cells["3"]["answered"] == 1.0 and cells["3"]["contributed"]["video"] == 1.0
    assert [g["corruption"] for g in out["goal"]] == ["darken"]


def test_cli_refuses_audio_files_for_video_and_bad_corruption_names(capsys, tmp_path):
    assert (
        main(
            [
                "robustness",
                "--manifest",
                str(SAMPLES),
                "--modality",
                "audio",
                "--corruptions",
                "jpeg",
            ]
        )
        == 2
    )
    assert "not available for --modality audio" in capsys.readouterr().err
    audio_only = tmp_path / "audio.csv"
    audio_only.write_text(
        "file,label\n" + "".join(f"{p},anger\n" for p in sorted(SAMPLES.parent.glob("1002_*")))
    )
    assert (
        main(
            [
                "robustness",
                "--manifest",
                str(audio_only),
                "--modality",
                "video",
                "--corruptions",
                "jpeg",
                "--severities",
                "1",
            ]
        )
        == 2
    )
    assert "no_video" in capsys.readouterr().err
