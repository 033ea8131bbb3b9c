"""train/evaluate_face.py: test-time views, and the bundled face encoder on real FER2013 faces
through a real onnxruntime session."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from emosdk.features.face import FaceParams
from emosdk.metrics import classification_report
from emosdk.models import load_model
from train import FER_CLASSES
from train.common import face_views
from train.data import DATA_ROOT as DATA
from train.data import load_fer2013
from train.evaluate_face import blurred_faces, main


def test_face_views_shapes_mirrors_and_shifts():
    x = np.random.default_rng(0).normal(size=(3, 1, 12, 12)).astype(np.float32)
    assert len(face_views(x, "none")) == 1 and face_views(x, "none")[0] is x
    flip = face_views(x, "flip")
    assert len(flip) == 2 and np.array_equal(flip[1], x[..., ::-1])
    ten = face_views(x, "10crop")
    assert len(ten) == 10 and all(v.shape == x.shape for v in ten)
    # view 1 is shifted by 2 px: its rows 2.. are the face's rows 0..-2
    assert np.array_equal(ten[1][:, :, 2:], x[:, :, :-2])
    assert np.array_equal(ten[4][:, :, :, :-2], x[:, :, :, 2:])
    # the second half mirrors the first
    for a, b in zip(ten[:5], ten[5:], strict=True):
        assert np.array_equal(b, a[..., ::-1])
    with pytest.raises(ValueError, match="tta must be one of"):
        face_views(x, "5crop")


def test_bundled_face_encoder_on_real_fer2013(tmp_path):
    assert (DATA / "fer2013" / "manifest.csv").is_file(), f"FER2013 missing in {DATA}"
    out = tmp_path / "fer.json"
    res = main(
        ["--limit", "6", "--cache-dir", "", "--threads", "1", "--out-json", str(out)]
    )  # fmt: skip
    assert json.loads(out.read_text()) == res
    pt = res["splits"]["PublicTest"]
    assert set(pt) == {"none", "flip", "10crop"}
    assert all(r["n"] == 6 * len(FER_CLASSES) for r in pt.values())
    assert 800_000 < res["graph_values"] < 5_000_000
    # "none" is the graph's own argmax on the same faces
    graph = load_model("default").graph_path("face_encoder")
    sess = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    x, y = load_fer2013("PublicTest", FaceParams(), DATA, 6, cache_dir=None)
    pred = sess.run(["face_logits"], {"face": x})[0].argmax(-1)
    assert pt["none"] == classification_report(y, pred, FER_CLASSES)


def test_missing_fer_usage_is_a_clear_error():
    assert (DATA / "fer2013" / "manifest.csv").is_file(), f"FER2013 missing in {DATA}"
    with pytest.raises(ValueError, match="no 'PrivateTest' faces here"):
        load_fer2013("PrivateTest", FaceParams(), DATA, 2, cache_dir=None)


def test_latency_of_the_bundled_encoder_on_one_thread(tmp_path):
    res = main(
        ["--limit", "2", "--tta", "none", "--cache-dir", "", "--threads", "1", "--latency", "5"]
    )  # fmt: skip
    lat = res["latency"]
    graph = load_model("default").graph_path("face_encoder")
    assert lat["runs"] == 5 and lat["threads"] == 1 and lat["onnx_bytes"] == graph.stat().st_size
    assert 0.0 < lat["min_ms"] <= lat["p50_ms"] <= lat["p95_ms"]
    assert lat["machine"]["cpus"] >= 1


def test_motion_blur_view_scores_the_same_faces_blurred(tmp_path):
    res = main(["--limit", "6", "--cache-dir", "", "--threads", "1", "--tta", "none",
                "--motion-blur"])  # fmt: skip
    pt = res["splits"]["PublicTest"]
    assert set(pt) == {"none", "motion_blur_s3"}
    clean, blur = pt["none"], pt["motion_blur_s3"]
    assert clean["n"] == blur["n"] == 6 * len(FER_CLASSES)
    # the same faces in the same order: the per-class supports agree
    assert {c: v["support"] for c, v in clean["per_class"].items()} == {
        c: v["support"] for c, v in blur["per_class"].items()
    }
    # and blurred they are really different inputs: some predictions change
    graph = load_model("default").graph_path("face_encoder")
    sess = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    xb, yb = blurred_faces("PublicTest", DATA, 6)
    x, y = load_fer2013("PublicTest", FaceParams(), DATA, 6, cache_dir=None)
    assert (yb == y).all() and xb.shape == x.shape
    p_clean = sess.run(["face_logits"], {"face": x})[0].argmax(-1)
    p_blur = sess.run(["face_logits"], {"face": xb})[0].argmax(-1)
    assert (p_clean != p_blur).any()
    assert blur == classification_report(y, p_blur, FER_CLASSES)
