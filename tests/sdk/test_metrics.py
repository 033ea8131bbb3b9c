"""emosdk.metrics: the one classification report of the bench, the training scripts and the
reports, against hand-computed values and a per-class reference of scikit-learn's rule."""

from __future__ import annotations

import numpy as np
import pytest

from emosdk.metrics import classification_report, confusion_matrix

LABELS = ("anger", "disgust", "fear", "happiness", "neutral", "sadness")


def reference_macro_f1(y: np.ndarray, p: np.ndarray) -> float:
    """scikit-learn's f1_score(y, p, average="macro") with labels=None: the mean F1 over the
    sorted union of the classes in y and p, F1 = 2 TP / (2 TP + FP + FN)."""
    f1s = []
    for c in np.union1d(y, p):
        tp = np.sum((p == c) & (y == c))
        fp = np.sum((p == c) & (y != c))
        fn = np.sum((p != c) & (y == c))
        f1s.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s))


def test_a_class_predicted_but_never_true_counts_with_f1_zero() -> None:
    """true [0,0,1,1], predicted [0,0,1,2]: F1 1, 2/3 and 0 -> macro 5/9 (0.556), not the 0.833
    of an average over the true classes alone."""
    r = classification_report([0, 0, 1, 1], [0, 0, 1, 2], LABELS[:3])
    assert r["macro_f1"] == pytest.approx(5 / 9)
    assert round(r["macro_f1"], 3) == 0.556
    assert [r["per_class"][k]["f1"] for k in LABELS[:3]] == pytest.approx([1.0, 2 / 3, 0.0])
    assert r["accuracy"] == r["micro_f1"] == 0.75
    assert r["uar"] == pytest.approx(0.75)  # recall over the true classes: (1 + 1/2) / 2
    assert r["confusion"] == [[2, 0, 0], [0, 1, 1], [0, 0, 0]]
    # the same with the full six-label set: the three classes that never occur stay out
    six = classification_report([0, 0, 1, 1], [0, 0, 1, 2], LABELS)
    assert six["macro_f1"] == pytest.approx(5 / 9)
    assert six["per_class"]["sadness"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_full_label_set_every_class_true_averages_all_six() -> None:
    """The reports' case: every class occurs in the truth, so macro-F1 is the mean over all."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(6), [150, 126, 130, 186, 243, 64])  # CREMA-D p1 Test counts
    p = np.where(rng.random(len(y)) < 0.6, y, rng.integers(0, 6, len(y)))
    r = classification_report(y, p, LABELS)
    f1 = [r["per_class"][k]["f1"] for k in LABELS]
    assert r["macro_f1"] == pytest.approx(np.mean(f1), abs=1e-12)
    assert r["macro_f1"] == pytest.approx(reference_macro_f1(y, p), abs=1e-12)
    recall = np.diag(confusion_matrix(y, p, 6)) / np.bincount(y)
    assert r["uar"] == pytest.approx(recall.mean(), abs=1e-12)
    assert r["accuracy"] == pytest.approx(np.mean(y == p), abs=1e-12)
    assert r["n"] == len(y) and sum(map(sum, r["confusion"])) == len(y)


@pytest.mark.parametrize("seed", range(20))
def test_macro_f1_follows_scikit_learns_rule_on_sparse_labels(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 12))
    y = rng.choice([0, 2, 3], n)  # classes 1, 4, 5 never true
    p = rng.integers(0, 6, n)
    r = classification_report(y, p, LABELS)
    assert r["macro_f1"] == pytest.approx(reference_macro_f1(y, p), abs=1e-12)


def test_empty_input_gives_zeros() -> None:
    r = classification_report([], [], LABELS)
    assert (r["n"], r["accuracy"], r["macro_f1"], r["uar"]) == (0, 0.0, 0.0, 0.0)
