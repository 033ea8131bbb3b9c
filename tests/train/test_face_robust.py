"""train.face_robust: a plain-CNN face encoder graph read back into torch exactly, and a
smoke-sized robust fine-tune on real FER2013 faces that resumes, logs its PublicTest figures and
exports a graph with the original's inputs and outputs.

face_robust hardens the seed's plain CNN (how bundles 0.3.0 and 0.3.1 got their face encoder);
the default bundle since 0.5.1 ships a residual encoder trained with the corruptions from the
start (train.face_recipe), which this reader refuses (tested below). The tests use the fixture
bundle's face encoder: the seed architecture with random weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from train import face_robust as FR

REPO = Path(__file__).resolve().parents[2]
FACE = REPO / "tests" / "data" / "fixture_bundle" / "face_encoder.onnx"
SHIPPED = REPO / "sdk" / "emosdk" / "models" / "bundled" / "default" / "face_encoder.onnx"


def test_a_residual_encoder_is_refused_with_the_node_named() -> None:
    with pytest.raises(ValueError, match="only ungrouped stride-1 convolutions"):
        FR.cnn_from_onnx(SHIPPED)


def test_a_plain_cnn_face_encoder_reads_back_into_torch() -> None:
    model = FR.cnn_from_onnx(FACE).eval()
    x = np.random.default_rng(0).standard_normal((3, 1, 48, 48)).astype(np.float32)
    sess = ort.InferenceSession(str(FACE), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {"face": x})
    got = FR.encode(model, x)
    for r, g in zip(ref, got):
        np.testing.assert_allclose(g, r, atol=1e-4)


def test_smoke_fine_tune_resumes_and_exports(tmp_path: Path, shared_data: Path) -> None:
    out = tmp_path / "run"
    args = ["--encoder", str(FACE), "--out", str(out), "--limit", "12", "--batch", "16",
            "--data-root", str(shared_data)]  # fmt: skip
    first = FR.main([*args, "--epochs", "1"])
    assert [e["epoch"] for e in first["log"]] == [0, 1]
    e0 = first["log"][0]
    # epoch 0 is the original itself: no shift, the same accuracy as the original
    assert e0["student"]["clean_shift"] == 0 and e0["student"] == e0["original"]
    # blur at the benchmark's severity 3 moves the original's embeddings
    assert e0["original"]["blur_s3_distance"] > 0.05
    second = FR.main([*args, "--epochs", "2"])  # resumes after epoch 1
    assert [e["epoch"] for e in second["log"]] == [0, 1, 2]
    assert second["log"][1] == first["log"][1]
    sess = ort.InferenceSession(second["onnx"], providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["face"]
    assert [o.name for o in sess.get_outputs()] == ["face_emb", "face_logits"]
    assert json.loads((out / "summary.json").read_text())["faces"] == first["faces"]


def test_kind_weights_draw_the_named_kinds_and_refuse_bad_items() -> None:
    w = FR.kind_weights(["motion_blur=4"])
    assert w[FR.FACE_KINDS.index("motion_blur")] == 0.4 and abs(w.sum() - 1) < 1e-12
    for bad in (["blur=2"], ["motion_blur"], ["motion_blur=x"], ["motion_blur=-1"],
                [f"{k}=0" for k in FR.FACE_KINDS]):  # fmt: skip
        try:
            FR.kind_weights(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad} accepted")


def test_weighted_corruption_draws_only_the_weighted_kind() -> None:
    from emosdk.features.face import FaceParams

    meta = json.loads((FACE.parent / "model.json").read_text())
    fp = FaceParams(**meta["face"])
    rng = np.random.default_rng(0)
    faces = rng.integers(60, 200, (8, fp.size, fp.size, 3), dtype=np.uint8)
    only_dark = FR.kind_weights([f"{k}=0" for k in FR.FACE_KINDS if k != "darken"])
    clean = FR.normalise(faces, fp)
    dark = FR.corrupted(faces, 1.0, np.random.default_rng(1), fp, only_dark)
    # every face darkened: each normalised face's mean falls
    assert (dark.mean(axis=(1, 2, 3)) < clean.mean(axis=(1, 2, 3))).all()
