"""Buffers between capture and the graphs: audio ring, per-track face embeddings, masks.

All times are milliseconds on the source's monotonic clock.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


class AudioBuffer:
    """16 kHz ring buffer of the last ``capacity_s`` seconds, with per-sample validity.

    Samples are placed by timestamp: a chunk that starts after a gap leaves the gap as zeros
    marked invalid, so a dropped microphone shows up as missing audio, not as shifted audio.
    """

    def __init__(self, sample_rate: int, capacity_s: float) -> None:
        self.sample_rate = sample_rate
        self.capacity = int(math.ceil(capacity_s * sample_rate)) + 1
        self._pcm = np.zeros(self.capacity, np.float32)
        self._valid = np.zeros(self.capacity, bool)
        self._end = 0  # absolute index (samples since t=0) one past the newest sample
        self._origin_ms: float | None = None  # time of absolute sample 0

    def _index(self, t_ms: float) -> int:
        assert self._origin_ms is not None
        return int(round((t_ms - self._origin_ms) * self.sample_rate / 1000.0))

    def write(self, t_ms: float, pcm: np.ndarray) -> None:
        """Place ``pcm`` (float32 mono at ``sample_rate``), its first sample at ``t_ms``."""
        if self._origin_ms is None:
            self._origin_ms = t_ms
        start = self._index(t_ms)
        if start > self._end:  # a gap: advance with invalid zeros
            self._advance(start)
        start = max(start, self._end - self.capacity)
        for k in range(0, len(pcm), self.capacity):  # chunks longer than the ring
            block = pcm[k : k + self.capacity]
            s = start + k
            idx = np.arange(s, s + len(block)) % self.capacity
            if s + len(block) > self._end:
                self._advance(s + len(block))
            self._pcm[idx] = block
            self._valid[idx] = True

    def _advance(self, new_end: int) -> None:
        n = min(new_end - self._end, self.capacity)
        idx = np.arange(new_end - n, new_end) % self.capacity
        self._pcm[idx] = 0.0
        self._valid[idx] = False
        self._end = new_end

    def read(self, start_ms: float, end_ms: float) -> tuple[np.ndarray, np.ndarray]:
        """PCM and validity for ``[start_ms, end_ms)``; time outside the buffer is invalid zeros."""
        if self._origin_ms is None:
            n = max(0, int(round((end_ms - start_ms) * self.sample_rate / 1000.0)))
            return np.zeros(n, np.float32), np.zeros(n, bool)
        a, b = self._index(start_ms), self._index(end_ms)
        n = max(0, b - a)
        pcm = np.zeros(n, np.float32)
        valid = np.zeros(n, bool)
        lo, hi = max(a, self._end - self.capacity, 0), min(b, self._end)
        if hi > lo:
            idx = np.arange(lo, hi) % self.capacity
            pcm[lo - a : hi - a] = self._pcm[idx]
            valid[lo - a : hi - a] = self._valid[idx]
        return pcm, valid


@dataclass(frozen=True)
class FrameEntry:
    """One video frame after perception: its time, face embedding (None when no face) and the
    face's quality measures (:func:`emosdk.quality.face_measures`; None when no face)."""

    t_ms: float
    embedding: np.ndarray | None
    quality: Mapping[str, float] | None = None


class FrameBuffer:
    """Face embeddings of the last ``capacity_s`` seconds, looked up on the model's frame grid."""

    def __init__(self, capacity_s: float) -> None:
        self.capacity_ms = capacity_s * 1000.0
        self._frames: collections.deque[FrameEntry] = collections.deque()

    last_face_ms = -math.inf  # time of the newest frame with a face

    def add(self, entry: FrameEntry) -> None:
        if entry.embedding is not None:
            self.last_face_ms = entry.t_ms
        self._frames.append(entry)
        while self._frames and self._frames[0].t_ms < entry.t_ms - self.capacity_ms:
            self._frames.popleft()

    def grid(
        self,
        start_ms: float,
        end_ms: float,
        fps: float,
        dim: int,
        reach_ms: float | None = None,
        used: list[FrameEntry] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """Sample embeddings at the centres of ``round((end-start)*fps)`` slots.

        Each slot takes the nearest frame within ``reach_ms`` (default: one slot length); a slot
        with no frame that near, or whose nearest frame had no face, is masked. ``used``, when
        given, receives the entry of every slot that holds a face.

        Returns:
            video (T, dim) float32 with zeros where masked, mask (T,) float32, and the number of
            slots that had a frame at all (with or without a face).
        """
        n = max(1, int(round((end_ms - start_ms) / 1000.0 * fps)))
        slot = (end_ms - start_ms) / n
        video = np.zeros((n, dim), np.float32)
        mask = np.zeros(n, np.float32)
        if not self._frames:
            return video, mask, 0
        times = np.array([f.t_ms for f in self._frames])
        centres = start_ms + (np.arange(n) + 0.5) * slot
        nearest = np.abs(times[None, :] - centres[:, None]).argmin(axis=1)
        seen = 0
        for i, j in enumerate(nearest):
            f = self._frames[j]
            if abs(f.t_ms - centres[i]) > (slot if reach_ms is None else max(slot, reach_ms)):
                continue
            seen += 1
            if f.embedding is not None:
                video[i] = f.embedding
                mask[i] = 1.0
                if used is not None:
                    used.append(f)
        return video, mask, seen


def step_mask(valid: np.ndarray, n_steps: int, samples_per_step: float) -> np.ndarray:
    """Per audio-encoder step: 1.0 where more than half the step's samples are valid."""
    mask = np.zeros(n_steps, np.float32)
    for i in range(n_steps):
        a = int(i * samples_per_step)
        b = min(len(valid), int((i + 1) * samples_per_step))
        if b > a and valid[a:b].mean() > 0.5:
            mask[i] = 1.0
    return mask
