"""Classification metrics as the papers report them: the one implementation behind
``emosdk-bench``, the training scripts (``train/``) and the reports.

Micro-F1 over single-label classes equals accuracy; macro-F1 is the unweighted mean of the
per-class F1 over the classes present in the true or the predicted labels (scikit-learn's
``f1_score(average="macro")`` with its default ``labels=None``: a class that is predicted but never
true has F1 0 and counts); UAR is the unweighted mean of the per-class recall over the classes
present in the true labels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> np.ndarray:
    """Counts, rows = true class, columns = predicted class, shape (n_classes, n_classes)."""
    cm = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(cm, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    return cm


def classification_report(
    y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]
) -> dict:
    """Accuracy, macro-F1, micro-F1, UAR, per-class precision/recall/F1/support, confusion.

    Args:
        y_true, y_pred: class indices in ``0 .. len(labels) - 1``.
        labels: class names, in index order. They size the confusion matrix and name the
            ``per_class`` entries; they do not force every class into the averages: a class absent
            from both ``y_true`` and ``y_pred`` is left out of macro-F1 (as scikit-learn leaves
            out a class it never sees), a class predicted but absent from ``y_true`` enters it
            with F1 0. When every class occurs in ``y_true`` (the CREMA-D and FER2013 splits of
            the reports), macro-F1 is the mean over all ``labels``.

    Returns:
        ``n``, ``accuracy``, ``macro_f1``, ``micro_f1``, ``uar``, ``per_class`` (label ->
        precision, recall, f1, support), ``confusion`` (rows true, columns predicted) and
        ``labels``. Empty inputs give 0.0 for every figure.
    """
    n = len(labels)
    cm = confusion_matrix(y_true, y_pred, n)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = (support + predicted) > 0
    total = int(cm.sum())
    accuracy = float(tp.sum() / total) if total else 0.0
    return {
        "n": total,
        "accuracy": accuracy,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "micro_f1": accuracy,
        "uar": float(recall[support > 0].mean()) if (support > 0).any() else 0.0,
        "per_class": {
            lab: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, lab in enumerate(labels)
        },
        "confusion": cm.tolist(),
        "labels": list(labels),
    }
