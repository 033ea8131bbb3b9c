"""train/face_recipe.py, face_aug.py, face_teacher.py, distill.py, face_model.py and
train/models/face.py on real FER2013 faces: smoke-sized runs (a few steps of a tiny net), resume,
export, teacher cache."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from emosdk.features.face import FaceParams
from emosdk.models import load_model
from train.data import DATA_ROOT as DATA
from train.data import load_fer2013
from train.distill import teacher_probs
from train.face_aug import (
    CORRUPTIONS,
    corrupt_faces,
    corrupt_one,
    geometric,
    mix_batch,
    random_erase,
    soft_targets,
)
from train.face_recipe import batch_indices, main, parse_args
from train.models import count_params
from train.models.face import FaceResNet, multiply_adds

TINY = ["--stem", "4", "--widths", "8,8,16,16", "--d-video", "16", "--batch", "8",
        "--threads", "1", "--cache-dir", "", "--limit", "4"]  # fmt: skip


@pytest.fixture(scope="module")
def fer():
    assert (DATA / "fer2013" / "manifest.csv").is_file(), f"FER2013 missing in {DATA}"
    return load_fer2013("PublicTest", FaceParams(), DATA, 4, cache_dir=None)


def test_default_face_resnet_fits_the_issue_budget():
    m = FaceResNet()
    emb, logits = m(torch.zeros(3, 1, 48, 48))
    assert emb.shape == (3, 128) and logits.shape == (3, 7)
    assert 1_000_000 < count_params(m) <= 2_000_000
    # the stem runs at 48x48, the stages at 24, 12, 6, 3: about half the seed VGG's 84 M
    assert 30e6 < multiply_adds(m) < 60e6
    with pytest.raises(ValueError, match="must pair up"):
        FaceResNet(widths=(8, 16), blocks=(1,))


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_each_corruption_changes_a_real_face_within_range(fer, kind):
    g = np.clip(fer[0][3, 0] * 0.5 + 0.5, 0.0, 1.0)
    out = corrupt_one(g, kind, np.random.default_rng(1))
    assert out.shape == g.shape and out.min() >= 0.0 and out.max() <= 1.0
    assert np.abs(out - g).mean() > 0.005, kind
    if kind == "dark":
        assert out.mean() < 0.7 * g.mean()
    if kind == "occlusion":  # a band of whole rows at the top or the bottom changed
        changed = np.abs(out - g).max(1) > 0
        assert changed[0] != changed[-1]
    with pytest.raises(ValueError, match="corruption kind"):
        corrupt_one(g, "fog", np.random.default_rng(0))


def test_batch_augmentations_keep_shapes_and_targets(fer):
    x = fer[0][:8]
    rng = np.random.default_rng(0)
    assert np.array_equal(corrupt_faces(x, 0.0, rng), x)
    c = corrupt_faces(x, 1.0, rng)
    assert c.shape == x.shape and not np.array_equal(c, x)
    xt = torch.from_numpy(x)
    g = geometric(xt, rng, rotate_deg=0.0, scale=(1.0, 1.0), shift=0.0, flip=False)
    assert torch.allclose(g, xt, atol=1e-5)  # the identity warp leaves faces as they are
    t = torch.from_numpy(soft_targets(fer[1][:8], 7, 0.1))
    assert torch.allclose(t.sum(-1), torch.ones(8)) and float(t.max()) == pytest.approx(
        0.9 + 0.1 / 7
    )
    for seed in range(6):  # mixup and CutMix both occur: targets stay distributions
        xm, tm = mix_batch(xt, t, np.random.default_rng(seed), p=1.0)
        assert xm.shape == xt.shape and torch.allclose(tm.sum(-1), torch.ones(8))
    e = random_erase(xt, np.random.default_rng(0), p=1.0)
    assert (e != xt).any(dim=(1, 2, 3)).all()


def test_batch_order_is_a_function_of_the_step():
    a = batch_indices(100, 10, 0, 13)
    assert np.array_equal(a, batch_indices(100, 10, 0, 13)) and len(set(a)) == 10
    epoch = np.concatenate([batch_indices(100, 10, 0, s) for s in range(10, 20)])
    assert sorted(epoch) == list(range(100))  # each epoch sees each face once


def test_teacher_probs_cache(tmp_path, fer):
    graph = load_model("default").graph_path("face_encoder")
    x = fer[0][:10]
    cache = tmp_path / "t.npz"
    p = teacher_probs([graph], x, "flip", cache)
    assert p.shape == (10, 7) and np.allclose(p.sum(-1), 1.0, atol=1e-5)
    assert np.array_equal(teacher_probs([graph], x, "flip", cache), p)  # from the cache
    q = teacher_probs([graph], x, "none", cache)  # another key: recomputed, not the stale one
    assert not np.array_equal(q, p)


def test_smoke_run_resumes_exports_and_refuses_other_settings(tmp_path, fer):
    out = tmp_path / "run"
    graph = str(load_model("default").graph_path("face_encoder"))
    args = ["--out", str(out), "--epochs", "2", "--teacher", graph, "--teacher-tta", "none", *TINY]
    stopped = main([*args, "--max-steps", "2"])  # 28 faces, 3 steps an epoch: stops mid-epoch
    assert stopped["step"] == 2 and stopped["of"] == 6 and "publictest" not in stopped
    last = torch.load(out / "last.pt", weights_only=False)
    assert last["step"] == 2
    summary = main(args)  # resumes at step 2 and finishes the 6 steps
    assert summary["steps"] == 6 and summary["of"] == 6
    assert [h["step"] for h in summary["history"]] == [3, 6]
    assert 0.0 <= summary["publictest"]["none"]["accuracy"] <= 1.0
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert any(r["stage"] == "teacher" for r in log)
    sess = ort.InferenceSession(summary["onnx"], providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["face_emb", "face_logits"]
    emb, logits = sess.run(None, {"face": fer[0][:5]})
    assert emb.shape == (5, 16) and logits.shape == (5, 7)
    assert main(args) == json.loads((out / "summary.json").read_text())  # finished: loaded
    with pytest.raises(ValueError, match="other settings"):
        main([*args, "--lr", "0.2"])


def test_cli_parses_lists_and_flags():
    cfg = parse_args(["--widths", "8,16", "--blocks", "1,2", "--teacher", "a.onnx", "--no-export"])
    assert cfg.widths == (8, 16) and cfg.blocks == (1, 2) and not cfg.export
    assert cfg.teachers[0].endswith("a.onnx") and cfg.channels_last
    assert cfg.optimizer == "adamw" and parse_args(["--optimizer", "sgd"]).optimizer == "sgd"


def test_unknown_optimizer_is_refused(tmp_path):
    with pytest.raises(ValueError, match="optimizer must be"):
        main(["--out", str(tmp_path / "r"), "--optimizer", "lamb", "--max-steps", "1", *TINY])
