"""train/ckplus_cv.py on the real CK+48 faces: subject-independent folds, the zero-shot head and
the linear probe of the bundled face encoder, and one fine-tuning fold of a tiny encoder."""

from __future__ import annotations

import numpy as np
import pytest

from emosdk.models import load_model
from train.ckplus_cv import SHARED, finetune_fold, load_ckplus, run_cv, subject_folds
from train.common import save_state
from train.face_model import build_model


@pytest.fixture(scope="module")
def ckplus(shared_data):
    return load_ckplus(shared_data)


def test_shared_classes_only_and_folds_split_subjects(ckplus):
    x, y, subjects = ckplus
    assert x.shape[1:] == (1, 48, 48) and len(x) == len(y) == len(subjects)
    # contempt and surprise are dropped: only the five shared labels remain, each present
    assert sorted(set(y.tolist())) == list(range(len(SHARED)))
    assert len(y) == 570 and len(set(subjects.tolist())) == 85
    folds = subject_folds(subjects, 10)
    assert sorted(set(folds.tolist())) == list(range(10))
    for s in set(subjects.tolist()):  # every subject's faces sit in one fold
        assert len(set(folds[subjects == s].tolist())) == 1


def test_zero_shot_and_probe_of_the_bundled_encoder(ckplus):
    x, y, subjects = ckplus
    graph = load_model("default").graph_path("face_encoder")
    res = run_cv(x, y, subject_folds(subjects, 3), ["zero_shot", "probe"], graph=graph)
    for mode in ("zero_shot", "probe"):
        r = res[mode]
        assert len(r["fold_accuracy"]) == 3 and r["pooled"]["n"] == len(y)
        assert r["mean_accuracy"] == pytest.approx(np.mean(r["fold_accuracy"]), abs=1e-3)
    # a linear probe on the embedding beats chance (0.3 for the majority class) by far
    assert res["probe"]["mean_accuracy"] > 0.6
    with pytest.raises(ValueError, match="needs --checkpoint"):
        run_cv(x, y, subject_folds(subjects, 3), ["finetune"], graph=graph)


def test_finetune_fold_of_a_tiny_encoder(tmp_path, ckplus):
    x, y, subjects = ckplus
    cfg = {"d_video": 8, "stem": 4, "widths": [8, 8], "blocks": [1, 1], "dropout": 0.1}
    model = build_model(cfg)
    save_state(tmp_path / "best.pt", model=model.state_dict(), config=model.config)
    folds = subject_folds(subjects, 10)
    tr, te = folds != 0, folds == 0
    pred = finetune_fold(tmp_path / "best.pt", x[tr][:64], y[tr][:64], x[te], 1, 0.01, 0)
    assert pred.shape == (int(te.sum()),) and pred.min() >= 0 and pred.max() < len(SHARED)
