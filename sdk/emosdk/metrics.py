"""Classification metrics as the papers report them: one implementation for training and bench.

Micro-F1 over single-label classes equals accuracy; macro-F1 is the unweighted mean of the
per-class F1; UAR is the unweighted mean of the per-class recall.
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

    Classes absent from both truth and predictions do not enter the macro averages.
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
