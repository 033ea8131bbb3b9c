"""Scores after the fusion graph: softmax, smoothing across windows, per-person calibration."""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis, float64."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


class Smoother:
    """Exponential moving average of class probabilities across successive windows.

    ``alpha`` is the weight of the newest window (1.0 = no smoothing). Windows without any
    modality do not update the state, so a short dropout does not erase the estimate.
    """

    def __init__(self, alpha: float, enabled: bool = True) -> None:
        self.alpha = alpha
        self.enabled = enabled
        self._state: np.ndarray | None = None

    def __call__(self, probs: np.ndarray) -> np.ndarray:
        if not self.enabled:
            return probs
        if self._state is None:
            self._state = probs.copy()
        else:
            self._state = self.alpha * probs + (1.0 - self.alpha) * self._state
        return self._state / self._state.sum()

    def reset(self) -> None:
        self._state = None


class Calibration:
    """A per-person neutral baseline: mean class probabilities over a calibration period.

    Applying it divides probabilities by the baseline's deviation from uniform (a shift in log
    space), so a person whose resting face reads as "sadness" is brought back towards neutral.
    """

    def __init__(self) -> None:
        self._sum: np.ndarray | None = None
        self._n = 0
        self.baseline: np.ndarray | None = None

    def add(self, probs: np.ndarray) -> None:
        self._sum = probs.copy() if self._sum is None else self._sum + probs
        self._n += 1

    def finish(self, neutral_index: int | None) -> np.ndarray | None:
        """Freeze the baseline. The neutral class, if any, is left unpenalised."""
        if self._n == 0 or self._sum is None:
            return None
        base = self._sum / self._n
        if neutral_index is not None:
            # treat the neutral class as expected at rest: do not push probability away from it
            base = base.copy()
            base[neutral_index] = min(base[neutral_index], 1.0 / len(base))
        self.baseline = np.clip(base, 1e-3, None)
        self._sum, self._n = None, 0
        return self.baseline

    def apply(self, probs: np.ndarray) -> np.ndarray:
        if self.baseline is None:
            return probs
        adjusted = probs / (self.baseline * len(self.baseline))
        return adjusted / adjusted.sum()

    def reset(self) -> None:
        self._sum, self._n, self.baseline = None, 0, None
