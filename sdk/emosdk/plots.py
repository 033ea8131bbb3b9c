"""PNG plots drawn with OpenCV (already in the ``capture`` extra; no matplotlib needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import BackendUnavailableError


def _cv2():
    try:
        import cv2
    except ImportError as e:
        raise BackendUnavailableError('plots need OpenCV: pip install "emosdk[capture]"') from e
    return cv2


def plot_confusion(report: dict, path: Path) -> Path:
    """Row-normalised confusion matrix with counts, as a PNG."""
    cv2 = _cv2()
    labels, cm = report["labels"], np.asarray(report["confusion"], np.float64)
    n, cell, left, top = len(labels), 70, 110, 70
    img = np.full((top + n * cell + 60, left + n * cell + 20, 3), 255, np.uint8)
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    font = cv2.FONT_HERSHEY_SIMPLEX
    title = (
        f"n={report['n']}  acc={report['accuracy']:.3f}  macro-F1={report['macro_f1']:.3f}"
        f"  UAR={report['uar']:.3f}"
    )
    cv2.putText(img, title, (10, 25), font, 0.5, (0, 0, 0), 1)
    for i in range(n):
        for j in range(n):
            shade = int(255 - 200 * frac[i, j])
            x0, y0 = left + j * cell, top + i * cell
            cv2.rectangle(img, (x0, y0), (x0 + cell, y0 + cell), (255, shade, shade), -1)
            cv2.rectangle(img, (x0, y0), (x0 + cell, y0 + cell), (200, 200, 200), 1)
            color = (255, 255, 255) if frac[i, j] > 0.6 else (0, 0, 0)
            cv2.putText(img, f"{int(cm[i, j])}", (x0 + 8, y0 + 28), font, 0.5, color, 1)
            cv2.putText(img, f"{frac[i, j]:.2f}", (x0 + 8, y0 + 52), font, 0.4, color, 1)
        cv2.putText(img, labels[i][:10], (8, top + i * cell + 40), font, 0.45, (0, 0, 0), 1)
        cv2.putText(img, labels[i][:8], (left + i * cell + 4, top - 10), font, 0.4, (0, 0, 0), 1)
    cv2.putText(
        img,
        "rows: true class, columns: predicted",
        (10, img.shape[0] - 20),
        font,
        0.45,
        (90, 90, 90),
        1,
    )
    cv2.imwrite(str(path), img)
    return path


def plot_curves(
    series: dict[str, list[tuple[float, float]]], path: Path, title: str, xlabel: str, ylabel: str
) -> Path:
    """Line plot of named (x, y) series with y in [0, 1], as a PNG (an empty series is skipped
    but keeps its colour)."""
    cv2 = _cv2()
    w, h, left, bottom, top, right = 640, 420, 70, 60, 50, 150
    img = np.full((h, w, 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    xs = [x for pts in series.values() for x, _ in pts]
    x_lo, x_hi = (min(xs), max(xs)) if xs else (0.0, 1.0)
    x_hi = x_hi if x_hi > x_lo else x_lo + 1.0
    pw, ph = w - left - right, h - top - bottom

    def to_px(x: float, y: float) -> tuple[int, int]:
        return (int(left + (x - x_lo) / (x_hi - x_lo) * pw), int(top + (1 - y) * ph))

    for k in range(6):
        y = k / 5
        cv2.line(img, to_px(x_lo, y), to_px(x_hi, y), (230, 230, 230), 1)
        cv2.putText(img, f"{y:.1f}", (left - 40, to_px(x_lo, y)[1] + 5), font, 0.4, (0, 0, 0), 1)
    for x in sorted(set(xs)):
        cv2.putText(img, f"{x:g}", (to_px(x, 0)[0] - 10, h - bottom + 20), font, 0.4, (0, 0, 0), 1)
    cv2.rectangle(img, to_px(x_lo, 1), to_px(x_hi, 0), (0, 0, 0), 1)
    palette = [(200, 80, 30), (40, 140, 40), (30, 30, 200), (150, 60, 150), (0, 150, 200)]
    # more series (the robustness plots have up to nine): more colours, the first five unchanged
    palette += [(0, 0, 0), (120, 120, 0), (0, 100, 160), (160, 160, 160), (90, 40, 0)]
    for i, (name, pts) in enumerate(series.items()):
        if not pts:  # keeps its colour slot, so a name has one colour across several plots
            continue
        color = palette[i % len(palette)]
        px = [to_px(x, y) for x, y in sorted(pts)]
        for a, b in zip(px, px[1:]):
            cv2.line(img, a, b, color, 2)
        for p in px:
            cv2.circle(img, p, 4, color, -1)
        cv2.putText(img, name, (w - right + 10, top + 20 + 22 * i), font, 0.45, color, 1)
    cv2.putText(img, title, (left, 22), font, 0.55, (0, 0, 0), 1)
    cv2.putText(img, xlabel, (left + pw // 2 - 80, h - 15), font, 0.45, (0, 0, 0), 1)
    cv2.putText(img, ylabel, (5, top - 8), font, 0.45, (0, 0, 0), 1)
    cv2.imwrite(str(path), img)
    return path


def plot_robustness(curve: list[dict], path: Path) -> Path:
    """Accuracy and macro-F1 against the fraction of video frames masked."""
    return plot_curves(
        {
            "accuracy": [(c["masked"], c["accuracy"]) for c in curve],
            "macro-F1": [(c["masked"], c["macro_f1"]) for c in curve],
        },
        path,
        "robustness to missing video frames",
        "fraction of frames masked",
        "score",
    )
