"""int8 variants: written into the bundle with hashes, run by the runtime, refused when they
lose accuracy."""

import json
import shutil

import numpy as np
import pytest

from emosdk import Recognizer
from emosdk.evaluation import default_clips_manifest
from emosdk.export.quantize import QuantizationRejectedError, quantize_bundle
from emosdk.models.bundle import load_bundle


@pytest.fixture
def bundle(fixture_bundle, tmp_path):
    dst = tmp_path / "bundle"
    shutil.copytree(fixture_bundle, dst)
    return dst


def test_int8_variant_is_recorded_verified_and_close_to_fp32(bundle, decoded_clips):
    variant = quantize_bundle(bundle)
    assert variant == {r: f"{r}.int8.onnx" for r in ("audio_encoder", "face_encoder", "fusion")}
    meta = load_bundle(bundle).meta  # hashes of the new files verified here
    assert set(variant.values()) <= set(meta["files"])
    _, audio, frames = decoded_clips[0]
    faces = [f for _, f in frames[::6]]
    with Recognizer(model=bundle) as fp32, Recognizer(model=bundle, precision="int8") as int8:
        assert all(g.path.name.endswith(".int8.onnx") for g in int8._graphs.values())
        a = np.array(list(fp32.predict(audio=audio, frame=faces).raw_scores.values()))
        b = np.array(list(int8.predict(audio=audio, frame=faces).raw_scores.values()))
    assert np.abs(a - b).max() < 0.05


def test_int8_with_an_accuracy_check_records_the_figures(bundle):
    quantize_bundle(bundle, manifest=default_clips_manifest(), max_drop=1.0)
    check = json.loads((bundle / "model.json").read_text())["metrics"]["int8_check"]
    assert check["fp32"]["n"] == check["int8"]["n"] == 12
    assert check["macro_f1_drop"] == pytest.approx(
        check["fp32"]["macro_f1"] - check["int8"]["macro_f1"]
    )


def test_a_variant_that_loses_accuracy_is_refused_and_removed(bundle):
    with pytest.raises(QuantizationRejectedError, match="macro-F1"):
        quantize_bundle(bundle, manifest=default_clips_manifest(), max_drop=-1.0)
    meta = load_bundle(bundle).meta
    assert "int8" not in meta.get("variants", {})
    assert not list(bundle.glob("*.int8.onnx"))
    quantize_bundle(bundle, manifest=default_clips_manifest(), max_drop=-1.0, force=True)
    assert json.loads((bundle / "model.json").read_text())["metrics"]["int8_check"]["forced"]


def test_static_int8_face_encoder_calibrated_on_real_files(bundle, shared_data, av_clips):
    import csv

    import onnx

    rows = list(csv.DictReader(open(shared_data / "fer2013" / "manifest.csv")))
    faces = [shared_data / "fer2013" / r["file"] for r in rows if r["usage"] == "Training"][:32]
    speech = sorted((av_clips[0].parent).glob("1002_*.mp3"))
    quantize_bundle(
        bundle, calibration=[*speech, *faces], manifest=default_clips_manifest(), max_drop=1.0
    )
    check = json.loads((bundle / "model.json").read_text())["metrics"]["int8_check"]
    assert check["mode"] == {
        "audio_encoder": "dynamic",
        "face_encoder": "static QDQ",
        "fusion": "dynamic",
    }
    graph = onnx.load(str(bundle / "face_encoder.int8.onnx"))
    ops = {n.op_type for n in graph.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # explicit Q/DQ, as TensorRT wants
    with Recognizer(model=bundle, precision="int8") as rec:
        r = rec.predict(face=[np.zeros((48, 48), np.uint8) + 128])
        assert r.label is not None


def test_calibration_needs_both_modalities(bundle, av_clips):
    with pytest.raises(ValueError, match="both audio files and face images"):
        quantize_bundle(bundle, calibration=sorted(av_clips[0].parent.glob("1002_*.mp3")))
